"""Data-loss checks for crash tests: mirror legs against the dirty log, and written data against a record.

Two questions decide whether a dirty log kept its promise after a crash:

1. **Does the log know every region that may differ?** :func:`check_legs_against_log`
   compares the two leg images region by region and reports every region whose
   contents differ although the log will not resync it: the region is not dirty and
   in sync. Such a region is a *violation*: the next activation keeps the legs as they
   are, and reads of that region return different data depending on the leg they hit.
   For the persistent log types (``dmulog``, ``clustered-disk``) a region that is
   clean but out of sync is a violation too, because a persistent log's resume rule
   makes every clean region in sync again (docs/protocol.md §6.4).

2. **Did every write the application saw complete survive?**
   :func:`check_completed_writes` replays the writer's record (:class:`WriteLog`):
   after recovery both legs must be identical and every block must hold the data of
   the latest completed write to it. A write that was in flight at the crash (started
   but never recorded as completed) may have landed, not landed, or landed partly:
   each of its 512-byte sectors may hold the old or the new data. Blocks no write ever
   touched must still be zero (images start zeroed).

The record is written by :func:`run_writer`, the guest's random-offset ``O_DIRECT``
writer (``python -m tests.kernel.crash.checker write ...``). Its format, one record per
line, appended with a single ``write()`` each::

    seed <seed> block <block_bytes> span <bytes> [stride <k> phase <p>]   header
    S <id> <offset> <length>                     about to write (before pwrite)
    D <id>                                       pwrite returned: the write completed
    E <id> <errno>                               pwrite failed

The bytes of write ``id`` are :func:`payload` ``(seed, id, length)``, so the record
needs no copy of the data. Two writes to the same block are never in flight at once
(the writer keeps a set of busy blocks), so per block the order of the ``S`` lines is
the order of the writes. A torn last line (the node died mid-record) is ignored.
With a stride (several nodes writing one mirror), a writer writes only the blocks
``b`` with ``b % stride == phase``, one block at a time, and its record speaks only
for those blocks: the others are another writer's.

This module imports nothing heavy (no grpc): the guest, where every import is slow
under emulation, runs the writer from it. The log's state comes in as
:class:`LogBits`, built from a ``GetLogStateResponse`` with :meth:`LogBits.from_state`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno as errno_mod
import mmap
import os
import random
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SECTOR",
    "DataReport",
    "LegReport",
    "LogBits",
    "RegionDiff",
    "WriteLog",
    "WriteRecord",
    "check_completed_writes",
    "check_legs_against_log",
    "payload",
    "read_write_log",
    "run_writer",
]

SECTOR = 512
PERSISTENT_TYPES = frozenset({"dmulog", "clustered-disk"})
_MAX_LISTED = 20


# ----------------------------------------------------------------------------- log bits


def _bit(bitmap: bytes, r: int) -> bool:
    """Bit r of a Redis bitmap: bit (7 - r % 8) of byte r // 8 (MSB first); missing bytes are 0."""
    byte = r // 8
    return byte < len(bitmap) and bool(bitmap[byte] >> (7 - r % 8) & 1)


@dataclasses.dataclass(frozen=True)
class LogBits:
    """What a dirty log says about its regions, as GetLogState returns it.

    Attributes:
        region_count: number of regions.
        region_size: region size in 512-byte sectors.
        in_sync: bitmap, bit r set = region r in sync (MSB first, as Redis stores it).
        dirty: bitmap, bit r set = region r dirty (will be resynced at the next activation).
        log_type: ``dmulog``, ``clustered-disk`` or ``clustered-core``.
        marks: region -> node names that have it marked.
    """

    region_count: int
    region_size: int
    in_sync: bytes
    dirty: bytes
    log_type: str = "dmulog"
    marks: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_state(cls, state: Any) -> LogBits:
        """Build from a ``dmulog.v1.GetLogStateResponse`` (duck-typed, so grpc stays unimported)."""
        return cls(
            region_count=int(state.summary.region_count),
            region_size=int(state.summary.region_size),
            in_sync=bytes(state.in_sync_bitmap),
            dirty=bytes(state.dirty_bitmap),
            log_type=str(state.summary.log_type),
            marks={int(m.region): tuple(m.nodes) for m in state.marks},
        )

    def is_in_sync(self, r: int) -> bool:
        """Whether the log says the legs agree on region r."""
        return _bit(self.in_sync, r)

    def is_dirty(self, r: int) -> bool:
        """Whether region r will be resynced at the next activation of a persistent log."""
        return _bit(self.dirty, r)

    @property
    def persistent(self) -> bool:
        """Whether the log's bits outlive an activation (the resume rule applies)."""
        return self.log_type in PERSISTENT_TYPES


