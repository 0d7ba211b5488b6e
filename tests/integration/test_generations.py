"""A log that lost writes in a failover is never trusted by the node that was answered them.

A failover to a replica that lacked the last writes leaves Redis with the
log as it was a moment earlier. These tests make exactly that state: they
copy the log's keys (DUMP), go on through the production bridge, then put the
copies back (RESTORE REPLACE): the same keys, values and generation a lagging
replica would have. The bridge sends back the generation it was answered, so
the next request finds the log behind it and every region out of sync
(lua/dmulog.lua, "Generations"); a client that sends no generation is
answered from the old state, which is what shows that the check is the
generation and not something else.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bridge.wire import RequestType as T
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.kernel_side import LUID, KernelStandIn, u64
from harness.log_handle import dirty, out_of_sync
from harness.servers import RedisProcess
from logsvc.keys import log_keys

REGIONS = 16


@pytest.fixture
async def kernel(logsvc: str) -> AsyncIterator[KernelStandIn]:
    """A production bridge between the kernel's stand-in and the test's logsvc."""
    async with KernelStandIn(logsvc) as k:
        yield k


class Snapshot:
    """Every key of one log, copied now and put back later: a replica that missed what came between."""

    def __init__(self, url: str, uuid: str):
        self._redis = aioredis.Redis.from_url(url)
        self._keys = list(log_keys(uuid))
        self._dumps: dict[str, bytes | None] = {}

    async def take(self) -> None:
        """Copy every key (absent ones are remembered as absent)."""
        self._dumps = {k: await self._redis.dump(k) for k in self._keys}

    async def restore(self) -> None:
        """Put the copies back, as a failover to the lagging replica would."""
        for key, dumped in self._dumps.items():
            await self._redis.delete(key)
            if dumped is not None:
                await self._redis.restore(key, 0, dumped)
        await self._redis.aclose()


async def activate(kernel: KernelStandIn, uuid: str, args: bytes = b"dmulog 8 nosync") -> None:
    """CTR and RESUME a table of REGIONS regions (nosync: all clean and in sync, so a lost mark shows)."""
    assert (await kernel.ask(T.CTR, b"%d %s" % (REGIONS * 8, args), uuid=uuid)).error == 0
    assert (await kernel.ask(T.RESUME, uuid=uuid)).error == 0


def answer(reply: bytes) -> int:
    """An IS_CLEAN or IN_SYNC reply's value."""
    return int(struct.unpack("=q", reply)[0])


async def test_a_node_is_never_answered_from_a_state_that_lost_its_marks(
        kernel: KernelStandIn, redis: RedisProcess, uuid: str, stub: pb_grpc.DirtyLogStub) -> None:  # fmt: skip
    """Region 3's mark is acknowledged, then lost: the bridge's next IS_CLEAN and IN_SYNC still say dirty."""
    await activate(kernel, uuid)
    snapshot = Snapshot(redis.url, uuid)
    await snapshot.take()
    assert (await kernel.ask(T.MARK_REGION, u64(3), uuid=uuid)).error == 0
    await snapshot.restore()

    # A client without the generation is answered from the old state: the mark is gone.
    plain = pb.IsCleanRequest(log=pb.LogRef(uuid=uuid, luid=LUID), node=pb.Node(name="node-a", boot_id="boot-1"),
                              region=3)  # fmt: skip
    assert (await stub.IsClean(plain)).clean

    assert answer((await kernel.ask(T.IS_CLEAN, u64(3), uuid=uuid)).data) == 0
    assert answer((await kernel.ask(T.IN_SYNC, u64(3), uuid=uuid)).data) == 0
    state = await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))
    assert (out_of_sync(state), dirty(state)) == (list(range(REGIONS)), list(range(REGIONS)))
    # The loss is handled once: the same node's next requests are answered as usual.
    assert (await kernel.ask(T.SET_REGION_SYNC, struct.pack("=Qq", 5, 1), uuid=uuid)).error == 0
    assert answer((await kernel.ask(T.IN_SYNC, u64(5), uuid=uuid)).data) == 1


async def test_a_log_lost_whole_comes_back_out_of_sync_whatever_its_table_says(
        kernel: KernelStandIn, redis: RedisProcess, uuid: str, stub: pb_grpc.DirtyLogStub) -> None:  # fmt: skip
    """The failover lost the log itself: the kernel's replayed CTR (nosync) gets every region out of sync."""
    snapshot = Snapshot(redis.url, uuid)
    await snapshot.take()  # nothing yet
    await activate(kernel, uuid)
    assert (await kernel.ask(T.MARK_REGION, u64(7), uuid=uuid)).error == 0
    await snapshot.restore()

    assert (await kernel.ask(T.IS_CLEAN, u64(7), uuid=uuid)).error != 0  # the instance is gone: the kernel replays
    await activate(kernel, uuid)
    state = await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))
    assert out_of_sync(state) == list(range(REGIONS))
    assert answer((await kernel.ask(T.IS_CLEAN, u64(7), uuid=uuid)).data) == 0


async def test_a_dtr_forgets_the_generation(kernel: KernelStandIn, uuid: str, stub: pb_grpc.DirtyLogStub) -> None:
    """A log removed by its last DTR and made again starts afresh: no loss is taken for one."""
    await activate(kernel, uuid, b"clustered-core 8 nosync")
    assert (await kernel.ask(T.MARK_REGION, u64(1), uuid=uuid)).error == 0
    assert (await kernel.ask(T.DTR, uuid=uuid)).error == 0
    await activate(kernel, uuid, b"clustered-core 8 nosync")
    state = await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))
    assert out_of_sync(state) == []


async def test_every_kernel_response_carries_the_generation(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """Writers advance the node's generation, readers report it; another node's writes do not move it."""
    ref, node = pb.LogRef(uuid=uuid, luid=1), pb.Node(name="gen-a", boot_id="b")
    ctr = await stub.Ctr(pb.CtrRequest(log=ref, node=node, target_sectors=64, log_type="dmulog", args=["8"]))
    resumed = await stub.Resume(pb.ResumeRequest(log=ref, node=node))
    marked = await stub.MarkRegion(pb.MarkRegionRequest(log=ref, node=node, regions=[1]))
    clean = await stub.IsClean(pb.IsCleanRequest(log=ref, node=node, region=1))
    assert (ctr.generation, resumed.generation, marked.generation, clean.generation) == (1, 2, 3, 3)
    other = pb.Node(name="gen-b", boot_id="b")
    await stub.Ctr(pb.CtrRequest(log=pb.LogRef(uuid=uuid, luid=2), node=other, target_sectors=64, log_type="dmulog",
                                 args=["8"]))  # fmt: skip
    assert (await stub.IsClean(pb.IsCleanRequest(log=ref, node=node, region=1))).generation == 3
    # A generation above the log's is taken for a loss, never ignored: every region out of sync, then answered.
    high = await stub.IsClean(pb.IsCleanRequest(log=pb.LogRef(uuid=uuid, luid=1, generation=9), node=node, region=2))
    assert (high.clean, high.generation) == (False, 9)
