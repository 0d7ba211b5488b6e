"""Crash scenarios against the real kernel, in the host topology of :mod:`harness.topology`.

Every round has the same shape:

1. **Boot A** (``harness/guest/crash-node.sh``, ``PHASE=crash``): start the bridge, create the mirror on
   fresh zeroed images, wait for N/N, run the random ``O_DIRECT`` writer. Once it runs,
   qemu throttles the second leg, so that in-flight writes are on one leg only and a
   crash leaves regions that differ (the log must have every one of them dirty).
2. **Faults** while it writes, per scenario: none; kill -9 the bridge in the guest (under
   ``--respawn``, whose keeper holds the socket and restarts it; or the whole bridge,
   started anew, so the kernel replays CTR and RESUME); kill -9 and restart the host
   logsvc, alone or one of two replicas; kill -9 and restart Redis (AOF); Redis down
   for longer than the kernel's 15 s request timeout.
3. **Crash**: SIGKILL qemu at a random moment (seeded) while the writer runs.
4. **Check before reactivation**: the legs against the log's state in Redis
   (:func:`.checker.check_legs_against_log`: zero violations), and the primary leg
   against the completed writes (what the guest saw complete is on the host).
5. **Boot B** (``PHASE=recover``), a new incarnation of the same node: the same table
   (same UUID), wait for N/N, remove it.
6. **Check after recovery**: both legs identical and holding every completed write
   (:func:`.checker.check_completed_writes`); the log all clean and in sync; the
   kernel logs of both boots (boot A's as streamed by ``dmesg -w``, since a killed
   node saves nothing) free of ``timed out`` (allowed only during the Redis outage)
   and of any other alarming line ("Userspace log server not found" is expected while
   the bridge is down).

The seed of a round fixes the writer's offsets, sizes and data and every random delay;
the exact crash point still depends on timing. Run ``python -m tests.kernel.crash.results``
for a table of all scenarios, or ``pytest -m kernel tests/kernel/crash``.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from dmulog.requests import region_arguments
from harness.guest import GuestRun, guest_script, kernel_log_problems
from harness.topology import Boot, Topology, TopologyError
from logsvc.store import CALLER_ARGS, FUNCTION_PREFIX
from tests.kernel.crash import checker

__all__ = [
    "SCENARIOS",
    "RoundResult",
    "Scenario",
    "configured_rounds",
    "configured_seed",
    "region_trace",
    "rounds_for",
    "run_round",
    "run_scenario",
    "scenario_seed",
]

NODE_SCRIPT = guest_script("crash-node.sh")
LEG_BYTES = 32 << 20
SECTORS = LEG_BYTES // checker.SECTOR
REGION = 512  # sectors: 256 KiB regions, 128 of them
BOOT_TIMEOUT = 300
#: Write operations per second of the second leg once the writer runs (qemu throttling):
#: it lags the first, so the legs differ wherever a write is in flight, and every crash
#: tests that the log knows each such region. The initial resync runs unthrottled.
SLOW_LEG_IOPS = 10
#: Completed writes to wait for after the last fault before the crash: enough for a write
#: mishandled during a fault to have landed, few enough that later writes rarely cover it.
AFTER_FAULTS = 20
#: How long Redis stays down in the outage scenario: past the bridge's retry budget (9 s)
#: and the kernel's request timeout (15 s).
OUTAGE_SECONDS = 16.0
#: Kernel log lines that a missing log server explains (the kernel's reconnect loop).
_NO_SERVER = re.compile(r"Userspace log server not found|Unable to send log request")
_TIMED_OUT = re.compile(r"timed out")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One kind of round.

    Attributes:
        name: short name, used in UUIDs, directories and the results table.
        log_type: ``dmulog`` or ``clustered-disk`` (the persistent types).
        integrated: put ``integrated_flush`` in the table.
        fault: ``none``, ``bridge``, ``logsvc``, ``redis``, ``redis-outage`` or ``sentinel`` (Redis is a
            Sentinel group with one durable replica; the fault kills its primary, a replica takes over).
        faults: how many times the fault is injected per round.
        respawn: run the bridge under ``--respawn`` (a ``bridge`` fault kills the bridge
            process, the keeper restarts it on the same socket).
        replicas: logsvc replicas (a ``logsvc`` fault kills replica 0).
        graceful: after the ``bridge`` faults, stop the bridge with SIGTERM under I/O and
            start a new one (the kernel replays CTR and RESUME to it).
        allow_timeouts: the kernel may log "timed out" (the log is unreachable > 15 s).
        description: one line for the results table.
    """

    name: str
    log_type: str = "dmulog"
    integrated: bool = False
    fault: str = "none"
    faults: int = 0
    respawn: bool = False
    replicas: int = 1
    graceful: bool = False
    allow_timeouts: bool = False
    description: str = ""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("node-crash", description="SIGKILL qemu mid-I/O, native dmulog log"),
        Scenario("node-crash-disk", log_type="clustered-disk", description="same, clustered-disk log"),
        Scenario("node-crash-integrated", integrated=True, description="same, dmulog + integrated_flush"),
        Scenario("bridge-kill", fault="bridge", faults=2, respawn=True, graceful=True,
                 description="kill -9 the bridge (--respawn) twice, then SIGTERM it and start a new one"),
        # The killed socket's queue dies with it, and a new bridge takes longer than the
        # kernel's 15 s to start under emulation: a request may time out and be re-sent.
        Scenario("agent-kill", fault="bridge", faults=2, allow_timeouts=True,
                 description="kill -9 the whole bridge, start a new one: the kernel replays CTR + RESUME"),
        Scenario("logsvc-kill", fault="logsvc", faults=2, description="kill -9 + restart the host logsvc"),
        Scenario("replica-kill", fault="logsvc", faults=2, replicas=2,
                 description="two logsvc replicas, kill -9 + restart one"),
        Scenario("redis-kill", fault="redis", faults=2, description="kill -9 + restart Redis (AOF)"),
        Scenario(
            "redis-outage",
            fault="redis-outage",
            faults=2,
            allow_timeouts=True,
            description="Redis down 16 s (> the kernel's 15 s timeout), twice",
        ),
        Scenario("sentinel-kill", fault="sentinel", faults=2,
                 description="Sentinel: kill -9 the primary, a replica takes over (one durable replica), twice"),
    )
}