# ------------------------------------------------------------------------- write record


@dataclasses.dataclass
class WriteRecord:
    """One write of the guest writer, as far as its record shows.

    Attributes:
        id: sequence number; with the log's seed it regenerates the bytes.
        offset: byte offset on the mirror device.
        length: bytes written.
        completed: a ``D`` line: pwrite returned and the application saw the write done.
        error: errno of a failed pwrite (an ``E`` line), else None.
    """

    id: int
    offset: int
    length: int
    completed: bool = False
    error: int | None = None

    @property
    def in_flight(self) -> bool:
        """Started, never seen to end: may have landed wholly, partly or not at all."""
        return not self.completed and self.error is None


@dataclasses.dataclass
class WriteLog:
    """The parsed record of one writer run (see the module docstring for the format)."""

    seed: int
    block: int
    span: int
    writes: list[WriteRecord]
    stride: int = 1
    phase: int = 0

    def owns(self, b: int) -> bool:
        """Whether block ``b`` is this writer's (every block without a stride)."""
        return b % self.stride == self.phase

    @property
    def completed(self) -> list[WriteRecord]:
        """Writes the application saw complete."""
        return [w for w in self.writes if w.completed]

    @property
    def in_flight(self) -> list[WriteRecord]:
        """Writes started but never seen to end (at most one per writer thread)."""
        return [w for w in self.writes if w.in_flight]

    @property
    def failed(self) -> list[WriteRecord]:
        """Writes whose pwrite failed: the mirror returned an I/O error."""
        return [w for w in self.writes if w.error is not None]


def read_write_log(path: Path) -> WriteLog:
    """Parse a writer's record; a torn or partial trailing line is ignored."""
    text = Path(path).read_text(errors="replace")
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the node died while the last line was being written
    seed = block = span = None
    stride, phase = 1, 0
    writes: dict[int, WriteRecord] = {}
    for line in lines:
        f = line.split()
        if not f:
            continue
        if f[0] == "seed" and len(f) >= 6:
            seed, block, span = int(f[1]), int(f[3]), int(f[5])
            if len(f) >= 10 and f[6] == "stride" and f[8] == "phase":
                stride, phase = int(f[7]), int(f[9])
        elif f[0] == "S" and len(f) == 4:
            w = WriteRecord(int(f[1]), int(f[2]), int(f[3]))
            writes[w.id] = w
        elif f[0] == "D" and len(f) == 2 and int(f[1]) in writes:
            writes[int(f[1])].completed = True
        elif f[0] == "E" and len(f) == 3 and int(f[1]) in writes:
            writes[int(f[1])].error = int(f[2])
    if seed is None or block is None or span is None:
        raise ValueError(f"{path}: no header line")
    return WriteLog(seed=seed, block=block, span=span, writes=list(writes.values()), stride=stride, phase=phase)


def payload(seed: int, write_id: int, length: int) -> bytes:
    """The bytes of write ``write_id`` of a writer run with ``seed``: reproducible anywhere."""
    return random.Random(f"dmulog-crash/{seed}/{write_id}").randbytes(length)


# -------------------------------------------------------------------- legs against log


