"""``python -m bench``: per-request latency of dmulog against its floors, as ratios.

Everything is measured in one run on one machine, side by side, because
absolute numbers on a shared 2-core machine mean little. The request stream
is a trace recorded from the real kernel (bench/record_trace.py): a new
mirror's life, its initial resync and then a mixed 4 KiB random read/write
and 1 MiB sequential fio workload (``mixed-synced``); ``--trace mixed`` is
the same workload on a ``nosync`` mirror, which never sets the in-sync latch.

Rows, per request type:

* ``redis``: the floor. The same Function call logsvc makes for that request,
  timed around the Redis round trip only (same client library, same
  durability setting, same sequence of states).
* ``getbit``: a bare GETBIT round trip, the floor for IN_SYNC.
* ``codec``: the bridge answering from a null backend: decode, dispatch,
  encode and a socket hop, no gRPC.
* ``unary``: bridge → gRPC → logsvc (separate process) → Redis, one unary
  call per request (the transport before Exchange streams; any client may
  still use it).
* ``full``: the same over the bridge's Exchange streams, as in production.

Then what a durable replica costs (bench/durable.py): MARK_REGION, FLUSH and
CLEAR_REGION with ``--redis-durable-replicas`` 0 and 1 against their floors.

Then what mTLS, the authorization check and tenants cost (bench/secure.py):
the trace with TLS, and with a tenant's certificate and quota, against
plaintext.

Then what a Redis Cluster buys (bench/cluster.py): throughput of the most
mirrors on three primaries against one Valkey.

Then the floor of the first hop by itself: an echo round trip in another
process over a plain socket, a unary gRPC call and a gRPC stream message
(bench/transport.py).

Then throughput and tail latency of the full stack, over streams and over
unary calls, with 1, 8 and 64 mirrors replaying the trace at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cluster, durable, secure
from bench.cpu import cpu_seconds
from bench.replay import NullClient, Recorder, load_trace, pct
from bench.stack import full_stack, redis_floor, through_bridge
from bench.transport import measure as measure_hops
from bench.transport import table as hop_table
from harness.report import add_out_option, tee
from harness.servers import RedisProcess, start_logsvc


def row(name: str, n: int, cols: list[tuple[float, float, float]], ratio: float | None) -> str:
    """One line of the latency table (µs)."""
    cells = "".join(f" {p50 * 1e6:>8.0f} {p99 * 1e6:>8.0f} {p999 * 1e6:>8.0f} |" for p50, p99, p999 in cols)
    r = f"{ratio:>6.2f}" if ratio is not None else "     -"
    return f"{name:<22} {n:>6} |{cells} {r}"


def stats(values: list[float]) -> tuple[float, float, float]:
    """p50, p99, p99.9."""
    return (statistics.median(values), pct(values, 0.99), pct(values, 0.999)) if values else (0.0, 0.0, 0.0)


async def main_async(args: argparse.Namespace) -> int:
    """Run every measurement and print the tables."""
    trace = load_trace(args.trace)[: args.requests or None]
    workdir = Path(tempfile.mkdtemp(prefix="dmulog-bench-", dir=args.workdir))
    print(f"dmulog bench  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cpus  "
          f"python {platform.python_version()}  trace {args.trace} ({len(trace)} requests per mirror)")  # fmt: skip
    hops = await measure_hops(workdir, min(len(trace), 2000))
    results: dict[str, dict[str, Recorder]] = {}
    # (transport, mirrors, wall, samples, busy cores of the bridge, logsvc, redis)
    throughput: list[tuple[str, int, float, Recorder, tuple[float, ...]]] = []
    for policy in ("always", "everysec"):
        r = RedisProcess(workdir / f"redis-{policy}").start()
        if policy != "always":
            subprocess.run(["redis-cli", "-p", str(r.port), "CONFIG", "SET", "appendfsync", policy],
                           check=True, capture_output=True)  # fmt: skip
        logsvc = start_logsvc(workdir / f"logsvc-{policy}.log", redis_url=r.url)
        target = logsvc.target
        try:
            floor, getbit, codec, unary, full = Recorder(), Recorder(), Recorder(), Recorder(), Recorder()
            await redis_floor(r.url, trace, floor, getbit)
            await through_bridge(NullClient(), trace, 1, codec)
            await full_stack(target, trace, 1, unary, "unary")
            await full_stack(target, trace, 1, full)
            results[policy] = {"redis": floor, "getbit": getbit, "codec": codec, "unary": unary, "full": full}
            if policy == "always":
                for mirrors in args.mirrors:
                    for transport in ("stream", "unary"):
                        rec = Recorder()
                        before = cpu_seconds(os.getpid(), logsvc.pid, r.proc.pid if r.proc else 0)
                        wall = await full_stack(target, trace, mirrors, rec, transport)
                        after = cpu_seconds(os.getpid(), logsvc.pid, r.proc.pid if r.proc else 0)
                        busy = tuple((b - a) / wall for a, b in zip(before, after, strict=True))
                        throughput.append((transport, mirrors, wall, rec, busy))
        finally:
            logsvc.stop()
            r.kill()
    replicated = await durable.measure(workdir, trace)
    secured = await secure.measure(workdir, trace)
    sharded = await cluster.measure(workdir, trace, [max(args.mirrors)])
    shutil.rmtree(workdir, ignore_errors=True)

    for policy, recs in results.items():
        print(
            f"\nlatency per request, appendfsync {policy} (µs; ratio = full p50 / floor p50; "
            "IN_SYNC's floor is a bare GETBIT)"
        )
        head = "".join(f" {c + ' p50':>8} {'p99':>8} {'p99.9':>8} |" for c in ("redis", "codec", "unary", "full"))
        print(f"{'request':<22} {'n':>6} |{head}  ratio")
        for name in sorted(recs["full"].samples, key=lambda n: -len(recs["full"].samples[n])):
            f, c, fl = recs["redis"].samples[name], recs["codec"].samples[name], recs["full"].samples[name]
            u = recs["unary"].samples[name]
            floor = recs["getbit"].samples[name] if name == "IN_SYNC" else f
            ratio = statistics.median(fl) / statistics.median(floor) if floor else None
            print(row(name, len(fl), [stats(f), stats(c), stats(u), stats(fl)], ratio))
        if recs["getbit"].samples:
            gb = recs["getbit"].samples["IN_SYNC"]
            print(row("(GETBIT floor)", len(gb), [stats(gb), (0, 0, 0), (0, 0, 0), (0, 0, 0)], None))
        errors = sum(r.errors for r in recs.values())
        here = recs["full"].here
        print("answered in the bridge without a call: "
              + (", ".join(f"{n} {here[n]} of {len(recs['full'].samples[n])}" for n in sorted(here)) or "none"))
        print(f"errors: {errors}")

    print()
    print(durable.table(replicated))
    print()
    print(secure.table(secured))
    print()
    print(cluster.table(sharded))

    print("\none hop, nothing behind it: echo round trip to another process over a Unix socket (µs)")
    print(hop_table(hops))

    print("\nthroughput, full stack, appendfsync always (scaling: against 1 mirror on the same transport)")
    print("bridge, logsvc, redis: CPU used during the run, in cores (the kernel's stand-in is a process of its own)")
    print(f"{'transport':<10} {'mirrors':>8} {'requests':>9} {'req/s':>8} {'scaling':>8} {'p50 µs':>8} "
          f"{'p99 µs':>8} {'p99/p50':>8} {'bridge':>7} {'logsvc':>7} {'redis':>7}")  # fmt: skip
    base: dict[str, float] = {}
    for transport, mirrors, wall, rec, busy in sorted(throughput, key=lambda t: (t[0] != "stream", t[1])):
        values = [v for s in rec.samples.values() for v in s]
        rate = rec.requests / wall
        base.setdefault(transport, rate)
        p50, p99, _ = stats(values)
        print(f"{transport:<10} {mirrors:>8} {rec.requests:>9} {rate:>8.0f} {rate / base[transport]:>8.2f} "
              f"{p50 * 1e6:>8.0f} {p99 * 1e6:>8.0f} {p99 / p50:>8.2f}"
              + "".join(f" {b:>7.2f}" for b in busy))  # fmt: skip

    # Requests answered in the bridge take ~0.1 ms and the others ~2 ms, so the
    # p99/p50 of all requests together says little; per type it says how the tail grows.
    kinds = ("IN_SYNC", "FLUSH", "MARK_REGION", "CLEAR_REGION")
    print("\nthe same runs per request type: p50 µs / p99 µs (p99/p50)")
    print(f"{'transport':<10} {'mirrors':>8} " + " ".join(f"{k:>22}" for k in kinds))
    for transport, mirrors, _, rec, _ in sorted(throughput, key=lambda t: (t[0] != "stream", t[1])):
        cells = []
        for k in kinds:
            p50, p99, _ = stats(rec.samples.get(k, []))
            cells.append(f"{p50 * 1e6:>6.0f} / {p99 * 1e6:>6.0f} ({p99 / p50:>4.1f})" if p50 else f"{'-':>22}")
        print(f"{transport:<10} {mirrors:>8} " + " ".join(cells))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="mixed-synced", help="trace name in bench/traces (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=0, help="requests per mirror (a prefix of the trace; 0: all)")
    parser.add_argument("--mirrors", type=int, nargs="+", default=[1, 8, 64], help="concurrency levels")
    parser.add_argument("--workdir", default=None, help="where Redis keeps its AOF (default: a temp dir)")
    add_out_option(parser, "bench")
    args = parser.parse_args(argv)
    with tee(args.out):
        return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
