"""Simulated mirrors writing through logsvc while Redis fails, and the check that no acknowledged mark was lost.

The promise under test: a region whose MARK_REGION (or integrated FLUSH) was
acknowledged stays dirty, or out of sync, until a CLEAR_REGION of it was sent.
A region is *owed* from the moment its mark is acknowledged until a clear of it
is sent (not acknowledged: a clear in flight may or may not have landed, and
either is correct); the checker reads each log's state and names every owed
region that is clean and in sync.

:class:`MirrorLoad` is the writer: each simulated mirror marks a few regions,
"writes", and clears them, as dm-raid1 does around a write, and like a
bridge retries a request Redis could not serve (UNAVAILABLE) until it
succeeds. What it records is what the kernel would have seen: how many
requests failed before succeeding, and how long no mutating request of any
mirror succeeded (the unavailability of a failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, dirty, out_of_sync

__all__ = ["AckedMarks", "LoadStats", "MirrorLoad", "Violation"]

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass(frozen=True)
class Violation:
    """An owed region that a log's state calls clean and in sync."""

    uuid: str
    region: int


@dataclass
class AckedMarks:
    """Which regions each log owes: marked (acknowledged), with no clear sent since."""

    owed: dict[str, set[int]] = field(default_factory=dict)
    acknowledged: int = 0

    def marked(self, uuid: str, regions: Iterable[int]) -> None:
        """The mark of ``regions`` was acknowledged."""
        got = list(regions)
        self.owed.setdefault(uuid, set()).update(got)
        self.acknowledged += len(got)

    def clearing(self, uuid: str, regions: Iterable[int]) -> None:
        """A clear of ``regions`` is about to be sent: from now on either answer is right."""
        self.owed.setdefault(uuid, set()).difference_update(regions)

    def violations(self, uuid: str, state: pb.GetLogStateResponse) -> list[Violation]:
        """Owed regions of the log that ``state`` has clean and in sync."""
        kept = set(dirty(state)) | set(out_of_sync(state))
        return [Violation(uuid, r) for r in sorted(self.owed.get(uuid, set()) - kept)]


@dataclass
class LoadStats:
    """What the mirrors' requests met: what a kernel would have seen."""

    retried: int = 0
    """Requests that failed (UNAVAILABLE or past their deadline) and were sent again."""
    answered: list[tuple[float, float]] = field(default_factory=list)
    """(sent, answered) on the monotonic clock of every attempt that succeeded."""

    def unavailable_after(self, t0: float) -> float | None:
        """Seconds from ``t0`` to the first success of a request sent after it (None: none yet)."""
        ends = [end for start, end in self.answered if start >= t0]
        return min(ends) - t0 if ends else None


class MirrorLoad:
    """``mirrors`` logs of ``regions`` regions, each written by one simulated mirror until stopped."""

    def __init__(self, stubs: list[pb_grpc.DirtyLogStub], uuids: list[str], *, regions: int = 256,
                 node: str = "node-a", seed: int = 0, request_timeout: float = 5.0):  # fmt: skip
        self.handles = [LogHandle(stubs[i % len(stubs)], u, node=node) for i, u in enumerate(uuids)]
        self.regions = regions
        self.marks = AckedMarks()
        self.stats = LoadStats()
        self.errors: list[str] = []
        self._rng = random.Random(seed)
        self._timeout = request_timeout
        self._stop = asyncio.Event()
        self._paused = asyncio.Event()
        self._paused.set()
        self._idle = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def construct(self) -> None:
        """CTR (``nosync``: every region starts clean and in sync, so a lost mark shows) and RESUME every log."""
        for h in self.handles:
            await h.ctr(self.regions * 8, "dmulog", "8", "nosync")
            await h.resume()

    async def _retry(self, call: Callable[[], Awaitable[None]]) -> None:
        """Send ``call()`` until it succeeds, as a bridge does within the kernel's wait."""
        while True:
            sent = time.monotonic()
            try:
                await asyncio.wait_for(call(), self._timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _RETRYABLE:
                    raise
            except TimeoutError:
                pass
            else:
                self.stats.answered.append((sent, time.monotonic()))
                return
            self.stats.retried += 1
            await asyncio.sleep(0.02)

    async def _mirror(self, h: LogHandle, rng: random.Random) -> None:
        while not self._stop.is_set():
            if not self._paused.is_set():
                self._idle += 1
                await self._paused.wait()
                self._idle -= 1
                continue
            regions = sorted(rng.sample(range(self.regions), rng.randint(1, 4)))
            if rng.random() < 0.3:
                await self._retry(lambda: h.flush(*regions))  # noqa: B023 - awaited before the next loop
            else:
                await self._retry(lambda: h.mark(*regions))  # noqa: B023
            self.marks.marked(h.log.uuid, regions)
            await asyncio.sleep(rng.uniform(0, 0.01))  # the write
            if rng.random() < 0.8:  # some regions stay marked, as under a write that is still going on
                self.marks.clearing(h.log.uuid, regions)
                await self._retry(lambda: h.clear(*regions))  # noqa: B023

    def start(self) -> None:
        """Start every mirror writing."""
        for h in self.handles:
            rng = random.Random(self._rng.random())
            self._tasks.append(asyncio.ensure_future(self._guard(h, rng)))

    async def _guard(self, h: LogHandle, rng: random.Random) -> None:
        try:
            await self._mirror(h, rng)
        except Exception as e:  # noqa: BLE001 - reported by check(), never swallowed
            self.errors.append(f"{h.log.uuid}: {e!r}")

    async def pause(self) -> None:
        """Stop starting requests and wait until every mirror's in-flight request is answered."""
        self._paused.clear()
        while self._idle < len(self._tasks) and not all(t.done() for t in self._tasks):
            await asyncio.sleep(0.01)

    def resume(self) -> None:
        """Let the mirrors write again."""
        self._paused.set()

    async def check(self) -> list[Violation]:
        """Every owed region that some log's state (read with the load paused) calls clean and in sync."""
        found: list[Violation] = []
        for h in self.handles:
            while True:
                try:
                    state = await h.state()
                    break
                except grpc.aio.AioRpcError as e:
                    if e.code() not in _RETRYABLE:
                        raise
                    await asyncio.sleep(0.05)
            found += self.marks.violations(h.log.uuid, state)
        return found

    async def stop(self) -> None:
        """Stop every mirror; errors of theirs are in :attr:`errors`.

        A mirror still retrying a request after twice the request timeout is
        cancelled and named in :attr:`errors`, so that a test whose Redis never
        came back fails with its own error instead of hanging here.
        """
        self._stop.set()
        self._paused.set()
        if not self._tasks:
            return
        _done, stuck = await asyncio.wait(self._tasks, timeout=2 * self._timeout)
        for t in stuck:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if stuck:
            self.errors.append(f"{len(stuck)} mirrors still retrying a request when stopped (cancelled)")
