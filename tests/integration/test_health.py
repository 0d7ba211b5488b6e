"""Health that means something: logsvc's follows its Redis, the bridge's its socket, logsvc and lease.

Every test here has a redis-server of its own: they freeze it and delete its
functions, which would break any other test sharing it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import shlex
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bridge.client import LogsvcClient
from bridge.health import BridgeHealth, channel_state
from bridge.lease import LeaseKeeper
from dmulog.cli import ExitStatus, _parser
from dmulog.health import COMMAND, check
from dmulog.v1 import dmulog_pb2 as pb
from harness.redis_ha import ClusterGroup
from harness.servers import RedisProcess, logsvc_server, redis_process, start_logsvc
from logsvc.health import HealthMonitor
from logsvc.redis_acl import setuser_line
from logsvc.redis_connect import RedisSecurity
from logsvc.server import SERVICE_NAME
from logsvc.store import LIBRARY_NAME, Store

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, thawed at the end if the test left it frozen."""
    with redis_process(tmp_path / "redis") as r:
        yield r
        if r.proc is not None and r.proc.poll() is None:
            os.kill(r.proc.pid, signal.SIGCONT)  # a test that failed while it was frozen


@pytest.fixture
async def target(own_redis: RedisProcess) -> AsyncIterator[str]:
    """An in-process logsvc (with its health monitor, as harness/servers.py starts it) on ``own_redis``."""
    async with logsvc_server(own_redis.url) as address:
        yield address


async def status_of(address: str, service: str = "") -> int:
    """One health Check; NOT_FOUND raises."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=5)  # fmt: skip
        return int(reply.status)


async def wait_status(address: str, wanted: int, within: float) -> float:
    """Seconds until both services answer ``wanted``; fails past ``within``."""
    start = time.monotonic()
    while True:
        got = [await status_of(address, s) for s in ("", SERVICE_NAME)]
        if got == [wanted, wanted]:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"still {got} after {within} s, wanted {wanted}"
        await asyncio.sleep(0.1)


def run_health(*argv: str) -> tuple[ExitStatus, str]:
    """``dmulog health ARGV`` through its module (pyproject registers it as a command)."""
    parser = _parser({}, [COMMAND])
    args: argparse.Namespace = parser.parse_args(["health", *argv])
    out = io.StringIO()
    return COMMAND.run(args, ["health", *argv], out), out.getvalue().strip()


async def test_serving_while_redis_answers_not_serving_while_frozen(
    target: str, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Frozen, logsvc cannot answer a request: NOT_SERVING within seconds, one transition logged each way."""
    caplog.set_level(logging.INFO, "dmulog")
    await wait_status(target, SERVING, 1)
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        took = await wait_status(target, NOT_SERVING, 6)
        assert await asyncio.to_thread(run_health, "--logsvc", target) == (ExitStatus.ERROR, "NOT_SERVING")
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    back = await wait_status(target, SERVING, 4)
    assert await asyncio.to_thread(run_health, "--logsvc", target) == (ExitStatus.OK, "SERVING")
    changes = [r for r in caplog.records if r.getMessage() == "health_changed"]
    assert [r.event_data["status"] for r in changes] == ["NOT_SERVING", "SERVING"]  # type: ignore[attr-defined]
    assert "redis did not answer" in changes[0].event_data["reason"]  # type: ignore[attr-defined]
    print(f"NOT_SERVING {took:.2f} s after SIGSTOP, SERVING {back:.2f} s after SIGCONT")


