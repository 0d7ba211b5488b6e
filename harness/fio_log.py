"""fio's per-write latency log, and the pauses in it.

A benchmark that restarts something under I/O (bench/upgrade.py) asks one
question of the writer: how long did writes stop? fio answers with a latency
log (``--write_lat_log`` with ``--log_unix_epoch=1``: one line per completed
write), and a pause is the gap between two completions. Kept here, apart from
the benchmark, so that the reading is tested on its own
(tests/unit/test_fio_log.py).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Window", "read_latency_log", "window"]


@dataclasses.dataclass(frozen=True)
class Window:
    """Completed writes in one stretch of time.

    Attributes:
        writes: writes that completed in it.
        worst_gap: the longest time between two consecutive completed writes that
            overlaps it, in seconds (a pause that began before it counts).
        gap_end: Unix time at which that gap ended: the first write after it.
        worst_latency: the longest write that was in flight in it, in seconds.
    """

    writes: int
    worst_gap: float
    gap_end: float
    worst_latency: float


def read_latency_log(path: Path) -> list[tuple[float, float]]:
    """(completion Unix time, latency) in seconds of every write in a fio latency log, by completion.

    fio was told ``log_unix_epoch``: the first field is Unix milliseconds; the
    second is the latency in nanoseconds (fio 3).
    """
    writes = []
    for line in path.read_text().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 2 and fields[0].isdigit():
            writes.append((int(fields[0]) / 1000, int(fields[1]) / 1e9))
    writes.sort()
    return writes


def window(writes: Sequence[tuple[float, float]], start: float, end: float) -> Window:
    """The writes of ``[start, end]``: a gap counts when it overlaps the window, a write when it was in flight."""
    done = [t for t, _ in writes if start <= t <= end]
    worst_gap, gap_end = 0.0, start
    for (before, _), (after, _) in itertools.pairwise(writes):
        if after >= start and before <= end and after - before > worst_gap:
            worst_gap, gap_end = after - before, after
    in_flight = [lat for t, lat in writes if t >= start and t - lat <= end]
    return Window(len(done), round(worst_gap, 3), gap_end, round(max(in_flight, default=0.0), 3))
