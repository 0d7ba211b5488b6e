"""A node cut off from the log stops writing before its lease expires; a frozen node rejoins (bridge/fence.py).

Two real kernels share one ``dmulog`` mirror (harness/topology.py), both writing
and reading it (harness/guest/node-death.sh), with leases of TTL seconds. Node 0
writes a hot set in the cut rounds: fio keeps 32 writes in flight on one region
and nothing reads, so the region never goes idle and its kernel writes it without
one request to the log; a node that is cut off and did not fence itself goes on writing it while
a survivor resyncs it (a node that reads, or whose regions go idle, stops at its
first request that needs the log, docs/multi-node.md).
Three kinds of rounds:

* **cut**: node 0's network goes down (inside the guest: the node is cut off
  from logsvc, nothing else). Its bridge fails to renew and at ``0.6 * TTL``
  fences: its log says ``self_fence``, then ``self_fenced`` once the mirror has
  stopped (suspended, or its thread waiting in a log request), each with the
  lease time it had left. Its lease expires and node 1 resyncs its regions while
  writing. No write of node 0 completes from its hand-over until the network is
  back (its mirror's count of completed writes, read twice, seconds apart). Then
  the network heals: node 0 takes a new lease, resumes its mirror, its kernel
  replays CTR and RESUME under the new epoch, and it writes again.
* **cut-idle**: the same with nothing written on node 0: no request of its
  mirror waits in the bridge, so the fence's own suspend (PRESUSPEND and
  POSTSUSPEND answered in the bridge) completes, with lease time left, while
  logsvc is out of reach.
* **freeze**: node 0's writer pauses, then its qemu is stopped (SIGSTOP) for longer
  than the TTL, and continued once its lease was handed over. Its bridge wakes to
  a lease long lost, fences, takes a new lease and resumes; its kernel replays CTR
  and RESUME under the new epoch and it writes again. The writer pauses first
  because nothing inside a frozen node can fence it: writes it had in flight
  would land when it wakes, after a survivor may have resynced their regions.
  What a deployment needs for a node that can be paused (external fencing, or a
  TTL longer than any pause) is in docs/multi-node.md.

All: with node 1's writer paused, every region whose legs differ is out of sync
or dirty (the data-loss checker); at the end both legs are identical and hold
every write either node saw complete, and node 0 is back with a larger epoch.

What the real kernel shows: even under fio, the hot region goes idle now and
then and its next write needs a MARK, so in the cut rounds the mirror's thread
is usually waiting in the log before the fence begins (``self_fenced`` says
``waiting in MARK_REGION``) and the suspend completes only after the heal; the
suspend proper is what stops a mirror whose writes need nothing from the log, as
in the cut-idle rounds.

``DMULOG_NODE_ROUNDS`` (default 1) sets the rounds of each kind.
``DMULOG_FENCE_BROKEN=1`` starts node 0's bridge with its self-fence off
(``DMULOG_SELF_FENCE=0``): the cut and cut-idle checks then fail.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from pathlib import Path

import pytest

from dmulog.v1 import dmulog_pb2 as pb
from harness.guest import kernel_log_problems
from harness.topology import Boot, Topology
from tests.kernel.crash import checker
from tests.kernel.test_node_death import (
    BOOT_TIMEOUT,
    LEG_BYTES,
    NODES,
    REGION,
    SCRIPT,
    TTL,
    UUID,
    _completed,
    _env,
    _poll,
)

pytestmark = pytest.mark.kernel
KINDS = ("cut", "cut-idle", "freeze")
ROUNDS = max(1, int(os.environ.get("DMULOG_NODE_ROUNDS", "1")))
BROKEN = os.environ.get("DMULOG_FENCE_BROKEN", "") not in ("", "0")
LAST_REGION = (LEG_BYTES // (REGION * 512) - 1) * REGION * 512
"""Byte offset of the mirror's last region: node 0's hot set in the cut rounds."""
HOT = {"HOT": str(LAST_REGION), "READER": "0"}
"""Node 0 in the cut rounds: fio with 32 writes always in flight on one region, no reader."""
BELOW_HOT = {"WSPAN": str(LAST_REGION)}
"""Node 1 in the cut rounds: every region but node 0's hot one."""
QUIET = 4.0
"""Seconds node 0's completed writes are watched for growth after its hand-over."""
# Expected on node 0 after it was fenced: the kernel's reconnect loop (-ESRCH); after a
# freeze, also a request that was in flight while qemu was stopped.
_FENCED_NODE_LINES = re.compile(r"Userspace log server not found|Request timed out")


