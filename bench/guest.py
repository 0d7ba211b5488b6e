"""``python -m bench.guest``: write throughput of a real mirror with each dirty log, as ratios.

The other benchmarks replay recorded requests on the host; what a mirror's user
gets is write throughput through dm-raid1 while the log answers the kernel. So
this boots the real kernel once (harness/guest.py, the guest side in
harness/guest/bench.sh) and runs the same fio
workloads on the same 2-leg mirror with each log, one after the other:

* ``core``: the kernel's own in-memory log: the ceiling;
* ``responder``, ``responder-if``: the trivial in-guest responder
  (harness/responder.py, clustered-core), without and with
  ``integrated_flush``: the floor every userspace log is measured against;
* ``dmulog-guest``, ``dmulog-guest-if``: redis-server, ``dmulog logsvc`` and
  ``dmulog bridge`` all in the guest, started as the kernel tests start them
  (harness/guest/lib.sh);
* ``dmulog-host``, ``dmulog-host-if``: only the bridge in the guest; Redis and
  logsvc on the host, reached through qemu's ``restrict=on`` user network with
  a ``guestfwd`` to a host Unix socket, as in the crash suite
  (harness/topology.py).

Every mirror is created as a new mirror is (no ``nosync``), and the workloads
start once its initial resync is complete: the state a mirror spends its life
in. (For dmulog that matters: the completed resync sets the in-sync latch, so
the bridge answers IN_SYNC itself; with ``nosync`` it would ask every time.)

Workloads: random 4 KiB and sequential 1 MiB O_DIRECT writes with libaio at
iodepth 1 and 16, each a few seconds, time-based, repeated ``--reps`` times
(the median is reported). Throughput is compared with the responder of the
same ``integrated_flush`` setting and with ``core``.

The legs are loop devices on tmpfs files in the guest, not virtio disks: what
is measured is the cost of the log, and an emulated disk (host page cache or
host disk, with Redis's fsyncs on the same disk in the host configurations)
would only add noise that has nothing to do with it. Crash safety is not in
question here.

Requests per 1000 writes are counted by the log servers themselves (the
responder's and the bridge's request counters, read on SIGUSR1 before and
after each workload), so counting costs the measured runs nothing.

Under software emulation everything in the guest is slow (its Python about
ten times slower than native, a gRPC call between two guest processes slower
still), so only the ratios within one run mean something.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.guest import GuestRun, guest_script, run_guest
from harness.report import add_out_option, tee
from harness.topology import Topology

__all__ = ["CONFIGS", "WORKLOADS", "Cell", "Config", "Report", "Workload", "main", "render", "run_bench"]

GUEST_SCRIPT = guest_script("bench.sh")
#: 256 MiB legs with 512 KiB regions: 512 regions, so that random writes rarely
#: meet a region the kernel still holds marked from an earlier write.
LEG_SECTORS = 256 << 11
#: --quick: 32 MiB legs, so that the resync before the workloads (every region, as
#: for any new mirror) takes seconds, not minutes, under emulation: it was most of
#: each log's time in the quick run.
QUICK_LEG_SECTORS = 32 << 11
REGION_SECTORS = 1024
#: Guest RAM: both legs live in it (tmpfs), beside redis-server and three Python processes.
GUEST_MEMORY = "2G"
DEVICE = "/dev/mapper/bench"
#: What dmulog, all in the guest with integrated_flush, should reach on random 4 KiB
#: writes, as a fraction of the trivial responder's IOPS in the same run.
TARGET = 0.5
#: Request types in the order a write to a clean region sends them; others follow by count.
_REQUEST_ORDER = ("IN_SYNC", "MARK_REGION", "FLUSH", "CLEAR_REGION")


@dataclasses.dataclass(frozen=True)
class Config:
    """One dirty log setup; ``name`` is also its results directory in the guest's /results."""

    name: str
    log: str
    integrated_flush: bool = False
    userspace: bool = True
    on_host: bool = False

    @property
    def responder(self) -> str:
        """The responder configuration to compare with: same integrated_flush setting."""
        return "responder-if" if self.integrated_flush else "responder"


