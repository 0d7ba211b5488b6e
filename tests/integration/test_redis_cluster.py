"""logsvc on a Redis Cluster (``--redis-cluster``): every request on every shard, failovers and live resharding.

Real Valkey processes (harness/redis_ha.py ClusterGroup: three primaries, a
replica each) on loopback, logsvc in this process on the cluster's startup
nodes. The quick tests run in ``make check``; those marked ``faults`` (``make
faults``) kill a primary ``DMULOG_FAILOVER_ROUNDS`` times under the load of
simulated mirrors whose logs it owns, and move loaded logs' slots between
primaries while the mirrors write; after each, no acknowledged mark may be
missing (harness/acked_marks.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from redis.crc import key_slot

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.acked_marks import MirrorLoad
from harness.log_handle import LogHandle, out_of_sync
from harness.redis_ha import ClusterGroup, ValkeyNode
from harness.servers import LogsvcProcess, logsvc_server
from logsvc.keys import log_keys
from logsvc.store import Store

ROUNDS = int(os.environ.get("DMULOG_FAILOVER_ROUNDS", "10"))
SECTORS = 64 * 8  # 64 regions of 8 sectors


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    """Three primaries with a replica each, shared by the quick tests (each leaves it whole)."""
    with ClusterGroup(Path(tmp_path_factory.mktemp("cluster"))) as group:
        yield group


def slot_of(cluster: ClusterGroup, uuid: str) -> int:
    """The slot of the log ``uuid``, as the cluster computes it (CLUSTER KEYSLOT of its ``log`` key)."""
    return int(cluster.nodes[0].command("CLUSTER", "KEYSLOT", log_keys(uuid).log))


def shards(cluster: ClusterGroup) -> Callable[[str], ValkeyNode]:
    """Map a log's UUID to the primary that owns it now, from one CLUSTER NODES (slots hashed as Redis does)."""
    views = [v for v in cluster.views(cluster.primaries()[0]) if v.is_master and v.slots]

    def owner(uuid: str) -> ValkeyNode:
        slot = key_slot(log_keys(uuid).log.encode())
        return cluster.by_id(next(v.id for v in views if v.owns(slot)))

    return owner


def shard_of(cluster: ClusterGroup, uuid: str) -> ValkeyNode:
    """The primary that owns the log ``uuid`` now (its slot by CLUSTER KEYSLOT)."""
    owner = cluster.owner(slot_of(cluster, uuid), cluster.primaries()[0])
    assert owner is not None
    return owner


def logs_on(cluster: ClusterGroup, shard: ValkeyNode, count: int, name: str) -> list[str]:
    """``count`` log UUIDs (``LVM-name-i``) whose slots ``shard`` owns."""
    owner = shards(cluster)
    found: list[str] = []
    i = 0
    while len(found) < count:
        uuid = f"LVM-{name}-{i}"
        if owner(uuid) is shard:
            found.append(uuid)
        i += 1
    return found


def spread(cluster: ClusterGroup, per_shard: int, name: str) -> list[str]:
    """``per_shard`` logs on every primary."""
    return [u for p in cluster.primaries() for u in logs_on(cluster, p, per_shard, f"{name}{p.port}")]


@pytest.fixture
async def stub(cluster: ClusterGroup) -> AsyncIterator[pb_grpc.DirtyLogStub]:
    """A stub of a logsvc on the cluster (no durable replica)."""
    async with logsvc_server(cluster.url, cluster=True) as target, grpc.aio.insecure_channel(target) as channel:
        yield pb_grpc.DirtyLogStub(channel)


def test_the_shard_check_can_fail(cluster: ClusterGroup) -> None:
    """logs_on / shard_of tell shards apart: logs picked for one primary are on no other, by CLUSTER KEYSLOT too."""
    first, second = cluster.primaries()[:2]
    picked = logs_on(cluster, first, 3, "one")
    assert {shard_of(cluster, u) for u in picked} == {first}
    assert {shards(cluster)(u) for u in logs_on(cluster, second, 3, "two")} == {second}