@dataclasses.dataclass
class Round:
    """What one round saw; times are seconds from the cut (or freeze)."""

    kind: str
    seed: int
    handed: float = -1.0
    began: dict[str, object] = dataclasses.field(default_factory=dict)  # node 0's self_fence event
    fenced: dict[str, object] = dataclasses.field(default_factory=dict)  # node 0's self_fenced event
    lifted: dict[str, object] = dataclasses.field(default_factory=dict)  # node 0's self_fence_lifted event
    legs_identical: bool = False  # over the whole legs (node 0's fio keeps no record)
    writes_at_handover: int = -1
    writes_after_quiet: int = -1
    leg_report: checker.LegReport | None = None
    data: list[checker.DataReport] = dataclasses.field(default_factory=list)
    before: pb.GetLogStateResponse | None = None
    rejoined: pb.GetLogStateResponse | None = None
    outcomes: list[dict[str, str]] = dataclasses.field(default_factory=list)
    rcs: list[int | None] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        """The round's figures, for the report."""
        return (f"{self.kind} seed {self.seed}: handed over {self.handed:.1f} s after; node 0 began its fence with "
                f"{self.began.get('lease_left', '?')} s of its lease left, its mirror stopped with "
                f"{self.fenced.get('lease_left', '?')} s left {self.fenced.get('devices')}; writes at the hand-over "
                f"{self.writes_at_handover}, {QUIET:g} s later {self.writes_after_quiet} (at the cut "
                f"{self.outcomes[0].get('cut', '-') if self.outcomes else '?'}); back after "
                f"{self.lifted.get('fenced_s', '?')} s fenced (new incarnation: {self.lifted.get('new_incarnation')})")


def _writes(boot: Boot) -> int:
    """The node's completed writes: the mirror's own count under fio (HOT), else the writer's record."""
    try:
        return int(boot.path("dm-writes").read_text().strip() or 0)
    except FileNotFoundError:
        return _completed(boot)
    except ValueError:
        return 0


def _events(boot: Boot, name: str) -> list[dict[str, object]]:
    out = []
    for line in boot.text("bridge.log").splitlines():
        if f'"{name}"' in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == name:
                out.append(record)
    return out


def _node0(state: pb.GetLogStateResponse) -> list[pb.Instance]:
    return [i for i in state.instances if i.node == "node-0"]


