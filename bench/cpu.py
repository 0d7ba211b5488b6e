"""CPU time of processes, from /proc: which tier was busy during a run (a ratio of cores, not a timing)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds"]


def cpu_seconds(*pids: int) -> tuple[float, ...]:
    """CPU time (user + system, all threads) used so far by each process; 0 for one that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)  # utime, stime
        except (OSError, IndexError, ValueError):
            out.append(0.0)
    return tuple(out)
