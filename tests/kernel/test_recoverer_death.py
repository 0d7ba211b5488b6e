"""The node recovering a region dies mid-recovery; the other node finishes the resync (docs/multi-node.md).

Two real kernels activate one ``dmulog`` mirror over legs that differ everywhere
(leg 0 zeros, leg 1 random, a new log: every region out of sync), with every
recovery slowed down (qemu throttles writes to leg 1 on both nodes), and both
write it at once while it resyncs (harness/guest/node-death.sh). The log hands
out one region at a time to one node of the two. When node 0 holds it, the host
SIGKILLs node 0's qemu. Then:

* node 0's lease expires; its recovery assignment goes back to the log
  (lua/dmulog.lua ``abandon_recovery``), with the regions it had marked;
* node 1 recovers that very region (its SET_REGION_SYNC in Redis's command trace
  after the hand-over), and the rest: the log is wholly in sync again, with no
  reactivation (cmirrord's weakness: a dead recoverer blocks resync there);
* with node 1's writer paused, every region whose legs differ is out of sync or
  dirty (the data-loss checker); at the end both legs are identical and hold
  every write either node saw complete.

``DMULOG_NODE_ROUNDS`` (default 1) sets the rounds.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import pytest

from dmulog.v1 import dmulog_pb2 as pb
from harness.guest import kernel_log_problems
from harness.topology import Boot, Topology
from logsvc.store import CALLER_ARGS
from tests.kernel.crash import checker
from tests.kernel.test_node_death import (
    BOOT_TIMEOUT,
    LEG_BYTES,
    NODES,
    SCRIPT,
    TTL,
    UUID,
    _completed,
    _env,
    _poll,
    _trace_calls,
)

pytestmark = pytest.mark.kernel
ROUNDS = max(1, int(os.environ.get("DMULOG_NODE_ROUNDS", "1")))
RECOVERY_IOPS = 3
"""Writes a second to leg 1 on each node until node 0 dies: a region's recovery takes a while."""


@dataclasses.dataclass
class Round:
    """What one round saw; times are seconds from the kill."""

    seed: int
    region: int = -1  # what node 0 was recovering when it died
    handed: float = -1.0
    finished: float = -1.0  # node 1's SET_REGION_SYNC of that region
    in_sync: float = -1.0
    leg_report: checker.LegReport | None = None
    data: list[checker.DataReport] = dataclasses.field(default_factory=list)
    outcome_b: dict[str, str] = dataclasses.field(default_factory=dict)
    rc_b: int | None = None
    problems: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        """The round's times, for the report."""
        return (f"seed {self.seed}: node 0 died recovering region {self.region}; handed over {self.handed:.1f} s "
                f"after the kill, node 1 recovered that region {self.finished:.1f} s after it, the whole log in "
                f"sync {self.in_sync:.1f} s after it")