@dataclasses.dataclass
class RoundResult:
    """What one round found.

    The findings are kept apart so that each property can be asserted on its own:
    ``errors`` (the round could not be run as planned: a guest step timed out, the
    recovery boot failed), the leg report (violations), the data reports (lost
    completed writes), ``kernel_problems`` (alarming kernel log lines) and
    ``log_after`` (the log not clean after a clean removal).
    """

    scenario: str
    round: int
    seed: int
    uuid: str
    workdir: Path
    leg_report: checker.LegReport | None = None
    primary_report: checker.DataReport | None = None
    data_report: checker.DataReport | None = None
    dirty_at_crash: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    kernel_problems: list[str] = dataclasses.field(default_factory=list)
    timed_out_lines: list[str] = dataclasses.field(default_factory=list)
    log_after: str | None = None
    events: list[str] = dataclasses.field(default_factory=list)
    traces: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def violations(self) -> int:
        """Regions that differed at the crash although the log would not resync them."""
        return len(self.leg_report.violations) if self.leg_report else 0

    @property
    def differing(self) -> int:
        """Regions that differed between the legs at the crash (the log had to know them)."""
        return len(self.leg_report.differing) if self.leg_report else 0

    @property
    def data_ok(self) -> bool:
        """Completed writes on the primary at the crash; legs identical with all of them after recovery."""
        reports = (self.primary_report, self.data_report)
        return all(r is not None and r.ok for r in reports) and self.log_after is None

    @property
    def failures(self) -> list[str]:
        """Everything that went wrong, one line each."""
        out = list(self.errors)
        if self.violations:
            out.append(f"{self.violations} region(s) differ between the legs but the log will not resync them")
        if self.primary_report and not self.primary_report.ok:
            out.append("completed writes missing from the primary leg right after the crash")
        if self.data_report and not self.data_report.ok:
            out.append("after recovery the legs differ or miss completed writes")
        if self.log_after:
            out.append(self.log_after)
        out += [f"kernel log: {line}" for line in self.kernel_problems]
        return out

    @property
    def ok(self) -> bool:
        """Nothing failed."""
        return not self.failures

    def describe(self) -> str:
        """Everything a human needs to understand the round."""
        lines = [f"{self.scenario} round {self.round} seed {self.seed} uuid {self.uuid} ({self.seconds:.0f} s), "
                 f"results in {self.workdir}"]  # fmt: skip
        lines += [f"  event: {e}" for e in self.events]
        lines += [f"  FAILURE: {f}" for f in self.failures]
        if self.leg_report:
            lines.append("  legs vs log at the crash: " + self.leg_report.text().replace("\n", "\n    "))
        if self.primary_report:
            lines.append("  primary leg at the crash: " + self.primary_report.text().replace("\n", "\n    "))
        if self.data_report:
            lines.append("  legs after recovery: " + self.data_report.text().replace("\n", "\n    "))
        for region, calls in self.traces.items():
            lines.append(f"  Redis trace of region {region} (last {len(calls)} calls naming it, oldest first):")
            lines += ["    " + c for c in calls]
        return "\n".join(lines)


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def region_trace(trace: Path, uuid: str, region: int, limit: int = 16) -> list[str]:
    """The last ``limit`` Function calls of log ``uuid`` that name ``region``, from a ``redis-cli monitor`` file.

    Each is ``<time> <function> <arguments>``, plus how long the log saw no call at all
    before it when that was over a second (an outage shows). Calls without region
    arguments (FLUSH without marks, RESUME, ...) are left out.
    """
    tag, want, found = "{" + uuid + "}", str(region), []
    last = None
    try:
        text = trace.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        if tag not in line or '"FCALL' not in line:
            continue
        words = _QUOTED.findall(line)
        try:
            nkeys, when = int(words[2]), float(line.split()[0])
        except (IndexError, ValueError):
            continue
        gap, last = (when - last if last is not None else 0.0), when
        name = words[1].removeprefix(FUNCTION_PREFIX)
        args = words[3 + nkeys + CALLER_ARGS :]  # after the keys: the caller, then the request's own
        regions = region_arguments(name, args)  # which of them are regions: the table of request types says
        if want in regions:
            quiet = f"   <- first call after {gap:.1f} s without any" if gap > 1 else ""
            found.append(f"{when:.3f} {name} {' '.join(args)}{quiet}")
    return found[-limit:]


