"""``python -m bench.upgrade``: the I/O pause a rolling upgrade costs, on the real kernel.

docs/restarts.md says what SIGTERM of the bridge and of logsvc do; what an
operator needs to know before upgrading a cluster is how long writes stop
while it happens. So this boots the real kernel once (harness/guest.py, the
guest side in harness/guest/rolling-upgrade.sh) with the whole stack in the
guest, Redis, two logsvc replicas and the bridge naming both, keeps a writer
busy on a mirror, and upgrades one piece at a time the way Kubernetes does:

* ``bridge``: a DaemonSet update with ``maxSurge: 0``: SIGTERM of the bridge
  (a graceful stop), then a new bridge process from scratch, with a fresh
  journal directory (a new pod's emptyDir) and no keeper carried over;
* ``logsvc``: a Deployment rolling update with ``maxUnavailable: 0``:
  SIGTERM of one replica, the same replica started again until it listens
  (its readiness), then the other;
* ``respawn``: as ``bridge``, for a bridge run with ``--respawn``, keeper and all;
* ``respawn-child``: under ``--respawn``, SIGTERM of the active child bridge
  only, which the keeper's standby replaces.

The writer is fio, random 4 KiB O_DIRECT writes one at a time (psync) over a
mirror of 128 regions, so that a write keeps needing the log (MARK_REGION,
FLUSH, later CLEAR_REGION); its latency log has one line per completed write.
What is reported for each upgrade is the longest gap between two completed
writes while it lasted and the longest single write, against the longest gap of
the same fio run before any restart (its baseline, in the same boot). Beside
them: from SIGTERM to the new process listening (its ``bridge_listening`` or
``logsvc_listening`` line, seen by the guest script) and to the end of the
longest gap, when writes went on.

A ``timed out`` line in the kernel log is a result here, not a crash of the
benchmark: the report lists every kernel log line the tests call a problem,
with the scenario it fell in. The exit status is 1 only when the guest did not
finish or a result is missing.

Under software emulation (qemu TCG) a Python process needs seconds to start,
tens on a busy host, so the absolute pauses are emulation figures; the
comparison with the baseline of the same boot is what carries over.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.fio_log import Window, read_latency_log, window
from harness.guest import GuestRun, guest_script, kernel_log_problems, run_guest
from harness.report import add_out_option, tee

__all__ = ["SCENARIOS", "Report", "Scenario", "Upgrade", "main", "render", "run_upgrade"]

GUEST_SCRIPT = guest_script("rolling-upgrade.sh")
#: 64 MiB legs with 512 KiB regions: 128 regions. A region the writer wrote is
#: cleared soon after its write completes, so random writes one at a time nearly
#: always meet a clean region and need the log (MARK_REGION, FLUSH, CLEAR_REGION)
#: however many regions there are; more regions would only make the initial
#: resync longer, each region costing a few calls through the guest's logsvc.
LEG_SECTORS = 64 << 11
REGION_SECTORS = 1024
#: Both legs live in guest RAM (tmpfs), beside redis-server and four Python processes.
GUEST_MEMORY = "2G"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One kind of upgrade; ``name`` is the guest script's name for it."""

    name: str
    title: str
    #: the event (in events.tsv) that says the new process serves, measured from ``start``.
    ready: str


SCENARIOS = (
    Scenario("bridge", "bridge, plain (DaemonSet update, maxSurge 0)", "listening"),
    Scenario("logsvc", "logsvc, 2 replicas one after the other (maxUnavailable 0)", "ready1"),
    Scenario("respawn", "bridge --respawn, restarted as a whole", "listening"),
    Scenario("respawn-child", "bridge --respawn, child bridge only", "listening"),
)
_SCENARIO = {s.name: s for s in SCENARIOS}


@dataclasses.dataclass(frozen=True)
class Upgrade:
    """One upgrade: its window, and when its steps happened, in seconds after SIGTERM."""

    scenario: str
    rep: int
    window: Window
    steps: dict[str, float]

    @property
    def ready_s(self) -> float | None:
        """SIGTERM to the new process listening (for logsvc: the second replica)."""
        return self.steps.get(_SCENARIO[self.scenario].ready)

    @property
    def resume_s(self) -> float:
        """SIGTERM to the end of the longest gap: when writes went on (negative: the gap ended before SIGTERM)."""
        return self.window.gap_end - self.steps["__start"]


