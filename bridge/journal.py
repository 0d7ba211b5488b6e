"""Requests read from the kernel and not answered yet, one slot each in a mapped file.

A request the bridge has taken off the netlink socket exists nowhere else: if
the bridge dies before answering, the kernel waits its full 15 s, logs
"Request timed out" and re-sends it. The journal closes that gap. Each
request is written here *before* it leaves the socket queue (see
``KernelSocket.peek``) and dropped once its reply is sent, so a restarted
bridge answers whatever its predecessor left unanswered, and the kernel,
which matches replies by seq whichever socket they come from, never notices.

Each bridge process writes its own file, ``ring-<pid>``, a fixed array of
slots mapped into memory (``mmap``, shared): recording a request and dropping
it are a few stores into that memory, no system call. What a killed process
stored is in the page cache, so its successor reads it. A slot is valid once
its length, written last, is nonzero; a process killed before that left its
request in the socket queue instead. Each bridge holds an ``flock`` on its
file for its whole life, so a successor tells a dead predecessor's file
(lock free: take its entries) from a live one's (a standby's, or a bridge
still draining: leave it alone).

Only the bridge's own files in the directory are ever read or removed:
regular files named ``ring-<pid>`` (or ``ring-<pid>-<n>``, a file an
earlier process of the same pid left) and the older one-file entries
``<born>-<pid>-<n>``. Anything else (a directory, a symlink, someone's
notes) is left alone and reported once.

The directory belongs on tmpfs (``/run``): an entry only matters to the
kernel that sent it, and it is gone with that kernel on reboot. Entries carry
their ``CLOCK_BOOTTIME`` (one clock for every process on the node) so a
restarted bridge knows each one's age and drops those the kernel has already
given up on.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import re
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from dmulog.logs import event

__all__ = ["Entry", "Journal", "Replayed", "read_ring"]

log = logging.getLogger("dmulog.bridge")

SLOT_SIZE: Final = 640
"""Bytes per slot: a 16-byte header and the largest datagram the kernel sends (528)."""
SLOTS: Final = 1024
"""Requests in flight at once, far above what kmirrord threads ever have outstanding."""
_BORN: Final = struct.Struct("=Q")  # at offset 0: CLOCK_BOOTTIME, ns
_LENGTH: Final = struct.Struct("=I")  # at offset 8: datagram bytes; 0 = free (stored last)
_HEAD: Final = 16
_PREFIX: Final = "ring-"
_RING_NAME: Final = re.compile(r"ring-[0-9]+(-[0-9]+)?")
_LEGACY_NAME: Final = re.compile(r"[0-9]+-[0-9]+-[0-9]+")


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Entry:
    """One journalled request left by an earlier bridge: its slot here, datagram and age in seconds."""

    slot: int
    datagram: bytes
    age: float


class Journal:
    """This process's slots of unanswered requests; a journal without a directory records nothing."""

    def __init__(self, directory: Path | None, slots: int = SLOTS):
        self.directory = directory
        self._mm: mmap.mmap | None = None
        self._fd = -1
        self._free: list[int] = []
        self._used = bytearray(slots)
        self._full_logged = False
        self._reported: set[str] = set()
        if directory is None:
            return
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / f"{_PREFIX}{os.getpid()}"
        if self.path.exists():
            # An earlier process with this pid left it: keep its entries for pending().
            self.path.rename(directory / f"{_PREFIX}{os.getpid()}-{time.monotonic_ns()}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, slots * SLOT_SIZE)
            self._mm = mmap.mmap(fd, slots * SLOT_SIZE)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._free = list(range(slots - 1, -1, -1))

    def record(self, datagram: bytes, *, born: int | None = None) -> int | None:
        """Write ``datagram`` down; the returned slot goes to :meth:`done` after the reply.

        ``born`` (``CLOCK_BOOTTIME`` ns) keeps the age of an entry taken over from a dead bridge.
        """
        mm = self._mm
        if mm is None:
            return None
        n = len(datagram)
        if not self._free or n > SLOT_SIZE - _HEAD or n == 0:
            # Serving without the journal beats not serving: the kernel's own
            # 15 s retry still covers a request lost with this process.
            if not self._full_logged:
                event(log, logging.ERROR, "journal_unavailable_for_request", size=n, free_slots=len(self._free))
                self._full_logged = True
            return None
        slot = self._free.pop()
        off = slot * SLOT_SIZE
        mm[off + _HEAD : off + _HEAD + n] = datagram
        _BORN.pack_into(mm, off, _now_ns() if born is None else born)
        _LENGTH.pack_into(mm, off + 8, n)
        self._used[slot] = 1
        return slot

    def done(self, slot: int | None) -> None:
        """The request in ``slot`` is answered (or will never be)."""
        if slot is None or self._mm is None or not self._used[slot]:
            return
        _LENGTH.pack_into(self._mm, slot * SLOT_SIZE + 8, 0)
        self._used[slot] = 0
        self._free.append(slot)

    def pending(self) -> list[Entry]:
        """Every entry dead bridges left, moved into this journal, oldest first.

        A file whose lock is free belongs to a process that is gone: its valid
        slots are recorded here (keeping their age) before the file is
        removed, so a bridge that dies while replaying leaves them to the next.
        """
        if self.directory is None or self._mm is None:
            return []
        found: list[tuple[int, bytes]] = []
        taken: list[tuple[Path, int]] = []  # files to remove once copied, with the fd holding the lock
        try:
            for path in sorted(self.directory.iterdir()):
                if path == self.path:
                    continue
                kind = _kind(path)
                if kind is None:
                    self._report(path, "journal_stray_file_left")
                elif kind == "gone":
                    continue
                elif kind == "legacy":
                    found += _read_legacy(path)
                    taken.append((path, -1))
                elif (ring := self._take_ring(path)) is not None:
                    taken.append((path, ring[0]))
                    found += ring[1]
            now, out = _now_ns(), []
            for born, datagram in sorted(found, key=lambda e: e[0]):
                slot = self.record(datagram, born=born)
                if slot is not None:
                    out.append(Entry(slot, datagram, max(0.0, (now - born) / 1e9)))
        finally:
            for path, fd in taken:
                _remove(path)
                if fd >= 0:
                    os.close(fd)
        return out

    def _take_ring(self, path: Path) -> tuple[int, list[tuple[int, bytes]]] | None:
        """The lock and entries of a dead bridge's ring; None while its bridge lives, or if it cannot be read."""
        try:
            fd = _lock_if_dead(path)
        except OSError:
            fd = None
            self._report(path, "journal_file_unreadable")
        if fd is None:
            return None
        try:
            return fd, read_ring(path)
        except OSError:
            os.close(fd)
            self._report(path, "journal_file_unreadable")
            return None

    def _report(self, path: Path, name: str) -> None:
        """Log ``name`` for ``path`` the first time this journal meets it."""
        if str(path) not in self._reported:
            self._reported.add(str(path))
            event(log, logging.WARNING, name, path=str(path))

    def close(self) -> None:
        """Unmap and release the file, as dying does: entries left stay for a successor, else it goes."""
        if self._mm is not None and not any(self._used):
            _remove(self.path)
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Replayed:
    """Datagrams answered from the journal that may still wait in the socket's queue, until they stop mattering.

    A bridge killed between journalling a request and consuming it leaves the
    request in both places: an inherited socket still holds it when the next
    bridge replays the journal. Its second copy must then be consumed without
    an answer, or a CLEAR answered long ago could run again after a newer
    MARK of its region. The kernel gives up on a request after ``timeout``
    seconds, so a copy older than that is no longer expected.
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic):
        self._timeout = timeout
        self._clock = clock
        self._until: dict[bytes, float] = {}

    def add(self, datagram: bytes) -> None:
        """``datagram`` was answered from the journal just now."""
        self._until[datagram] = self._clock() + self._timeout

    def seen(self, datagram: bytes) -> bool:
        """Whether ``datagram`` is the queued copy of a replayed request (at most once per replay)."""
        if not self._until:
            return False
        now = self._clock()
        for key in [k for k, until in self._until.items() if until <= now]:
            del self._until[key]
        return self._until.pop(datagram, None) is not None


def _kind(path: Path) -> Literal["ring", "legacy", "gone"] | None:
    """``"ring"`` or ``"legacy"`` for the bridge's own files, None for anything else in the directory.

    ``"gone"``: removed since the directory was listed (a live bridge exiting).
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "gone"
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return None
    if _RING_NAME.fullmatch(path.name):
        return "ring"
    if _LEGACY_NAME.fullmatch(path.name):
        return "legacy"
    return None


def _lock_if_dead(path: Path) -> int | None:
    """A descriptor holding the lock of a dead bridge's file; None if its bridge lives (or the file went)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None  # its bridge is alive
    return fd


def read_ring(path: Path) -> list[tuple[int, bytes]]:
    """The valid (born, datagram) slots of a ring file, as a successor would find them."""
    data = path.read_bytes()
    entries = []
    for off in range(0, len(data) - _HEAD + 1, SLOT_SIZE):
        (n,) = _LENGTH.unpack_from(data, off + 8)
        if 0 < n <= SLOT_SIZE - _HEAD:
            entries.append((_BORN.unpack_from(data, off)[0], data[off + _HEAD : off + _HEAD + n]))
    return entries


def _read_legacy(path: Path) -> list[tuple[int, bytes]]:
    """An entry of the journal format before rings (one file each, named ``<born>-<pid>-<n>``).

    A bridge upgraded while requests were in flight still answers them. An
    entry that cannot be read is reported, never replayed (the caller
    removes it: it is the bridge's own).
    """
    try:
        born = int(path.name.split("-", 1)[0])
        datagram = path.read_bytes()
    except (ValueError, OSError):
        event(log, logging.WARNING, "journal_entry_unreadable", path=str(path))
        return []
    return [(born, datagram)] if datagram else []


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