async def test_every_kernel_request_on_logs_of_every_shard(cluster: ClusterGroup,
                                                           stub: pb_grpc.DirtyLogStub) -> None:  # fmt: skip
    """Each kernel request type, on two logs of each of the three shards; ListLogs lists every one of them."""
    uuids = spread(cluster, 2, "every")
    assert {shard_of(cluster, u).port for u in uuids} == {p.port for p in cluster.primaries()}
    for uuid in uuids:
        log = LogHandle(stub, uuid)
        await log.acquire_lease()
        assert await log.renew_lease() > 0
        await log.ctr(SECTORS, "dmulog", "8", "nosync")
        await log.resume()
        assert await log.region_size() == 8
        await log.mark(1, 2)
        await log.flush(3)
        assert not await log.is_clean(1)
        await log.clear(1)
        assert await log.is_clean(1) and not await log.is_clean(2)
        assert await log.in_sync(4)
        await log.set_sync(5, False)
        assert await log.resync_work() == 5
        await log.set_sync(5, True)
        assert await log.sync_count() == 64
        assert await log.status_info() == "1 dmulog"
        assert (await log.status_table()).startswith("dmulog 8 nosync")
        assert (await log.remote_recovering(6))[0] in (True, False)
        state = await log.state()
        assert [i.state for i in state.instances] == [pb.INSTANCE_STATE_RESUMED]
        await log.presuspend()
        await log.postsuspend()
        await log.dtr()
    listing = await stub.ListLogs(pb.ListLogsRequest())
    assert set(uuids) <= {s.uuid for s in listing.logs}
    nodes = await stub.ListNodes(pb.ListNodesRequest())
    assert "node-a" in {n.name for n in nodes.nodes}


async def test_list_logs_covers_every_shard(cluster: ClusterGroup, stub: pb_grpc.DirtyLogStub) -> None:
    """ListLogs scans every primary: logs of each shard, each listed once, nothing else (the keys prove where)."""
    uuids = spread(cluster, 3, "listed")
    for uuid in uuids:
        await LogHandle(stub, uuid).ctr(SECTORS, "dmulog", "8", "nosync")
    listed = [s.uuid for s in (await stub.ListLogs(pb.ListLogsRequest())).logs]
    assert len(listed) == len(set(listed))
    for p in cluster.primaries():
        on_p = {u for u in uuids if shard_of(cluster, u) is p}
        assert len(on_p) == 3 and on_p <= set(listed)
        assert all(p.command("EXISTS", log_keys(u).log) == 1 for u in on_p)  # there, not only said to be


async def test_a_durable_mark_on_every_shard_waits_for_its_replica(cluster: ClusterGroup) -> None:
    """With --redis-durable-replicas 1 a mark on each shard succeeds; a frozen replica stops its own shard's only.

    A mark is acknowledged once its shard's replica fsynced it; with that replica
    frozen, marks of its shard are 'not durable', those of the others go through.
    """
    uuids = spread(cluster, 1, "durable")
    async with (logsvc_server(cluster.url, cluster=True, durable_replicas=1) as target,
                grpc.aio.insecure_channel(target) as channel):  # fmt: skip
        stub = pb_grpc.DirtyLogStub(channel)
        logs = [LogHandle(stub, u) for u in uuids]
        for log in logs:
            await log.ctr(SECTORS, "dmulog", "8", "nosync")
            await log.resume()
            await log.mark(1)
            assert not await log.is_clean(1)
        frozen_shard = shard_of(cluster, uuids[0])
        (replica,) = cluster.replicas_of(frozen_shard)
        replica.freeze()
        try:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await logs[0].mark(2)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "not durable" in (e.value.details() or "")
            await logs[1].mark(2)
        finally:
            replica.thaw()
        await logs[0].mark(2)
    await asyncio.to_thread(cluster.wait_ready)


async def test_a_dead_nodes_regions_on_every_shard_are_handed_over_and_announced(cluster: ClusterGroup) -> None:
    """Node death on a Cluster: the lease table in its one slot, the hand-over of a log on each shard, the events.

    A stops renewing; the reaper (leases in the ``{leases}`` slot) hands each of
    its logs over on the log's own shard, and WatchLogs (an XREAD of the event
    stream, in the leases' slot) names every one of them.
    """
    uuids = spread(cluster, 1, "death")
    async with (logsvc_server(cluster.url, cluster=True, lease_ttl=0.6, reaper_interval=0.05) as target,
                grpc.aio.insecure_channel(target) as channel):  # fmt: skip
        stub = pb_grpc.DirtyLogStub(channel)
        events = stub.WatchLogs(pb.WatchLogsRequest())
        it = events.__aiter__()
        assert (await it.__anext__()).kind == pb.LOG_EVENT_KIND_READY
        lease_a = LogHandle(stub, "unused", node="death-a", boot="boot-a")
        lease_b = LogHandle(stub, "unused", node="death-b", boot="boot-b")
        epoch_a, epoch_b = await lease_a.acquire_lease(), await lease_b.acquire_lease()
        dying = [LogHandle(stub, u, node="death-a", boot="boot-a", epoch=epoch_a) for u in uuids]
        survivors = [LogHandle(stub, u, 2, node="death-b", boot="boot-b", epoch=epoch_b) for u in uuids]
        async with lease_b.alive(0.2):
            async with lease_a.alive(0.2):
                for a, b in zip(dying, survivors, strict=True):
                    for h in (a, b):
                        await h.ctr(SECTORS, "clustered-core", "8")
                        await h.resume()
                    assert 64 == len(await b.resync_all())
                    await a.mark(3, 7)
            announced: set[str] = set()
            while announced != set(uuids):
                got = await asyncio.wait_for(it.__anext__(), 10)
                assert (got.kind, got.node) == (pb.LOG_EVENT_KIND_NODE_EXPIRED, "death-a")
                announced.add(got.uuid)
            for b in survivors:
                state = await b.state()
                assert [i.node for i in state.instances] == ["death-b"]
                assert [3, 7] == out_of_sync(state)
        events.cancel()


