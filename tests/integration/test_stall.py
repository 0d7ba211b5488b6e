"""No request of one log may hold up the others: every heavy request at 2^28 regions, measured.

A real redis-server (AOF, appendfsync always) and a real ``dmulog logsvc`` process;
a probe process asks IN_SYNC of a small log through that logsvc every few
milliseconds while another process makes one heavy request on a 2^28-region log
(harness/stall.py). Each test bounds the probe's worst latency meanwhile: what every
other mirror would have waited for. Before bulk work was cut into bounded Function
calls, a CTR of 2^28 regions stalled the probe for about a second and a reap of
262,144 marks for 1.7 s; eight GetLogStates of such a log for 4 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle
from harness.servers import RedisProcess, start_logsvc
from harness.stall import HEAVY, REGION_SECTORS, Stall, measure

BOUND = 0.100
"""Worst latency another log may see during any one heavy request (seconds)."""


@pytest.fixture(scope="module")
def stalls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stall]]:
    """Every heavy request, run once each, in order, with the probe's view of it."""
    workdir = Path(tmp_path_factory.mktemp("stall"))
    redis = RedisProcess(workdir / "redis").start()
    logsvc = start_logsvc(workdir / "logsvc.log", redis_url=redis.url)
    try:
        results = measure(logsvc.target, workdir)
        print("\n" + Stall.header() + "\n" + "\n".join(s.line() for s in results.values()))
        yield results
    finally:
        logsvc.kill()
        redis.kill()


@pytest.mark.parametrize("what", list(HEAVY))
def test_a_heavy_request_never_stalls_another_log(stalls: dict[str, Stall], what: str) -> None:
    """While one heavy request of a 2^28-region log runs, no request of another log waits 100 ms or more."""
    stall = stalls[what]
    assert stall.worst < BOUND, stall.line()


async def test_get_log_state_of_a_huge_log_points_to_read_log_state(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """GetLogState answers in one message, so for a log too large for one it says to use ReadLogState."""
    log = LogHandle(stub, uuid)
    await log.ctr((16 << 20) * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))
    assert (grpc.StatusCode.RESOURCE_EXHAUSTED, True) == (e.value.code(), "ReadLogState" in e.value.details())
