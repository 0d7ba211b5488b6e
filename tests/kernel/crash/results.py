"""Run the crash scenarios and print a markdown table of what they found.

::

    .venv/bin/python -m tests.kernel.crash.results [--rounds N] [--seed S] [--scenario NAME ...]

One row per scenario: rounds run, regions that differed between the legs at the crash
(what the log had to know), violations (differing regions the log would not resync),
completed writes lost, kernel log problems, "timed out" lines, rounds that could not
run to the end, and the time taken. The details of every failed round follow the table.
Exit status 0 when every round passed, 1 otherwise. Results stay in ``--workdir`` (a
new temporary directory by default, printed at the end). The report is also written to
``--out``, by default docs/results/crash.txt, the run docs/crash-safety.md discusses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness.report import add_out_option, tee
from tests.kernel.crash.scenarios import (
    SCENARIOS,
    RoundResult,
    configured_rounds,
    configured_seed,
    rounds_for,
    run_scenario,
    scenario_seed,
)

__all__ = ["main", "table"]

_COLUMNS = (
    "scenario", "rounds", "differing regions", "violations", "lost writes",
    "kernel problems", "timed out", "incomplete", "seconds", "verdict",
)  # fmt: skip


def _lost(r: RoundResult) -> int:
    return sum(len(x.lost) + len(x.failed) + (not x.legs_identical) for x in (r.primary_report, r.data_report) if x)


def table(results: dict[str, list[RoundResult]]) -> str:
    """The markdown table of the results, one row per scenario."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for name, rounds in results.items():
        cells = [
            f"{name} ({SCENARIOS[name].description})",
            str(len(rounds)),
            str(sum(r.differing for r in rounds)),
            str(sum(r.violations for r in rounds)),
            str(sum(_lost(r) for r in rounds)),
            str(sum(len(r.kernel_problems) for r in rounds)),
            str(sum(len(r.timed_out_lines) for r in rounds)) + (" (allowed)" if SCENARIOS[name].allow_timeouts else ""),
            str(sum(1 for r in rounds if r.errors)),
            f"{sum(r.seconds for r in rounds):.0f}",
            "pass" if all(r.ok for r in rounds) else "**FAIL**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios (all by default); print the table, then the failed rounds."""
    parser = argparse.ArgumentParser(prog="python -m tests.kernel.crash.results", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of node-crash; others run a third as many (default $DMULOG_CRASH_ROUNDS or 3)",
    )
    parser.add_argument("--seed", type=int, default=None, help="default $DMULOG_CRASH_SEED or random")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="repeatable; default all")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default a new temporary directory")
    add_out_option(parser, "crash")
    args = parser.parse_args(argv)  # fmt: skip
    rounds = configured_rounds(args.rounds)
    seed = args.seed if args.seed is not None else configured_seed()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dmulog-crash-results-"))
    names = args.scenario or list(SCENARIOS)
    with tee(args.out):
        print(f"{time.strftime('%Y-%m-%d %H:%M')}  seed {seed}, {rounds} node-crash rounds, results in {workdir}",
              flush=True)  # fmt: skip
        results: dict[str, list[RoundResult]] = {}
        start = time.monotonic()
        for name in names:
            scenario = SCENARIOS[name]
            results[name] = run_scenario(
                scenario, workdir / name, rounds=rounds_for(scenario, rounds), seed=scenario_seed(seed, scenario)
            )
            verdicts = " ".join("ok" if r.ok else "FAIL" for r in results[name])
            print(f"  {name}: {verdicts} ({sum(r.seconds for r in results[name]):.0f} s)", flush=True)
        print()
        print(table(results))
        print(f"\nseed {seed}; {time.monotonic() - start:.0f} s in all; results in {workdir}")
        failed = [r for rounds_ in results.values() for r in rounds_ if not r.ok]
        for r in failed:
            print("\n" + r.describe())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
