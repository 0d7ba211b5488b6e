"""A reference model of the dmulog log's semantics, in sets and dicts, for the stateful test to compare against.

It is written from the documented semantics (docs/protocol.md §4 and §6,
docs/multi-node.md, docs/durability.md "Generations", the comments of
proto/dmulog/v1/dmulog.proto) and from the kernel behaviour they describe
(dm-log.c's core and disk logs, cmirrord's functions.c), not from the Lua
library: a model copied from the implementation would share its bugs. Where
the documents leave a detail open (the order of the priority list, which
SET_REGION_SYNC ends an assignment), the docstring of the piece says so and
what was chosen.

Scope: one service with several logs, several nodes (each with a lease: a
name, a boot id and an epoch) and several table instances per node and log.
Left out, because the stateful test never does them: tables whose geometry
differs from the log's (resize, -EBUSY), `clustered-disk` devices, Redis
failovers (generations above the log's), request deadlines, bulk-work steps
(invisible: no answer comes from a state between steps).

Pure: no I/O, no clock. Every request method returns the answer logsvc must
give, or raises :class:`Refused` with the gRPC status name it must fail with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "ACTIVE",
    "LEASE_NOT_LIVE",
    "Instance",
    "LogModel",
    "Node",
    "Refused",
    "ServiceModel",
    "Table",
]

ACTIVE = frozenset({"resumed", "presuspended"})
"""Instance states in which the kernel's mirror runs (a presuspended one is still active: I/O drains)."""
PRIORITY_LIMIT = 1024
"""How many regions writers wait for the log remembers (the oldest requests fall off)."""
LEASE_NOT_LIVE = "NOT_FOUND"


class Refused(Exception):
    """The request must fail with gRPC status ``code`` (its name, e.g. ``NOT_FOUND``)."""

    def __init__(self, code: str, why: str):
        super().__init__(f"{code}: {why}")
        self.code = code


