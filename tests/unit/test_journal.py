"""The bridge's journal of unanswered requests (files on a tmpfs-like directory)."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.journal import Journal


def test_recorded_requests_are_pending_until_done(tmp_path: Path) -> None:
    """What a bridge read but did not answer is what the next bridge finds, oldest first, byte for byte."""
    first = Journal(tmp_path / "j")
    a, b = first.record(b"request-a"), first.record(b"request-b")
    first.done(a)

    pending = Journal(tmp_path / "j").pending()

    assert [b"request-b"] == [e.datagram for e in pending]
    assert pending[0].path == b
    assert 0.0 <= pending[0].age < 5.0


def test_age_comes_from_the_boot_clock_in_the_name(tmp_path: Path) -> None:
    """An entry written 20 s ago (by the boot clock) is 20 s old, whatever the file's mtime says."""
    journal = Journal(tmp_path)
    born = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 20_000_000_000
    (tmp_path / f"{born:020d}-1-0").write_bytes(b"old")

    [entry] = journal.pending()

    assert 19.5 < entry.age < 25.0


def test_unreadable_entries_are_dropped_not_fatal(tmp_path: Path) -> None:
    """A stray file in the directory is removed and reported, never replayed."""
    journal = Journal(tmp_path)
    (tmp_path / "not-a-journal-entry").write_bytes(b"x")

    assert [] == journal.pending()
    assert [] == list(tmp_path.iterdir())


def test_a_journal_without_a_directory_records_nothing(tmp_path: Path) -> None:
    """``--journal-dir ''`` turns journalling off: record() gives no entry and done() accepts that."""
    journal = Journal(None)

    entry = journal.record(b"x")
    journal.done(entry)

    assert (None, []) == (entry, journal.pending())


def test_a_failed_write_serves_on_without_an_entry(tmp_path: Path) -> None:
    """A journal that cannot write (directory gone) returns no entry instead of failing the request."""
    journal = Journal(tmp_path / "j")
    (tmp_path / "j").rmdir()

    assert journal.record(b"x") is None
