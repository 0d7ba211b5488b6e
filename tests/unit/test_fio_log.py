"""harness/fio_log.py: fio's latency log read, and the gap a rolling upgrade costs in it.

The figures in docs/restarts.md ("Rolling upgrades") are these functions'
output (bench/upgrade.py); a pause counted from the wrong side of the window
would shrink them.
"""

from __future__ import annotations

from pathlib import Path

from harness.fio_log import read_latency_log, window

#: (completion time, latency) in seconds: steady writes, one 6 s pause that starts
#: before the window (t=100) and ends inside it, writes every 0.5 s to t=112, then
#: a 8 s pause.
WRITES = [(97.0, 0.1), (98.0, 0.1), (99.0, 0.2), (105.0, 5.9)] + [(105 + i / 2, 0.1) for i in range(1, 15)] + [
    (120.0, 0.1)]


def test_a_pause_that_began_before_the_window_counts_whole() -> None:
    """The writes stopped before SIGTERM (a drain) are part of the upgrade's pause."""
    w = window(WRITES, 100.0, 110.0)

    assert 6.0 == w.worst_gap
    assert 105.0 == w.gap_end
    assert 5.9 == w.worst_latency  # in flight from 99.1 to 105
    assert 11 == w.writes  # 105 to 110


def test_gaps_outside_the_window_do_not_count() -> None:
    """A pause of another upgrade, before or after, is not this one's."""
    w = window(WRITES, 106.0, 106.5)

    assert 0.5 == w.worst_gap  # not the 6 s before it, nor the 8 s after
    assert 2 == w.writes
    assert 0.1 == w.worst_latency


def test_a_window_without_writes_still_sees_the_pause_across_it() -> None:
    """No write completed at all: the pause is the gap around the window, not zero."""
    w = window(WRITES, 113.0, 115.0)

    assert (0, 8.0, 120.0) == (w.writes, w.worst_gap, w.gap_end)


def test_fio_latency_log_is_read_in_seconds_by_completion(tmp_path: Path) -> None:
    """Unix milliseconds and nanoseconds (fio 3, log_unix_epoch), sorted; other lines skipped."""
    log = tmp_path / "lat.1.log"
    log.write_text("1700000001500, 2000000, 1, 4096, 0\n1700000000250, 250000000, 1, 4096, 0\nnot a line\n")

    assert [(1700000000.25, 0.25), (1700000001.5, 0.002)] == read_latency_log(log)