def _env(scenario: Scenario, uuid: str, phase: str, seed: int) -> dict[str, str]:
    return {
        "PHASE": phase, "UUID": uuid, "LOG_TYPE": scenario.log_type, "REGION": str(REGION),
        "SECTORS": str(SECTORS), "INTEGRATED": "1" if scenario.integrated else "0",
        "SEED": str(seed), "THREADS": "8", "MAX_BLOCKS": "64", "SPAN": str(LEG_BYTES),
        "BRIDGE_KILLS": str(scenario.faults if scenario.fault == "bridge" else 0), "KILL_SEED": str(seed % 32768),
        "RESPAWN": "1" if scenario.respawn else "0", "GRACEFUL": "1" if scenario.graceful else "0",
    }  # fmt: skip


def _completed(boot: Boot) -> int:
    return boot.count_lines("writes.log", "D ")


def _wait_progress(boot: Boot, more: int, timeout: float, what: str) -> None:
    """Wait until the writer completed ``more`` further writes."""
    start = _completed(boot)
    boot.wait_for(lambda: _completed(boot) >= start + more, timeout, f"{more} more completed writes ({what})")


def _host_faults(
    topo: Topology, scenario: Scenario, boot: Boot, rng: random.Random, note: Callable[[str], None]
) -> None:
    """Inject the scenario's host-side faults while the guest writes; writes must resume after each.

    The kernel sends log requests almost without pause while the writer runs, so a fault
    meets whichever request is in flight: IN_SYNC about half the time, else MARK, FLUSH
    or CLEAR. The round's notes name the moment in completed writes.
    """
    for i in range(1, scenario.faults + 1):
        time.sleep(rng.uniform(0.2, 1.5))
        n = _completed(boot)
        if scenario.fault == "logsvc":
            topo.kill_logsvc()
            down = rng.uniform(0.5, 3.0)
            time.sleep(down)
            topo.start_logsvc()
        elif scenario.fault == "redis":
            topo.kill_redis()
            down = rng.uniform(0.5, 3.0)
            time.sleep(down)
            topo.start_redis()
        elif scenario.fault == "redis-outage":
            topo.kill_redis()
            down = OUTAGE_SECONDS
            time.sleep(down)
            topo.start_redis()
        elif scenario.fault == "sentinel":
            down = topo.fail_over_redis()
        else:
            raise ValueError(scenario.fault)
        note(f"{scenario.fault} fault {i}: down {down:.1f} s at {n} completed writes, "
             f"{_completed(boot)} when back")  # fmt: skip
        _wait_progress(boot, 10, 120, f"after {scenario.fault} fault {i}")


