"""A node dies mid-write and never returns; the other keeps writing and resyncs its regions (docs/multi-node.md).

Two real kernels (two guests on the same leg images, harness/topology.py) run one
``dmulog`` mirror, each through its own bridge with a lease (``--lease-ttl TTL``).
Both write it at once, sharing every region but no block (the crash checker's
writer with a stride), and read it. At a random moment the host SIGKILLs node 0's
qemu. Then, per round:

* node 0 writes through a slow second leg (qemu throttles it), so it dies with
  writes in flight that reached only its first leg, in regions it has marked; the
  host freezes it a moment before the kill and reads those marks;
* node 0's lease expires and its incarnation is handed over: its instance leaves
  the log and the regions it had marked turn out of sync (time from the kill to the
  hand-over's Function call in Redis's command trace: ``handed``);
* node 1's bridge hears of it and suspends and resumes its mirror (no table
  reload), its kernel resyncs those regions while its writer and reader go on: the
  trace shows node 1's SET_REGION_SYNC of each of them after the hand-over (time
  from the kill to the last one: ``resynced``), and the log is wholly in sync again;
* with node 1's writer paused, every region whose legs differ is out of sync or
  dirty in the log (the data-loss checker); after it stopped, both legs are
  identical and hold every write either node saw complete.

In the *rejoin* rounds node 0 then comes back: a new boot (a new boot id and a
new lease's epoch) activates the mirror again beside node 1, which never stopped
writing, and writes too (blocks of its own: the writers' stride is 3 then); at
the end both legs are identical with every write of both of node 0's boots and
of node 1.

``DMULOG_NODE_ROUNDS`` (default 1) sets the rounds of each; the per-round times
are printed and kept in the module's results.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import time
from pathlib import Path

import pytest

from dmulog.v1 import dmulog_pb2 as pb
from harness.guest import guest_script, kernel_log_problems
from harness.topology import Boot, Topology
from logsvc.store import CALLER_ARGS, FUNCTION_PREFIX
from tests.kernel.crash import checker

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')

pytestmark = pytest.mark.kernel
UUID = "node-death"
NODES = 2
LEG_BYTES = 8 << 20
SECTORS = LEG_BYTES // 512
REGION = 256  # 64 regions of 128 KiB
TTL = 6.0
SLOW_LEG_IOPS = 10
"""Writes a second per second to node 0's second leg: it dies with writes in flight that reached only the first."""
BOOT_TIMEOUT = 600
SCRIPT = guest_script("node-death.sh")
ROUNDS = max(1, int(os.environ.get("DMULOG_NODE_ROUNDS", "1")))


@dataclasses.dataclass
class Round:
    """What one round saw; the times are seconds from the kill."""

    seed: int
    handed: float = -1.0
    resynced: float = -1.0
    a_regions: list[int] = dataclasses.field(default_factory=list)  # node 0's marks when it died
    unsynced: list[int] = dataclasses.field(default_factory=list)  # of those, not resynced by node 1 after
    before: pb.GetLogStateResponse | None = None
    after: pb.GetLogStateResponse | None = None
    leg_report: checker.LegReport | None = None
    data: list[checker.DataReport] = dataclasses.field(default_factory=list)
    outcome_b: dict[str, str] = dataclasses.field(default_factory=dict)
    restarts_b: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    rc_b: int | None = None
    rejoined: pb.GetLogStateResponse | None = None  # the log with node 0's second boot active (rejoin rounds)
    outcome_a2: dict[str, str] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        """The round's times, for the report."""
        return (f"seed {self.seed}: node 0 died with {len(self.a_regions)} regions marked; handed over "
                f"{self.handed:.1f} s after the kill, its regions resynced by node 1 {self.resynced:.1f} s after it")


def _env(seed: int, **more: str) -> dict[str, str]:
    return {"NODES": str(NODES), "UUID": UUID, "SECTORS": str(SECTORS), "REGION": str(REGION),
            "SPAN": str(LEG_BYTES), "SEED": str(seed), **more}  # fmt: skip


def _completed(boot: Boot) -> int:
    try:
        return boot.path("writes.log").read_text().count("\nD ")
    except FileNotFoundError:
        return 0


def _instances(state: pb.GetLogStateResponse) -> list[tuple[str, int]]:
    return sorted((i.node, i.luid) for i in state.instances)


def _poll(topo: Topology, until: object, timeout: float, what: str) -> tuple[float, pb.GetLogStateResponse]:
    start = time.monotonic()
    while True:
        state = topo.log_state(UUID)
        if until(state):  # type: ignore[operator]
            return time.monotonic() - start, state
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s; the log: {state.summary}")
        time.sleep(0.2)


