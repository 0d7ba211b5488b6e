"""The guest benchmark still runs end to end: ``python -m bench.guest --quick``, one boot, every log.

Its numbers are not judged here (one short repetition under emulation says little);
what is checked is that every configuration really moved data and that the request
counts come from real log servers seeing the kernel's real request pattern.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from harness.guest import REPO

pytestmark = pytest.mark.kernel
#: Far past the guest's own limit (bench/guest.py guest_timeout), which powers the VM off first.
TIMEOUT = 3600


@dataclasses.dataclass(frozen=True)
class QuickRun:
    """What ``python -m bench.guest --quick`` returned, printed and wrote to summary.json."""

    rc: int
    stdout: str
    summary: dict[str, Any]

    @property
    def configs(self) -> list[dict[str, Any]]:
        """Every configuration the benchmark knows (its CONFIGS), as the run wrote them down."""
        return list(self.summary["config_table"])

    @property
    def userspace(self) -> list[dict[str, Any]]:
        """The configurations whose log is a userspace server."""
        return [c for c in self.configs if c["userspace"]]

    @property
    def workloads(self) -> list[str]:
        """Every workload's name (its WORKLOADS)."""
        return list(self.summary["workloads"])


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """One ``--quick`` run, a process of its own (the tests never import the benchmarks).

    In a session of its own, so that a run killed at the timeout takes its qemu with it.
    """
    results = tmp_path_factory.mktemp("bench-guest")
    proc = subprocess.Popen([sys.executable, "-m", "bench.guest", "--quick", "--results-dir", str(results),
                             "--out", str(results / "report.txt")], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    summary_file = results / "summary.json"
    assert summary_file.exists(), out
    return QuickRun(proc.returncode, out, json.loads(summary_file.read_text()))


def _cells(run: QuickRun) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["config"], c["workload"]): c for c in run.summary["cells"]}


def test_the_run_is_clean_and_prints_the_table(quick: QuickRun) -> None:
    """Exit 0 (guest finished, no kernel log problem, no missing result); one table row per log and workload."""
    assert 0 == quick.rc, quick.stdout
    assert ([], [], 0) == (quick.summary["problems"], quick.summary["missing"], quick.summary["rc"])
    rows = [line for line in quick.stdout.splitlines() if line.startswith(("| random", "| sequential"))]
    assert len(quick.configs) * len(quick.workloads) == len(rows), quick.stdout
    assert "only the ratios matter" in quick.stdout
    assert "of the responder's IOPS (target 50%)" in quick.stdout
    assert "In the same guest, one hop" in quick.stdout and "grpc stream" in quick.stdout, quick.stdout


def test_every_configuration_moved_data(quick: QuickRun) -> None:
    """Every (log, workload) completed writes, with a nonzero throughput, and has both ratios."""
    cells = _cells(quick)
    assert {(c["name"], w) for c in quick.configs for w in quick.workloads} == set(cells)
    for key, cell in cells.items():
        assert cell["writes"] > 0 and cell["median"] > 0 and min(cell["samples"]) > 0, (key, cell)
        assert cell["vs_core"] > 0, key
        assert (cell["vs_responder"] is None) == (key[0] == "core"), (key, cell)


def test_userspace_logs_saw_the_requests_of_a_write(quick: QuickRun) -> None:
    """Every userspace log counted IN_SYNC, FLUSH and CLEAR_REGION; MARK_REGION only without integrated_flush.

    With integrated_flush the marks ride inside FLUSH. The in-kernel log has no counts at all.
    """
    cells = _cells(quick)
    for w in quick.workloads:
        assert cells["core", w]["requests"] is None
        for c in quick.userspace:
            requests = cells[c["name"], w]["requests"]
            assert requests and {"IN_SYNC", "FLUSH", "CLEAR_REGION"} <= set(requests), (c["name"], w, requests)
            assert ("MARK_REGION" in requests) != c["integrated_flush"], (c["name"], w, requests)


def test_one_write_at_a_time_costs_two_in_sync_requests(quick: QuickRun) -> None:
    """Random 4 KiB writes one at a time: about two IN_SYNC (and one MARK) per write, for every userspace log.

    Each write lands in a region the kernel does not hold, whatever answers the log, so
    the counts per write are the same for the responder and dmulog however slow it is.
    """
    cells = _cells(quick)
    for c in quick.userspace:
        per_1000 = cells[c["name"], "rand4k-qd1"]["per_1000_writes"]
        assert 1500 <= per_1000["IN_SYNC"] <= 2500, (c["name"], per_1000)
        if not c["integrated_flush"]:
            assert 500 <= per_1000["MARK_REGION"] <= 1500, (c["name"], per_1000)


def test_dmulog_answers_in_sync_in_the_bridge_on_a_synced_mirror(quick: QuickRun) -> None:
    """The mirrors are resynced before the workloads, which sets the latch: the bridge answers IN_SYNC itself.

    And FLUSH without marks too, which only exists without integrated_flush.
    """
    cells = _cells(quick)
    for c in quick.userspace:
        if not c["name"].startswith("dmulog"):
            continue
        cell = cells[c["name"], "rand4k-qd1"]
        here, per = cell["here_per_1000_writes"], cell["per_1000_writes"]
        assert here.get("IN_SYNC", 0) > 0.9 * per["IN_SYNC"], (c["name"], here, per)
        if not c["integrated_flush"]:
            assert here.get("FLUSH", 0) > 0.9 * per["FLUSH"], (c["name"], here, per)