def _dmulog(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmulog", *args], capture_output=True, text=True, timeout=60,
                          env=env)  # fmt: skip


@pytest.mark.parametrize("args", [["--redis", "redis://127.0.0.1:1/0", "--redis-cluster", "127.0.0.1:1"],
                                  ["--redis-cluster", "127.0.0.1"], ["--redis-cluster", ","]])  # fmt: skip
def test_a_bad_cluster_flag_is_a_usage_error(args: list[str]) -> None:
    """Both --redis and --redis-cluster, or a node that is not HOST:PORT: exit 2 with the reason, nothing started."""
    got = _dmulog("logsvc", "--listen", "127.0.0.1:0", *args)
    assert got.returncode == 2, got.stderr
    assert "--redis-cluster" in got.stderr


def test_logsvc_serves_from_the_cluster_named_in_its_environment(cluster: ClusterGroup, tmp_path: Path) -> None:
    """``DMULOG_REDIS_CLUSTER`` is the flag's variable: the process starts on the cluster and says so."""
    log = tmp_path / "logsvc.log"
    env = {**os.environ, "DMULOG_REDIS_CLUSTER": cluster.url}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dmulog", "--log-format", "json", "logsvc",
                                 "--listen", "127.0.0.1:0"], stdout=out, stderr=out, env=env)  # fmt: skip
    svc = LogsvcProcess(proc, log, "127.0.0.1:0")
    try:
        (listening,) = svc.wait_for("logsvc_listening")
        assert listening["redis_cluster"] is True and listening["embedded_redis"] is False
    finally:
        svc.stop()


# --- faults: a primary killed, slots moved, under load ---------------------------------------------------------

LOGS = 10_000
MIRRORS = 8


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[ClusterGroup]:
    """A cluster of its own for a test that breaks it."""
    with ClusterGroup(tmp_path / "cluster") as group:
        yield group


async def _create(stub: pb_grpc.DirtyLogStub, uuids: list[str], concurrency: int = 64) -> float:
    """CTR every log, ``concurrency`` at a time; the seconds it took."""
    started = time.monotonic()
    queue = iter(uuids)

    async def worker() -> None:
        for uuid in queue:
            await LogHandle(stub, uuid).ctr(SECTORS, "dmulog", "8", "nosync")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


async def test_a_primary_added_later_gets_the_library_on_first_use(faulty: ClusterGroup) -> None:
    """A log's slot moved to a new, empty primary: logsvc loads the library there on the first call and goes on.

    MIGRATE moves keys, not functions; the new primary answers "Function not
    found" once, logsvc loads the library on every primary and sends again.
    """
    cluster = faulty
    async with logsvc_server(cluster.url, cluster=True) as target, grpc.aio.insecure_channel(target) as channel:
        (uuid,) = logs_on(cluster, cluster.primaries()[0], 1, "added")
        log = LogHandle(pb_grpc.DirtyLogStub(channel), uuid)
        await log.ctr(SECTORS, "dmulog", "8", "nosync")
        await log.resume()
        await log.mark(1)
        new = await asyncio.to_thread(cluster.add_node)
        assert new.command("FUNCTION", "LIST") == []
        await asyncio.to_thread(cluster.migrate_slot, slot_of(cluster, uuid), shard_of(cluster, uuid), new)
        assert not await log.is_clean(1)  # read on the new primary: the mark moved with the keys
        await log.mark(2)
        assert not await log.is_clean(2)
        assert new.command("FUNCTION", "LIST") != []
        assert new.command("EXISTS", log_keys(uuid).log) == 1