def _problems(text: str, allow_timeouts: bool, allow_no_server: bool) -> tuple[list[str], list[str]]:
    """(alarming kernel log lines, "timed out" lines) of one boot's kernel log."""
    lines = kernel_log_problems(text)
    timed_out = [line for line in lines if _TIMED_OUT.search(line)]
    bad = [
        line for line in lines
        if not (allow_timeouts and _TIMED_OUT.search(line)) and not (allow_no_server and _NO_SERVER.search(line))
    ]  # fmt: skip
    return bad, timed_out


def run_round(topo: Topology, scenario: Scenario, round_no: int, seed: int) -> RoundResult:
    """Run one round (see the module docstring); never raises for a failed check."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    uuid = f"crash-{scenario.name}-{round_no}-{seed}"
    res = RoundResult(scenario.name, round_no, seed, uuid, topo.workdir)
    prefix = f"{scenario.name}-r{round_no}"
    try:
        _round(topo, scenario, round_no, seed, rng, uuid, prefix, res)
    except (TopologyError, OSError, ValueError, grpc.RpcError) as e:
        res.errors.append(f"{type(e).__name__}: {e}")
        topo.ensure_running()
    res.seconds = time.monotonic() - t0
    (topo.workdir / f"{prefix}.txt").write_text(res.describe() + "\n")
    return res


def _round(topo: Topology, scenario: Scenario, round_no: int, seed: int, rng: random.Random, uuid: str,
           prefix: str, res: RoundResult) -> None:  # fmt: skip
    topo.make_images()
    # ---- boot A: write, inject faults, crash
    boot = topo.boot(f"{prefix}-a", NODE_SCRIPT, env=_env(scenario, uuid, "crash", seed), timeout=BOOT_TIMEOUT)
    try:
        boot.wait_for(lambda: "writing=yes" in boot.text("outcome"), 240, "mirror in sync and writer started")
        _wait_progress(boot, 10, 120, "writer warm-up")
        boot.throttle_writes("leg1", SLOW_LEG_IOPS)
        if scenario.fault == "bridge":
            done = "graceful_done=yes" if scenario.graceful else "bridge_kills_done=yes"
            boot.wait_for(lambda: done in boot.text("outcome"), 240, "bridge kill loop")
            _wait_progress(boot, 10, 120, "after the bridge kills")
            res.events += [f"{k}={v}" for k, v in _outcome(boot).items() if k.startswith("bridge_")]
        elif scenario.fault != "none":
            _host_faults(topo, scenario, boot, rng, res.events.append)
        # Let writes flow after the faults (a mishandled one lands), then crash at a random moment.
        _wait_progress(boot, AFTER_FAULTS if scenario.fault != "none" else 0, 180, "writes after the faults")
        delay = rng.uniform(0.3, 3.0)
        time.sleep(delay)
        before = _completed(boot)
        boot.crash()
    finally:
        if boot.alive() and boot.crashed_at is None:
            boot.crash()
        run_a = boot.join(60)
    res.events.append(f"node killed {delay:.2f} s after the last fault or warm-up, at {before} completed writes")
    res.events.append(f"boot A: {run_a.wall_time:.0f} s, guest log tail: {_last_line(run_a)}")
    # ---- before reactivation: the log's state against the images
    state = topo.log_state(uuid)
    bits = checker.LogBits.from_state(state)
    res.dirty_at_crash = int(state.summary.dirty_count)
    wlog = checker.read_write_log(boot.path("writes.log"))
    res.leg_report = checker.check_legs_against_log(topo.image("leg0"), topo.image("leg1"), bits, writes=wlog)
    for v in res.leg_report.violations[:3]:
        res.traces[v.region] = region_trace(topo.trace, uuid, v.region)
    res.primary_report = checker.check_completed_writes([topo.image("leg0")], wlog)
    # The kernel's reconnect loop is the point of a bridge that goes away with its socket.
    no_server = scenario.fault == "bridge" and (scenario.graceful or not scenario.respawn)
    bad, timed_out = _problems(boot.text("kmsg.txt"), scenario.allow_timeouts, no_server)
    res.timed_out_lines += timed_out
    res.kernel_problems += [f"boot A: {line}" for line in bad]
    # ---- boot B: a new incarnation of the node recovers the mirror
    boot_b = topo.boot(f"{prefix}-b", NODE_SCRIPT, env=_env(scenario, uuid, "recover", seed), timeout=BOOT_TIMEOUT)
    run_b = boot_b.join(BOOT_TIMEOUT + 60)
    res.events.append(f"boot B: {run_b.wall_time:.0f} s, {_outcome(boot_b).get('synced', '?')}")
    bad, timed_out = _problems(run_b.dmesg, scenario.allow_timeouts, False)
    res.timed_out_lines += timed_out
    res.kernel_problems += [f"boot B: {line}" for line in bad]
    if run_b.rc != 0 or _outcome(boot_b).get("done") != "yes":
        res.errors.append("recovery boot failed:\n" + run_b.describe(15))
        return
    # ---- after recovery: identical legs with every completed write; the log clean
    res.data_report = checker.check_completed_writes([topo.image("leg0"), topo.image("leg1")], wlog)
    after = topo.log_state(uuid).summary
    if after.dirty_count or after.sync_count != after.region_count:
        res.log_after = (f"log after a clean removal: {after.dirty_count} dirty, "
                         f"{after.sync_count}/{after.region_count} in sync")  # fmt: skip


def _outcome(boot: Boot) -> dict[str, str]:
    return dict(line.split("=", 1) for line in boot.text("outcome").splitlines() if "=" in line)


def _last_line(run: GuestRun) -> str:
    lines = run.guest_log.strip().splitlines()
    return lines[-1] if lines else "(empty)"


def rounds_for(scenario: Scenario, rounds: int) -> int:
    """Rounds of ``scenario`` when node-crash runs ``rounds``: the others run a third as many, at least 1."""
    return rounds if scenario.name == "node-crash" else max(1, rounds // 3)


def configured_rounds(option: int | None = None) -> int:
    """``option`` (``--crash-rounds``) if given, else ``$DMULOG_CRASH_ROUNDS``, else 3."""
    if option is not None:
        return max(1, option)
    return max(1, int(os.environ.get("DMULOG_CRASH_ROUNDS", "3")))


def configured_seed() -> int:
    """``$DMULOG_CRASH_SEED`` if set, else a fresh random seed (always reported)."""
    env = os.environ.get("DMULOG_CRASH_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 1 << 31)


def scenario_seed(seed: int, scenario: Scenario) -> int:
    """The base seed of one scenario: distinct per scenario, reproducible from the run's seed."""
    return seed + 1000 * list(SCENARIOS).index(scenario.name)


def run_scenario(scenario: Scenario, workdir: Path, *, rounds: int, seed: int) -> list[RoundResult]:
    """Run ``rounds`` rounds of ``scenario`` in a fresh host topology under ``workdir``.

    Round ``i`` uses seed ``seed + i``; the seeds are in every result.
    """
    results = []
    with Topology(workdir, leg_bytes=LEG_BYTES, replicas=scenario.replicas,
                  sentinel=scenario.fault == "sentinel") as topo:  # fmt: skip
        for i in range(1, rounds + 1):
            results.append(run_round(topo, scenario, i, seed + i))
    return results
