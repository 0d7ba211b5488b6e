"""The bridge's journal of unanswered requests (a mapped file of slots per bridge process, on tmpfs)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.journal import SLOT_SIZE, Journal, Replayed


def test_recorded_requests_are_pending_until_done(tmp_path: Path) -> None:
    """What a bridge read but did not answer is what the next bridge finds, oldest first, byte for byte."""
    first = Journal(tmp_path / "j")
    a, b, c = first.record(b"request-a"), first.record(b"request-b"), first.record(b"request-c")
    first.done(a)
    first.close()  # the bridge dies: its file stays

    nxt = Journal(tmp_path / "j")
    pending = nxt.pending()

    assert [b"request-b", b"request-c"] == [e.datagram for e in pending]
    assert all(0.0 <= e.age < 5.0 for e in pending)
    assert [nxt.path] == list((tmp_path / "j").iterdir())  # the dead bridge's file is gone
    assert None not in (b, c)


def test_taken_over_entries_stay_until_answered(tmp_path: Path) -> None:
    """Entries taken from a dead bridge live in the new one's file: if it dies while replaying, the next has them."""
    first = Journal(tmp_path)
    first.record(b"request-a")
    first.close()
    second = Journal(tmp_path)
    [entry] = second.pending()
    second.close()  # dies before answering

    third = Journal(tmp_path)
    [again] = third.pending()
    third.done(again.slot)

    assert (b"request-a", b"request-a") == (entry.datagram, again.datagram)
    assert again.age >= entry.age


def test_a_live_bridge_s_entries_are_left_alone(tmp_path: Path) -> None:
    """A standby (or a bridge still draining) holds its file's lock: nobody takes its requests."""
    script = (
        "import sys, time; from pathlib import Path; from bridge.journal import Journal; "
        "j = Journal(Path(sys.argv[1])); j.record(b'in-flight'); print('ready', flush=True); time.sleep(60)"
    )
    live = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    try:
        assert "ready" == live.stdout.readline().strip()  # type: ignore[union-attr]
        assert [] == Journal(tmp_path).pending()
        assert len(list(tmp_path.glob("ring-*"))) == 2
        live.kill()
        live.wait()
        assert [b"in-flight"] == [e.datagram for e in Journal(tmp_path).pending()]
    finally:
        live.kill()


def test_age_comes_from_the_boot_clock(tmp_path: Path) -> None:
    """An entry written 20 s ago (by the boot clock) is 20 s old, whatever the file's mtime says."""
    old = Journal(tmp_path)
    slot = old.record(b"old")
    assert slot is not None
    born = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 20_000_000_000
    old._mm[slot * SLOT_SIZE : slot * SLOT_SIZE + 8] = born.to_bytes(8, sys.byteorder)  # type: ignore[index]
    old.close()

    [entry] = Journal(tmp_path).pending()

    assert 19.5 < entry.age < 25.0


def test_entries_of_the_one_file_per_request_format_are_answered(tmp_path: Path) -> None:
    """A bridge upgraded while requests were in flight finds what the old format left, with its age."""
    born = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 3_000_000_000
    (tmp_path / f"{born:020d}-1-0").write_bytes(b"old-format")

    [entry] = Journal(tmp_path).pending()

    assert b"old-format" == entry.datagram and 2.5 < entry.age < 10
    assert not (tmp_path / f"{born:020d}-1-0").exists()


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    """The paths of the ``name`` events logged so far."""
    return [r.event_data["path"] for r in caplog.records if r.getMessage() == name]  # type: ignore[attr-defined]