@dataclasses.dataclass
class Report:
    """A whole run: settings, baselines, upgrades and what the guest and kernel reported."""

    reps: int
    baseline_s: float
    settle_s: float
    scenarios: list[str]
    baselines: dict[str, Window]
    upgrades: list[Upgrade]
    results_dir: Path
    wall_time: float
    rc: int | None
    kernel_lines: list[tuple[str, str]]
    missing: list[str]

    @property
    def ok(self) -> bool:
        """The guest finished and every scenario has its results (kernel log lines are results, listed)."""
        return self.rc == 0 and not self.missing

    def of(self, scenario: str) -> list[Upgrade]:
        """The upgrades of one scenario, in order."""
        return [u for u in self.upgrades if u.scenario == scenario]

    def to_json(self) -> dict[str, Any]:
        """A plain-data summary (``summary.json`` in the results directory)."""
        return {
            "reps": self.reps, "baseline_s": self.baseline_s, "settle_s": self.settle_s, "scenarios": self.scenarios,
            "baselines": {k: dataclasses.asdict(v) for k, v in self.baselines.items()},
            "upgrades": [{"scenario": u.scenario, "rep": u.rep, **dataclasses.asdict(u.window),
                          "steps": {k: round(v, 3) for k, v in u.steps.items() if not k.startswith("__")},
                          "resume_s": round(u.resume_s, 3)} for u in self.upgrades],
            "wall_time_s": round(self.wall_time, 1), "rc": self.rc, "missing": self.missing,
            "kernel_lines": [{"scenario": s, "line": line} for s, line in self.kernel_lines],
            "results_dir": str(self.results_dir),
        }  # fmt: skip


# ------------------------------------------------------------------- results


