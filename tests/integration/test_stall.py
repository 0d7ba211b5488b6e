"""No request of one log may hold up the others: every heavy request at 2^28 regions, measured.

A real redis-server (AOF, appendfsync always) and a real ``dmulog logsvc`` process;
a probe process asks IN_SYNC of a small log through that logsvc every few
milliseconds while another process makes one heavy request on a 2^28-region log
(tests/stall.py). Each test bounds the probe's worst latency meanwhile: what every
other mirror would have waited for. Before bulk work was cut into bounded Function
calls, a CTR of 2^28 regions stalled the probe for about a second and a reap of
262,144 marks for 1.7 s; eight GetLogStates of such a log for 4 s.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from tests.servers import LogHandle, RedisProcess
from tests.stall import BIG_REGIONS, REGION_SECTORS, Stall, heavy_node, probe

BOUND = 0.100
"""Worst latency another log may see during any one heavy request (seconds)."""
MARKS = 262_144


def _start_logsvc(redis_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = workdir / "logsvc.sock"
    proc = subprocess.Popen([sys.executable, "-m", "dmulog", "--log-level", "warning", "logsvc", "--listen",
                             f"unix:{sock}", "--redis", redis_url], stdin=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("logsvc did not start")
        time.sleep(0.05)
    return proc, f"unix:{sock}"


async def _prepare(target: str) -> None:
    """The logs the heavy requests work on, beyond the ones they create themselves."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        node = heavy_node()
        for uuid in ("stall-reap", "stall-drop"):
            log = LogHandle(stub, uuid, luid=1, node=node.name, boot=node.boot_id)
            await log.ctr(MARKS * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
            await log.resume()
            for start in range(0, MARKS, 4096):
                await log.mark(*range(start, start + 4096))
        # A persistent table of half the size, gone; then the full size constructed: its
        # RESUME grows the dirty bits.
        half = LogHandle(stub, "stall-grow", luid=2, node=node.name, boot=node.boot_id)
        await half.ctr(BIG_REGIONS // 2 * REGION_SECTORS, "dmulog", str(REGION_SECTORS))
        await half.resume()
        await half.suspend()
        await half.dtr()
        full = half.other(luid=1)
        await full.ctr(BIG_REGIONS * REGION_SECTORS, "dmulog", str(REGION_SECTORS))


@pytest.fixture(scope="module")
def stalls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stall]]:
    """Every heavy request, run once each, in order, with the probe's view of it."""
    import asyncio

    workdir = Path(tmp_path_factory.mktemp("stall"))
    redis = RedisProcess(workdir / "redis").start()
    logsvc, target = _start_logsvc(redis.url, workdir)
    try:
        asyncio.run(_prepare(target))
        with probe(target, workdir) as p:
            runs = [
                ("ctr", p.heavy("CTR of a new 2^28-region log", "ctr", "stall-big")),
                ("resume", p.heavy("its first RESUME (dirty bits to sync bits)", "resume", "stall-big")),
                ("ctr-nosync", p.heavy("CTR of a new 2^28-region nosync log", "ctr-nosync", "stall-nosync")),
                ("resume-grown", p.heavy("RESUME of a table grown to 2^28 regions", "resume", "stall-grow")),
                ("read-state", p.heavy("8 ReadLogStates of a 2^28-region log", "read-state", "stall-big", 8)),
                ("list-logs", p.heavy("ListLogs with those logs", "list-logs", "-")),
                ("reap", p.heavy(f"CTR of a new boot reaping {MARKS} marks", "ctr-new-boot", "stall-reap")),
                ("drop", p.heavy(f"last DTR of a node dropping {MARKS} marks", "dtr", "stall-drop")),
            ]
        results = dict(runs)
        print("\n" + Stall.header() + "\n" + "\n".join(s.line() for s in results.values()))
        yield results
    finally:
        logsvc.kill()
        logsvc.wait()
        redis.kill()


@pytest.mark.parametrize("what", ["ctr", "resume", "ctr-nosync", "resume-grown", "read-state", "list-logs", "reap",
                                  "drop"])  # fmt: skip
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