def test_only_the_bridge_s_own_files_are_read_or_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Directories, symlinks and files named otherwise stay as they are, each reported once; the rest is replayed."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"not yours")
    j = tmp_path / "j"
    dead = Journal(j)
    dead.record(b"request-a")
    dead.close()
    born = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    (j / f"{born:020d}-1-0").write_bytes(b"request-b")
    strays = {
        "ring-7": "dir",  # a directory with a ring's name
        f"{born:020d}-1-1": "dir",  # and with a legacy entry's name
        "ring-8": "link",  # a symlink to a file elsewhere
        "ring-x": b"x",
        "ring-9.bak": b"x",
        "12-a-3": b"x",
        "notes.txt": b"keep me",
        ".hidden": b"x",
    }
    for name, what in strays.items():
        if what == "dir":
            (j / name).mkdir()
            (j / name / "inside").write_bytes(b"x")
        elif what == "link":
            (j / name).symlink_to(outside)
        else:
            (j / name).write_bytes(what)  # type: ignore[arg-type]
    nxt = Journal(j)
    caplog.set_level(logging.WARNING, logger="dmulog.bridge")

    assert [b"request-a", b"request-b"] == [e.datagram for e in nxt.pending()]
    assert [] == nxt.pending()  # asked again: nothing new, and nothing reported twice

    assert {nxt.path.name, *strays} == {p.name for p in j.iterdir()}
    assert b"keep me" == (j / "notes.txt").read_bytes()
    assert b"not yours" == outside.read_bytes() and (j / "ring-8").is_symlink()
    assert (j / "ring-7" / "inside").exists()
    assert sorted(str(j / name) for name in strays) == sorted(_events(caplog, "journal_stray_file_left"))


def test_a_ring_that_cannot_be_read_is_left_and_reported(tmp_path: Path) -> None:
    """A file of the bridge's own name that it may not open fails nothing: the bridge starts without its entries.

    Run in a process without the right to read it: as root, one without the capabilities that bypass file modes.
    """
    script = (
        "import sys; from pathlib import Path; from dmulog.logs import configure; from bridge.journal import Journal; "
        "configure('warning', 'json'); j = Journal(Path(sys.argv[1])); print(len(j.pending()), len(j.pending()))"
    )
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root reads any file, and setpriv (util-linux) is not here to drop that right")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    ring = tmp_path / "ring-5"
    ring.write_bytes(b"\0" * SLOT_SIZE)
    ring.chmod(0)
    done = subprocess.run([*prefix, sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert (0, "0 0") == (done.returncode, done.stdout.strip()), done.stderr
    assert ring.exists()
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [("journal_file_unreadable", str(ring))] == [(e["event"], e["path"]) for e in events]


def test_a_clean_exit_leaves_nothing(tmp_path: Path) -> None:
    """Everything answered: the file goes with the bridge."""
    journal = Journal(tmp_path)
    journal.done(journal.record(b"x"))
    journal.close()

    assert [] == list(tmp_path.iterdir())


def test_a_slot_is_freed_once(tmp_path: Path) -> None:
    """done() twice for one slot (a reply path that finished twice) must not hand the slot out twice."""
    journal = Journal(tmp_path, slots=2)
    a = journal.record(b"a")
    journal.done(a)
    journal.done(a)
    b, c = journal.record(b"b"), journal.record(b"c")

    assert None not in (b, c) and b != c
    assert journal.record(b"d") is None  # full: served without a journal entry


def test_a_journal_without_a_directory_records_nothing(tmp_path: Path) -> None:
    """``--journal-dir ''`` turns journalling off: record() gives no entry and done() accepts that."""
    journal = Journal(None)

    entry = journal.record(b"x")
    journal.done(entry)

    assert (None, []) == (entry, journal.pending())


def test_an_oversized_datagram_is_served_without_an_entry(tmp_path: Path) -> None:
    """Larger than any request the kernel sends (it is malformed): no entry, and no failure."""
    journal = Journal(tmp_path)

    assert journal.record(b"x" * SLOT_SIZE) is None
    assert journal.record(b"y") is not None


def test_a_replayed_datagram_is_recognised_once_and_only_until_the_kernel_gives_up() -> None:
    """The queued copy of a request answered from the journal is skipped once; after the kernel's timeout, never."""
    now = [100.0]
    replayed = Replayed(15.0, clock=lambda: now[0])
    assert not replayed.seen(b"clear-3")
    replayed.add(b"clear-3")
    replayed.add(b"mark-4")
    assert not replayed.seen(b"mark-5")
    assert replayed.seen(b"clear-3")
    assert not replayed.seen(b"clear-3")  # a second identical request is a new one: answered
    now[0] += 15.0
    assert not replayed.seen(b"mark-4")  # the kernel re-sent it under a new seq long ago
