"""A stateful property test: a real logsvc on a real redis-server, driven by hypothesis, against the reference model.

Three nodes share two small logs (a ``clustered-core`` and a ``dmulog`` one, 8
to 24 regions each, so that nodes collide on regions all the time), each with
up to two table instances per node (a table reload). Every rule sends real
gRPC requests and compares each answer, error and generation with
tests/model/reference.py; after every step the whole state of each log
(GetLogState) must equal the model's, and the durability invariant must hold
on logsvc's own state (README "Guarantees", docs/durability.md):

* a region a live node marked while its mirror was active, and did not clear,
  is dirty (never reported clean);
* once that node died (its lease expired, or it rebooted and the log heard of
  it), the region is out of sync and dirty, and stays within reach of resync
  work (at or past the recovery cursor, on the priority list, or being
  recovered) until a SET_REGION_SYNC of it reports the recovery's outcome.

A node dies deterministically: its lease's expiry time is moved into the
past in the lease table and the reaper (logsvc/leases.py, the production
class) runs one pass at once, so no test waits on a clock.

Budget (read in :meth:`Budget.from_env`, nowhere else): ``DMULOG_MODEL_EXAMPLES``
(default 30), ``DMULOG_MODEL_STEPS`` (steps per example, default 40),
``DMULOG_MODEL_SEED`` (default: hypothesis' derandomized seed, so a normal run
is reproducible; set, a run of its own). A long run, about 10 ms a step on a
2-core machine: ``DMULOG_MODEL_EXAMPLES=100000 DMULOG_MODEL_STEPS=100
DMULOG_MODEL_SEED=$RANDOM .venv/bin/python -m pytest tests/model -q -s -k
behaves`` (``-s`` prints the examples and steps run and what they covered).
Nothing is written to a hypothesis database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import grpc
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from dmulog.requests import REQUESTS
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.servers import RedisProcess, logsvc_server, redis_process
from logsvc.keys import lease_keys
from logsvc.leases import Leases, Reaper
from logsvc.store import Store
from tests.model.reference import Instance, LogModel, Refused, ServiceModel, Table

T = TypeVar("T")

NODES = ("n0", "n1", "n2")
LUIDS = (1, 2)
REGION_SIZE = 16
LOG_TYPES = ("clustered-core", "dmulog")
SYNC_OPTIONS = ("", "sync", "nosync")
LEASE_TTL = 3600.0
"""Seconds: no lease expires by the clock during a run; nodes die only when a rule says so."""
_STATES = {pb.INSTANCE_STATE_CONSTRUCTED: "constructed", pb.INSTANCE_STATE_RESUMED: "resumed",
           pb.INSTANCE_STATE_PRESUSPENDED: "presuspended", pb.INSTANCE_STATE_SUSPENDED: "suspended"}  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """How long the property runs: examples, steps per example, and the seed (None: derandomized)."""

    examples: int
    steps: int
    seed: int | None

    @classmethod
    def from_env(cls) -> Budget:
        """The one place the budget's environment variables are read."""
        raw_seed = os.environ.get("DMULOG_MODEL_SEED")
        return cls(int(os.environ.get("DMULOG_MODEL_EXAMPLES", "30")), int(os.environ.get("DMULOG_MODEL_STEPS", "40")),
                   int(raw_seed) if raw_seed else None)  # fmt: skip


BUDGET = Budget.from_env()


