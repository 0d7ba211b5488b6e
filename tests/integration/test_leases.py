"""Node leases against a real Redis and a real logsvc (with its reaper): expiry, fencing, epochs, events.

Each test runs its own logsvc with a short lease (TTL) and a fast reaper, so an
expiry takes under a second; the nodes are gRPC clients doing what a bridge
does (bridge/lease.py), except where a test stops one renewing: that node died.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from bridge.lease import LeaseKeeper
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, dirty, out_of_sync
from harness.servers import RedisProcess, logsvc_server
from logsvc.store import Store

TTL = 0.6
"""Seconds a lease lasts in these tests."""
REAPER = 0.05
SECTORS = 16 * 64
"""64 regions of 16 sectors."""


@pytest.fixture
async def leased(redis: RedisProcess) -> AsyncIterator[str]:
    """A logsvc with leases of TTL seconds and a reaper every REAPER seconds."""
    async with logsvc_server(redis.url, lease_ttl=TTL, reaper_interval=REAPER) as target:
        yield target


@pytest.fixture
async def lstub(leased: str) -> AsyncIterator[pb_grpc.DirtyLogStub]:
    """A stub on that logsvc."""
    async with grpc.aio.insecure_channel(leased) as channel:
        yield pb_grpc.DirtyLogStub(channel)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> float:
    """Seconds until ``check()`` holds (polled every 10 ms); fails the test after ``timeout``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def node_state(stub: pb_grpc.DirtyLogStub, name: str) -> pb.NodeLease | None:
    """The node's lease as ListNodes says."""
    for n in (await stub.ListNodes(pb.ListNodesRequest())).nodes:
        if n.name == name:
            return n
    return None


async def dead(stub: pb_grpc.DirtyLogStub, name: str) -> bool:
    """Whether the node's current incarnation was handed over."""
    n = await node_state(stub, name)
    return n is not None and n.state == pb.LEASE_STATE_DEAD


async def activate(h: LogHandle) -> None:
    """CTR and RESUME of a ``nosync`` table of SECTORS: every region in sync."""
    await h.ctr(SECTORS, "clustered-core", "16", "nosync")
    await h.resume()


