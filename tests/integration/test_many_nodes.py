"""64 simulated nodes on 1,000 logs, two logsvc replicas, one Redis: random work, deaths and rejoins, checked.

Each node is a gRPC client that does what a kernel and its bridge do: a lease
renewed a third of its TTL apart, CTR and RESUME of its logs, MARK and CLEAR of
regions, GET_RESYNC_WORK and SET_REGION_SYNC, IN_SYNC. Nodes talk to either
replica. At random a node dies (renews no more, sends nothing) and, once
handed over, comes back as a new boot. After every step the log it touched is
read and checked against the model (:class:`Checker`):

1. a region marked by a live node is marked by it in the log and dirty (never clean);
2. the sync count is the popcount of the sync bitmap;
3. at most one recovery per log: no node is handed resync work while another
   live node's assignment in that log is unfinished;
4. once a node's incarnation is handed over, none of its marks survives in any
   of its logs.

``DMULOG_STRESS_STEPS`` sets the steps (default 3,000). The run prints the lease
traffic per node per second and Redis's memory per node's lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Sequence

import grpc
import pytest
import redis.asyncio as aioredis

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, dirty
from harness.servers import RedisProcess, logsvc_server

NODES = 64
LOGS = 1000
REGIONS = 64
PER_LOG = (2, 4)
TTL = 1.0
STEPS = int(os.environ.get("DMULOG_STRESS_STEPS", "3000"))
DEATH = 0.004
"""Chance per step that a live node dies."""


@dataclasses.dataclass
class Node:
    """One simulated node and what the model knows of it."""

    name: str
    stubs: list[pb_grpc.DirtyLogStub]
    boot: int = 0
    epoch: int = 0
    alive: bool = True
    logs: dict[str, LogHandle] = dataclasses.field(default_factory=dict)
    marks: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    renewals: int = 0
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    keeper: asyncio.Future[None] | None = None

    def handle(self, uuid: str, luid: int) -> LogHandle:
        """A handle of this node's current incarnation on the log, through one of the replicas."""
        stub = self.stubs[hash((self.name, uuid)) % len(self.stubs)]
        return LogHandle(stub, uuid, luid=luid, node=self.name, boot=f"boot-{self.boot}", epoch=self.epoch)


class Checker:
    """The invariants, and every violation seen."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.checks = 0
        self.assigned: dict[str, tuple[str, int]] = {}  # log -> (node, region) being recovered

    def log(self, state: pb.GetLogStateResponse, nodes: list[Node]) -> None:
        """Invariants 1 and 2 on one log."""
        self.checks += 1
        uuid = state.summary.uuid
        marks = {m.region: set(m.nodes) for m in state.marks}
        dirty_regions = set(dirty(state))
        for n in nodes:
            if not n.alive:
                continue
            for r in n.marks.get(uuid, set()):
                if n.name not in marks.get(r, set()) or r not in dirty_regions:
                    self.violations.append(f"{uuid} region {r}: marked by live {n.name} but the log has it "
                                           f"marked by {sorted(marks.get(r, []))}, dirty={r in dirty_regions}")
        popcount = sum(bin(b).count("1") for b in state.in_sync_bitmap)
        if popcount != state.summary.sync_count:
            self.violations.append(f"{uuid}: sync_count {state.summary.sync_count}, bitmap popcount {popcount}")

    def handed_over(self, node: Node, states: list[pb.GetLogStateResponse]) -> None:
        """Invariant 4: none of the dead node's marks survives."""
        for state in states:
            self.checks += 1
            left = [m.region for m in state.marks if node.name in m.nodes]
            if left:
                self.violations.append(f"{state.summary.uuid}: {node.name}'s marks {left} survive its hand-over")

    def work(self, uuid: str, node: Node, region: int | None, nodes: dict[str, Node]) -> None:
        """Invariant 3, as resync work is handed out."""
        holder = self.assigned.get(uuid)
        if region is None:
            return
        if holder is not None and holder[0] != node.name and nodes[holder[0]].alive:
            self.violations.append(f"{uuid}: {node.name} handed region {region} while {holder[0]} recovers "
                                   f"region {holder[1]}")
        self.assigned[uuid] = (node.name, region)

    def finished(self, uuid: str, node: Node) -> None:
        """The node's recovery of the log ended (SET_REGION_SYNC)."""
        if self.assigned.get(uuid, ("",))[0] == node.name:
            del self.assigned[uuid]


@pytest.fixture
async def replicas(redis: RedisProcess) -> AsyncIterator[list[pb_grpc.DirtyLogStub]]:
    """Two logsvc replicas on the session Redis, with leases of TTL seconds; a stub on each."""
    async with logsvc_server(redis.url, lease_ttl=TTL, reaper_interval=0.05) as one, \
            logsvc_server(redis.url, lease_ttl=TTL, reaper_interval=0.05) as two, \
            grpc.aio.insecure_channel(one) as c1, grpc.aio.insecure_channel(two) as c2:  # fmt: skip
        yield [pb_grpc.DirtyLogStub(c1), pb_grpc.DirtyLogStub(c2)]


