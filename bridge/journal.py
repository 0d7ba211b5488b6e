"""Requests read from the kernel and not answered yet, one file each.

A request the bridge has taken off the netlink socket exists nowhere else: if
the bridge dies before answering, the kernel waits its full 15 s, logs
"Request timed out" and re-sends it. The journal closes that gap. Each
request is written here *before* it leaves the socket queue (see
``KernelSocket.peek``) and removed once its reply is sent, so a restarted
bridge answers whatever its predecessor left unanswered, and the kernel,
which matches replies by seq whichever socket they come from, never notices.

The directory belongs on tmpfs (``/run``): an entry only matters to the
kernel that sent it, and it is gone with that kernel on reboot. Entries are
named by ``CLOCK_BOOTTIME`` (one clock for every process on the node) so a
restarted bridge knows each one's age and drops those the kernel has already
given up on.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dmulog.logs import event

__all__ = ["Entry", "Journal"]

log = logging.getLogger("dmulog.bridge")


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Entry:
    """One journalled request: its file, its datagram and its age in seconds."""

    path: Path
    datagram: bytes
    age: float


class Journal:
    """A directory of unanswered requests; a journal without a directory records nothing."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self._names = itertools.count()
        self._pid = os.getpid()
        self._prefix = None if directory is None else f"{directory}{os.sep}"
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def record(self, datagram: bytes) -> Path | None:
        """Write ``datagram`` down; the returned path goes to :meth:`done` after the reply.

        Plain ``os`` calls on a string path: this runs for every request, and
        pathlib's conveniences cost about as much as the system calls.
        """
        if self._prefix is None:
            return None
        name = f"{self._prefix}{_now_ns():020d}-{self._pid}-{next(self._names)}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, datagram)
            finally:
                os.close(fd)
        except OSError as e:
            # Serving without the journal beats not serving: the kernel's own
            # 15 s retry still covers a request lost with this process.
            event(log, logging.ERROR, "journal_write_failed", path=name, detail=str(e))
            return None
        return Path(name)

    def done(self, path: Path | None) -> None:
        """The request at ``path`` is answered (or will never be)."""
        if path is not None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def pending(self) -> list[Entry]:
        """Every entry left by an earlier bridge, oldest first."""
        if self.directory is None:
            return []
        now, out = _now_ns(), []
        for path in sorted(self.directory.iterdir()):
            try:
                born = int(path.name.split("-", 1)[0])
                datagram = path.read_bytes()
            except (ValueError, OSError):
                event(log, logging.WARNING, "journal_entry_unreadable", path=str(path))
                self.done(path)
                continue
            out.append(Entry(path, datagram, max(0.0, (now - born) / 1e9)))
        return out