async def code_of(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status a call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code(), e.value.details() or ""


async def test_a_lease_keeps_its_epoch_for_its_boot_and_a_new_boot_gets_a_larger_one(lstub: pb_grpc.DirtyLogStub,
                                                                                    uuid: str) -> None:  # fmt: skip
    """Acquired again while live (a bridge restart), the same epoch; another boot or an expired lease, a larger one."""
    a = LogHandle(lstub, uuid, node="lease-a", boot="boot-1")
    first = await a.acquire_lease()
    assert first > 0
    assert first == await a.acquire_lease()
    assert int(TTL * 1000) == await a.renew_lease()
    rebooted = a.other(boot="boot-2")
    second = await rebooted.acquire_lease()
    assert second > first
    # The old boot's incarnation is over: its renewals are refused.
    code, detail = await code_of(a.renew_lease())
    assert (code, "lease lost" in detail) == (grpc.StatusCode.NOT_FOUND, True), detail
    await asyncio.sleep(TTL + 0.2)
    code, detail = await code_of(rebooted.renew_lease())
    assert (code, "expired" in detail) == (grpc.StatusCode.NOT_FOUND, True), detail
    assert await rebooted.acquire_lease() > second


async def test_a_dead_nodes_marked_regions_go_out_of_sync_and_the_survivor_resyncs_them(
    lstub: pb_grpc.DirtyLogStub, uuid: str
) -> None:
    """A stops renewing: its instance goes, the regions it had marked turn out of sync and dirty, B is handed them."""
    a = LogHandle(lstub, uuid, node="lease-a", boot="boot-a")
    b = a.other(node="lease-b", boot="boot-b", luid=2)
    await a.acquire_lease()
    await b.acquire_lease()
    async with b.alive(TTL / 3):
        async with a.alive(TTL / 3):
            for h in (a, b):
                await h.ctr(SECTORS, "clustered-core", "16")
                await h.resume()
            assert 64 == len(await b.resync_all())  # the cursor is past every region now
            await a.mark(3, 5, 40)
            await a.clear(40)  # cleared: not A's any more
            await b.mark(5, 9)
        assert [] == out_of_sync(await a.state())
        await eventually(lambda: dead(lstub, "lease-a"))
        state = await b.state()
        assert [i.node for i in state.instances] == ["lease-b"]
        assert [3, 5] == out_of_sync(state)
        assert {3, 5, 9} <= set(dirty(state))
        # B's marks are its own: region 5 stays marked by B.
        assert {m.region: list(m.nodes) for m in state.marks} == {5: ["lease-b"], 9: ["lease-b"]}
        assert [3, 5] == await b.resync_all()
        assert [] == out_of_sync(await b.state())


async def test_a_fenced_incarnation_is_refused_until_it_takes_a_new_lease(lstub: pb_grpc.DirtyLogStub,
                                                                         uuid: str) -> None:  # fmt: skip
    """After its lease expired, A's requests and its CTR fail NOT_FOUND (the kernel replays); a new lease rejoins."""
    a = LogHandle(lstub, uuid, node="fence-a", boot="boot-a")
    old = await a.acquire_lease()
    async with a.alive(TTL / 3):
        await activate(a)
        await a.mark(7)
    await eventually(lambda: dead(lstub, "fence-a"))
    code, detail = await code_of(a.mark(8))
    assert code == grpc.StatusCode.NOT_FOUND, detail
    code, detail = await code_of(a.ctr(SECTORS, "clustered-core", "16", "nosync"))
    assert (code, "fenced" in detail) == (grpc.StatusCode.NOT_FOUND, True), detail
    assert [7] == out_of_sync(await a.state())
    new = await a.acquire_lease()
    assert new > old
    async with a.alive(TTL / 3):
        await activate(a)
        await a.mark(8)
        state = await a.state()
    assert [(i.node, i.epoch) for i in state.instances] == [("fence-a", new)]


async def test_an_older_incarnation_never_evicts_a_newer_one(lstub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """A CTR that arrives late from the node's previous boot is refused; the newer boot's instance stays.

    Before epochs, the last CTR won: the old boot's CTR reaped the new boot's instance.
    """
    old = LogHandle(lstub, uuid, node="order-a", boot="boot-1")
    await old.acquire_lease()
    new = old.other(boot="boot-2")
    await new.acquire_lease()
    assert new.node.epoch > old.node.epoch
    async with new.alive(TTL / 3):
        await activate(new)
        await new.mark(4)
        code, detail = await code_of(old.ctr(SECTORS, "clustered-core", "16", "nosync"))
        assert code == grpc.StatusCode.NOT_FOUND, detail
        state = await new.state()
        assert [(i.boot_id, i.epoch) for i in state.instances] == [("boot-2", new.node.epoch)]
        assert {m.region for m in state.marks} == {4}
        await new.mark(5)  # still its own


async def test_a_late_hand_over_of_an_old_epoch_leaves_the_new_incarnation_alone(redis: RedisProcess,
                                                                                  lstub: pb_grpc.DirtyLogStub,
                                                                                  uuid: str) -> None:  # fmt: skip
    """expire_node is idempotent and keyed by epoch: run for an older epoch after the node rejoined, it does nothing."""
    a = LogHandle(lstub, uuid, node="late-a", boot="boot-a")
    old = await a.acquire_lease()
    await asyncio.sleep(TTL + 0.1)  # expired (the reaper may or may not have handed it over yet)
    await a.acquire_lease()
    async with a.alive(TTL / 3):
        await activate(a)
        await a.mark(11)
        store = Store.from_url(redis.url)
        try:
            assert 0 == await store.expire_node(uuid, "late-a", old)
        finally:
            await store.close()
        state = await a.state()
    assert ([11], []) == ([m.region for m in state.marks], out_of_sync(state))
    assert [i.epoch for i in state.instances] == [a.node.epoch]


async def test_in_sync_hint_is_the_first_region_out_of_sync(log: LogHandle) -> None:
    """Every region below the hint is in sync, even after one below the recovery cursor goes out of sync.

    Before, the hint was the recovery cursor: a region below it that went out
    of sync (a failed leg write, a dead node's region) was still "below the
    hint", and the kernel wrote it without asking whether it was recovering.
    """
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    for _ in range(20):
        r = await log.resync_work()
        assert r is not None
        await log.set_sync(r)
    assert (True, 20) == await log.remote_recovering(30)
    await log.set_sync(2, False)  # a leg write failed at region 2
    assert (True, 2) == await log.remote_recovering(30)
    # As in the kernel's own logs, such a region waits for the next resume.
    await log.resync_all()
    assert (False, 2) == await log.remote_recovering(30)
    await log.suspend()
    await log.resume()
    assert [2] == await log.resync_all()
    assert (False, 64) == await log.remote_recovering(30)


async def test_watch_logs_is_ready_then_names_each_log_an_expiry_touched(lstub: pb_grpc.DirtyLogStub,
                                                                         uuid: str) -> None:  # fmt: skip
    """WatchLogs: READY first, then NODE_EXPIRED for the log, with the node and the epoch."""
    a = LogHandle(lstub, uuid, node="watch-a", boot="boot-a")
    epoch = await a.acquire_lease()
    events = lstub.WatchLogs(pb.WatchLogsRequest())
    it = events.__aiter__()
    assert (await it.__anext__()).kind == pb.LOG_EVENT_KIND_READY
    async with a.alive(TTL / 3):
        await activate(a)
    while True:
        got = await asyncio.wait_for(it.__anext__(), 10)
        if got.uuid == uuid:
            break
    assert (got.kind, got.node, got.epoch) == (pb.LOG_EVENT_KIND_NODE_EXPIRED, "watch-a", epoch)
    events.cancel()


async def test_list_nodes_shows_each_lease(lstub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """ListNodes: a live lease with its age, then the same node dead once handed over."""
    a = LogHandle(lstub, uuid, node="list-a", boot="boot-a")
    epoch = await a.acquire_lease()
    n = await node_state(lstub, "list-a")
    assert n is not None
    assert (n.boot_id, n.epoch, n.state) == ("boot-a", epoch, pb.LEASE_STATE_LIVE)
    assert 0 < n.expires_in_ms <= TTL * 1000
    await eventually(lambda: dead(lstub, "list-a"))


async def test_lease_requests_are_validated(lstub: pb_grpc.DirtyLogStub) -> None:
    """A bad node name or a missing epoch is INVALID_ARGUMENT and changes nothing."""
    code, _ = await code_of(lstub.AcquireLease(pb.AcquireLeaseRequest(node=pb.Node(name="a b", boot_id="x"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await code_of(lstub.RenewLease(pb.RenewLeaseRequest(node=pb.Node(name="v-a", boot_id="x"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await node_state(lstub, "v-a") is None


async def test_without_leases_every_node_runs_with_epoch_zero(stub: pb_grpc.DirtyLogStub, uuid: str,
                                                              redis: RedisProcess) -> None:  # fmt: skip
    """--lease-ttl 0: AcquireLease answers epoch 0, and nothing ever expires."""
    async with logsvc_server(redis.url, lease_ttl=0) as target, grpc.aio.insecure_channel(target) as channel:
        off = pb_grpc.DirtyLogStub(channel)
        got = await off.AcquireLease(pb.AcquireLeaseRequest(node=pb.Node(name="off-a", boot_id="b")))
        assert (got.epoch, got.ttl_ms) == (0, 0)


async def test_a_dead_nodes_regions_wait_for_every_survivor_to_resume(lstub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """With B and C alive, B gets A's regions as resync work only once C resumed after the expiry.

    A kernel that saw the mirror in sync writes regions below its cached hint
    without asking whether another node recovers them; only its resume resets
    that hint (bridge/mirrors.py does it for every survivor).
    """
    a = LogHandle(lstub, uuid, node="gate-a", boot="boot-a")
    b = a.other(node="gate-b", boot="boot-b", luid=2)
    c = a.other(node="gate-c", boot="boot-c", luid=3)
    for h in (a, b, c):
        await h.acquire_lease()
    async with b.alive(TTL / 3), c.alive(TTL / 3):
        async with a.alive(TTL / 3):
            for h in (a, b, c):
                await activate(h)
            await a.mark(12)
        await eventually(lambda: dead(lstub, "gate-a"))
        assert [12] == out_of_sync(await b.state())
        assert await b.resync_work() is None  # C is active and has not resumed since
        await c.suspend()  # C writes nothing now, and its next resume resets its hint
        assert [12] == await b.resync_all()
        await c.resume()


async def test_an_outage_of_the_lease_table_expires_no_one(tmp_path: Path, uuid: str) -> None:
    """Redis frozen for longer than the TTL (and than OUTAGE_MS): when it wakes, the renewing node is still live.

    Nobody could renew while Redis was away; without the grace every node would
    be expired at once when it comes back.
    """
    own = RedisProcess(tmp_path / "redis").start()
    try:
        async with logsvc_server(own.url, lease_ttl=TTL, reaper_interval=REAPER) as target, \
                grpc.aio.insecure_channel(target) as channel:  # fmt: skip
            stub = pb_grpc.DirtyLogStub(channel)
            a = LogHandle(stub, uuid, node="outage-a", boot="boot-a")
            epoch = await a.acquire_lease()
            async with a.alive(TTL / 3):
                await activate(a)
                await a.mark(1)
                assert own.proc is not None
                own.proc.send_signal(signal.SIGSTOP)
                await asyncio.sleep(3.5)
                own.proc.send_signal(signal.SIGCONT)
                await asyncio.sleep(TTL * 2)  # renewals and reaper passes after the outage
                n = await node_state(stub, "outage-a")
                assert n is not None and (n.state, n.epoch) == (pb.LEASE_STATE_LIVE, epoch), n
                await a.mark(2)
            state = await a.state()
            assert ([1, 2], []) == (sorted(m.region for m in state.marks), out_of_sync(state))
    finally:
        own.kill()


async def test_a_quick_reboot_is_announced_like_an_expiry(lstub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """A node's new boot that replaces its old instance itself (before the lease expired) is announced too.

    Else the other nodes would keep their latches of the log, and the resync of
    the old boot's regions would wait for a resume nobody asks them for.
    """
    events = lstub.WatchLogs(pb.WatchLogsRequest())
    it = events.__aiter__()
    assert (await it.__anext__()).kind == pb.LOG_EVENT_KIND_READY
    a = LogHandle(lstub, uuid, node="quick-a", boot="boot-1")
    b = a.other(node="quick-b", boot="boot-b", luid=2)
    for h in (a, b):
        await h.acquire_lease()
    async with a.alive(TTL / 3), b.alive(TTL / 3):
        for h in (a, b):
            await activate(h)
        await a.mark(9)
        again = a.other(boot="boot-2", luid=3)
        await again.acquire_lease()
        async with again.alive(TTL / 3):
            await activate(again)
            got = await asyncio.wait_for(it.__anext__(), 10)
            assert (got.kind, got.uuid, got.node) == (pb.LOG_EVENT_KIND_NODE_EXPIRED, uuid, "quick-a")
            assert [9] == out_of_sync(await b.state())
            assert await again.resync_work() is None  # B has not resumed since
            await b.suspend()
            await b.resume()
            assert [9] == await again.resync_all()
    events.cancel()


async def test_a_bridge_backs_off_while_logsvc_is_away(redis: RedisProcess, uuid: str, tmp_path: Path) -> None:
    """The lease keeper renews a third of the TTL apart, and after failures backs off instead of spinning."""
    listen = f"unix:{tmp_path / 'logsvc.sock'}"
    async with grpc.aio.insecure_channel(listen) as channel:
        keeper = LeaseKeeper(pb_grpc.DirtyLogStub(channel), pb.Node(name=f"away-{uuid[-8:]}", boot_id="b"))
        stop = asyncio.Event()
        async with logsvc_server(redis.url, listen, lease_ttl=TTL, reaper_interval=REAPER):
            assert await keeper.acquire(stop)
            keeping = asyncio.ensure_future(keeper.run(stop))
            await asyncio.sleep(TTL)
            assert keeper._failures == 0
        # logsvc is gone; the keeper keeps trying, slowly (without the back-off: every 50 ms).
        await asyncio.sleep(2.0)
        stop.set()
        await keeping
    assert 1 <= keeper._failures <= 10, keeper._failures