CONFIGS = (
    Config("core", "core (in-kernel)", userspace=False),
    Config("responder", "trivial responder"),
    Config("responder-if", "trivial responder", integrated_flush=True),
    Config("dmulog-guest", "dmulog, all in guest"),
    Config("dmulog-guest-if", "dmulog, all in guest", integrated_flush=True),
    Config("dmulog-host", "dmulog, logsvc+Redis on host", on_host=True),
    Config("dmulog-host-if", "dmulog, logsvc+Redis on host", integrated_flush=True, on_host=True),
)
_CONFIG = {c.name: c for c in CONFIGS}


@dataclasses.dataclass(frozen=True)
class Workload:
    """One fio workload; every repetition is a job of one job file, run back to back."""

    name: str
    title: str
    rw: str
    bs: str
    iodepth: int

    @property
    def unit(self) -> str:
        """Random writes are counted in IOPS, sequential ones in MiB/s."""
        return "MiB/s" if self.rw == "write" else "IOPS"

    def throughput(self, write: dict[str, Any]) -> float:
        """The throughput of one fio job (its ``write`` section) in :attr:`unit`."""
        return float(write["bw_bytes"]) / (1 << 20) if self.unit == "MiB/s" else float(write["iops"])

    def job_file(self, reps: int, runtime: float) -> str:
        """A fio job file with ``reps`` time-based repetitions, each started after the previous one ended.

        One fio process for all repetitions: fio itself needs seconds to start under emulation.
        ``clock_gettime`` spares fio's start-up CPU clock calibration, slow under emulation too.
        """
        head = [
            "[global]", f"filename={DEVICE}", "direct=1", "ioengine=libaio", f"iodepth={self.iodepth}",
            f"rw={self.rw}", f"bs={self.bs}", "time_based=1", f"runtime={runtime:g}s", "norandommap=1",
            "thread=1", "clocksource=clock_gettime",
        ]  # fmt: skip
        jobs = [f"\n[rep{i + 1}]\nstonewall" for i in range(reps)]
        return "\n".join(head) + "\n" + "\n".join(jobs) + "\n"


WORKLOADS = (
    Workload("rand4k-qd1", "random 4 KiB, iodepth 1", "randwrite", "4k", 1),
    Workload("rand4k-qd16", "random 4 KiB, iodepth 16", "randwrite", "4k", 16),
    Workload("seq1m-qd1", "sequential 1 MiB, iodepth 1", "write", "1M", 1),
    Workload("seq1m-qd16", "sequential 1 MiB, iodepth 16", "write", "1M", 16),
)


@dataclasses.dataclass
class Cell:
    """What one (configuration, workload) produced.

    Attributes:
        config: configuration name.
        workload: workload name.
        samples: throughput of each repetition, in the workload's unit.
        writes: writes fio completed over all repetitions.
        requests: kernel requests the log server received during the workload, by
            type; None for the in-kernel log.
        answered_here: of those, the ones the dmulog bridge answered without
            calling logsvc (IN_SYNC from the latch, FLUSH without marks).
    """

    config: str
    workload: str
    samples: list[float]
    writes: int
    requests: dict[str, int] | None = None
    answered_here: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def median(self) -> float:
        """The throughput reported: the median repetition."""
        return statistics.median(self.samples)

    def per_1000_writes(self) -> dict[str, float]:
        """Requests per 1000 writes, by type: those of a write in the order it sends them, then the rest."""
        if not self.requests or not self.writes:
            return {}
        rank = {name: i for i, name in enumerate(_REQUEST_ORDER)}
        ranked = sorted(self.requests.items(), key=lambda kv: (rank.get(kv[0], len(rank)), -kv[1], kv[0]))
        return {name: 1000 * n / self.writes for name, n in ranked}

    def here_per_1000_writes(self) -> dict[str, float]:
        """Requests answered in the bridge per 1000 writes, by type."""
        return {name: 1000 * n / self.writes for name, n in self.answered_here.items() if n} if self.writes else {}