async def test_a_deleted_library_is_repaired_logged_and_serving(
    target: str, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A request would reload it and succeed; so does the health check, which logs it as a request does."""
    caplog.set_level(logging.INFO, "dmulog")
    r = aioredis.Redis.from_url(own_redis.url)
    try:
        await r.execute_command("FUNCTION DELETE", LIBRARY_NAME)
        deadline = time.monotonic() + 3
        while not [x for x in caplog.records if x.getMessage() == "function_library_missing"]:
            assert time.monotonic() < deadline, "the health check never noticed the library was gone"
            await asyncio.sleep(0.05)
        assert await r.execute_command("FUNCTION LIST", "LIBRARYNAME", LIBRARY_NAME)  # loaded again
    finally:
        await r.aclose()
    await wait_status(target, SERVING, 1)
    assert not [x for x in caplog.records if x.getMessage() == "health_changed"]


async def test_a_library_that_cannot_be_reloaded_is_not_serving(own_redis: RedisProcess, tmp_path: Path) -> None:
    """The failing checker: a Redis that refuses FUNCTION LOAD after losing the library."""
    r = aioredis.Redis.from_url(own_redis.url)
    async with logsvc_server(own_redis.url) as address:
        await wait_status(address, SERVING, 1)
        try:
            await r.execute_command("FUNCTION DELETE", LIBRARY_NAME)
            await r.execute_command("CONFIG SET", "maxmemory", "1")  # every FUNCTION LOAD is refused: OOM
            await wait_status(address, NOT_SERVING, 6)
            await r.execute_command("CONFIG SET", "maxmemory", "0")
            await wait_status(address, SERVING, 4)
        finally:
            await r.execute_command("CONFIG SET", "maxmemory", "0")
            await r.aclose()


async def test_unknown_service_is_not_found_without_a_traceback(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc_health aborts the call itself: the interceptor must keep its NOT_FOUND and log no failure."""
    caplog.set_level(logging.DEBUG, "dmulog")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await status_of(target, "no.such.Service")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert not [r for r in caplog.records if r.exc_info or r.getMessage() == "request_failed"]
    lines = [r.event_data for r in caplog.records if r.getMessage() == "request"]  # type: ignore[attr-defined]
    assert [line["code"] for line in lines] == ["NOT_FOUND"]
    assert await check(target, "no.such.Service") == "NOT_FOUND"
    assert await asyncio.to_thread(run_health, "--logsvc", target, "--service", "no.such.Service") == (
        ExitStatus.ERROR, "NOT_FOUND")  # fmt: skip


async def test_health_command_against_nothing_exits_1(tmp_path: Path) -> None:
    """No server behind the socket: a probe's failure, not a crash."""
    status, out = await asyncio.to_thread(run_health, "--socket", str(tmp_path / "none.sock"), "--timeout", "1")
    assert status == ExitStatus.ERROR
    assert out.startswith("UNREACHABLE")


async def bridge_status(path: Path) -> tuple[ExitStatus, str]:
    """``dmulog health --socket PATH``, as the bridge's exec probe runs it."""
    return await asyncio.to_thread(run_health, "--socket", str(path), "--timeout", "2")


async def wait_bridge(path: Path, wanted: str, within: float) -> float:
    """Seconds until the bridge's socket answers ``wanted``; fails past ``within``."""
    start = time.monotonic()
    while (got := (await bridge_status(path))[1]) != wanted:
        assert time.monotonic() - start < within, f"bridge still {got} after {within} s, wanted {wanted}"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_bridge_health_follows_join_logsvc_and_lease(
    own_redis: RedisProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bridge's health from its real inputs: a LogsvcClient's channel and a LeaseKeeper on a real logsvc."""
    caplog.set_level(logging.INFO, "dmulog")
    path = tmp_path / "run" / "health.sock"
    stop = asyncio.Event()
    async with logsvc_server(own_redis.url, lease_ttl=2.0) as address:
        client = LogsvcClient(address)
        keeper = LeaseKeeper(client.stub, pb.Node(name="health-node", boot_id="boot-1"))
        health = BridgeHealth(keeper, lambda: channel_state(client), recent=1.0)
        assert await health.start(path)
        runs = [asyncio.ensure_future(health.run(stop, interval=0.1))]
        try:
            assert await bridge_status(path) == (ExitStatus.ERROR, "NOT_SERVING")  # not joined, no lease
            client.warm()
            runs.append(asyncio.ensure_future(keeper.keep(stop)))
            await asyncio.wait_for(keeper.ready.wait(), 5)
            assert health.problem() == "kernel socket not joined to the connector group"
            health.joined = True
            await wait_bridge(path, "SERVING", 2)
            assert own_redis.proc is not None
            os.kill(own_redis.proc.pid, signal.SIGSTOP)  # renewals fail: the lease runs out
            try:
                took = await wait_bridge(path, "NOT_SERVING", 5)
                assert "not renewed in time" in health.reason
            finally:
                os.kill(own_redis.proc.pid, signal.SIGCONT)
            await wait_bridge(path, "SERVING", 8)  # renewed (or a new incarnation acquired)
            print(f"bridge NOT_SERVING {took:.2f} s after Redis froze (lease TTL 2 s)")
        finally:
            stop.set()
            await asyncio.gather(*runs)
    # logsvc gone: the channel leaves READY and no lease call succeeds any more.
    health.joined, health.recent = True, 0.5
    deadline = time.monotonic() + 5
    while (why := health.problem()) is None or "logsvc unreachable" not in why:
        assert time.monotonic() < deadline, f"still {why!r} with logsvc gone"
        await asyncio.sleep(0.1)
    assert not await health.check()
    await health.close()
    await client.close()
    assert not path.exists()
    changes = [r.event_data for r in caplog.records if r.getMessage() == "health_changed"]  # type: ignore[attr-defined]
    assert [c["status"] for c in changes][:3] == ["SERVING", "NOT_SERVING", "SERVING"]
    assert changes[-1]["status"] == "NOT_SERVING" and "logsvc unreachable" in changes[-1]["reason"]


async def test_bridge_health_takes_over_a_stale_socket_file(tmp_path: Path) -> None:
    """A bridge that died left its socket file: the next one (its turn: the lock, or the keeper) binds anyway."""
    path = tmp_path / "health.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    client = LogsvcClient("127.0.0.1:1")
    health = BridgeHealth(LeaseKeeper(client.stub, pb.Node(name="n", boot_id="b")), lambda: channel_state(client))
    try:
        assert await health.start(path)
        assert await bridge_status(path) == (ExitStatus.ERROR, "NOT_SERVING")
    finally:
        await health.close()
        await client.close()


async def test_cluster_every_primary_is_checked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a Cluster: a library gone from one primary (not the first) is seen and repaired; a frozen one is an outage."""
    caplog.set_level(logging.INFO, "dmulog")
    with ClusterGroup(tmp_path / "cluster", replicas_per_primary=0) as cluster:
        async with logsvc_server(cluster.url, cluster=True) as address:
            await wait_status(address, SERVING, 2)
            last = cluster.primaries()[-1]
            last.command("FUNCTION", "DELETE", LIBRARY_NAME)
            deadline = time.monotonic() + 3
            while not last.command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME):
                assert time.monotonic() < deadline, "the library was not loaded again on the last primary"
                await asyncio.sleep(0.05)
            assert [r for r in caplog.records if r.getMessage() == "function_library_missing"]
            await wait_status(address, SERVING, 1)
            last.freeze()
            try:
                await wait_status(address, NOT_SERVING, 6)
            finally:
                last.thaw()
            await wait_status(address, SERVING, 15)


async def test_the_probe_needs_nothing_beyond_the_documented_acl(own_redis: RedisProcess, tmp_path: Path) -> None:
    """As the least-privilege user (docs/redis-security.md), the probe is granted, and so SERVING means something."""
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        await admin.execute_command(*shlex.split(setuser_line(redis_7_0=True, password="pw")))
        await admin.execute_command("ACL LOG RESET")
        (tmp_path / "pw").write_text("pw\n")
        store = Store.from_url(own_redis.url, security=RedisSecurity(username="dmulog", password_file=tmp_path / "pw"))
        try:
            await store.load_library()
            monitor = HealthMonitor(store, health.aio.HealthServicer(), [""])
            assert await monitor.probe() is None
            await admin.execute_command("FUNCTION DELETE", LIBRARY_NAME)
            assert await monitor.probe() is None  # found missing, loaded again as the same user
            assert await admin.execute_command("ACL LOG") == []
        finally:
            await store.close()
    finally:
        await admin.aclose()


async def test_a_logsvc_process_serves_health_from_its_monitor(own_redis: RedisProcess, tmp_path: Path) -> None:
    """``dmulog logsvc`` (serve()) runs the monitor too: one transition logged each way, a clean stop."""
    svc = await asyncio.to_thread(start_logsvc, tmp_path / "logsvc.log", redis_url=own_redis.url)
    try:
        address = svc.target
        assert await check(address) == "SERVING"
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            await wait_status(address, NOT_SERVING, 6)
            assert await asyncio.to_thread(run_health, "--logsvc", address) == (ExitStatus.ERROR, "NOT_SERVING")
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        await wait_status(address, SERVING, 4)
    finally:
        await asyncio.to_thread(svc.stop)
    assert svc.proc.returncode == 0
    assert [e["status"] for e in svc.events("health_changed")] == ["NOT_SERVING", "SERVING"]
    assert "Traceback" not in svc.text()