class Servers:
    """One redis-server and one in-process logsvc for a whole test, with the loop that runs logsvc and the reaper.

    The state machine is synchronous, so logsvc's asyncio loop runs in a thread of
    its own and the machine talks to it through a synchronous gRPC channel.
    """

    def __init__(self, redis_server: RedisProcess):
        self.redis_server = redis_server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="logsvc-loop", daemon=True)
        self._thread.start()
        self._service = logsvc_server(redis_server.url, lease_ttl=LEASE_TTL, reaper_interval=LEASE_TTL)
        target = self.run(self._service.__aenter__())
        self.store = Store.from_url(redis_server.url)
        self.reaper = Reaper(Leases(self.store, ttl=LEASE_TTL), interval=LEASE_TTL)
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.DirtyLogStub(self.channel)
        self.redis = redis.Redis(host="127.0.0.1", port=redis_server.port)
        self.expiry_key = lease_keys().expiry

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on logsvc's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def reset(self) -> None:
        """A fresh start for the next example: every key goes (the Function libraries stay)."""
        self.redis.flushdb()

    def reap(self) -> None:
        """One reaper pass that hands over whatever expired.

        A pass that finds no pass before it for 3 s takes the gap for a Redis
        outage and only renews every lease (lua/leases.lua), so a first pass
        makes sure the second one is a real one.
        """
        self.run(self.reaper.reap_once())
        self.run(self.reaper.reap_once())

    def kill(self, node: str) -> None:
        """The node's lease expires now, and the reaper hands it over: the lease table's own path, no clock."""
        self.run(self.reaper.reap_once())
        self.redis.zadd(self.expiry_key, {node: 0})
        self.reap()

    def close(self) -> None:
        """Stop everything this started."""
        self.channel.close()
        self.redis.close()
        self.run(self.store.close())
        self.run(self._service.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Started once per test module: examples reset the keys instead, so that many of them run fast."""
    with redis_process(Path(tmp_path_factory.mktemp("model-redis"))) as r:
        s = Servers(r)
        try:
            yield s
        finally:
            s.close()


_WRITES = {s.rpc: s.writes for s in REQUESTS}
SLOT = st.integers(0, 10_000)
REGION = st.integers(0, 999)
SYNC_CHOICE = st.sampled_from((None, None, None, *SYNC_OPTIONS))
"""None: the log's own table; else the same geometry with this sync option (a reload with other options)."""


class Mismatch(AssertionError):
    """logsvc and the model disagree, or logsvc broke the durability invariant."""


class LogsvcMachine(RuleBasedStateMachine):
    """Drives logsvc as several kernels would and checks every answer against the model."""

    servers: ClassVar[Servers]
    model_class: ClassVar[type[ServiceModel]] = ServiceModel
    examples: ClassVar[int] = 0
    steps: ClassVar[int] = 0
    seen: ClassVar[Counter[str]]
    """How often each answer and each interesting state came up: what the run covered."""

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        self.servers.reset()
        self.stub = self.servers.stub
        self.model = self.model_class()
        self.uuids: list[str] = []
        self.tables: dict[str, Table] = {}
        self.boots = itertools.count(1)
        self.who: dict[str, tuple[str, int]] = {}
        """node -> (boot id, epoch) of its current incarnation."""
        self.past: dict[str, list[tuple[str, int]]] = {n: [] for n in NODES}
        """node -> its earlier incarnations, for requests a dead or replaced one still sends."""
        self.owed: dict[tuple[str, str], set[int]] = {}
        """(uuid, node) -> regions marked by an active instance of the node's incarnation and not cleared."""
        self.orphans: dict[tuple[str, str, int], set[int]] = {}
        """(uuid, node, epoch) -> what a dead incarnation owed, until the log hands that incarnation over."""
        self.dead_owed: dict[str, set[int]] = {}
        """uuid -> regions a dead incarnation owed, handed over: out of sync until a recovery reports on them."""
        self.assigned: dict[tuple[str, str, int], int] = {}

    # Set-up ---------------------------------------------------------------------

    @initialize(counts=st.lists(st.integers(8, 24), min_size=2, max_size=2),
                trims=st.lists(st.integers(0, REGION_SIZE - 1), min_size=2, max_size=2),
                syncs=st.lists(st.sampled_from(SYNC_OPTIONS), min_size=2, max_size=2),
                active=st.lists(st.booleans(), min_size=len(NODES) * 2, max_size=len(NODES) * 2))  # fmt: skip
    def setup(self, counts: list[int], trims: list[int], syncs: list[str], active: list[bool]) -> None:
        """Two logs, a lease for each node, and the mirrors that are already up."""
        for i, (log_type, count, trim, sync) in enumerate(zip(LOG_TYPES, counts, trims, syncs, strict=True)):
            uuid = f"LVM-model-{i}"
            self.uuids.append(uuid)
            self.tables[uuid] = Table(log_type, REGION_SIZE, count * REGION_SIZE - trim, sync)
        for node in NODES:
            self._lease(node)
        for i, up in enumerate(active):
            if up:
                uuid, node = self.uuids[i % 2], NODES[i // 2]
                self._ctr(uuid, node, 1, None)
                self._resume(uuid, node, 1)

    def _lease(self, node: str) -> None:
        boot = f"boot-{next(self.boots)}"
        got = self.stub.AcquireLease(pb.AcquireLeaseRequest(node=pb.Node(name=node, boot_id=boot)), timeout=30)
        self.model.lease_granted(node, boot, got.epoch)
        if node in self.who:
            self.past[node].append(self.who[node])
        self.who[node] = (boot, got.epoch)

    # Requests -------------------------------------------------------------------

    def _ask(self, rpc: str, request: Any, expect: Callable[[], T]) -> tuple[Any, T | None]:
        """Send ``request`` to logsvc and the model; both must succeed, or fail with the same status."""
        try:
            want: T | None = expect()
            refused = None
        except Refused as e:
            want, refused = None, e.code
        try:
            got = getattr(self.stub, rpc)(request, timeout=30)
            code, detail = None, ""
        except grpc.RpcError as e:
            got, code, detail = None, e.code().name, e.details()
        self.seen[f"{rpc} {code or 'OK'}"] += 1
        if code != refused:
            raise Mismatch(f"{rpc}: logsvc answered {code or 'OK'} {detail!r}, the model {refused or 'OK'}")
        if got is not None:
            generation = self.model.generation(request.log.uuid, request.node.name)
            if got.generation != generation:
                raise Mismatch(f"{rpc}: generation {got.generation}, the model {generation} (writes: {_WRITES[rpc]})")
        return got, want

    def _pick(self, slot: int) -> tuple[str, str, int]:
        """(uuid, node, luid): mostly an instance of a node's current incarnation, now and then any."""
        live = [(uuid, key[0], key[1]) for uuid, log in sorted(self.model.logs.items())
                for key, inst in sorted(log.instances.items())
                if self.who[key[0]] == (inst.boot, inst.epoch)]  # fmt: skip
        if live and slot % 8 != 7:
            return live[(slot // 8) % len(live)]
        n = slot // 8
        return self.uuids[n % 2], NODES[(n // 2) % len(NODES)], LUIDS[(n // 6) % len(LUIDS)]

    def _ref(self, uuid: str, node: str, luid: int, who: tuple[str, int] | None = None) -> dict[str, Any]:
        boot, epoch = who or self.who[node]
        return {"log": pb.LogRef(uuid=uuid, luid=luid), "node": pb.Node(name=node, boot_id=boot, epoch=epoch)}

    def _caller(self, uuid: str, node: str, luid: int) -> tuple[str, str, str, int, int]:
        boot, epoch = self.who[node]
        return uuid, node, boot, epoch, luid

    def _region(self, uuid: str, raw: int) -> int:
        """Mostly a region of the log, one in 50 just past its end (INVALID_ARGUMENT)."""
        count = self.tables[uuid].region_count
        return raw % count if raw < 980 else count + raw % 2

    def _instance(self, uuid: str, node: str, luid: int) -> Instance | None:
        log = self.model.logs.get(uuid)
        inst = log.instances.get((node, luid)) if log else None
        return inst if inst is not None and self.who[node] == (inst.boot, inst.epoch) else None

    def _drained(self, uuid: str, node: str) -> None:
        """A node with no active instance of the log left has no write in flight to it."""
        log = self.model.logs.get(uuid)
        if log is None or not any(i.active and i.node == node for i in log.instances.values()):
            self.owed.pop((uuid, node), None)

    def _ctr(self, uuid: str, node: str, luid: int, sync: str | None) -> None:
        base = self.tables[uuid]
        table = base if sync is None else Table(base.log_type, base.region_size, base.target_sectors, sync)
        request = pb.CtrRequest(**self._ref(uuid, node, luid), target_sectors=table.target_sectors,
                                log_type=table.log_type, args=table.args)  # fmt: skip
        self._ask("Ctr", request, lambda: self.model.ctr(*self._caller(uuid, node, luid)[:4], luid, table))

    def _resume(self, uuid: str, node: str, luid: int) -> None:
        log = self.model.logs.get(uuid)
        inst = self._instance(uuid, node, luid)
        restarts = (log is not None and inst is not None and not inst.active
                    and not any(o.active for o in log.instances.values()) and not inst.table.persistent
                    and not inst.ever_resumed and inst.table.sync == "nosync")  # fmt: skip
        got, _ = self._ask("Resume", pb.ResumeRequest(**self._ref(uuid, node, luid)),
                           lambda: self.model.resume(*self._caller(uuid, node, luid)))  # fmt: skip
        if got is not None and restarts:
            # A new core table with nosync trusts the legs, as the kernel's core log does (§6.4): a dead
            # node's regions are forgiven with everything else, by the table's own word (also those of an
            # incarnation this very table's CTR replaced).
            self._hand_orphans_over()
            self.dead_owed.pop(uuid, None)

    @rule(slot=SLOT, sync=SYNC_CHOICE)
    def ctr(self, slot: int, sync: str | None) -> None:
        """CTR, of the log's table or of a reload with other options."""
        uuid, node, luid = self._pick(slot)
        self._ctr(uuid, node, luid, sync)

    @rule(slot=SLOT, sync=SYNC_CHOICE)
    def activate(self, slot: int, sync: str | None) -> None:
        """CTR then RESUME: a table loaded and resumed."""
        uuid, node, luid = self._pick(slot)
        self._ctr(uuid, node, luid, sync)
        self._resume(uuid, node, luid)

    @rule(slot=SLOT)
    def dtr(self, slot: int) -> None:
        """DTR."""
        uuid, node, luid = self._pick(slot)
        self._ask("Dtr", pb.DtrRequest(**self._ref(uuid, node, luid)),
                  lambda: self.model.dtr(*self._caller(uuid, node, luid)))  # fmt: skip
        self._drained(uuid, node)

    @rule(slot=SLOT)
    def presuspend(self, slot: int) -> None:
        """PRESUSPEND."""
        uuid, node, luid = self._pick(slot)
        self._ask("Presuspend", pb.PresuspendRequest(**self._ref(uuid, node, luid)),
                  lambda: self.model.presuspend(*self._caller(uuid, node, luid)))  # fmt: skip

    @rule(slot=SLOT)
    def postsuspend(self, slot: int) -> None:
        """POSTSUSPEND."""
        uuid, node, luid = self._pick(slot)
        self._ask("Postsuspend", pb.PostsuspendRequest(**self._ref(uuid, node, luid)),
                  lambda: self.model.postsuspend(*self._caller(uuid, node, luid)))  # fmt: skip
        self._drained(uuid, node)

    @rule(slot=SLOT)
    def suspend_and_resume(self, slot: int) -> None:
        """PRESUSPEND, POSTSUSPEND, RESUME: what a bridge does to restart its mirror's recovery."""
        self.presuspend(slot)
        self.postsuspend(slot)
        self.resume(slot)

    @rule(slot=SLOT)
    def resume(self, slot: int) -> None:
        """RESUME (also the kernel's replayed one of an active instance)."""
        self._resume(*self._pick(slot))

    @rule(slot=SLOT, raw=st.lists(REGION, min_size=1, max_size=4), integrated=st.booleans())
    def mark(self, slot: int, raw: list[int], integrated: bool) -> None:
        """MARK_REGION, or FLUSH carrying the marks (integrated flush)."""
        uuid, node, luid = self._pick(slot)
        regions = [self._region(uuid, r) for r in raw]
        inst = self._instance(uuid, node, luid)
        active = inst is not None and inst.active
        if integrated:
            got, _ = self._ask("Flush", pb.FlushRequest(**self._ref(uuid, node, luid), mark_regions=regions),
                               lambda: self.model.flush(*self._caller(uuid, node, luid), regions))  # fmt: skip
        else:
            got, _ = self._ask("MarkRegion", pb.MarkRegionRequest(**self._ref(uuid, node, luid), regions=regions),
                               lambda: self.model.mark(*self._caller(uuid, node, luid), regions))  # fmt: skip
        if got is not None and active:
            self.owed.setdefault((uuid, node), set()).update(regions)

    @rule(slot=SLOT)
    def flush(self, slot: int) -> None:
        """FLUSH without marks: nothing to commit, the instance must exist."""
        uuid, node, luid = self._pick(slot)
        self._ask("Flush", pb.FlushRequest(**self._ref(uuid, node, luid)),
                  lambda: self.model.flush(*self._caller(uuid, node, luid), []))  # fmt: skip

    def _clear(self, uuid: str, node: str, luid: int, regions: list[int]) -> None:
        got, _ = self._ask("ClearRegion", pb.ClearRegionRequest(**self._ref(uuid, node, luid), regions=regions),
                           lambda: self.model.clear(*self._caller(uuid, node, luid), regions))  # fmt: skip
        if got is not None:
            self.owed.get((uuid, node), set()).difference_update(regions)

    @rule(slot=SLOT, raw=st.lists(REGION, min_size=1, max_size=4))
    def clear(self, slot: int, raw: list[int]) -> None:
        """CLEAR_REGION: the node's writes to the regions completed."""
        uuid, node, luid = self._pick(slot)
        self._clear(uuid, node, luid, [self._region(uuid, r) for r in raw])

    @rule(slot=SLOT, raw=REGION)
    def in_sync(self, slot: int, raw: int) -> None:
        """IN_SYNC, and whether the latch answered."""
        uuid, node, luid = self._pick(slot)
        r = self._region(uuid, raw)
        got, want = self._ask("InSync", pb.InSyncRequest(**self._ref(uuid, node, luid), region=r),
                              lambda: self.model.in_sync(*self._caller(uuid, node, luid), r))  # fmt: skip
        if got is not None and (got.in_sync, got.latched) != want:
            raise Mismatch(f"IN_SYNC {r}: logsvc (in sync, latched) = {(got.in_sync, got.latched)}, model {want}")

    @rule(slot=SLOT, raw=REGION)
    def is_clean(self, slot: int, raw: int) -> None:
        """IS_CLEAN."""
        uuid, node, luid = self._pick(slot)
        r = self._region(uuid, raw)
        got, want = self._ask("IsClean", pb.IsCleanRequest(**self._ref(uuid, node, luid), region=r),
                              lambda: self.model.is_clean(*self._caller(uuid, node, luid), r))  # fmt: skip
        if got is not None and got.clean != want:
            raise Mismatch(f"IS_CLEAN {r}: logsvc {got.clean}, model {want}")

    @rule(slot=SLOT, raw=REGION)
    def is_remote_recovering(self, slot: int, raw: int) -> None:
        """IS_REMOTE_RECOVERING: a writer asks before writing a region."""
        uuid, node, luid = self._pick(slot)
        r = self._region(uuid, raw)
        request = pb.IsRemoteRecoveringRequest(**self._ref(uuid, node, luid), region=r)
        got, want = self._ask("IsRemoteRecovering", request,
                              lambda: self.model.is_remote_recovering(*self._caller(uuid, node, luid), r))  # fmt: skip
        if got is not None and (got.is_recovering, got.in_sync_hint) != want:
            raise Mismatch(f"IS_REMOTE_RECOVERING {r}: logsvc {(got.is_recovering, got.in_sync_hint)}, model {want}")

    @rule(slot=SLOT)
    def counts_and_texts(self, slot: int) -> None:
        """GET_SYNC_COUNT, GET_REGION_SIZE and STATUS_INFO."""
        uuid, node, luid = self._pick(slot)
        got, want = self._ask("GetSyncCount", pb.GetSyncCountRequest(**self._ref(uuid, node, luid)),
                              lambda: self.model.get_sync_count(*self._caller(uuid, node, luid)))  # fmt: skip
        if got is not None and got.sync_count != want:
            raise Mismatch(f"GET_SYNC_COUNT: logsvc {got.sync_count}, model {want}")
        got, want = self._ask("GetRegionSize", pb.GetRegionSizeRequest(**self._ref(uuid, node, luid)),
                              lambda: self.model.get_region_size(*self._caller(uuid, node, luid)))  # fmt: skip
        if got is not None and got.region_size != want:
            raise Mismatch(f"GET_REGION_SIZE: logsvc {got.region_size}, model {want}")
        text, said = self._ask("StatusInfo", pb.StatusInfoRequest(**self._ref(uuid, node, luid)),
                              lambda: self.model.status_info(*self._caller(uuid, node, luid)))  # fmt: skip
        if text is not None and text.text != said:
            raise Mismatch(f"STATUS_INFO: logsvc {text.text!r}, model {said!r}")

    def _resync_work(self, uuid: str, node: str, luid: int) -> int | None:
        got, want = self._ask("GetResyncWork", pb.GetResyncWorkRequest(**self._ref(uuid, node, luid)),
                              lambda: self.model.get_resync_work(*self._caller(uuid, node, luid)))  # fmt: skip
        if got is None:
            return None
        answer = got.region if got.has_work else None
        if answer != want:
            raise Mismatch(f"GET_RESYNC_WORK: logsvc {answer}, model {want}")
        if answer is not None:
            self.assigned[(uuid, node, luid)] = answer
        return answer

    def _set_sync(self, uuid: str, node: str, luid: int, r: int, ok: bool) -> None:
        request = pb.SetRegionSyncRequest(**self._ref(uuid, node, luid), region=r, in_sync=ok)
        got, _ = self._ask("SetRegionSync", request,
                           lambda: self.model.set_region_sync(*self._caller(uuid, node, luid), r, ok))  # fmt: skip
        if got is not None:
            # The recovery reported on the region: its outcome is now the log's to keep (a failed one waits
            # for the next resume, as in the kernel's own logs, §6.3).
            self.dead_owed.get(uuid, set()).discard(r)
            self.assigned.pop((uuid, node, luid), None)

    @rule(slot=SLOT)
    def get_resync_work(self, slot: int) -> None:
        """GET_RESYNC_WORK alone (the kernel asking again while it recovers)."""
        self._resync_work(*self._pick(slot))

    @rule(slot=SLOT, raw=REGION, own=st.booleans(), ok=st.booleans())
    def set_region_sync(self, slot: int, raw: int, own: bool, ok: bool) -> None:
        """SET_REGION_SYNC: of the region the instance was given, or of any (a leg failed on a write)."""
        uuid, node, luid = self._pick(slot)
        r = self.assigned.get((uuid, node, luid)) if own else None
        self._set_sync(uuid, node, luid, self._region(uuid, raw) if r is None else r, ok)

    @rule(slot=SLOT, ok=st.integers(0, 3))
    def recover(self, slot: int, ok: int) -> None:
        """A kernel's recovery pass: GET_RESYNC_WORK, SET_REGION_SYNC of it (failing one time in four), CLEAR."""
        uuid, node, luid = self._pick(slot)
        r = self._resync_work(uuid, node, luid)
        if r is not None:
            self._set_sync(uuid, node, luid, r, ok != 0)
            self._clear(uuid, node, luid, [r])

    @rule(slot=SLOT)
    def resync_everything(self, slot: int) -> None:
        """Recovery passes until the log has no work for the instance: the way to the in-sync latch."""
        uuid, node, luid = self._pick(slot)
        for _ in range(self.tables[uuid].region_count + 2):
            r = self._resync_work(uuid, node, luid)
            if r is None:
                return
            self._set_sync(uuid, node, luid, r, True)
            self._clear(uuid, node, luid, [r])

    # Nodes ----------------------------------------------------------------------

    def _orphan(self, node: str) -> None:
        """The node's current incarnation stops: what it owed is the log's to resync once it hears of it."""
        epoch = self.who[node][1]
        for (uuid, owner), regions in list(self.owed.items()):
            if owner == node:
                self.orphans.setdefault((uuid, node, epoch), set()).update(regions)
                del self.owed[(uuid, owner)]

    @rule(node=st.sampled_from(NODES))
    def die(self, node: str) -> None:
        """The node's lease expires and a reaper hands it over (its kernel is gone or fenced)."""
        if not self.model.nodes[node].live:
            return
        self._orphan(node)
        self.servers.kill(node)
        self.model.reap()
        self.model.expire(node)

    @rule(node=st.sampled_from(NODES), reap=st.booleans())
    def reboot(self, node: str, reap: bool) -> None:
        """The node comes back with a new boot and a new lease.

        Its old incarnation, if live, awaits a reaper or the new incarnation's
        CTR or RESUME in each log.
        """
        self._orphan(node)
        self._lease(node)
        if reap:
            self.reaper_pass()

    @rule()
    def reaper_pass(self) -> None:
        """A reaper pass: incarnations replaced by a new boot are handed over."""
        self.servers.reap()
        self.model.reap()

    @rule(node=st.sampled_from(NODES), which=st.integers(0, 3), slot=SLOT, raw=st.lists(REGION, min_size=1, max_size=2))
    def zombie_mark(self, node: str, which: int, slot: int, raw: list[int]) -> None:
        """A mark from an earlier incarnation of the node: refused once the log handed that incarnation over."""
        if not self.past[node]:
            return
        boot, epoch = self.past[node][-1 - which % len(self.past[node])]
        uuid, luid = self.uuids[slot % 2], LUIDS[(slot // 2) % 2]
        regions = [self._region(uuid, r) for r in raw]
        log = self.model.logs.get(uuid)
        inst = log.instances.get((node, luid)) if log else None
        active = inst is not None and inst.active and (inst.boot, inst.epoch) == (boot, epoch)
        request = pb.MarkRegionRequest(**self._ref(uuid, node, luid, (boot, epoch)), regions=regions)
        got, _ = self._ask("MarkRegion", request,
                           lambda: self.model.mark(uuid, node, boot, epoch, luid, regions))  # fmt: skip
        if got is not None and active:
            self.orphans.setdefault((uuid, node, epoch), set()).update(regions)

    # Invariants -----------------------------------------------------------------

    @invariant()
    def logsvc_is_the_model_and_durable(self) -> None:
        """After every step: each log's whole state is the model's, and no owed region is clean or lost."""
        type(self).steps += 1
        self._hand_orphans_over()
        for uuid in self.uuids:
            try:
                state = self.stub.GetLogState(pb.GetLogStateRequest(uuid=uuid), timeout=30)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                if uuid in self.model.logs:
                    raise Mismatch(f"{uuid}: logsvc has no such log, the model has one") from None
                continue
            log = self.model.logs.get(uuid)
            if log is None:
                raise Mismatch(f"{uuid}: logsvc still has the log, the model dropped it")
            got = _observed(state)
            want = _expected(log)
            if got != want:
                diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
                raise Mismatch(f"{uuid}: state differs, (logsvc, model): {diff}")
            self._check_durable(uuid, got)

    def _hand_orphans_over(self) -> None:
        """An orphan's incarnation that left the log was handed over: its regions are now owed to resync."""
        for (uuid, node, epoch), regions in list(self.orphans.items()):
            log = self.model.logs.get(uuid)
            if log is None:
                del self.orphans[(uuid, node, epoch)]
            elif not any(i.node == node and i.epoch == epoch for i in log.instances.values()):
                self.dead_owed.setdefault(uuid, set()).update(regions)
                del self.orphans[(uuid, node, epoch)]
        for uuid in list(self.dead_owed):
            if uuid not in self.model.logs:
                del self.dead_owed[uuid]

    def _check_durable(self, uuid: str, got: dict[str, Any]) -> None:
        owed = set().union(*(r for (u, _), r in self.owed.items() if u == uuid),
                           *(r for (u, _, _), r in self.orphans.items() if u == uuid))  # fmt: skip
        if owed - got["dirty"]:
            raise Mismatch(f"{uuid}: regions {sorted(owed - got['dirty'])} are marked and not cleared, yet clean")
        dead = self.dead_owed.get(uuid, set())
        if dead:
            self.seen["a dead node's regions await resync"] += 1
        if any(i.latched for i in self.model.logs[uuid].instances.values()):
            self.seen["an instance is latched"] += 1
        # A core log's new table starts over clean and out of sync, as the kernel's core log (§6.4): its dirty
        # bits are history nobody reads again. A persistent log's are what the next activation resyncs.
        clean = dead - got["dirty"] if self.tables[uuid].persistent else set()
        if dead & got["in_sync"] or clean:
            raise Mismatch(
                f"{uuid}: regions a dead node had marked, {sorted(dead)}, must be out of sync (and dirty "
                f"in a persistent log): in sync {sorted(dead & got['in_sync'])}, clean {sorted(clean)}"
            )
        reachable = {r for r in dead if r >= got["cursor"] or r in got["priority"]
                     or (got["recovery"] is not None and got["recovery"][0] == r)}  # fmt: skip
        if dead - reachable:
            raise Mismatch(f"{uuid}: regions {sorted(dead - reachable)} of a dead node were dropped from resync work")

    def teardown(self) -> None:
        """Nothing to stop: the servers outlive the example."""


def _bits(bitmap: bytes, count: int) -> set[int]:
    return {r for r in range(count) if r // 8 < len(bitmap) and bitmap[r // 8] >> (7 - r % 8) & 1}


def _observed(state: pb.GetLogStateResponse) -> dict[str, Any]:
    """The parts of a log's state the model predicts, from GetLogState."""
    count = state.summary.region_count
    return {
        "region_count": count,
        "counts": (state.summary.sync_count, state.summary.dirty_count, state.summary.active_count),
        "in_sync": _bits(state.in_sync_bitmap, count),
        "dirty": _bits(state.dirty_bitmap, count),
        "marks": {m.region: set(m.nodes) for m in state.marks},
        "instances": sorted((i.node, i.luid, i.boot_id, i.epoch, _STATES[i.state]) for i in state.instances),
        "recovery": (
            (state.recovering_region, (state.recoverer_node, state.recoverer_luid)) if state.recovering else None
        ),
        "cursor": min(state.sync_search, count),  # parked past the end is the end
        "priority": list(state.priority_regions),
        "fences": {f.node: f.epoch for f in state.fences},
    }


def _expected(log: LogModel) -> dict[str, Any]:
    """The same parts, from the model."""
    return {
        "region_count": log.region_count,
        "counts": (len(log.in_sync), len(log.dirty), sum(i.active for i in log.instances.values())),
        "in_sync": set(log.in_sync),
        "dirty": set(log.dirty),
        "marks": {r: set(nodes) for r, nodes in log.marks.items() if nodes},
        "instances": sorted((i.node, i.luid, i.boot, i.epoch, i.state) for i in log.instances.values()),
        "recovery": log.recovery,
        "cursor": min(log.cursor, log.region_count),
        "priority": list(log.priority),
        "fences": dict(log.fences),
    }


def _settings(examples: int, steps: int, derandomize: bool = True) -> settings:
    return settings(max_examples=examples, stateful_step_count=steps, derandomize=derandomize, database=None,
                    deadline=None, suppress_health_check=list(HealthCheck), print_blob=False,
                    report_multiple_bugs=False)  # fmt: skip


def test_logsvc_behaves_as_the_model(servers: Servers) -> None:
    """Many random runs of three nodes on two logs: every answer and every state as the model says, durably."""
    machine: type[LogsvcMachine] = type("LogsvcMachineRun", (LogsvcMachine,), {"servers": servers, "seen": Counter()})
    if BUDGET.seed is not None:
        machine = hypothesis_seed(BUDGET.seed)(machine)
    run_state_machine_as_test(machine, settings=_settings(BUDGET.examples, BUDGET.steps, BUDGET.seed is None))
    print(f"\nmodel vs logsvc: {machine.examples} examples, {machine.steps} steps")
    for what, count in sorted(machine.seen.items()):
        print(f"  {count:8d}  {what}")


class ForgetfulClear(ServiceModel):
    """A wrong model: a CLEAR_REGION drops every mark the caller's node has in the log, not only the named ones.

    It is told a mark was cleared when it was not: the kind of slip that would
    let a log report a region clean while a write to it is in flight.
    """

    def clear(self, uuid: str, node: str, boot: str, epoch: int, luid: int, regions: list[int]) -> None:
        """Clears the named regions, then forgets the node's other marks too."""
        super().clear(uuid, node, boot, epoch, luid, regions)
        log = self.logs[uuid]
        for r in log._drop_marks_of(node):
            log._clean_if_safe(r)


@pytest.mark.load  # about 45 s, most of it shrinking: in make test, not in the edit loop
def test_the_checker_finds_and_shrinks_a_wrong_model(servers: Servers) -> None:
    """The same machine against a model that thinks a CLEAR drops the node's other marks fails, on a short run.

    Shrunk, the failure is three steps: a table active on one node, a MARK of
    one region, a CLEAR of another (after which the wrong model forgets the
    first mark and expects the region clean; logsvc keeps it dirty).
    """
    fields = {"servers": servers, "model_class": ForgetfulClear, "seen": Counter()}
    machine: type[LogsvcMachine] = type("ForgetfulMachine", (LogsvcMachine,), fields)
    report: list[str] = []

    def collect(value: object) -> None:
        report.append(str(value))

    started = time.monotonic()
    with with_reporter(collect), pytest.raises(Mismatch) as failed:
        run_state_machine_as_test(machine, settings=_settings(200, 8))
    report.extend(getattr(failed.value, "__notes__", []))
    print(f"\nwrong model: {machine.examples} examples, {machine.steps} steps, {time.monotonic() - started:.1f} s")
    print("\n".join(report))
    steps = [line for line in "\n".join(report).splitlines()
             if line.startswith("state.") and not line.startswith(("state.setup", "state.teardown",
                                                                      "state.logsvc_is_the_model"))]  # fmt: skip
    assert steps, report
    # A mark of two regions and a clear of one: a handful of steps at most once shrunk.
    assert len(steps) <= 6, "\n".join(report)