@dataclasses.dataclass(frozen=True)
class RegionDiff:
    """One region whose contents differ between the legs.

    Attributes:
        region: region number.
        offset: byte offset of the region on each leg.
        first_diff: byte offset (on the leg) of the first differing byte.
        sectors: number of differing 512-byte sectors in the region.
        in_sync: what the log says.
        dirty: what the log says.
        marked_by: nodes that have the region marked in the log.
        writes: ids of recorded writes touching the region: ``(completed, in flight)``.
    """

    region: int
    offset: int
    first_diff: int
    sectors: int
    in_sync: bool
    dirty: bool
    marked_by: tuple[str, ...] = ()
    writes: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def describe(self) -> str:
        """One line for a human."""
        done, flying = self.writes
        text = (
            f"region {self.region} (bytes {self.offset:#x}+): {self.sectors} sector(s) differ, first at "
            f"{self.first_diff:#x}; log: in_sync={int(self.in_sync)} dirty={int(self.dirty)}"
        )
        if self.marked_by:
            text += f" marked_by={','.join(self.marked_by)}"
        if done or flying:
            text += f"; writes completed={_ids(done)} in_flight={_ids(flying)}"
        return text


def _ids(ids: Sequence[int]) -> str:
    shown = ",".join(str(i) for i in ids[-8:])
    return f"[{'...,' if len(ids) > 8 else ''}{shown}]"


@dataclasses.dataclass
class LegReport:
    """Outcome of :func:`check_legs_against_log`.

    Attributes:
        region_count: regions compared.
        region_bytes: region size in bytes.
        log_type: the log's type (decides whether clean-but-out-of-sync counts).
        differing: every region whose contents differ between the legs.
        violations: the differing regions the log will not resync (see module docstring).
        out_of_sync: regions the log has out of sync.
        dirty: regions the log has dirty.
    """

    region_count: int
    region_bytes: int
    log_type: str
    differing: list[RegionDiff]
    violations: list[RegionDiff]
    out_of_sync: int
    dirty: int

    @property
    def ok(self) -> bool:
        """No violation."""
        return not self.violations

    def text(self) -> str:
        """A human-readable report: headline, then every violation, then the covered differences."""
        head = (
            f"{self.log_type} log, {self.region_count} regions of {self.region_bytes} bytes: "
            f"{len(self.differing)} differ between the legs, {self.dirty} dirty, {self.out_of_sync} out of sync; "
            f"{len(self.violations)} VIOLATION(S)"
        )
        lines = [head]
        if self.violations:
            lines.append("regions that differ but the log will NOT resync (data loss):")
            lines += ["  " + d.describe() for d in self.violations[:_MAX_LISTED]]
            if len(self.violations) > _MAX_LISTED:
                lines.append(f"  ... and {len(self.violations) - _MAX_LISTED} more")
        covered = [d for d in self.differing if d not in self.violations]
        if covered:
            lines.append("regions that differ and will be resynced (fine):")
            lines += ["  " + d.describe() for d in covered[:_MAX_LISTED]]
            if len(covered) > _MAX_LISTED:
                lines.append(f"  ... and {len(covered) - _MAX_LISTED} more")
        return "\n".join(lines)