@dataclasses.dataclass
class Report:
    """A whole run: settings, cells, and what the guest reported."""

    reps: int
    runtime: float
    log_type: str
    configs: list[str]
    cells: dict[tuple[str, str], Cell]
    results_dir: Path
    wall_time: float
    rc: int | None
    problems: list[str]
    missing: list[str]
    leg_sectors: int = LEG_SECTORS

    @property
    def ok(self) -> bool:
        """The guest finished, the kernel logged no problem, and every cell has results."""
        return self.rc == 0 and not self.problems and not self.missing

    def ratio(self, cell: Cell, other: str) -> float | None:
        """``cell``'s median throughput over configuration ``other``'s, same workload."""
        base = self.cells.get((other, cell.workload))
        if base is None or base.median <= 0:
            return None
        return cell.median / base.median

    def headline(self) -> str | None:
        """The number that matters most: integrated_flush dmulog in the guest on random 4 KiB writes vs. TARGET."""
        parts = []
        for w in WORKLOADS[:2]:
            cell = self.cells.get(("dmulog-guest-if", w.name))
            ratio = self.ratio(cell, "responder-if") if cell is not None else None
            if ratio is not None:
                parts.append(f"iodepth {w.iodepth}: {ratio:.1%}")
        if not parts:
            return None
        return (f"dmulog all in the guest with integrated_flush, random 4 KiB writes: {', '.join(parts)} "
                f"of the responder's IOPS (target {TARGET:.0%}).")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """A plain-data summary (``summary.json`` in the results directory).

        Besides the run it names every configuration and workload the benchmark
        knows (``config_table``, ``workloads``), so that a reader in another
        process, tests/kernel/test_bench_guest.py, can tell a configuration that
        was left out from one that was never there.
        """
        return {
            "reps": self.reps, "runtime_s": self.runtime, "log_type": self.log_type, "configs": self.configs,
            "config_table": [dataclasses.asdict(c) for c in CONFIGS], "workloads": [w.name for w in WORKLOADS],
            "wall_time_s": round(self.wall_time, 1), "rc": self.rc, "problems": self.problems,
            "missing": self.missing, "results_dir": str(self.results_dir),
            "cells": [
                {**dataclasses.asdict(c), "median": c.median, "per_1000_writes": c.per_1000_writes(),
                 "here_per_1000_writes": c.here_per_1000_writes(),
                 "vs_responder": self.ratio(c, _CONFIG[c.config].responder) if _CONFIG[c.config].userspace else None,
                 "vs_core": self.ratio(c, "core")}
                for c in self.cells.values()
            ],
        }  # fmt: skip


# ------------------------------------------------------------------- results


def parse_counts(line: str) -> tuple[dict[str, int], dict[str, int]]:
    """Request counts, and those answered in the bridge, from a log server's counts line.

    That is the bridge's JSON log line or the responder's text (which answers
    everything itself: its second dict is empty).
    """
    line = line.strip()
    if line.startswith("{"):  # {"event": "request_counts", "counts": {"IN_SYNC": 12, ...}, "answered_here": {...}}
        data = json.loads(line)
        return ({k: int(v) for k, v in data["counts"].items()},
                {k: int(v) for k, v in data.get("answered_here", {}).items()})  # fmt: skip
    # responder: requests 12: CTR=1 IN_SYNC=8 ...
    pairs = line.split(": ", 2)[2] if line.count(": ") >= 2 else ""
    return {k: int(v) for k, v in (p.split("=", 1) for p in pairs.split())}, {}


