"""The benchmark still runs end to end (a tiny run; its numbers are not checked here).

Each run writes its report to a temporary ``--out``: the committed reports in
docs/results/ are full runs, which a smoke run must not replace.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Whole benchmark processes, over 15 s together: make test runs them, make check does not.
pytestmark = pytest.mark.load

REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_and_reports_every_column(tmp_path: Path) -> None:
    """`python -m bench` on a short prefix of the trace: exit 0, no request errors, every table printed."""
    out = tmp_path / "bench.txt"
    run = subprocess.run([sys.executable, "-m", "bench", "--requests", "20", "--mirrors", "1", "2", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip

    assert 0 == run.returncode, run.stdout + run.stderr
    assert 5 == run.stdout.count("errors: 0"), run.stdout
    assert "appendfsync always" in run.stdout and "appendfsync everysec" in run.stdout
    assert "\ndurable replicas: " in run.stdout
    assert "\nsecurity: p50" in run.stdout
    assert "\nRedis Cluster: throughput" in run.stdout and "\nCluster, 3 primaries " in run.stdout
    assert "throughput, full stack" in run.stdout
    for transport in ("socket", "grpc unary", "grpc stream"):
        assert f"\n{transport} " in run.stdout, transport
    for transport in ("stream", "unary"):
        assert f"\n{transport} " in run.stdout, transport
    assert run.stdout == out.read_text()


def test_scale_bench_runs(tmp_path: Path) -> None:
    """`python -m bench.scale` with a few logs and a modest large log: exit 0 and both tables."""
    out = tmp_path / "bench-scale.txt"
    run = subprocess.run([sys.executable, "-m", "bench.scale", "--logs", "50", "--regions", "65536", "--no-stall",
                          "--marks", "2048", "--expire-logs", "20", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)  # fmt: skip

    assert 0 == run.returncode, run.stdout + run.stderr
    assert "50 logs of 128 regions" in run.stdout and "one log of 65536 regions" in run.stdout
    assert "(exit 0," in run.stdout
    assert "expiry: a log with 2048 marked regions handed over" in run.stdout
    assert run.stdout == out.read_text()