@pytest.mark.faults
async def test_a_killed_primary_under_load_loses_no_acknowledged_mark(faulty: ClusterGroup) -> None:
    """10,000 logs; a primary killed ROUNDS times under eight mirrors of its logs: no acknowledged mark lost.

    Its replica takes over with the library and every acknowledged mark. With
    one replica per primary and ``--redis-durable-replicas 1`` the promoted
    replica has no replica of its own, so it acknowledges nothing (the mirrors
    wait, as the kernel would) until the old primary is back as its replica:
    the outage measured is kill to the first acknowledgement after it, the
    restart included (docs/durability.md).
    """
    cluster = faulty
    async with (logsvc_server(cluster.url, cluster=True, durable_replicas=1) as target,
                grpc.aio.insecure_channel(target) as channel):  # fmt: skip
        stub = pb_grpc.DirtyLogStub(channel)
        created = await _create(stub, [f"LVM-many-{i}" for i in range(LOGS)])
        listed = len((await stub.ListLogs(pb.ListLogsRequest())).logs)
        print(f"{LOGS} logs created in {created:.1f} s ({LOGS / created:.0f}/s); ListLogs lists {listed}")
        assert listed >= LOGS
        rng = random.Random(ROUNDS)
        failovers: list[float] = []
        outages: list[float] = []
        acknowledged = retried = 0
        for round_ in range(ROUNDS):
            victim = rng.choice(cluster.primaries())
            uuids = logs_on(cluster, victim, MIRRORS, f"r{round_}-")
            slot = slot_of(cluster, uuids[0])  # asked of the first node, which may be the victim: before the kill
            load = MirrorLoad([stub], uuids, regions=64, seed=round_)
            await load.construct()
            load.start()
            try:
                await asyncio.sleep(rng.uniform(0.2, 0.6))
                t0 = time.monotonic()
                cluster.kill(victim)
                await asyncio.to_thread(cluster.wait_for_failover, victim, slot)
                failovers.append(time.monotonic() - t0)
                await asyncio.to_thread(cluster.restart, victim)  # back as the promoted replica's replica
                while (outage := load.stats.unavailable_after(t0)) is None:
                    assert not load.errors, load.errors
                    await asyncio.sleep(0.02)
                outages.append(outage)
                await asyncio.sleep(0.3)  # writes on the promoted replica
                await load.pause()
                assert await load.check() == [], "an acknowledged mark was lost"
                assert not load.errors, load.errors
            finally:
                await load.stop()
            assert not load.errors, load.errors
            acknowledged += load.marks.acknowledged
            retried += load.stats.retried
        print(f"Cluster primary SIGKILL: {len(outages)} failovers in p50 {statistics.median(failovers):.2f} s; "
              f"unavailable (restart of the old primary included) p50 {statistics.median(outages):.2f} s, "
              f"max {max(outages):.2f} s; {acknowledged} marks acknowledged, {retried} requests sent again")
        assert acknowledged > 0


@pytest.mark.faults
async def test_slots_of_loaded_logs_move_between_primaries_with_no_wrong_answer(faulty: ClusterGroup) -> None:
    """Slots of loaded logs move between primaries ROUNDS times while eight mirrors write: no wrong answer.

    ASK, MOVED and TRYAGAIN are only ever retries (the mirrors raise on anything
    else), no acknowledged mark is lost, and every log reads afterwards.
    """
    cluster = faulty
    stores: list[Store] = []
    async with (logsvc_server(cluster.url, cluster=True, durable_replicas=1, stores=stores) as target,
                grpc.aio.insecure_channel(target) as channel):  # fmt: skip
        stub = pb_grpc.DirtyLogStub(channel)
        uuids = spread(cluster, 3, "moving")[:MIRRORS]
        load = MirrorLoad([stub], uuids, regions=64, seed=ROUNDS)
        await load.construct()
        load.start()
        rng = random.Random(ROUNDS)
        moved_keys = 0
        took: list[float] = []
        try:
            for _ in range(ROUNDS):
                await asyncio.sleep(rng.uniform(0.1, 0.4))
                uuid = rng.choice(uuids)
                slot = slot_of(cluster, uuid)
                src = shard_of(cluster, uuid)
                dst = rng.choice([p for p in cluster.primaries() if p is not src])
                t0 = time.monotonic()
                moved_keys += await asyncio.to_thread(cluster.migrate_slot, slot, src, dst, batch=1,
                                                      on_batch=lambda _n: time.sleep(0.02))  # fmt: skip
                took.append(time.monotonic() - t0)
                assert not load.errors, load.errors
            await load.pause()
            assert await load.check() == [], "an acknowledged mark was lost"
            assert not load.errors, load.errors
            for uuid in uuids:
                assert (await LogHandle(stub, uuid).state()).summary.region_count == 64
        finally:
            await load.stop()
        assert not load.errors, load.errors
        route = stores[0].cluster
        assert route is not None
        print(f"Cluster slot migration: {ROUNDS} slots moved under load ({moved_keys} keys, "
              f"{statistics.median(took):.2f} s p50 each); {load.marks.acknowledged} marks acknowledged, "
              f"{route.redirects.asked} ASK and {route.redirects.moved} MOVED followed, "
              f"{load.stats.retried} requests sent again, none answered wrongly")
        assert load.marks.acknowledged > 0
        assert route.redirects.moved > 0, "no request met a moved slot: the test moved nothing under load"
