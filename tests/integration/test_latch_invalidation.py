"""Another node's death ends this bridge's in-sync latch within the stated bound (docs/multi-node.md).

Node B is a production bridge (its read loop, lease keeper and log watcher) on
a socket pair; node A is a gRPC client that marks a region and then dies (stops
renewing its lease). B's in-sync latch is learnt first, so B answers IN_SYNC
itself; the latch's own time to live is set to a minute here, so only the
invalidation can end it. The checker polls B's IN_SYNC of A's region and the
region's sync bit in Redis, and measures how long after the bit turned 0 B
still answered 1: at most DELIVERY. The same race against a watcher that drops
the events shows the checker fails when invalidation is broken.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from bridge.latch import InSyncLatches
from bridge.lease import LogWatcher
from bridge.wire import RequestType as T
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.kernel_side import KernelStandIn
from harness.log_handle import LogHandle
from harness.servers import RedisProcess, logsvc_server
from logsvc.keys import log_keys

TTL = 0.6
REAPER = 0.05
DELIVERY = 0.5
"""Seconds from the dead node's region turning out of sync in Redis to this bridge answering it 0, at most."""
REGION = 5


class DeafWatcher(LogWatcher):
    """A deliberately broken invalidation: the stream is watched, its events are dropped."""

    def __init__(self, stub: pb_grpc.DirtyLogStub, latches: InSyncLatches):
        super().__init__(stub, _Deaf(latches))


class _Deaf:
    def __init__(self, latches: InSyncLatches):
        self._latches = latches

    def require_watch(self) -> None:
        self._latches.require_watch()

    def watching(self, ready: bool) -> None:
        self._latches.watching(ready)

    def forget_log(self, uuid: str) -> int:
        return 0


@pytest.fixture
async def leased(redis: RedisProcess) -> AsyncIterator[str]:
    """A logsvc with short leases and a fast reaper."""
    async with logsvc_server(redis.url, lease_ttl=TTL, reaper_interval=REAPER) as target:
        yield target


def u64(*values: int) -> bytes:
    """Native u64s, as the kernel packs them."""
    return struct.pack(f"={len(values)}Q", *values)


async def stale_window(target: str, redis_url: str, uuid: str, watcher: type[LogWatcher]) -> float:
    """Seconds B answered IN_SYNC 1 for A's region after that region turned out of sync (up to 3 s)."""
    node_b = pb.Node(name=f"b-{uuid[-12:]}", boot_id="boot-b")
    async with KernelStandIn(target, leased=True, latches=InSyncLatches(60.0), node=node_b, watcher=watcher) as b, \
            grpc.aio.insecure_channel(target) as channel:  # fmt: skip
        assert b.keeper is not None and b.watcher is not None
        await asyncio.wait_for(b.watcher.ready.wait(), 10)
        assert (await b.ask(T.CTR, b"1024 clustered-core 16", uuid=uuid)).error == 0
        assert (await b.ask(T.RESUME, uuid=uuid)).error == 0
        while (work := await b.ask(T.GET_RESYNC_WORK, uuid=uuid)).data[:8] == struct.pack("=q", 1):
            region = struct.unpack("=Q", work.data[8:16])[0]
            assert (await b.ask(T.SET_REGION_SYNC, struct.pack("=Qq", region, 1), uuid=uuid)).error == 0
        for _ in range(2):  # the first teaches the latch, the second is answered from it
            assert (await b.ask(T.IN_SYNC, u64(REGION), uuid=uuid)).data == struct.pack("=q", 1)
        assert b.bridge.answered_here["IN_SYNC"] >= 1
        a = LogHandle(pb_grpc.DirtyLogStub(channel), uuid, luid=2, node=f"a-{uuid[-12:]}", boot="boot-a")
        await a.acquire_lease()
        async with a.alive(TTL / 3):
            await a.ctr(1024, "clustered-core", "16")
            await a.resume()
            await a.mark(REGION)
        # ... and A dies: it renews no more
        r = aioredis.Redis.from_url(redis_url)
        sync = log_keys(uuid).sync
        handed_at = None
        last_one = None
        deadline = time.monotonic() + 15
        try:
            while time.monotonic() < deadline:
                if handed_at is None and await r.getbit(sync, REGION) == 0:
                    handed_at = time.monotonic()
                answer = (await b.ask(T.IN_SYNC, u64(REGION), uuid=uuid)).data
                if answer == struct.pack("=q", 1):
                    last_one = time.monotonic()
                if handed_at is not None and time.monotonic() - handed_at > 3:
                    break
                await asyncio.sleep(0.005)
        finally:
            await r.aclose()
        assert handed_at is not None, "A's region never went out of sync"
        return max(0.0, (last_one or 0.0) - handed_at)


async def test_a_dead_nodes_region_is_answered_out_of_sync_here_within_the_bound(
    leased: str, redis: RedisProcess, uuid: str
) -> None:
    """After A's hand-over, B's bridge stops answering IN_SYNC 1 from its latch within DELIVERY seconds."""
    stale = await stale_window(leased, redis.url, uuid, LogWatcher)
    assert stale <= DELIVERY, f"B answered A's region in sync {stale:.3f} s after it went out of sync"


async def test_the_checker_catches_a_broken_invalidation(leased: str, redis: RedisProcess, uuid: str) -> None:
    """With the events dropped, B keeps answering 1 from its latch: the same check fails."""
    stale = await stale_window(leased, redis.url, uuid, DeafWatcher)
    assert stale > DELIVERY, f"a deaf watcher should leave B answering 1; it stopped after {stale:.3f} s"