def _region_writes(wlog: WriteLog | None, start: int, end: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if wlog is None:
        return (), ()
    touching = [w for w in wlog.writes if w.offset < end and w.offset + w.length > start]
    return tuple(w.id for w in touching if w.completed), tuple(w.id for w in touching if not w.completed)


def check_legs_against_log(
    leg0: Path, leg1: Path, bits: LogBits, *, target_bytes: int | None = None, writes: WriteLog | None = None
) -> LegReport:
    """Compare two leg images region by region against what the log says.

    Args:
        leg0: image of the first (primary) leg.
        leg1: image of the second leg.
        bits: the log's state (:meth:`LogBits.from_state` of GetLogState), fetched after the
            crash and before any reactivation.
        target_bytes: length of the mirror target; the smaller leg size when None.
        writes: the writer's record, only to annotate differing regions with the writes
            that touched them.

    Returns:
        A :class:`LegReport`; ``report.ok`` is False when any region differs between the
        legs although the log will not resync it (not dirty and in sync; for persistent
        logs also not dirty and out of sync).
    """
    region_bytes = bits.region_size * SECTOR
    if target_bytes is None:
        target_bytes = min(Path(leg0).stat().st_size, Path(leg1).stat().st_size)
    expected_regions = -(-target_bytes // region_bytes)
    if expected_regions != bits.region_count:
        raise ValueError(
            f"the log has {bits.region_count} regions of {bits.region_size} sectors, "
            f"the legs have {expected_regions} ({target_bytes} bytes)"
        )
    differing: list[RegionDiff] = []
    violations: list[RegionDiff] = []
    with Path(leg0).open("rb") as a, Path(leg1).open("rb") as b:
        for r in range(bits.region_count):
            start = r * region_bytes
            n = min(region_bytes, target_bytes - start)
            x, y = a.read(n), b.read(n)
            if x == y:
                continue
            bad = [s for s in range(0, n, SECTOR) if x[s : s + SECTOR] != y[s : s + SECTOR]]
            diff = RegionDiff(
                region=r, offset=start, first_diff=start + bad[0], sectors=len(bad),
                in_sync=bits.is_in_sync(r), dirty=bits.is_dirty(r), marked_by=bits.marks.get(r, ()),
                writes=_region_writes(writes, start, start + n),
            )  # fmt: skip
            differing.append(diff)
            if not diff.dirty and (diff.in_sync or bits.persistent):
                violations.append(diff)
    out_of_sync = sum(1 for r in range(bits.region_count) if not bits.is_in_sync(r))
    dirty = sum(1 for r in range(bits.region_count) if bits.is_dirty(r))
    return LegReport(bits.region_count, region_bytes, bits.log_type, differing, violations, out_of_sync, dirty)


# ------------------------------------------------------------------- completed writes


@dataclasses.dataclass
class DataReport:
    """Outcome of :func:`check_completed_writes`.

    Attributes:
        legs_identical: every leg holds the same bytes as the first (over the checked span).
        first_leg_diff: byte offset of the first difference between legs, if any.
        blocks_checked: blocks compared with the record.
        completed: writes recorded as completed.
        in_flight: writes started and never recorded as ended.
        failed: writes whose pwrite failed.
        lost: ``(block offset, write id, what was found)`` for every block that does not
            hold its latest completed write (or zeros, for a never-written block).
    """

    legs_identical: bool
    first_leg_diff: int | None
    blocks_checked: int
    completed: int
    in_flight: int
    failed: list[int]
    lost: list[tuple[int, int | None, str]]

    @property
    def ok(self) -> bool:
        """Legs identical, nothing lost, no failed write."""
        return self.legs_identical and not self.lost and not self.failed

    def text(self) -> str:
        """A human-readable report."""
        lines = [
            f"{self.completed} completed and {self.in_flight} in-flight writes, {self.blocks_checked} blocks checked: "
            f"legs {'identical' if self.legs_identical else 'DIFFER'}"
            + (f" (first difference at {self.first_leg_diff:#x})" if self.first_leg_diff is not None else "")
            + f", {len(self.lost)} block(s) LOST, {len(self.failed)} write(s) FAILED"
        ]
        for off, wid, what in self.lost[:_MAX_LISTED]:
            who = "never written, expected zeros" if wid is None else f"expected write {wid}"
            lines.append(f"  block {off:#x}: {who}; found {what}")
        if len(self.lost) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.lost) - _MAX_LISTED} more")
        if self.failed:
            lines.append(f"  failed writes: {_ids(self.failed)}")
        return "\n".join(lines)


def _first_diff(paths: Sequence[Path], length: int) -> int | None:
    """Byte offset of the first difference between the files over ``length`` bytes, or None."""
    chunk = 1 << 20
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(Path(p).open("rb")) for p in paths]
        for base in range(0, length, chunk):
            blobs = [f.read(min(chunk, length - base)) for f in files]
            for other in blobs[1:]:
                if other != blobs[0]:
                    n = min(len(other), len(blobs[0]))
                    return base + next((i for i in range(n) if other[i] != blobs[0][i]), n)
    return None