def read_events(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    """events.tsv: (scenario, rep) to {event: Unix time}; rep 0 holds the baseline's marks."""
    events: dict[tuple[str, int], dict[str, float]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            events.setdefault((parts[0], int(parts[1])), {})[parts[2]] = float(parts[3])
    return events


_DMESG_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")


def kernel_lines_by_scenario(dmesg: str, clock: str, events: dict[tuple[str, int], dict[str, float]]) -> list[
        tuple[str, str]]:  # fmt: skip
    """Every kernel log problem line, with the scenario whose fio run it fell in ("between scenarios" when none).

    ``clock`` is the guest's "Unix time, uptime" pair, which turns the kernel's
    seconds since boot into Unix time (to the second or so: enough to place a line).
    """
    try:
        epoch, uptime = (float(x) for x in clock.split())
    except ValueError:
        epoch = uptime = 0.0
    spans: dict[str, tuple[float, float]] = {}
    for (scenario, _), marks in events.items():
        lo, hi = spans.get(scenario, (float("inf"), 0.0))
        spans[scenario] = (min(lo, *marks.values()), max(hi, *marks.values()))
    out = []
    for line in kernel_log_problems(dmesg):
        m = _DMESG_TIME.match(line)
        when = epoch + float(m.group(1)) - uptime if m else 0.0
        where = next((s for s, (lo, hi) in spans.items() if lo - 2 <= when <= hi + 2), "between scenarios")
        out.append((where, line.strip()))
    return out


def load(results: Path, scenarios: Sequence[str], run: GuestRun | None, reps: int, baseline_s: float,
         settle_s: float, wall: float) -> Report:  # fmt: skip
    """Read a run back from the guest's files (also usable on an old results directory, ``--reload``)."""
    events = read_events(results / "events.tsv") if (results / "events.tsv").exists() else {}
    baselines: dict[str, Window] = {}
    upgrades: list[Upgrade] = []
    missing: list[str] = []
    for name in scenarios:
        log = results / f"{name}_lat.1.log"
        if not log.exists():
            missing.append(f"{name}: no latency log")
            continue
        writes = read_latency_log(log)
        base = events.get((name, 0), {})
        if "baseline_start" in base and "baseline_end" in base:
            baselines[name] = window(writes, base["baseline_start"], base["baseline_end"])
        else:
            missing.append(f"{name}: no baseline")
        for rep in range(1, reps + 1):
            marks = events.get((name, rep), {})
            if "start" not in marks or "end" not in marks:
                missing.append(f"{name} #{rep}: not finished")
                continue
            steps = {k: v - marks["start"] for k, v in marks.items() if k not in ("start", "end")}
            steps["__start"] = marks["start"]
            upgrades.append(Upgrade(name, rep, window(writes, marks["start"], marks["end"]), steps))
    dmesg = run.dmesg if run is not None else _read(results / "dmesg.txt")
    kernel = kernel_lines_by_scenario(dmesg, _read(results / "clock"), events)
    rc = run.rc if run is not None else _rc(results)
    return Report(reps=reps, baseline_s=baseline_s, settle_s=settle_s, scenarios=list(scenarios),
                  baselines=baselines, upgrades=upgrades, results_dir=results, wall_time=wall, rc=rc,
                  kernel_lines=kernel, missing=missing)  # fmt: skip


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _rc(results: Path) -> int | None:
    text = _read(results / "rc").strip()
    return int(text) if text.lstrip("-").isdigit() else None


# ----------------------------------------------------------------------- run


def guest_timeout(scenarios: int, reps: int, baseline_s: float, settle_s: float) -> float:
    """A generous limit for the whole boot: start-up and resync, then each upgrade at emulation speed.

    A new bridge or logsvc takes up to a minute to start under emulation (two for a
    logsvc upgrade, which restarts two replicas).
    """
    return 900 + scenarios * (60 + baseline_s + reps * (settle_s + 180))


def run_upgrade(*, reps: int, baseline_s: float, settle_s: float, scenarios: Sequence[str],
                results_dir: Path | None = None) -> Report:  # fmt: skip
    """Boot once, run every scenario in ``scenarios`` (the guest script's order), read the results back."""
    results = Path(results_dir or tempfile.mkdtemp(prefix="dmulog-bench-upgrade-")).resolve()
    results.mkdir(parents=True, exist_ok=True)
    (results / "events.tsv").unlink(missing_ok=True)
    env = {
        "SCENARIOS": " ".join(scenarios),
        "REPS": str(reps),
        "BASELINE_S": f"{baseline_s:g}",
        "SETTLE_S": f"{settle_s:g}",
        "SECTORS": str(LEG_SECTORS),
        "REGION": str(REGION_SECTORS),
    }
    start = time.monotonic()
    run = run_guest(GUEST_SCRIPT, timeout=guest_timeout(len(scenarios), reps, baseline_s, settle_s), env=env,
                    results_dir=results, memory=GUEST_MEMORY)  # fmt: skip
    report = load(results, scenarios, run, reps, baseline_s, settle_s, time.monotonic() - start)
    (results / "summary.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    if not report.ok:
        (results / "failure.txt").write_text(run.describe() + "\n" + "\n".join(report.missing) + "\n")
    return report


# -------------------------------------------------------------------- output


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s" if abs(value) >= 10 else f"{value:.2f} s"


def _med_max(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "–"
    return f"{_s(statistics.median(known))} ({_s(max(known))})"


def _kind(line: str) -> str:
    """A kernel log line without its time stamp and request number: what to count it as."""
    text = _DMESG_TIME.sub("", line).strip()
    return re.sub(r"request \[\d+\]", "request [N]", text.removeprefix("device-mapper: dm-log-userspace:").strip())


def render(report: Report) -> str:
    """The summary table (one row per scenario), every upgrade, and the kernel log lines."""
    lines = [
        "| upgrade | baseline worst gap | worst gap during upgrade: median (max) "
        "| longest write: median (max) | SIGTERM → new process listening | SIGTERM → writes resume |",
        "|---|---|---|---|---|---|",
    ]
    for name in report.scenarios:
        ups, base = report.of(name), report.baselines.get(name)
        if not ups:
            lines.append(f"| {_SCENARIO[name].title} | {_s(base.worst_gap) if base else '–'} | (no result) | | | |")
            continue
        lines.append(
            f"| {_SCENARIO[name].title} | {_s(base.worst_gap) if base else '–'} "
            f"| {_med_max([u.window.worst_gap for u in ups])} | {_med_max([u.window.worst_latency for u in ups])} "
            f"| {_med_max([u.ready_s for u in ups])} | {_med_max([u.resume_s for u in ups])} |"
        )
    lines += [
        "",
        "Every upgrade (times in seconds after its SIGTERM):",
        "",
        "| upgrade | # | writes | worst gap | longest write | steps | writes resume |",
        "|---|---|---|---|---|---|---|",
    ]
    for u in report.upgrades:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in u.steps.items() if not k.startswith("__"))
        lines.append(f"| {u.scenario} | {u.rep} | {u.window.writes} | {_s(u.window.worst_gap)} "
                     f"| {_s(u.window.worst_latency)} | {steps} | {_s(u.resume_s)} |")  # fmt: skip
    base_rates = ", ".join(f"{n} {b.writes / report.baseline_s:.0f}/s (longest write {_s(b.worst_latency)})"
                           for n, b in report.baselines.items())  # fmt: skip
    lines += [
        "",
        f"Mirror: 2 legs of {LEG_SECTORS >> 11} MiB loop devices on guest tmpfs, {REGION_SECTORS // 2} KiB regions "
        f"({LEG_SECTORS // REGION_SECTORS} regions), log type dmulog, after its initial resync. Writer: fio "
        "random 4 KiB O_DIRECT writes, psync, one at a time, running through each scenario.",
        "Stack, all in the guest: redis-server (AOF, appendfsync always), two logsvc replicas on it "
        "(127.0.0.1:7500, :7501), the bridge with --logsvc naming both.",
        f"Baseline: the first {report.baseline_s:g} s of each scenario's fio run, no restart; each upgrade's "
        f"window runs from its first SIGTERM to {report.settle_s:g} s after the new process listens. "
        f"Baseline write rates: {base_rates or '–'}.",
        "Note: the guest runs under software emulation (qemu TCG, 2 vCPUs on a 2-core host shared with other "
        "work), where a Python process takes seconds to start, tens when the host is busy: the absolute "
        "figures are emulation figures.",
        f"Wall time {report.wall_time:.0f} s; results in {report.results_dir}.",
        "",
    ]
    if report.kernel_lines:
        lines.append("Kernel log lines the tests call problems, by scenario (every line: summary.json, dmesg.txt):")
        for where in dict.fromkeys(s for s, _ in report.kernel_lines):
            kinds = Counter(_kind(line) for s, line in report.kernel_lines if s == where)
            lines.append(f"  {where}: " + ", ".join(f"{n} x {kind}" for kind, n in kinds.most_common()))
        if not any("timed out" in line for _, line in report.kernel_lines):
            lines.append("  No `timed out` line.")
    else:
        lines.append("Kernel log: no `timed out` line, and no other line the tests call a problem.")
    if not report.ok:
        lines.append(f"PROBLEMS: guest rc={report.rc}; see {report.results_dir / 'failure.txt'}")
        lines += [f"  missing: {m}" for m in report.missing]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark (or read an old run back), print the tables; 1 when it did not finish."""
    parser = argparse.ArgumentParser(prog="python -m bench.upgrade", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="upgrades per scenario (default %(default)s)")
    parser.add_argument("--baseline", type=float, default=30.0,
                        help="seconds of writes before any restart, per scenario (default %(default)s)")  # fmt: skip
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds of writes after each new process listens (default %(default)s)")  # fmt: skip
    parser.add_argument("--only", metavar="SCENARIO,...",
                        help="run only these: " + ", ".join(s.name for s in SCENARIOS))  # fmt: skip
    parser.add_argument("--results-dir", type=Path, help="where the guest's files go (default: a new temp dir)")
    parser.add_argument("--reload", action="store_true",
                        help="boot nothing: read the run in --results-dir back and print it again")  # fmt: skip
    add_out_option(parser, "upgrade")
    args = parser.parse_args(argv)
    scenarios = [s.name for s in SCENARIOS]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in _SCENARIO]
        if unknown:
            parser.error(f"unknown scenario {', '.join(unknown)}")
        scenarios = [n for n in scenarios if n in wanted]
    if args.reload and args.results_dir is None:
        parser.error("--reload needs --results-dir")
    with tee(args.out):
        limit = guest_timeout(len(scenarios), args.reps, args.baseline, args.settle)
        # A reloaded run keeps the date it ran (its events file's), not today's.
        events = args.results_dir / "events.tsv" if args.reload else None
        when = time.localtime(events.stat().st_mtime if events is not None and events.exists() else None)
        print(f"bench.upgrade {time.strftime('%Y-%m-%d %H:%M', when)}: {', '.join(scenarios)}, {args.reps} upgrades "
              f"each, in one boot (up to {limit / 60:.0f} min)", flush=True)  # fmt: skip
        if args.reload:
            results = args.results_dir.resolve()
            old = json.loads(_read(results / "summary.json") or "{}")
            report = load(results, scenarios, None, args.reps, args.baseline, args.settle, old.get("wall_time_s", 0.0))
        else:
            report = run_upgrade(reps=args.reps, baseline_s=args.baseline, settle_s=args.settle,
                                 scenarios=scenarios, results_dir=args.results_dir)  # fmt: skip
        print(render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
