"""Requests the bridge answers itself: IN_SYNC of a latched instance, FLUSH without marks.

The bridge runs its production read path (Bridge.serve on a socket, peek,
answer or journal, consume) against a real logsvc and Redis; the kernel
stand-in's socket pair (harness/kernel_side.py) takes the place of netlink
and carries exact kernel datagrams.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge import wire
from bridge.journal import Journal
from bridge.latch import InSyncLatches, Key
from bridge.wire import RequestType as T
from dmulog.v1 import dmulog_pb2 as pb
from harness.kernel_side import LUID, KernelStandIn, next_seq, u64


class LatchKernel(KernelStandIn):
    """The kernel stand-in with the requests these tests repeat."""

    async def ok(self, rtype: int, data: bytes = b"", *, uuid: str) -> wire.Reply:
        """One request, its reply (any error fails the test)."""
        reply = await self.ask(rtype, data, uuid=uuid)
        assert reply.error == 0, f"{T(rtype).name}: error {reply.error}"
        return reply

    async def in_sync(self, region: int, *, uuid: str) -> bool:
        reply = await self.ok(T.IN_SYNC, u64(region), uuid=uuid)
        return bool(struct.unpack("=q", reply.data)[0])

    async def set_sync(self, region: int, in_sync: bool, *, uuid: str) -> None:
        await self.ok(T.SET_REGION_SYNC, struct.pack("=Qq", region, int(in_sync)), uuid=uuid)

    async def create_synced(self, uuid: str) -> None:
        """A clustered-core log of 8 regions, resynced as the kernel would: its latch is set."""
        await self.ok(T.CTR, b"120 clustered-core 16", uuid=uuid)
        await self.ok(T.RESUME, uuid=uuid)
        while True:
            has_work, region = struct.unpack("=qQ", (await self.ok(T.GET_RESYNC_WORK, uuid=uuid)).data)
            if not has_work:
                return
            await self.set_sync(region, True, uuid=uuid)


@pytest.fixture
async def kernel(logsvc: str) -> AsyncIterator[LatchKernel]:
    """A kernel stand-in in front of a production bridge with latches known for a minute."""
    async with LatchKernel(logsvc, latches=InSyncLatches(ttl=60.0)) as k:
        yield k


async def test_in_sync_of_a_latched_instance_is_answered_in_the_bridge(kernel: LatchKernel, uuid: str) -> None:
    """Once logsvc says the instance is latched, IN_SYNC is answered here (1 for every region) until a resume."""
    await kernel.create_synced(uuid)
    assert await kernel.in_sync(3, uuid=uuid)  # logsvc answers, and says latched
    assert kernel.bridge.answered_here["IN_SYNC"] == 0
    await kernel.set_sync(4, False, uuid=uuid)  # a write failed on a leg: the latch still answers 1
    assert [await kernel.in_sync(r, uuid=uuid) for r in range(8)] == [True] * 8
    assert kernel.bridge.answered_here["IN_SYNC"] == 8
    await kernel.ok(T.RESUME, uuid=uuid)  # the kernel's replayed RESUME ends the latch
    assert not await kernel.in_sync(4, uuid=uuid)
    assert await kernel.in_sync(3, uuid=uuid)
    assert kernel.bridge.answered_here["IN_SYNC"] == 8
    assert kernel.bridge.counts["IN_SYNC"] == 11


async def test_a_suspended_instance_is_asked_again(kernel: LatchKernel, uuid: str) -> None:
    """POSTSUSPEND ends the latch in logsvc, so the bridge forgets it too."""
    await kernel.create_synced(uuid)
    await kernel.set_sync(4, False, uuid=uuid)
    assert await kernel.in_sync(4, uuid=uuid)
    await kernel.ok(T.PRESUSPEND, uuid=uuid)
    await kernel.ok(T.POSTSUSPEND, uuid=uuid)
    assert not await kernel.in_sync(4, uuid=uuid)
    assert kernel.bridge.answered_here["IN_SYNC"] == 0


async def test_an_unlatched_instance_is_always_asked(kernel: LatchKernel, uuid: str) -> None:
    """A log still resyncing has no latch: every IN_SYNC goes to logsvc, which knows the bits."""
    await kernel.ok(T.CTR, b"120 clustered-core 16", uuid=uuid)
    await kernel.ok(T.RESUME, uuid=uuid)
    assert [await kernel.in_sync(0, uuid=uuid) for _ in range(3)] == [False] * 3
    await kernel.set_sync(0, True, uuid=uuid)
    assert await kernel.in_sync(0, uuid=uuid)
    assert kernel.bridge.answered_here["IN_SYNC"] == 0


async def test_flush_without_marks_is_answered_in_the_bridge(kernel: LatchKernel, uuid: str, stub: object) -> None:
    """A FLUSH with nothing to commit is answered here; one carrying marks still reaches logsvc."""
    await kernel.create_synced(uuid)
    await kernel.ok(T.MARK_REGION, u64(2), uuid=uuid)
    await kernel.ok(T.FLUSH, uuid=uuid)
    assert kernel.bridge.answered_here["FLUSH"] == 1
    await kernel.ok(T.FLUSH, u64(5, 6), uuid=uuid)
    assert kernel.bridge.answered_here["FLUSH"] == 1
    state = await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))  # type: ignore[attr-defined]
    assert sorted(m.region for m in state.marks) == [2, 5, 6]


async def test_a_malformed_flush_is_not_answered_here(kernel: LatchKernel, uuid: str) -> None:
    """The shortcut decodes strictly: a FLUSH whose payload is not whole regions gets EINVAL the usual way."""
    await kernel.create_synced(uuid)
    reply = await kernel.ask(T.FLUSH, b"\1\2\3", uuid=uuid)
    assert reply.error < 0
    assert kernel.bridge.answered_here["FLUSH"] == 0


async def test_a_request_answered_from_the_journal_is_not_answered_again_from_the_queue(
    logsvc: str, uuid: str, tmp_path: Path
) -> None:
    """Killed between journalling a request and consuming it, a bridge leaves it in both: its successor answers once.

    The successor replays the journal first, then reads the socket it
    inherited, where the same datagram still waits: that copy is consumed
    unanswered (answering it again could let an old CLEAR land after a newer
    MARK of its region), and what follows it is served as usual.
    """
    async with LatchKernel(logsvc, latches=InSyncLatches(ttl=0)) as k:
        await k.ok(T.CTR, b"120 clustered-core 16", uuid=uuid)
        await k.ok(T.RESUME, uuid=uuid)
    mark_seq, count_seq = next_seq(), next_seq()
    mark = wire.encode_request(T.MARK_REGION, seq=mark_seq, luid=LUID, uuid=uuid, data=u64(3))
    dead = Journal(tmp_path / "inflight")
    dead.record(mark)
    dead.close()  # the bridge is gone; the datagram is still in the socket's queue
    successor = KernelStandIn(logsvc, journal=Journal(tmp_path / "inflight"))
    successor.send_datagram(mark)
    successor.send(T.GET_SYNC_COUNT, uuid=uuid, seq=count_seq)
    async with successor:
        assert 1 == successor.replayed
        replies = [await successor.reply() for _ in range(2)]
        assert [(mark_seq, 0), (count_seq, 0)] == [(r.seq, r.error) for r in replies]
        assert {"MARK_REGION": 1, "GET_SYNC_COUNT": 1} == successor.bridge.counts


# Invalidation raced against reads -------------------------------------------


@dataclass
class Timeline:
    """What the kernel saw and when (monotonic seconds), to judge every IN_SYNC answer afterwards."""

    reads: list[tuple[float, float, bool]] = field(default_factory=list)  # sent, replied, answer
    # Windows in which the latch may be on: from the SET_REGION_SYNC that completes the
    # log being sent, to the reply of the lifecycle request that ends it.
    may_be_latched: list[tuple[float, float]] = field(default_factory=list)
    # Windows in which it may be off: from that lifecycle request being sent, to the
    # reply of the SET_REGION_SYNC that sets it again.
    may_be_unlatched: list[tuple[float, float]] = field(default_factory=list)
    # Lifecycle requests in flight: [sent, replied].
    lifecycle: list[tuple[float, float]] = field(default_factory=list)

    def violations(self) -> list[str]:
        """Every read whose answer logsvc could not have given at any instant between its request and reply."""

        def meets(s: float, r: float, windows: list[tuple[float, float]]) -> bool:
            return any(s <= b and a <= r for a, b in windows)

        out = []
        for s, r, answer in self.reads:
            # Region 4's bit is 0 throughout (but while the relatching request is
            # in flight, which the latched windows cover): 1 only from the latch.
            if answer and not meets(s, r, self.may_be_latched):
                out.append(f"IN_SYNC sent at {s:.6f}, answered 1 at {r:.6f}: the latch was off the whole time")
            if not answer and not meets(s, r, self.may_be_unlatched):
                out.append(f"IN_SYNC sent at {s:.6f}, answered 0 at {r:.6f}: the latch was on the whole time")
        return out

    def raced(self) -> int:
        """Reads in flight while a lifecycle request was: the race this test is about."""
        return sum(any(s <= b and a <= r for a, b in self.lifecycle) for s, r, _ in self.reads)


async def race(kernel: LatchKernel, uuid: str, *, cycles: int, readers: int, seed: int) -> Timeline:
    """Readers ask IN_SYNC(4) back to back while the latch is ended and set again, ``cycles`` times.

    Each cycle ends the latch with a RESUME (replayed, as the kernel's reconnect
    loop sends it) or a POSTSUSPEND + RESUME, lets the readers run while it is
    off, then completes the log again (SET_REGION_SYNC(4, 1)) and clears the
    bit (SET_REGION_SYNC(4, 0)): latched again, with the bit still 0.
    """
    rnd = random.Random(seed)
    await kernel.create_synced(uuid)
    t = Timeline()
    clock = time.monotonic
    start = clock()
    await kernel.set_sync(4, False, uuid=uuid)
    on_from, stop = start, asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            s = clock()
            answer = await kernel.in_sync(4, uuid=uuid)
            t.reads.append((s, clock(), answer))

    tasks = [asyncio.create_task(reader()) for _ in range(readers)]
    try:
        for _ in range(cycles):
            await asyncio.sleep(rnd.uniform(0.005, 0.03))  # latched: reads may be answered here
            off_from = clock()
            if rnd.random() < 0.5:
                await kernel.ok(T.POSTSUSPEND, uuid=uuid)
            await kernel.ok(T.RESUME, uuid=uuid)
            t.lifecycle.append((off_from, clock()))
            t.may_be_latched.append((on_from, clock()))
            await asyncio.sleep(rnd.uniform(0.01, 0.03))  # unlatched: every read must say 0
            on_from = clock()
            await kernel.set_sync(4, True, uuid=uuid)
            t.may_be_unlatched.append((off_from, clock()))
            await kernel.set_sync(4, False, uuid=uuid)
        await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    t.may_be_latched.append((on_from, clock()))
    return t


async def test_invalidation_races_against_reads(logsvc: str, uuid: str) -> None:
    """No IN_SYNC answer, from the bridge or from logsvc, is one logsvc could not have given at that time.

    Eight readers keep IN_SYNC(4) in flight at all times while the latch is
    ended and set again 30 times, so answers asked before a RESUME arrive after
    it, and reads are asked while a RESUME is on its way on another stream.
    """
    async with LatchKernel(logsvc, latches=InSyncLatches(ttl=60.0)) as kernel:
        t = await race(kernel, uuid, cycles=30, readers=8, seed=20261130)
        answered_here = kernel.bridge.answered_here["IN_SYNC"]
    assert t.violations() == []
    # The test exercised what it is about: cached answers, logsvc answers, both
    # answers, and reads overlapping a lifecycle request.
    assert answered_here > 100
    assert len(t.reads) - answered_here > 100
    assert {a for _, _, a in t.reads} == {True, False}
    assert t.raced() > 30


class _IgnoresLifecycle(InSyncLatches):
    """A broken cache: forgets nothing when an instance resumes."""

    def begin(self, key: Key) -> None:
        pass

    def end(self, key: Key, *, gone: bool = False) -> None:
        pass


async def test_the_race_test_catches_a_cache_that_ignores_resumes(logsvc: str, uuid: str) -> None:
    """The checker above is not vacuous: a bridge that keeps its latch over a RESUME is caught at once."""
    async with LatchKernel(logsvc, latches=_IgnoresLifecycle(ttl=60.0)) as kernel:
        t = await race(kernel, uuid, cycles=5, readers=4, seed=1)
    assert len(t.violations()) > 0