def _trace_calls(trace: Path, since: float) -> list[tuple[float, str, list[str]]]:
    """(time, function, arguments after the keys) of each FCALL of the log in Redis's command trace after ``since``."""
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        if "{" + UUID + "}" not in line or '"FCALL' not in line:
            continue
        words = _QUOTED.findall(line)
        when = float(line.split()[0])
        if when >= since:
            out.append((when, words[1].removeprefix(FUNCTION_PREFIX), words[3 + int(words[2]) :]))
    return out


def _round(topo: Topology, n: int, seed: int, *, rejoin: bool = False) -> Round:
    rng = random.Random(seed)
    res = Round(seed)
    topo.make_images()
    name = f"{'rejoin' if rejoin else 'death'}-r{n}"
    stride = {"STRIDE": "3"} if rejoin else {}  # the second boot of node 0 writes blocks of its own
    a, b = (topo.boot(f"{name}-node-{i}", SCRIPT, env=_env(seed, **stride), timeout=BOOT_TIMEOUT, node=i)
            for i in range(NODES))  # fmt: skip
    for boot in (a, b):
        boot.wait_for(lambda boot=boot: "settled" in boot.outcome(), BOOT_TIMEOUT - 120, "the mirror in sync")
    for boot in (a, b):
        boot.tell("go-write")
    for boot in (a, b):
        boot.wait_for(lambda boot=boot: _completed(boot) >= 40, 240, "writes under way")
    a.throttle_writes("leg1", SLOW_LEG_IOPS)
    time.sleep(rng.uniform(1.0, 4.0))
    # Frozen, node 0 sends nothing more: the log's marks of it are what it dies with.
    # A moment with none marked (all its writes just done) is thawed and tried again.
    for _ in range(20):
        a.freeze()
        res.before = topo.log_state(UUID)
        res.a_regions = sorted(m.region for m in res.before.marks if "node-0" in m.nodes)
        if res.a_regions:
            break
        a.thaw()
        time.sleep(rng.uniform(0.2, 1.0))
    killed = time.time()
    a.crash()
    # Node 0 handed over: its instance gone; then node 1 resyncs its regions while it writes.
    _poll(topo, lambda s: all(i.node != "node-0" for i in s.instances), TTL + 60, "node 0 handed over")
    _poll(topo, lambda s: s.summary.sync_count == s.summary.region_count, 300, "the log in sync again")
    calls = _trace_calls(topo.trace, killed)
    expired = [t for t, name, _ in calls if name == "expire_node"]
    res.handed = (expired[0] - killed) if expired else -1.0
    resynced = {int(args[CALLER_ARGS]): t for t, name, args in calls
                if name == "set_region_sync" and args[0] == "node-1" and expired and t > expired[0]
                and args[CALLER_ARGS + 1] == "1"}  # fmt: skip
    res.unsynced = [r for r in res.a_regions if r not in resynced]
    res.resynced = max((resynced[r] for r in res.a_regions if r in resynced), default=killed) - killed
    b.tell("pause")
    b.wait_for(lambda: "paused" in b.outcome(), 120, "node 1's writer paused")
    paused = topo.log_state(UUID)
    res.leg_report = checker.check_legs_against_log(topo.image("leg0"), topo.image("leg1"),
                                                    checker.LogBits.from_state(paused))  # fmt: skip
    legs = [topo.image("leg0"), topo.image("leg1")]
    writers = [a, b]
    b.tell("go-on")
    if rejoin:
        # Node 0's next boot: a new incarnation joins the mirror while node 1 writes, and writes too.
        a = topo.reboot(a, f"{name}-node-0-again", SCRIPT, env=_env(seed + 7919, STRIDE="3", PHASE="2"),
                        timeout=BOOT_TIMEOUT)  # fmt: skip
        a.wait_for(lambda: "settled" in a.outcome(), BOOT_TIMEOUT - 120, "node 0 back and in sync")
        a.tell("go-write")
        a.wait_for(lambda: _completed(a) >= 40, 240, "node 0's second boot writing")
        res.rejoined = topo.log_state(UUID)
        for step in ("pause", "go-on", "stop"):
            a.tell(step)
        a.wait_for(lambda: "synced_again" in a.outcome(), 600, "node 0's second boot stopped and in sync")
        writers = [writers[0], a, b]
    b.tell("stop")
    b.wait_for(lambda: "synced_again" in b.outcome(), 600, "node 1 stopped and in sync")
    records = [checker.read_write_log(boot.path("writes.log")) for boot in writers]
    res.data += [checker.check_completed_writes(legs, wlog) for wlog in records]
    res.after = topo.log_state(UUID)
    if rejoin:
        a.tell("go-remove")
        res.outcome_a2 = a.outcome()
    b.tell("go-remove")
    run_b = b.join(300)
    a.join(180)
    if rejoin:
        res.outcome_a2 = a.outcome()
    res.rc_b = run_b.rc
    res.outcome_b = b.outcome()
    res.restarts_b = b.text("bridge.log").count('"recovery_restarted"')
    res.problems = run_b.problems + kernel_log_problems(b.text("kmsg.txt"))
    return res


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> list[Round]:
    """Every round of both kinds, in one host topology: node 0 never returns, then node 0 rejoins."""
    workdir: Path = tmp_path_factory.mktemp("node-death")
    base = int(os.environ.get("DMULOG_CRASH_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    results = []
    with Topology(workdir, leg_bytes=LEG_BYTES, lease_ttl=TTL) as topo:
        for n in range(ROUNDS):
            results.append(_round(topo, n, base + n))
        for n in range(ROUNDS):
            results.append(_round(topo, n, base + 100 + n, rejoin=True))
    report = "\n".join(r.line() for r in results)
    (workdir / "report.txt").write_text(report + "\n")
    print("\n" + report)
    return results


def test_the_dead_nodes_regions_are_handed_over_within_the_lease(rounds: list[Round]) -> None:
    """Node 0 died with regions marked (writes in flight) and was handed over within TTL plus a reaper period."""
    for r in rounds:
        assert r.a_regions, f"node 0 had no region marked at its death: {r.line()}"
        assert 0 < r.handed <= TTL + 2, r.line()


def test_the_survivor_resyncs_them_without_reactivation(rounds: list[Round]) -> None:
    """Node 1 keeps its one instance (the same luid), restarts its recovery, and the log comes back in sync."""
    for r in rounds:
        assert r.before is not None and r.after is not None
        b_before = [i for i in _instances(r.before) if i[0] == "node-1"]
        assert b_before == [i for i in _instances(r.after) if i[0] == "node-1"], r.line()
        assert r.restarts_b >= 1, r.line()
        assert [] == r.unsynced, f"node 1 never resynced these regions of node 0's: {r.unsynced}; {r.line()}"
        assert r.outcome_b.get("synced_again") == "0", r.outcome_b


def test_no_region_that_differs_is_in_sync_and_clean(rounds: list[Round]) -> None:
    """With node 1's writer paused, every region whose legs differ is out of sync or dirty in the log."""
    for r in rounds:
        assert r.leg_report is not None and r.leg_report.ok, r.leg_report.text() if r.leg_report else r.line()


def test_legs_identical_with_every_completed_write(rounds: list[Round]) -> None:
    """After node 1 stopped writing and the mirror is in sync: both legs identical, every completed write there."""
    for r in rounds:
        for report in r.data:
            assert report.ok, report.text()


def test_the_survivor_ran_to_the_end_with_a_clean_kernel_log(rounds: list[Round]) -> None:
    """Node 1's script completed, its reads never failed, its kernel logged no timeout, BUG or WARNING."""
    for r in rounds:
        assert (r.rc_b, r.outcome_b.get("done"), r.outcome_b.get("read_errors")) == (0, "yes", "0"), r.outcome_b
        assert r.problems == [], r.problems


def test_a_rebooted_node_rejoins_as_a_new_incarnation_beside_the_writer(rounds: list[Round]) -> None:
    """Node 0's second boot joins the mirror beside node 1: a new boot id, a larger epoch; it writes and removes it."""
    rejoins = [r for r in rounds if r.rejoined is not None]
    assert rejoins, "no rejoin round ran"
    for r in rejoins:
        assert r.before is not None and r.rejoined is not None
        first = {i.node: i for i in r.before.instances}
        again = {i.node: i for i in r.rejoined.instances}
        assert sorted(again) == ["node-0", "node-1"], r.rejoined.instances
        assert again["node-0"].boot_id != first["node-0"].boot_id
        assert again["node-0"].epoch > first["node-0"].epoch
        assert again["node-1"].luid == first["node-1"].luid  # node 1 was never reactivated
        assert (r.outcome_a2.get("remove_rc"), r.outcome_a2.get("done")) == ("0", "yes"), r.outcome_a2