def _describe_found(found: bytes, wlog: WriteLog, candidates: Iterable[int | None]) -> str:
    if found == bytes(len(found)):
        return "zeros"
    return f"other data (not zeros, not writes {sorted(c for c in candidates if c is not None)})"


def check_completed_writes(legs: Sequence[Path], wlog: WriteLog, *, span: int | None = None) -> DataReport:
    """Check that the legs are identical and hold the latest completed write of every block.

    Args:
        legs: leg images (the first is the one compared with the record; the others must
            equal it). With one leg, only the data is checked.
        wlog: the writer's record (:func:`read_write_log`).
        span: bytes to check; the record's span when None.

    Returns:
        A :class:`DataReport`. A block's expected content is its latest completed write,
        or zeros if none; if a later write to it was in flight at the crash, each sector
        may instead hold that write's bytes. Failed writes are reported, not excused.
    """
    span = wlog.span if span is None else span
    block = wlog.block
    first = _first_diff(legs, span) if len(legs) > 1 else None
    # Per block: latest completed write, and a later write that never completed.
    done: dict[int, WriteRecord] = {}
    pending: dict[int, WriteRecord] = {}
    for w in wlog.writes:  # in S order, which per block is the order of the writes
        for b in range(w.offset // block, (w.offset + w.length) // block):
            if w.completed:
                done[b] = w
                pending.pop(b, None)
            else:
                pending[b] = w
    cache: dict[int, bytes] = {}

    def data_of(w: WriteRecord, b: int) -> bytes:
        if w.id not in cache:
            if len(cache) > 256:
                cache.clear()
            cache[w.id] = payload(wlog.seed, w.id, w.length)
        start = b * block - w.offset
        return cache[w.id][start : start + block]

    lost: list[tuple[int, int | None, str]] = []
    zero = bytes(block)
    checked = 0
    with Path(legs[0]).open("rb") as f:
        for b in range(span // block):
            found = f.read(block)
            if not wlog.owns(b):
                continue  # another writer's block
            checked += 1
            old = done.get(b)
            expected = data_of(old, b) if old else zero
            if found == expected:
                continue
            new = pending.get(b)
            if new is not None:
                alt = data_of(new, b)
                if all(
                    found[s : s + SECTOR] in (expected[s : s + SECTOR], alt[s : s + SECTOR])
                    for s in range(0, block, SECTOR)
                ):
                    continue
            lost.append((b * block, old.id if old else None,
                         _describe_found(found, wlog, (old and old.id, new and new.id))))  # fmt: skip
    return DataReport(
        legs_identical=first is None, first_leg_diff=first, blocks_checked=checked,
        completed=len(wlog.completed), in_flight=len(wlog.in_flight),
        failed=[w.id for w in wlog.failed], lost=lost,
    )  # fmt: skip


# ------------------------------------------------------------------------- the writer


class _Record:
    """The record file: one ``write()`` per line, under a lock, so lines never interleave."""

    def __init__(self, path: Path):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            os.write(self._fd, (text + "\n").encode())

    def close(self) -> None:
        os.close(self._fd)


def run_writer(
    device: Path,
    record: Path,
    *,
    seed: int,
    span: int,
    threads: int = 4,
    block: int = 4096,
    max_blocks: int = 16,
    duration: float | None = None,
    count: int | None = None,
    sequential: float = 0.5,
    stride: int = 1,
    phase: int = 0,
) -> int:
    """Write random data at block-aligned offsets with ``O_DIRECT``, recording each write.

    Runs ``threads`` writers until ``duration`` seconds passed or ``count`` writes were
    started (forever if neither is given: the node is expected to die). A write covers
    1 to ``max_blocks`` blocks of ``span`` bytes of ``device``; no two writes in flight
    overlap. With probability ``sequential`` a thread continues where its last write
    ended (a stream, often in the same region: what the kernel decided about a region
    shows in the next write), else it picks a random offset. With ``stride`` above 1
    it writes one block at a time, only blocks ``b % stride == phase``, so writers of
    several nodes share every region of one mirror without sharing a block. Returns the
    number of completed writes; a failed pwrite stops its thread.
    """
    rng = random.Random(seed)
    rec = _Record(record)
    rec.line(f"seed {seed} block {block} span {span}" + (f" stride {stride} phase {phase}" if stride > 1 else ""))
    if stride > 1:
        max_blocks = 1
    nblocks = span // block
    busy: set[int] = set()
    lock = threading.Lock()
    next_id = [0]
    completed = [0]
    stop = threading.Event()
    deadline = None if duration is None else time.monotonic() + duration
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT)

    def pick(after: int | None) -> tuple[int, int, int] | None:
        with lock:
            if stop.is_set() or (count is not None and next_id[0] >= count):
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            go_on = after is not None and rng.random() < sequential
            for _ in range(100):
                n = rng.randint(1, max_blocks)
                if stride > 1:  # one block of this writer's: the next one of its stream, or any
                    first = after - 1 + stride if go_on and after is not None else rng.randrange(0, nblocks)
                    first += (phase - first) % stride
                else:
                    first = after if go_on and after is not None else rng.randrange(0, nblocks - n + 1)
                go_on = False
                if first + n <= nblocks and busy.isdisjoint(range(first, first + n)):
                    busy.update(range(first, first + n))
                    wid = next_id[0]
                    next_id[0] += 1
                    rec.line(f"S {wid} {first * block} {n * block}")
                    return wid, first, n
            return None

    def worker() -> None:
        buf = mmap.mmap(-1, max_blocks * block)  # page-aligned, as O_DIRECT needs
        view = memoryview(buf)
        after = None
        try:
            while (job := pick(after)) is not None:
                wid, first, n = job
                after = first + n
                length = n * block
                view[:length] = payload(seed, wid, length)
                try:
                    written = os.pwrite(fd, view[:length], first * block)
                    ok = written == length
                    code = 0 if ok else errno_mod.EIO
                except OSError as e:
                    ok, code = False, e.errno or errno_mod.EIO
                with lock:
                    rec.line(f"D {wid}" if ok else f"E {wid} {code}")
                    busy.difference_update(range(first, first + n))
                    if ok:
                        completed[0] += 1
                if not ok:
                    stop.set()
        finally:
            view.release()
            buf.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    os.close(fd)
    rec.close()
    return completed[0]


# ---------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> int:
    """``write`` (the guest writer) and ``data`` (check leg images against a record)."""
    parser = argparse.ArgumentParser(prog="python -m tests.kernel.crash.checker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="random O_DIRECT writer that records every write")
    w.add_argument("device", type=Path)
    w.add_argument("record", type=Path)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--span", type=int, required=True, help="bytes of the device to write to")
    w.add_argument("--threads", type=int, default=4)
    w.add_argument("--block", type=int, default=4096)
    w.add_argument("--max-blocks", type=int, default=16)
    w.add_argument("--duration", type=float)
    w.add_argument("--count", type=int)
    w.add_argument("--stride", type=int, default=1, help="write only blocks b with b %% stride == phase")
    w.add_argument("--phase", type=int, default=0)
    d = sub.add_parser("data", help="check leg images against a writer's record")
    d.add_argument("record", type=Path)
    d.add_argument("legs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "write":
        done = run_writer(
            args.device, args.record, seed=args.seed, span=args.span, threads=args.threads, block=args.block,
            max_blocks=args.max_blocks, duration=args.duration, count=args.count, stride=args.stride,
            phase=args.phase,
        )  # fmt: skip
        print(f"completed {done} writes")
        return 0
    report = check_completed_writes(args.legs, read_write_log(args.record))
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