async def renew(node: Node, stop: asyncio.Event) -> None:
    """The node's lease keeper, until it dies."""
    while not stop.is_set():
        with_epoch = pb.Node(name=node.name, boot_id=f"boot-{node.boot}", epoch=node.epoch)
        await node.stubs[0].RenewLease(pb.RenewLeaseRequest(node=with_epoch))
        node.renewals += 1
        try:
            await asyncio.wait_for(stop.wait(), TTL / 3)
        except TimeoutError:
            pass


async def join(node: Node, uuid: str, luid: int) -> None:
    """CTR and RESUME of one log by the node's current incarnation."""
    h = node.handle(uuid, luid)
    await h.ctr(REGIONS * 16, "clustered-core", "16", "nosync")
    await h.resume()
    node.logs[uuid] = h
    node.marks[uuid] = set()


async def start(node: Node) -> None:
    """A new incarnation: a lease, then its logs again."""
    node.boot += 1
    got = await node.stubs[0].AcquireLease(pb.AcquireLeaseRequest(node=pb.Node(name=node.name,
                                                                               boot_id=f"boot-{node.boot}")))
    node.epoch, node.alive, node.stop = got.epoch, True, asyncio.Event()
    node.keeper = asyncio.ensure_future(renew(node, node.stop))


async def gather_in(batch: int, coros: Sequence[Awaitable[object]]) -> None:
    """Run coroutines ``batch`` at a time."""
    for i in range(0, len(coros), batch):
        await asyncio.gather(*coros[i : i + batch])


async def is_dead(stub: pb_grpc.DirtyLogStub, node: Node, epoch: int) -> bool:
    """Whether the node's incarnation ``epoch`` was handed over."""
    for n in (await stub.ListNodes(pb.ListNodesRequest())).nodes:
        if n.name == node.name:
            return n.epoch != epoch or n.state == pb.LEASE_STATE_DEAD
    return False


@pytest.mark.load
async def test_many_nodes_keep_every_invariant(replicas: list[pb_grpc.DirtyLogStub], redis: RedisProcess) -> None:
    """64 nodes, 1,000 logs, random steps, deaths and rejoins: no invariant is ever broken."""
    rng = random.Random(int(os.environ.get("DMULOG_STRESS_SEED", "7")))
    r = aioredis.Redis.from_url(redis.url)
    memory_before = (await r.info("memory"))["used_memory"]
    nodes = {f"sim-{i:02d}": Node(f"sim-{i:02d}", replicas) for i in range(NODES)}
    for n in nodes.values():
        await start(n)
    memory_leases = (await r.info("memory"))["used_memory"]
    started = time.monotonic()
    owners: dict[str, list[Node]] = {}
    joins: list[Awaitable[object]] = []
    for i in range(LOGS):
        uuid = f"many-{i:04d}"
        owners[uuid] = rng.sample(list(nodes.values()), rng.randint(*PER_LOG))
        joins += [join(n, uuid, j + 1) for j, n in enumerate(owners[uuid])]
    await gather_in(64, joins)
    check = Checker()
    dying: list[tuple[Node, int, list[str]]] = []
    deaths = 0
    for _ in range(STEPS):
        live = [n for n in nodes.values() if n.alive and n.logs]
        node = rng.choice(live)
        if rng.random() < DEATH and len(live) > NODES // 2:
            node.alive = False
            node.stop.set()
            dying.append((node, node.epoch, list(node.logs)))
            deaths += 1
            continue
        uuid = rng.choice(list(node.logs))
        h = node.logs[uuid]
        op = rng.random()
        if op < 0.35:
            regions = rng.sample(range(REGIONS), rng.randint(1, 4))
            await h.mark(*regions)
            node.marks[uuid] |= set(regions)
        elif op < 0.65 and node.marks[uuid]:
            regions = rng.sample(sorted(node.marks[uuid]), rng.randint(1, len(node.marks[uuid])))
            await h.clear(*regions)
            node.marks[uuid] -= set(regions)
        elif op < 0.8:
            region = await h.resync_work()
            check.work(uuid, node, region, nodes)
            if region is not None:
                await h.set_sync(region, True)
                check.finished(uuid, node)
        elif op < 0.9:
            await h.set_sync(rng.randrange(REGIONS), False)  # a leg write failed
        else:
            await h.in_sync(rng.randrange(REGIONS))
        check.log(await h.state(), [n for n in owners[uuid]])
        # Handed over? Check, then the node comes back as a new boot.
        for entry in list(dying):
            dead, epoch, logs = entry
            if await is_dead(replicas[0], dead, epoch):
                dying.remove(entry)
                check.handed_over(dead, [await dead.logs[u].state() for u in logs])
                dead.logs, dead.marks = {}, {}
                await start(dead)
                await gather_in(16, [join(dead, u, 100 + dead.boot) for u in logs])
    seconds = time.monotonic() - started
    renewals = sum(n.renewals for n in nodes.values())
    for n in nodes.values():
        n.stop.set()
    await asyncio.gather(*(n.keeper for n in nodes.values() if n.keeper), return_exceptions=True)
    await r.aclose()
    print(f"\n{STEPS} steps, {deaths} deaths, {check.checks} checks in {seconds:.0f} s; "
          f"lease traffic {renewals / NODES / seconds:.2f} renewals per node per second (TTL {TTL:g} s); "
          f"Redis memory per node's lease {(memory_leases - memory_before) / NODES:.0f} bytes")
    assert check.violations == [], check.violations[:10]
    assert deaths > 0 and check.checks > STEPS / 2
