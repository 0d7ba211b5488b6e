"""A request answered DEADLINE_EXCEEDED is never carried out afterwards, and a burst only queues.

Against real redis-server processes: one frozen with SIGSTOP while a request waits
for it (cancelling the coroutine cannot unsend a command Redis has not run yet; the
Function itself must refuse it when Redis wakes), and one flooded with more
requests at once than logsvc has Redis connections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, dirty
from harness.servers import RedisProcess, logsvc_server, redis_process
from logsvc.store import Store

OK = grpc.StatusCode.OK.value[0]
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test alone (it gets frozen)."""
    with redis_process(tmp_path / "r") as r:
        yield r


@pytest.fixture
async def marked(own_redis: RedisProcess) -> AsyncIterator[tuple[RedisProcess, str, LogHandle]]:
    """A logsvc on that Redis and a log with region 3 marked, so that a CLEAR would make it clean."""
    async with logsvc_server(own_redis.url) as target, grpc.aio.insecure_channel(target) as ch:
        log = LogHandle(pb_grpc.DirtyLogStub(ch), "deadline-1")
        await log.ctr(64, "dmulog", "8", "nosync")
        await log.resume()
        await log.mark(3)
        yield own_redis, target, log


def _freeze(r: RedisProcess) -> None:
    assert r.proc is not None
    os.kill(r.proc.pid, signal.SIGSTOP)


def _thaw(r: RedisProcess) -> None:
    assert r.proc is not None
    os.kill(r.proc.pid, signal.SIGCONT)


async def _after_thaw(log: LogHandle) -> list[int]:
    """The dirty regions once Redis has woken and run whatever was waiting for it."""
    await asyncio.sleep(0.5)
    return dirty(await log.state())


async def test_a_clear_abandoned_on_an_exchange_stream_is_never_applied(
    marked: tuple[RedisProcess, str, LogHandle],
) -> None:
    """A CLEAR that times out while Redis is frozen is answered DEADLINE_EXCEEDED and, Redis back, not done."""
    r, target, log = marked
    async with grpc.aio.insecure_channel(target) as ch:
        stream = pb_grpc.DirtyLogStub(ch).Exchange()
        _freeze(r)
        try:
            clear = pb.ClearRegionRequest(log=log.log, node=log.node, regions=[3])
            await stream.write(pb.ExchangeRequest(calls=[pb.ExchangeCall(id=1, timeout_ms=400, clear_region=clear)]))
            result = (await asyncio.wait_for(stream.read(), 10)).results[0]
        finally:
            _thaw(r)
        await stream.done_writing()
    assert (1, DEADLINE_EXCEEDED) == (result.id, result.code)
    assert [3] == await _after_thaw(log)


async def test_a_unary_clear_past_its_deadline_is_never_applied(marked: tuple[RedisProcess, str, LogHandle]) -> None:
    """The same for a unary ClearRegion whose gRPC deadline passes while Redis is frozen."""
    r, _target, log = marked
    _freeze(r)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await log.stub.ClearRegion(pb.ClearRegionRequest(log=log.log, node=log.node, regions=[3]), timeout=0.4)
    finally:
        _thaw(r)
    assert grpc.StatusCode.DEADLINE_EXCEEDED == e.value.code()
    assert [3] == await _after_thaw(log)


async def test_a_request_within_its_deadline_runs_when_redis_wakes(
    marked: tuple[RedisProcess, str, LogHandle],
) -> None:
    """The refusal is about the deadline, not about Redis having been frozen: a request with time left is done."""
    r, target, log = marked
    async with grpc.aio.insecure_channel(target) as ch:
        stream = pb_grpc.DirtyLogStub(ch).Exchange()
        _freeze(r)
        clear = pb.ClearRegionRequest(log=log.log, node=log.node, regions=[3])
        await stream.write(pb.ExchangeRequest(calls=[pb.ExchangeCall(id=1, timeout_ms=5000, clear_region=clear)]))
        await asyncio.sleep(0.4)
        _thaw(r)
        result = (await asyncio.wait_for(stream.read(), 10)).results[0]
        await stream.done_writing()
    assert (1, OK) == (result.id, result.code)
    assert [] == await _after_thaw(log)


async def test_redis_clock_offset_is_measured(own_redis: RedisProcess) -> None:
    """The store reads how far Redis's clock is from its own; on one machine that is next to nothing."""
    store = Store.from_url(own_redis.url)
    try:
        await store.measure_clock()
        assert abs(store._offset) < 0.05
        assert time.monotonic() - store._offset_at < 5
    finally:
        await store.close()


@pytest.mark.load
async def test_a_burst_larger_than_the_pool_queues_instead_of_failing(redis: RedisProcess, uuid: str) -> None:
    """40,000 IN_SYNCs sent at once on two streams, far more than Redis connections: every one is answered OK."""
    async with logsvc_server(redis.url) as target, grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.DirtyLogStub(ch)
        log = LogHandle(stub, uuid)
        await log.ctr(64, "dmulog", "8", "nosync")
        await log.resume()
        request = pb.InSyncRequest(log=log.log, node=log.node, region=1)

        async def burst(n: int) -> list[int]:
            stream = stub.Exchange()
            calls = [pb.ExchangeCall(id=i, in_sync=request) for i in range(1, n + 1)]
            for first in range(0, n, 500):
                await stream.write(pb.ExchangeRequest(calls=calls[first : first + 500]))
            codes: list[int] = []
            while len(codes) < n:
                codes += [result.code for result in (await stream.read()).results]
            await stream.done_writing()
            return codes

        codes = [c for part in await asyncio.gather(burst(20000), burst(20000)) for c in part]
    assert (40000, {OK}) == (len(codes), set(codes))