def _round(topo: Topology, n: int, seed: int, kind: str) -> Round:
    rng = random.Random(seed)
    res = Round(kind, seed)
    topo.make_images()
    name = f"fence-{kind}-r{n}"
    cut, idle = kind.startswith("cut"), kind == "cut-idle"
    mine = {**HOT, "CUT": "1"} if cut else {}
    if idle:
        mine["WRITE"] = "0"
    extra = [{**mine, **({"DMULOG_SELF_FENCE": "0"} if BROKEN else {})}, BELOW_HOT if cut else {}]
    a, b = (topo.boot(f"{name}-node-{i}", SCRIPT, env=_env(seed, **extra[i]), timeout=BOOT_TIMEOUT, node=i)
            for i in range(NODES))  # fmt: skip
    for boot in (a, b):
        boot.wait_for(lambda boot=boot: "settled" in boot.outcome(), BOOT_TIMEOUT - 120, "the mirror in sync")
    for boot in (a, b):
        boot.tell("go-write")
    for boot in (b,) if idle else (a, b):
        boot.wait_for(lambda boot=boot: _writes(boot) >= 40, 240, "writes under way")
    time.sleep(rng.uniform(1.0, 3.0))
    res.before = topo.log_state(UUID)
    start = time.monotonic()
    if cut:
        a.tell("cut")
    else:
        a.tell("pause")
        a.wait_for(lambda: "paused" in a.outcome(), 120, "node 0's writer paused")
        a.freeze()
    res.handed, _ = _poll(topo, lambda s: not _node0(s), TTL + 60, "node 0 handed over")
    res.writes_at_handover = _writes(a)
    time.sleep(QUIET)
    res.writes_after_quiet = _writes(a)
    _poll(topo, lambda s: s.summary.sync_count == s.summary.region_count, 300, "the log in sync again")
    b.tell("pause")
    b.wait_for(lambda: "paused" in b.outcome(), 120, "node 1's writer paused")
    res.leg_report = checker.check_legs_against_log(topo.image("leg0"), topo.image("leg1"),
                                                    checker.LogBits.from_state(topo.log_state(UUID)))  # fmt: skip
    b.tell("go-on")
    if cut:
        a.tell("heal")
    else:
        a.thaw()
        a.tell("go-on")
    old_epoch = max((i.epoch for i in _node0(res.before)), default=0)
    _poll(topo, lambda s: any(i.epoch > old_epoch for i in _node0(s)), 120, "node 0 back as a new incarnation")
    if not BROKEN:
        a.wait_for(lambda: bool(_events(a, "self_fence_lifted")), 120, "node 0's mirror resumed")
    if not idle:
        back = _writes(a)
        a.wait_for(lambda: _writes(a) >= back + 20, 240, "node 0 writing again")
    res.rejoined = topo.log_state(UUID)
    began, fenced, lifted = (_events(a, e) for e in ("self_fence", "self_fenced", "self_fence_lifted"))
    res.began, res.fenced = (began[0] if began else {}), (fenced[0] if fenced else {})
    res.lifted = lifted[-1] if lifted else {}
    for boot in (a, b):
        for step in ("pause", "go-on", "stop"):
            boot.tell(step)
    for boot in (a, b):
        boot.wait_for(lambda boot=boot: "synced_again" in boot.outcome(), 600, "stopped and in sync")
    legs = [topo.image("leg0"), topo.image("leg1")]
    res.data = [checker.check_completed_writes(legs, checker.read_write_log(boot.path("writes.log")))
                for boot in (a, b) if boot.path("writes.log").exists()]  # fmt: skip
    res.legs_identical = legs[0].read_bytes() == legs[1].read_bytes()
    for boot in (a, b):
        boot.tell("go-remove")
    runs = [boot.join(300) for boot in (a, b)]
    res.rcs = [run.rc for run in runs]
    res.outcomes = [boot.outcome() for boot in (a, b)]
    res.problems = [line for line in kernel_log_problems(a.text("kmsg.txt")) if not _FENCED_NODE_LINES.search(line)]
    res.problems += runs[1].problems + kernel_log_problems(b.text("kmsg.txt"))
    print(f"round {name}: {time.monotonic() - start:.0f} s from the {kind}")
    return res


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> list[Round]:
    """Every round of both kinds, in one host topology."""
    workdir: Path = tmp_path_factory.mktemp("fencing")
    base = int(os.environ.get("DMULOG_CRASH_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    results = []
    with Topology(workdir, leg_bytes=LEG_BYTES, lease_ttl=TTL) as topo:
        for kind in KINDS:
            for n in range(ROUNDS):
                results.append(_round(topo, n, base + 100 * KINDS.index(kind) + n, kind))
    report = "\n".join(r.line() for r in results)
    (workdir / "report.txt").write_text(report + "\n")
    print("\n" + report)
    return results


def test_a_cut_off_node_fences_itself_before_its_lease_can_expire(rounds: list[Round]) -> None:
    """Cut off, node 0's mirror stopped with lease time left, and no write of it completed after its hand-over."""
    for r in (r for r in rounds if r.kind.startswith("cut")):
        assert r.fenced and r.began, f"node 0 never fenced itself: {r.line()}"
        assert float(r.began["lease_left"]) > 0, r.line()  # type: ignore[arg-type]
        assert r.fenced["stopped"] is True, r.line()
        assert float(r.fenced["lease_left"]) > 0, r.line()  # type: ignore[arg-type]
        assert 0 < r.handed <= TTL + 2, r.line()
        assert r.writes_after_quiet == r.writes_at_handover, f"node 0 wrote on after its hand-over: {r.line()}"


def test_an_idle_cut_off_mirror_is_suspended_before_the_lease_can_expire(rounds: list[Round]) -> None:
    """With nothing waiting in the log, the fence's own suspend completes while logsvc is unreachable."""
    for r in (r for r in rounds if r.kind == "cut-idle"):
        assert r.fenced.get("devices") == {"m": "suspended"}, r.line()
        assert float(r.fenced["lease_left"]) > 0, r.line()  # type: ignore[arg-type]


def test_no_region_that_differs_is_in_sync_and_clean(rounds: list[Round]) -> None:
    """With node 1's writer paused after the resync, every region whose legs differ is out of sync or dirty."""
    for r in rounds:
        assert r.leg_report is not None and r.leg_report.ok, r.leg_report.text() if r.leg_report else r.line()


def test_the_fenced_node_rejoins_and_nothing_is_lost(rounds: list[Round]) -> None:
    """Node 0 comes back as a new incarnation (a larger epoch, its mirror resumed); both legs hold every write."""
    for r in rounds:
        assert r.lifted.get("new_incarnation") is True and not r.lifted.get("failed"), r.line()
        assert r.before is not None and r.rejoined is not None
        assert max(i.epoch for i in _node0(r.rejoined)) > max(i.epoch for i in _node0(r.before)), r.line()
        assert r.legs_identical, r.line()
        for report in r.data:
            assert report.ok, report.text()


def test_both_nodes_ran_to_the_end_with_a_clean_kernel_log(rounds: list[Round]) -> None:
    """Both scripts completed and removed the mirror; no kernel log problem beyond node 0's reconnect loop."""
    for r in rounds:
        assert r.rcs == [0, 0], (r.rcs, r.outcomes)
        assert [o.get("done") for o in r.outcomes] == ["yes", "yes"], r.outcomes
        assert r.problems == [], r.problems
