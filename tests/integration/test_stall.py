"""No request of one log may hold up the others: every heavy request at 2^28 regions, measured.

A real redis-server (AOF, appendfsync always) and a real ``dmulog logsvc`` process;
a probe process asks IN_SYNC of a small log through that logsvc every few
milliseconds while another process makes one heavy request on a 2^28-region log
(harness/stall.py). What every other mirror waits for is the longest single
command Redis runs meanwhile; each test bounds it in units of one plain pass over a
2^28-bit bitmap measured in the same run (both from Redis's SLOWLOG, so neither an
fsync nor a busy core of this machine counts). Before bulk work was cut into bounded
Function calls, a CTR of 2^28 regions was one call of about 50 units (the probe
waited about a second), a reap of 262,144 marks 1.7 s, eight GetLogStates 4 s. The
probe's own latencies are printed with each run, not asserted: they are wall-clock
time on a shared machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dmulog.log_state import assemble
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle
from harness.servers import RedisProcess, start_logsvc
from harness.stall import BIG_REGIONS, HEAVY, REGION_SECTORS, Stall, measure

UNITS = 4.0
"""The longest command any heavy request may make Redis run, in unit passes (a step is 1 to 2)."""
SLACK = 0.002
"""Seconds added to the bound: a command of the size of nothing still takes a few µs."""


@pytest.fixture(scope="module")
def stalls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stall]]:
    """Every heavy request, run once each, in order, with the probe's view of it."""
    workdir = Path(tmp_path_factory.mktemp("stall"))
    # At nice -10 (when allowed): other work on a 2-core machine once made one step look 5 units long.
    redis = RedisProcess(workdir / "redis", nice=-10).start()
    logsvc = start_logsvc(workdir / "logsvc.log", redis_url=redis.url)
    try:
        results = measure(logsvc.target, workdir, redis.url)
        print("\n" + Stall.header() + "\n" + "\n".join(s.line() for s in results.values()))
        yield results
    finally:
        logsvc.kill()
        redis.kill()


@pytest.mark.load
@pytest.mark.parametrize("what", list(HEAVY))
def test_a_heavy_request_never_stalls_another_log(stalls: dict[str, Stall], what: str) -> None:
    """While one heavy request of a 2^28-region log runs, Redis never runs one command longer than 4 unit passes."""
    stall = stalls[what]
    assert stall.longest_call <= UNITS * stall.unit + SLACK, Stall.header() + "\n" + stall.line()


async def test_get_log_state_of_a_huge_log_points_to_read_log_state(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """GetLogState answers in one message, so for a log too large for one it says to use ReadLogState."""
    log = LogHandle(stub, uuid)
    await log.ctr((16 << 20) * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, True) == (e.value.code(), "ReadLogState" in e.value.details())


DEFAULT_RECEIVE_LIMIT = 4 << 20
"""What a gRPC client of any language receives in one message unless told otherwise."""


@pytest.mark.load
async def test_a_client_with_default_limits_reads_a_2_28_region_log(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """ReadLogState: every part under 4 MiB, 2 x 32 MiB of bitmaps and the marks put back together, bit for bit."""
    log = LogHandle(stub, uuid)
    await log.ctr(BIG_REGIONS * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
    await log.resume()
    last = BIG_REGIONS - 1
    await log.mark(0, 12345, last)

    parts = [p async for p in stub.ReadLogState(pb.ReadLogStateRequest(uuid=uuid), timeout=300)]
    state = assemble(parts)

    assert max(p.ByteSize() for p in parts) < DEFAULT_RECEIVE_LIMIT  # the stub's channel has gRPC's defaults
    assert (BIG_REGIONS, BIG_REGIONS // 8, BIG_REGIONS // 8) == (
        state.summary.region_count, len(state.in_sync_bitmap), len(state.dirty_bitmap))
    assert [0, 12345, last] == [m.region for m in state.marks]
    dirty_bytes = {i: b for i, b in enumerate(state.dirty_bitmap) if b}
    assert {0: 0x80, 12345 // 8: 0x80 >> 12345 % 8, last // 8: 0x01} == dirty_bytes
    assert state.in_sync_bitmap == b"\xff" * (BIG_REGIONS // 8)  # nosync: every region in sync