def _fio_jobs(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    return list(json.loads(text[text.index("{") :])["jobs"])  # fio may put a warning line first


def load_cell(results: Path, config: Config, workload: Workload) -> Cell:
    """Read one cell back from the guest's files.

    Raises:
        FileNotFoundError, ValueError, KeyError: the guest did not get that far, or
            its output is damaged.
    """
    jobs = _fio_jobs(results / config.name / f"{workload.name}.json")
    if not jobs:
        raise ValueError(f"no fio jobs for {config.name}/{workload.name}")
    cell = Cell(config.name, workload.name, [workload.throughput(j["write"]) for j in jobs],
                sum(int(j["write"]["total_ios"]) for j in jobs))  # fmt: skip
    if config.userspace:
        before, here_before = parse_counts((results / config.name / f"{workload.name}.before").read_text())
        after, here_after = parse_counts((results / config.name / f"{workload.name}.after").read_text())
        cell.requests = dict(Counter(after) - Counter(before))
        cell.answered_here = dict(Counter(here_after) - Counter(here_before))
    return cell


# ----------------------------------------------------------------------- run


def guest_timeout(configs: int, reps: int, runtime: float) -> float:
    """A generous limit for the whole boot: start-up of every server plus every fio run."""
    return 360 + configs * len(WORKLOADS) * (30 + reps * (runtime + 5))


def run_bench(
    *, reps: int, runtime: float, configs: Sequence[str], log_type: str = "clustered-core",
    results_dir: Path | None = None, leg_sectors: int = LEG_SECTORS,
) -> Report:  # fmt: skip
    """Boot once, run every workload with every configuration in ``configs``, read the results back."""
    chosen = [_CONFIG[name] for name in configs]
    results = Path(results_dir or tempfile.mkdtemp(prefix="dmulog-bench-guest-")).resolve()
    (results / "jobs").mkdir(parents=True, exist_ok=True)
    for w in WORKLOADS:
        (results / "jobs" / f"{w.name}.fio").write_text(w.job_file(reps, runtime))
    env = {
        "CONFIGS": " ".join(c.name for c in chosen),
        "WORKLOADS": " ".join(w.name for w in WORKLOADS),
        "SECTORS": str(leg_sectors),
        "REGION": str(REGION_SECTORS),
        "LOG_TYPE": log_type,
        "FIO_TIMEOUT": str(int(60 + reps * (runtime + 30))),
    }
    timeout = guest_timeout(len(chosen), reps, runtime)
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        qemu_extra: list[str] = []
        if any(c.on_host for c in chosen):
            # Redis (AOF, appendfsync always) and logsvc on the host; no MONITOR trace: it slows Redis down.
            topology = stack.enter_context(Topology(results / "host", trace=False))
            qemu_extra = topology.network_args()
            env["HOST_LOGSVC"] = topology.guest_logsvc
        run = run_guest(GUEST_SCRIPT, timeout=timeout, env=env, results_dir=results, memory=GUEST_MEMORY,
                        qemu_extra=qemu_extra)  # fmt: skip
    wall = time.monotonic() - start
    cells: dict[tuple[str, str], Cell] = {}
    missing: list[str] = []
    for c in chosen:
        for w in WORKLOADS:
            try:
                cells[c.name, w.name] = load_cell(results, c, w)
            except (OSError, ValueError, KeyError, IndexError) as e:
                missing.append(f"{c.name}/{w.name}: {e}")
    report = Report(reps=reps, runtime=runtime, log_type=log_type, configs=[c.name for c in chosen], cells=cells,
                    results_dir=results, wall_time=wall, rc=run.rc, problems=run.problems, missing=missing,
                    leg_sectors=leg_sectors)  # fmt: skip
    (results / "summary.json").write_text(json.dumps(report.to_json(), indent=1) + "\n")
    if not report.ok:
        (results / "failure.txt").write_text(_failure(run, report))
    return report


def _failure(run: GuestRun, report: Report) -> str:
    lines = [run.describe()]
    lines += [f"missing: {m}" for m in report.missing]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- output


def _num(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _requests(cell: Cell) -> str:
    per = cell.per_1000_writes()
    if cell.requests is None:
        return "–"
    if not per:
        return "none"
    here = cell.here_per_1000_writes()
    parts = [f"{name.removesuffix('_REGION')} {n:.0f}" + (f" ({here[name]:.0f} in bridge)" if name in here else "")
             for name, n in per.items()]  # fmt: skip
    return ", ".join(parts) + f" (total {sum(per.values()):.0f})"


def render(report: Report) -> str:
    """The markdown table, one row per (workload, configuration), and the notes that go with it."""
    head = [
        "| workload | log | integrated_flush | throughput: median (min–max) | × responder | × core "
        "| requests per 1000 writes |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    for w in WORKLOADS:
        for name in report.configs:
            c, cell = _CONFIG[name], report.cells.get((name, w.name))
            if cell is None:
                rows.append(f"| {w.title} | {c.log} | {'yes' if c.integrated_flush else 'no'} | (no result) | | | |")
                continue
            spread = f" ({_num(min(cell.samples))}–{_num(max(cell.samples))})" if len(cell.samples) > 1 else ""
            vs_responder = report.ratio(cell, c.responder) if c.userspace else None
            rows.append(
                f"| {w.title} | {c.log} | {'yes' if c.integrated_flush else 'no'} "
                f"| {_num(cell.median)} {w.unit}{spread} | {_ratio(vs_responder)} "
                f"| {_ratio(report.ratio(cell, 'core'))} | {_requests(cell)} |"
            )
    notes = [
        "",
        f"2-leg mirror of {report.leg_sectors >> 11} MiB loop devices on guest tmpfs, "
        f"{REGION_SECTORS // 2} KiB regions, after its initial resync; fio O_DIRECT libaio, "
        f"time-based {report.runtime:g} s, median of {report.reps} repetition"
        f"{'s' if report.reps != 1 else ''}; dmulog log type {report.log_type}.",
        "× responder: against the trivial responder with the same integrated_flush setting. "
        "Requests: what the log server received during the workload (its own counters), per 1000 fio writes; "
        "(N in bridge): of those, answered by the dmulog bridge without a call to logsvc.",
        "Note: the guest runs under software emulation (TCG), where its Python is about 10x slower than native, "
        "so the guest's absolute numbers are emulation-bound; only the ratios matter.",
        f"Wall time {report.wall_time:.0f} s; results in {report.results_dir}.",
    ]
    if report.headline():
        notes.insert(1, str(report.headline()))
    hops = report.results_dir / "hops.txt"
    if hops.exists():
        notes += ["", "In the same guest, " + hops.read_text().strip()]
    if not report.ok:
        notes.append(f"PROBLEMS: guest rc={report.rc}; see {report.results_dir / 'failure.txt'}")
        notes += [f"  kernel: {p}" for p in report.problems]
        notes += [f"  missing: {m}" for m in report.missing]
    return "\n".join(head + rows + notes)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print the table; exit 1 when anything went wrong."""
    parser = argparse.ArgumentParser(prog="python -m bench.guest", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, help="repetitions of each workload (default 3; --quick: 1)")
    parser.add_argument("--runtime", type=float, help="seconds per repetition (default 5; --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke size: one short repetition of everything, 32 MiB legs")  # fmt: skip
    parser.add_argument("--only", metavar="CONFIG,...", help="run only these configurations: "
                        + ", ".join(c.name for c in CONFIGS) + " (ratios need core and the responders)")  # fmt: skip
    parser.add_argument("--log-type", choices=("clustered-core", "dmulog"), default="clustered-core",
                        help="log type of the dmulog tables (the responder always runs clustered-core; "
                        "default %(default)s, the same table as the responder's)")  # fmt: skip
    parser.add_argument("--results-dir", type=Path, help="where the guest's files go (default: a new temp dir)")
    add_out_option(parser, "bench-guest")
    args = parser.parse_args(argv)
    configs = [c.name for c in CONFIGS]
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in _CONFIG]
        if unknown:
            parser.error(f"unknown configuration {', '.join(unknown)}")
        configs = [name for name in configs if name in wanted]
    reps = args.reps or (1 if args.quick else 3)
    runtime = args.runtime or (1.0 if args.quick else 5.0)
    with tee(args.out):
        print(f"bench.guest {time.strftime('%Y-%m-%d %H:%M')}: {len(configs)} configurations x {len(WORKLOADS)} "
              f"workloads x {reps} x {runtime:g} s in one boot "
              f"(up to {guest_timeout(len(configs), reps, runtime) / 60:.0f} min)", flush=True)  # fmt: skip
        report = run_bench(reps=reps, runtime=runtime, configs=configs, log_type=args.log_type,
                           results_dir=args.results_dir,
                           leg_sectors=QUICK_LEG_SECTORS if args.quick else LEG_SECTORS)  # fmt: skip
        print(render(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