def _throttle(boot: Boot, iops: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            boot.throttle_writes("leg1", iops)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _round(topo: Topology, n: int, seed: int) -> Round:
    res = Round(seed)
    topo.make_images()
    # Leg 1 differs everywhere; the resync copies leg 0 (zeros, the default mirror) over it.
    topo.image("leg1").write_bytes(random.Random(seed).randbytes(LEG_BYTES))
    a, b = (topo.boot(f"recoverer-r{n}-node-{i}", SCRIPT, env=_env(seed, SETTLE="0"), timeout=BOOT_TIMEOUT, node=i)
            for i in range(NODES))  # fmt: skip
    for boot in (a, b):
        _throttle(boot, RECOVERY_IOPS)
    for boot in (a, b):
        boot.wait_for(lambda boot=boot: "settled" in boot.outcome(), BOOT_TIMEOUT - 120, "the mirror created")
        boot.tell("go-write")

    def node0_recovering(s: pb.GetLogStateResponse) -> bool:
        return s.recovering and s.recoverer_node == "node-0" and s.summary.sync_count < s.summary.region_count

    _, state = _poll(topo, node0_recovering, 300, "node 0 recovering a region")
    res.region = state.recovering_region
    killed = time.time()
    a.crash()
    _throttle(b, 0)
    res.handed, _ = _poll(topo, lambda s: all(i.node != "node-0" for i in s.instances), TTL + 60, "node 0 handed over")
    res.in_sync, _ = _poll(topo, lambda s: s.summary.sync_count == s.summary.region_count, 600, "the log in sync")
    calls = _trace_calls(topo.trace, killed)
    expired = [t for t, name, _ in calls if name == "expire_node"]
    res.handed = (expired[0] - killed) if expired else -1.0
    done = [t for t, name, args in calls if name == "set_region_sync" and args[0] == "node-1" and expired
            and t > expired[0] and int(args[CALLER_ARGS]) == res.region and args[CALLER_ARGS + 1] == "1"]  # fmt: skip
    res.finished = (done[0] - killed) if done else -1.0
    res.in_sync = (time.time() - killed) if res.in_sync >= 0 else -1.0
    b.tell("pause")
    b.wait_for(lambda: "paused" in b.outcome(), 120, "node 1's writer paused")
    res.leg_report = checker.check_legs_against_log(topo.image("leg0"), topo.image("leg1"),
                                                    checker.LogBits.from_state(topo.log_state(UUID)))  # fmt: skip
    for step in ("go-on", "stop"):
        b.tell(step)
    b.wait_for(lambda: "synced_again" in b.outcome(), 600, "node 1 stopped and in sync")
    legs = [topo.image("leg0"), topo.image("leg1")]
    res.data = [checker.check_completed_writes(legs, checker.read_write_log(boot.path("writes.log")))
                for boot in (a, b) if _completed(boot)]  # fmt: skip
    b.tell("go-remove")
    run_b = b.join(300)
    a.join(120)
    res.rc_b, res.outcome_b = run_b.rc, b.outcome()
    res.problems = run_b.problems + kernel_log_problems(b.text("kmsg.txt"))
    return res


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> list[Round]:
    """Every round, in one host topology."""
    workdir: Path = tmp_path_factory.mktemp("recoverer-death")
    base = int(os.environ.get("DMULOG_CRASH_SEED") or random.SystemRandom().randrange(1, 1 << 31))
    with Topology(workdir, leg_bytes=LEG_BYTES, lease_ttl=TTL) as topo:
        results = [_round(topo, n, base + n) for n in range(ROUNDS)]
    report = "\n".join(r.line() for r in results)
    (workdir / "report.txt").write_text(report + "\n")
    print("\n" + report)
    return results


def test_the_survivor_recovers_the_dead_recoverers_region_and_the_rest(rounds: list[Round]) -> None:
    """Node 0 was handed over within the lease; node 1 recovered its region after that, and the whole log."""
    for r in rounds:
        assert 0 < r.handed <= TTL + 2, r.line()
        assert r.finished > r.handed, r.line()
        assert r.in_sync > 0, r.line()


def test_no_region_that_differs_is_in_sync_and_clean(rounds: list[Round]) -> None:
    """With node 1's writer paused after the resync, every region whose legs differ is out of sync or dirty."""
    for r in rounds:
        assert r.leg_report is not None and r.leg_report.ok, r.leg_report.text() if r.leg_report else r.line()


def test_legs_identical_with_every_completed_write(rounds: list[Round]) -> None:
    """Both legs identical over the whole mirror, with every write either node saw complete."""
    for r in rounds:
        for report in r.data:
            assert report.ok, report.text()


def test_the_survivor_ran_to_the_end_with_a_clean_kernel_log(rounds: list[Round]) -> None:
    """Node 1's script completed, its reads never failed, its kernel logged no timeout, BUG or WARNING."""
    for r in rounds:
        assert (r.rc_b, r.outcome_b.get("done"), r.outcome_b.get("read_errors")) == (0, "yes", "0"), r.outcome_b
        assert r.problems == [], r.problems
