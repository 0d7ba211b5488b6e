"""What a Redis Cluster buys: throughput of 64 mirrors on three primaries against one Redis, in one run.

Both sides are Valkey with AOF (``appendfsync always``) and no replicas, and
logsvc runs with ``--redis-durable-replicas 0``: the difference measured is
the sharding alone (bench/durable.py measures what a replica costs). The same
logsvc process type serves each, one bridge replays the kernel trace from
``mirrors`` mirrors at once, each mirror its own log, so the logs spread over
the shards by their hash tags.

Columns: requests per second, ``scaling`` (the Cluster's rate over the single
Redis's at the same number of mirrors), p50 and p99 of every request, and the
CPU each tier used during the run, in cores (the Redis column is the sum over
the Cluster's primaries). Where logsvc, not Redis, is the busiest process,
the Cluster cannot be faster: it adds capacity where Redis is the limit
(memory, one Redis core), which more logsvc replicas turn into throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.alone import run_alone
from bench.cpu import cpu_seconds
from bench.replay import Recorder, pct
from bench.stack import full_stack
from harness.redis_ha import ClusterGroup, ValkeyNode
from harness.servers import LogsvcProcess, start_logsvc

__all__ = ["Run", "measure", "table"]


@dataclass(frozen=True)
class Run:
    """One setup at one number of mirrors."""

    setup: str
    mirrors: int
    wall: float
    rec: Recorder
    busy: tuple[float, float, float]
    """Cores used by the bridge (this process), logsvc and Redis (all its processes)."""


async def _run(setup: str, logsvc: LogsvcProcess, redis_pids: list[int], trace: list[bytes],
               mirrors: int) -> Run:  # fmt: skip
    before = cpu_seconds(os.getpid(), logsvc.pid, *redis_pids)
    rec = Recorder()
    wall = await full_stack(logsvc.target, trace, mirrors, rec)
    after = cpu_seconds(os.getpid(), logsvc.pid, *redis_pids)
    used = [(b - a) / wall for a, b in zip(before, after, strict=True)]
    return Run(setup, mirrors, wall, rec, (used[0], used[1], sum(used[2:])))


async def measure(workdir: Path, trace: list[bytes], mirrors: list[int]) -> list[Run]:
    """Every number of mirrors on one Valkey, then on a Cluster of three primaries."""
    runs = []
    single = ValkeyNode(workdir / "single").start()
    try:
        logsvc = start_logsvc(workdir / "logsvc-single.log", redis_url=single.url)
        try:
            for n in mirrors:
                runs.append(await _run("one Valkey", logsvc, [_pid(single)], trace, n))
        finally:
            logsvc.stop()
    finally:
        single.kill()
    with ClusterGroup(workdir / "cluster", replicas_per_primary=0) as cluster:
        logsvc = start_logsvc(workdir / "logsvc-cluster.log", redis_cluster=cluster.url)
        try:
            for n in mirrors:
                runs.append(await _run("Cluster, 3 primaries", logsvc, [_pid(p) for p in cluster.nodes], trace, n))
        finally:
            logsvc.stop()
    return runs


def _pid(node: ValkeyNode) -> int:
    return node.proc.pid if node.proc is not None else 0


def table(runs: list[Run]) -> str:
    """The throughput table, scaling against one Valkey at the same number of mirrors."""
    lines = ["Redis Cluster: throughput of the full stack, Valkey appendfsync always, no replicas, N=0",
             f"{'setup':<22} {'mirrors':>8} {'requests':>9} {'req/s':>8} {'scaling':>8} {'p50 µs':>8} "
             f"{'p99 µs':>8} {'bridge':>7} {'logsvc':>7} {'redis':>7}"]  # fmt: skip
    base = {r.mirrors: r.rec.requests / r.wall for r in runs if r.setup == "one Valkey"}
    for r in runs:
        values = sorted(v for s in r.rec.samples.values() for v in s)
        rate = r.rec.requests / r.wall
        p99 = pct(values, 0.99) if values else 0.0
        lines.append(f"{r.setup:<22} {r.mirrors:>8} {r.rec.requests:>9} {rate:>8.0f} {rate / base[r.mirrors]:>8.2f} "
                     f"{statistics.median(values) * 1e6 if values else 0:>8.0f} {p99 * 1e6:>8.0f}"
                     + "".join(f" {b:>7.2f}" for b in r.busy))  # fmt: skip
    lines.append(f"errors: {sum(r.rec.errors for r in runs)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.cluster``: the Cluster table alone."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--mirrors", type=int, nargs="+", default=[64], help="concurrency levels")

    return run_alone(argv, module="bench.cluster", doc=__doc__ or "", report="bench-cluster", options=options,
                     table=lambda args, trace, workdir: table(asyncio.run(measure(workdir, trace, args.mirrors))))


if __name__ == "__main__":
    sys.exit(main())