@dataclass(frozen=True)
class Table:
    """What one CTR asks for: the log type and its arguments (proto: CtrRequest)."""

    log_type: str
    region_size: int
    target_sectors: int
    sync: str = ""
    """"", "sync" or "nosync"."""

    @property
    def region_count(self) -> int:
        """ceil(target / region size), as the kernel computes it (protocol.md §4.1)."""
        return -(-self.target_sectors // self.region_size)

    @property
    def persistent(self) -> bool:
        """clustered-disk and dmulog keep their bits across activations; clustered-core does not (§6.4)."""
        return self.log_type != "clustered-core"

    @property
    def args(self) -> tuple[str, ...]:
        """The CTR's type arguments."""
        return (str(self.region_size),) + ((self.sync,) if self.sync else ())

    def fresh_bits(self) -> tuple[set[int], set[int]]:
        """(in sync, dirty) of a log with no history, as the kernel's logs start (§6.4, dm-log.c core_ctr).

        Default and ``sync`` resync every region, ``nosync`` trusts the legs.
        A persistent log that will resync a region keeps it dirty too, so that
        a crash before the resync still resyncs it ("when in doubt, dirty").
        """
        every = set(range(self.region_count))
        if self.sync == "nosync":
            return set(every), set()
        return set(), (set(every) if self.persistent else set())


@dataclass
class Instance:
    """One table instance: (node, luid) of one incarnation (boot id, epoch)."""

    node: str
    luid: int
    boot: str
    epoch: int
    table: Table
    state: str = "constructed"
    ever_resumed: bool = False
    """A core log's new table starts over; the same table resumed keeps its bits (§6.4)."""
    latched: bool = False
    """IN_SYNC answers 1 for every region (§6.2): the whole log reached sync since this instance resumed."""
    hint_stale: bool = False
    """Its kernel may hold an in_sync_hint from before a node's regions went out of sync (multi-node.md step 4)."""

    @property
    def key(self) -> tuple[str, int]:
        """Instances are named by (node, luid) (proto: "Addressing")."""
        return (self.node, self.luid)

    @property
    def active(self) -> bool:
        """Resumed or presuspended."""
        return self.state in ACTIVE


@dataclass
class LogModel:
    """One log: the shared bits, the marks per node, the recovery and the instances."""

    uuid: str
    table: Table
    in_sync: set[int]
    dirty: set[int]
    marks: dict[int, set[str]] = field(default_factory=dict)
    """region -> nodes that have it marked (§6.1: marks are per node)."""
    instances: dict[tuple[str, int], Instance] = field(default_factory=dict)
    recovery: tuple[int, tuple[str, int]] | None = None
    """(region, instance key) being recovered: one at a time per log (§6.3)."""
    priority: list[int] = field(default_factory=list)
    """Regions to recover before the cursor's, first in line first."""
    cursor: int = 0
    """The next region the ordinary recovery looks at (region_count: past the end)."""
    fresh: bool = True
    """Never activated: a persistent log's ``nosync`` trusts the legs only then (§6.4)."""
    fences: dict[str, int] = field(default_factory=dict)
    """node -> its newest incarnation handed over here (refused from then on)."""
    generations: dict[str, int] = field(default_factory=dict)
    """node -> its writing requests that succeeded on this log (durability.md "Generations")."""

    @property
    def region_count(self) -> int:
        """Regions of the log."""
        return self.table.region_count

    def out_of_sync(self) -> list[int]:
        """Regions whose legs may differ, ascending."""
        return [r for r in range(self.region_count) if r not in self.in_sync]

    # The four directions of a region's bits (§6.1 "When in doubt, dirty").

    def _make_dirty(self, regions: Iterable[int]) -> None:
        self.dirty.update(regions)

    def _make_out_of_sync(self, regions: Iterable[int]) -> None:
        """Out of sync is always allowed and makes the region dirty: a crash before its resync still resyncs it."""
        regions = list(regions)
        self.in_sync.difference_update(regions)
        self._make_dirty(regions)

    def _clean_if_safe(self, r: int) -> None:
        """Clean only when no node has it marked and its legs agree.

        Clean but out of sync would read as in sync after a crash of a persistent log.
        """
        if not self.marks.get(r) and r in self.in_sync:
            self.dirty.discard(r)

    def _make_in_sync(self, r: int) -> None:
        """A recovery ended well. The moment the whole log is in sync every active instance latches (§6.2)."""
        if r in self.in_sync:
            return
        self.in_sync.add(r)
        if len(self.in_sync) == self.region_count:
            for inst in self.instances.values():
                if inst.active:
                    inst.latched = True

    def _end_latches(self) -> None:
        """A node's regions went out of sync behind the others' backs.

        No latch survives, and every kernel's in_sync_hint is suspect until it
        resumes (multi-node.md, steps 2 and 4).
        """
        for inst in self.instances.values():
            inst.latched = False
            inst.hint_stale = True

    def _abandon_recovery_of(self, key: tuple[str, int]) -> None:
        """A recoverer that goes away gives its region back: first in line for the next asker (§6.3)."""
        if self.recovery is not None and self.recovery[1] == key:
            self.priority.insert(0, self.recovery[0])
            self.recovery = None

    def _forget(self, key: tuple[str, int]) -> None:
        del self.instances[key]
        self._abandon_recovery_of(key)

    def _drop_marks_of(self, node: str) -> list[int]:
        """Every mark of ``node`` goes; the regions it had marked, ascending."""
        had = sorted(r for r, nodes in self.marks.items() if node in nodes)
        for r in had:
            self.marks[r].discard(node)
            if not self.marks[r]:
                del self.marks[r]
        return had

    def hand_over(self, node: str, dead: list[Instance]) -> None:
        """Instances of ``node`` that died (their node crashed, rebooted or lost its lease) go.

        §6.5 and multi-node.md step 2: the instances are removed (a recovery
        of theirs back to the front of the queue), every region the node had
        marked turns out of sync and dirty (never clean) and the recovery
        cursor moves back so they are handed out again without waiting for a
        resume, the dead epochs are fenced, and every latch ends. Nothing
        happens when nothing died.
        """
        if not dead:
            return
        for inst in dead:
            self._forget(inst.key)
            self.fences[node] = max(self.fences.get(node, 0), inst.epoch)
        lost = self._drop_marks_of(node)
        self._make_out_of_sync(lost)
        if lost:
            self.cursor = min(self.cursor, lost[0])
        self._end_latches()

    def replace_old_incarnations(self, node: str, boot: str, epoch: int) -> None:
        """A CTR or RESUME of a later incarnation (another boot, or a larger epoch) ends the node's older ones."""
        self.hand_over(node, [i for i in self.instances.values()
                              if i.node == node and (i.boot != boot or i.epoch < epoch)])  # fmt: skip

    def master_resume(self, inst: Instance) -> None:
        """The first active instance brings the shared bits to this activation (§6.4's table).

        No write is in flight anywhere, so the marks are history (already in
        the dirty bits) and go, with the priority list and any assignment.
        """
        t = inst.table
        if not t.persistent:
            if not inst.ever_resumed:  # a new table starts over, as the kernel's core log
                self.in_sync, self.dirty = t.fresh_bits()
        elif t.sync == "sync" or (t.sync == "nosync" and self.fresh):
            self.in_sync, self.dirty = t.fresh_bits()
        else:  # the disk log's rule: dirty means a write may have been in flight at a crash
            self.in_sync = set(range(self.region_count)) - self.dirty
        self.fresh = False
        self.marks.clear()
        self.priority.clear()
        self.recovery = None

    def in_sync_hint(self) -> int:
        """Every region below it is in sync (proto: IsRemoteRecoveringResponse.in_sync_hint; protocol.md §4.4)."""
        return next((r for r in range(self.region_count) if r not in self.in_sync), self.region_count)

    def check_region(self, inst: Instance, r: int) -> int:
        """A region outside the instance's table is INVALID_ARGUMENT (§6.1)."""
        if not 0 <= r < inst.table.region_count:
            raise Refused("INVALID_ARGUMENT", f"region {r} of {inst.table.region_count}")
        return r

    def next_resync_region(self, inst: Instance) -> int | None:
        """GET_RESYNC_WORK (§6.3), for an instance that is resumed.

        One recovery at a time: the recoverer is told its region again (the
        kernel retried), everyone else nothing. After a hand-over no region goes
        out until every other active instance resumed (multi-node.md step 4).
        Then regions writers wait for, most recent request first (the
        documents say only "first"; most recent first is the choice logsvc
        made), then the next out-of-sync region from the cursor; with none left
        the cursor parks past the end.
        """
        if self.recovery is not None:
            region, holder = self.recovery
            return region if holder == inst.key else None
        if any(o.active and o.hint_stale for o in self.instances.values() if o is not inst):
            return None
        while self.priority:
            r = self.priority.pop(0)
            if r < self.region_count and r not in self.in_sync:
                self.recovery = (r, inst.key)
                return r
        found = next((r for r in range(self.cursor, self.region_count) if r not in self.in_sync), None)
        if found is None:
            self.cursor = self.region_count
            return None
        self.cursor = found + 1
        self.recovery = (found, inst.key)
        return found


@dataclass
class Node:
    """A node's lease as the lease table knows it (multi-node.md "Leases")."""

    name: str
    boot: str = ""
    epoch: int = 0
    live: bool = False
    pending: list[int] = field(default_factory=list)
    """Incarnations replaced by a new boot whose logs the reaper has not handed over yet."""
    joined: set[str] = field(default_factory=set)
    """Logs the node joined (before every CTR): where a reaper looks for its instances."""


class ServiceModel:
    """Every log and node lease of one logsvc: what each request must answer."""

    def __init__(self) -> None:
        self.logs: dict[str, LogModel] = {}
        self.nodes: dict[str, Node] = {}

    # Leases ---------------------------------------------------------------------

    def lease_granted(self, name: str, boot: str, epoch: int) -> None:
        """AcquireLease gave ``epoch``: a new boot's incarnation replaces the live one, to be handed over later."""
        node = self.nodes.setdefault(name, Node(name))
        if node.live and node.boot == boot:
            if epoch != node.epoch:
                raise AssertionError(f"{name}: a live lease acquired again on its boot must keep epoch {node.epoch}, "
                                     f"got {epoch}")  # fmt: skip
            return
        if epoch <= node.epoch:
            raise AssertionError(f"{name}: a new incarnation must have a larger epoch than {node.epoch}, got {epoch}")
        if node.live:
            node.pending.append(node.epoch)
        node.boot, node.epoch, node.live = boot, epoch, True

    def expire(self, name: str) -> None:
        """The node's lease expired: the reaper hands its incarnations over in every log it joined.

        Its index of logs then goes: a later incarnation joins again.
        """
        node = self.nodes[name]
        node.live = False
        for epoch in node.pending:
            self._hand_over_everywhere(node, epoch)
        node.pending.clear()
        self._hand_over_everywhere(node, node.epoch)
        node.joined.clear()

    def reap(self) -> None:
        """A reaper pass: incarnations replaced by a new boot are handed over too."""
        for node in self.nodes.values():
            for epoch in node.pending:
                self._hand_over_everywhere(node, epoch)
            node.pending.clear()

    def _hand_over_everywhere(self, node: Node, epoch: int) -> None:
        """expire_node in each log the node joined.

        Idempotent, and keyed by epoch, so a later incarnation's instances are
        never touched (multi-node.md "Fencing").
        """
        for uuid in sorted(node.joined):
            log = self.logs.get(uuid)
            if log is None or epoch <= log.fences.get(node.name, 0):
                continue
            log.fences[node.name] = epoch
            log.hand_over(node.name, [i for i in log.instances.values()
                                      if i.node == node.name and 0 < i.epoch <= epoch])  # fmt: skip

    # Requests -------------------------------------------------------------------

    def _instance(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> tuple[LogModel, Instance]:
        """The caller's own instance: same boot and epoch, else NOT_FOUND (the kernel then replays CTR, §5)."""
        log = self.logs.get(uuid)
        inst = log.instances.get((node, luid)) if log else None
        if log is None or inst is None or inst.boot != boot or inst.epoch != epoch:
            raise Refused("NOT_FOUND", f"no instance {node}/{luid} of {uuid} for boot {boot} epoch {epoch}")
        return log, inst

    def _wrote(self, uuid: str, node: str) -> None:
        """A writing request of ``node`` succeeded: its generation of the log counts it."""
        log = self.logs.get(uuid)
        if log is not None:
            log.generations[node] = log.generations.get(node, 0) + 1

    def generation(self, uuid: str, node: str) -> int:
        """What a response carries: the node's generation of the log (0 once the log is gone)."""
        log = self.logs.get(uuid)
        return log.generations.get(node, 0) if log else 0

    def ctr(self, uuid: str, node: str, boot: str, epoch: int, luid: int, table: Table) -> None:
        """CTR: idempotent for the same arguments, ALREADY_EXISTS for others (proto: Ctr).

        The incarnation must hold a live lease (else NOT_FOUND "fenced"); it
        joins the log first, so a reaper finds the log. A later incarnation's
        CTR ends the node's older instances (§6.5). A new log starts with the
        table's fresh bits (§6.4).
        """
        lease = self.nodes.get(node)
        if epoch > 0 and not (lease and lease.live and lease.boot == boot and lease.epoch == epoch):
            raise Refused(LEASE_NOT_LIVE, f"{node} epoch {epoch} holds no live lease")
        if lease is not None and epoch > 0:
            lease.joined.add(uuid)
        log = self.logs.get(uuid)
        if log is not None:
            if epoch > 0 and epoch <= log.fences.get(node, 0):
                raise Refused("NOT_FOUND", f"{node} epoch {epoch} is fenced")
            old = log.instances.get((node, luid))
            if old is not None and old.boot == boot and old.epoch == epoch:
                if old.table != table:
                    raise Refused("ALREADY_EXISTS", f"{node}/{luid} exists with other arguments")
                self._wrote(uuid, node)
                return
            log.replace_old_incarnations(node, boot, epoch)
        else:
            in_sync, dirty = table.fresh_bits()
            log = self.logs[uuid] = LogModel(uuid, table, in_sync, dirty)
        log.instances[(node, luid)] = Instance(node, luid, boot, epoch, table)
        self._wrote(uuid, node)

    def dtr(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> None:
        """DTR: succeeds whatever the kernel meant (the kernel ignores its result, §3).

        Only the caller's incarnation's instance (or an older one of the same
        boot) goes. A log whose last instance goes goes with it if it keeps
        nothing a new CTR would not recreate (§6.5): a core log, or a
        persistent log never activated and with no region marked. Otherwise,
        once the node has no instance left, its marks go (its writes are
        drained: DTR follows a suspend) and the dirty bits stay.
        """
        log = self.logs.get(uuid)
        inst = log.instances.get((node, luid)) if log else None
        if log is None or inst is None or inst.boot != boot or inst.epoch > epoch:
            self._wrote(uuid, node)
            return
        log._forget(inst.key)
        if not log.instances and (not inst.table.persistent or (log.fresh and not log.marks)):
            del self.logs[uuid]
            return
        if not any(i.node == node for i in log.instances.values()):
            log._drop_marks_of(node)
        self._wrote(uuid, node)

    def presuspend(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> None:
        """PRESUSPEND: recovery stops on the instance; it is still active (I/O drains)."""
        _, inst = self._instance(uuid, node, boot, epoch, luid)
        if inst.state == "resumed":
            inst.state = "presuspended"
        self._wrote(uuid, node)

    def postsuspend(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> None:
        """POSTSUSPEND: suspended, its latch ends, and it gives up any recovery assignment (proto: Postsuspend)."""
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        inst.state = "suspended"
        inst.latched = False
        log._abandon_recovery_of(inst.key)
        self._wrote(uuid, node)

    def resume(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> None:
        """RESUME: the first active instance is the master (§6.4).

        Any resume restarts the recovery cursor and ends the latch; a replayed
        RESUME of an active instance keeps every bit.
        """
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        log.replace_old_incarnations(node, boot, epoch)
        if not inst.active and not any(o.active for o in log.instances.values() if o is not inst):
            log.master_resume(inst)
        inst.state, inst.ever_resumed, inst.latched, inst.hint_stale = "resumed", True, False, False
        log.cursor = 0
        self._wrote(uuid, node)

    def get_region_size(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> int:
        """GET_REGION_SIZE: the instance's region size."""
        return self._instance(uuid, node, boot, epoch, luid)[1].table.region_size

    def is_clean(self, uuid: str, node: str, boot: str, epoch: int, luid: int, r: int) -> bool:
        """IS_CLEAN: not dirty (proto: "whether no node has the region marked", and never while out of sync)."""
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        return log.check_region(inst, r) not in log.dirty

    def in_sync(self, uuid: str, node: str, boot: str, epoch: int, luid: int, r: int) -> tuple[bool, bool]:
        """IN_SYNC: (answer, whether the latch gave it) (§6.2)."""
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        log.check_region(inst, r)
        if inst.latched:
            return True, True
        return r in log.in_sync, False

    def mark(self, uuid: str, node: str, boot: str, epoch: int, luid: int, regions: list[int]) -> None:
        """MARK_REGION (and FLUSH's integrated marks): the node's mark, and dirty. A bad region changes nothing."""
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        for r in regions:
            log.check_region(inst, r)
        for r in regions:
            log.marks.setdefault(r, set()).add(node)
        log._make_dirty(regions)
        self._wrote(uuid, node)

    def flush(self, uuid: str, node: str, boot: str, epoch: int, luid: int, regions: list[int]) -> None:
        """FLUSH: every change is durable when answered, so only its integrated marks do anything (§4.3, §6.1)."""
        self.mark(uuid, node, boot, epoch, luid, regions)

    def clear(self, uuid: str, node: str, boot: str, epoch: int, luid: int, regions: list[int]) -> None:
        """CLEAR_REGION: the node's mark goes; a region no node has marked and in sync becomes clean."""
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        for r in regions:
            log.check_region(inst, r)
        for r in regions:
            nodes = log.marks.get(r)
            if nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del log.marks[r]
            log._clean_if_safe(r)
        self._wrote(uuid, node)

    def get_resync_work(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> int | None:
        """GET_RESYNC_WORK: the region to recover, None for none; only a resumed instance recovers."""
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        found = log.next_resync_region(inst) if inst.state == "resumed" else None
        self._wrote(uuid, node)
        return found

    def set_region_sync(self, uuid: str, node: str, boot: str, epoch: int, luid: int, r: int, ok: bool) -> None:
        """SET_REGION_SYNC: a recovery ended (ok) or a leg failed (not ok).

        It ends the assignment of that region, whoever sends it (§6.3), and
        the caller's own assignment whatever region it names (a recoverer
        reports only its own region; the documents do not say which of the two
        ends it, logsvc ends both).
        """
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        log.check_region(inst, r)
        if log.recovery is not None and (log.recovery[1] == inst.key or log.recovery[0] == r):
            log.recovery = None
        if ok:
            log._make_in_sync(r)
        else:
            log._make_out_of_sync([r])
        self._wrote(uuid, node)

    def get_sync_count(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> int:
        """GET_SYNC_COUNT: regions in sync."""
        return len(self._instance(uuid, node, boot, epoch, luid)[0].in_sync)

    def status_info(self, uuid: str, node: str, boot: str, epoch: int, luid: int) -> str:
        """STATUS_INFO: cmirrord's text for clustered-core, ``1 dmulog`` for the native type (§8.2)."""
        return f"1 {self._instance(uuid, node, boot, epoch, luid)[1].table.log_type}"

    def is_remote_recovering(self, uuid: str, node: str, boot: str, epoch: int, luid: int,
                             r: int) -> tuple[bool, int]:  # fmt: skip
        """IS_REMOTE_RECOVERING: (region not in sync yet, first region out of sync) (§6.3, §4.4).

        An instance that is not resumed hears "not recovering" and a hint at its
        region count: its kernel resets the hint at its next resume. A region a
        writer waits for goes to the front of the priority list, unless it is the
        one being recovered.
        """
        log, inst = self._instance(uuid, node, boot, epoch, luid)
        log.check_region(inst, r)
        self._wrote(uuid, node)
        if inst.state != "resumed":
            return False, inst.table.region_count
        hint = log.in_sync_hint()
        if r in log.in_sync:
            return False, hint
        if log.recovery is None or log.recovery[0] != r:
            log.priority = [r, *(p for p in log.priority if p != r)][:PRIORITY_LIMIT]
        return True, hint
