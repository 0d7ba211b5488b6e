"""Scale: many logs on one logsvc and Redis, and one very large log.

::

    .venv/bin/python -m bench.scale [--logs 10000] [--regions 16777216]

Prints, measured side by side in one run (ratios, since these machines are
noisy):

* creating ``--logs`` logs (CTR + RESUME, 64 at a time): time per log, and
  Redis memory per log;
* the per-request latency (IN_SYNC, MARK_REGION, CLEAR_REGION) on one log
  while it is the only one, against the same after the other logs exist:
  no request may grow with the number of logs;
* one log of ``--regions`` regions: CTR and RESUME time, Redis memory, the
  same request latencies against a small log, and how long ``dmulog status``
  (one ReadLogState plus the bitmap picture) takes on it;
* the cost of a node's expiry: the hand-over (``expire_node``, its unmark job
  included) of a log in which the node had ``--marks`` regions marked, in µs per
  marked region, and of a node that joined ``--expire-logs`` logs with a few
  marks each, in ms per log;
* every heavy request at the largest size (2^28 regions: a CTR, a master
  RESUME, a grown table's RESUME, eight ReadLogStates, a reap and a last DTR
  of 262,144 marks) and the worst latency another log saw meanwhile
  (harness/stall.py, on a Redis and logsvc of their own): no Function call may
  stall the others.
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
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import redis.asyncio as aioredis

from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness import stall
from harness.log_handle import LogHandle
from harness.report import add_out_option, tee
from harness.servers import RedisProcess, start_logsvc
from logsvc.store import Store

__all__ = ["main"]

SMALL_REGIONS = 1024
REGION_SECTORS = 8


async def _p50(call: Callable[[int], Awaitable[object]], n: int = 300) -> float:
    """Median seconds of ``call(i)`` over ``n`` sequential calls."""
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def _latencies(log: LogHandle, regions: int) -> dict[str, float]:
    """p50 of the hot requests on ``log``, spread over its regions."""
    step = max(1, regions // 300)

    async def mark(i: int) -> None:
        await log.mark((i * step) % regions)

    async def clear(i: int) -> None:
        await log.clear((i * step) % regions)

    async def in_sync(i: int) -> None:
        await log.in_sync((i * step) % regions)

    return {"IN_SYNC": await _p50(in_sync), "MARK_REGION": await _p50(mark), "CLEAR_REGION": await _p50(clear)}


async def _memory(url: str) -> int:
    client = aioredis.from_url(url)
    try:
        return int((await client.info("memory"))["used_memory"])
    finally:
        await client.aclose()


async def _create(stub: pb_grpc.DirtyLogStub, uuid: str, regions: int) -> LogHandle:
    log = LogHandle(stub, uuid)
    await log.ctr(regions * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
    await log.resume()
    return log


async def run(args: argparse.Namespace, redis_url: str, target: str) -> None:
    """Every measurement; prints as it goes."""
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 256 << 20)]) as ch:
        stub = pb_grpc.DirtyLogStub(ch)
        probe = await _create(stub, "scale-probe", SMALL_REGIONS)
        alone = await _latencies(probe, SMALL_REGIONS)

        before, t0 = await _memory(redis_url), time.perf_counter()
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                await _create(stub, f"scale-{i:06d}", 128)

        await asyncio.gather(*(one(i) for i in range(args.logs)))
        took = time.perf_counter() - t0
        per_log = (await _memory(redis_url) - before) / args.logs
        crowded = await _latencies(probe, SMALL_REGIONS)
        print(f"\n{args.logs} logs of 128 regions: created in {took:.1f} s ({took / args.logs * 1e3:.2f} ms a log, "
              f"64 at a time), Redis memory {per_log:.0f} bytes a log")  # fmt: skip
        print(f"{'request':<14} {'1 log p50 µs':>13} {f'{args.logs} logs p50 µs':>18} {'ratio':>6}")
        for name, t in alone.items():
            print(f"{name:<14} {t * 1e6:>13.0f} {crowded[name] * 1e6:>18.0f} {crowded[name] / t:>6.2f}")

        before, t0 = await _memory(redis_url), time.perf_counter()
        big = LogHandle(stub, "scale-big")
        await big.ctr(args.regions * REGION_SECTORS, "dmulog", str(REGION_SECTORS))
        ctr = time.perf_counter() - t0
        t0 = time.perf_counter()
        await big.resume()
        resume = time.perf_counter() - t0
        memory = await _memory(redis_url) - before
        large = await _latencies(big, args.regions)
        t0 = time.perf_counter()
        shown = subprocess.run([sys.executable, "-m", "dmulog", "status", "scale-big", "--logsvc", target],
                               capture_output=True, text=True, timeout=600)  # fmt: skip
        status = time.perf_counter() - t0
        print(f"\none log of {args.regions} regions: CTR {ctr * 1e3:.0f} ms, RESUME {resume * 1e3:.0f} ms, "
              f"Redis memory {memory / 2**20:.1f} MiB, `dmulog status` {status:.2f} s "
              f"(exit {shown.returncode}, a new process included)")  # fmt: skip
        print(f"{'request':<14} {f'{SMALL_REGIONS} regions p50 µs':>20} {f'{args.regions} regions p50 µs':>24} "
              f"{'ratio':>6}")  # fmt: skip
        for name, t in alone.items():
            print(f"{name:<14} {t * 1e6:>20.0f} {large[name] * 1e6:>24.0f} {large[name] / t:>6.2f}")


async def expiry(args: argparse.Namespace, redis_url: str, target: str) -> None:
    """What handing a dead node over costs: per marked region, and per log."""
    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.DirtyLogStub(ch)
        store = Store.from_url(redis_url)
        try:
            log = LogHandle(stub, "expire-big", node="expire-a", boot="b1")
            epoch = await log.acquire_lease()
            regions = max(args.marks * 2, 1024)
            await log.ctr(regions * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
            await log.resume()
            sem = asyncio.Semaphore(16)

            async def mark(start: int) -> None:
                async with sem:
                    await log.mark(*range(start, min(args.marks, start + 32)))

            await asyncio.gather(*(mark(i) for i in range(0, args.marks, 32)))
            t0 = time.perf_counter()
            await store.expire_node("expire-big", "expire-a", epoch)
            big = time.perf_counter() - t0
            node = LogHandle(stub, "expire-0", node="expire-b", boot="b1")
            epoch = await node.acquire_lease()

            async def join(i: int) -> None:
                async with sem:
                    h = LogHandle(stub, f"expire-{i}", node="expire-b", boot="b1", epoch=epoch)
                    await h.ctr(128 * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
                    await h.resume()
                    await h.mark(1, 2, 3, 4)

            await asyncio.gather(*(join(i) for i in range(args.expire_logs)))
            t0 = time.perf_counter()
            for i in range(args.expire_logs):
                await store.expire_node(f"expire-{i}", "expire-b", epoch)
            many = time.perf_counter() - t0
        finally:
            await store.close()
    print(f"\nexpiry: a log with {args.marks} marked regions handed over in {big * 1e3:.0f} ms "
          f"({big / args.marks * 1e6:.1f} µs a marked region, in steps of 1,024); {args.expire_logs} logs of "
          f"4 marks each in {many:.2f} s ({many / args.expire_logs * 1e3:.2f} ms a log, one after another)")


def main(argv: list[str] | None = None) -> int:
    """Start Redis (AOF, appendfsync always) and logsvc, measure, clean up."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=int, default=10000, help="logs to create (default 10000)")
    parser.add_argument("--regions", type=int, default=16 << 20, help="regions of the large log (default 16 Mi)")
    parser.add_argument("--marks", type=int, default=65536, help="marked regions of the expired node's log")
    parser.add_argument("--expire-logs", type=int, default=1000, help="logs the expired node joined")
    parser.add_argument("--no-stall", action="store_true", help="skip the heavy requests at 2^28 regions")
    add_out_option(parser, "bench-scale")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dmulog-scale-"))
    with tee(args.out):
        print(f"dmulog bench.scale  {time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {os.cpu_count()} cpus")
        r = RedisProcess(workdir / "redis").start()
        logsvc = start_logsvc(workdir / "logsvc.log", redis_url=r.url)
        try:
            asyncio.run(run(args, r.url, logsvc.target))
            asyncio.run(expiry(args, r.url, logsvc.target))
        finally:
            logsvc.stop()
            r.kill()
        if not args.no_stall:
            stall_report(workdir / "stall")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def stall_report(workdir: Path) -> None:
    """Every heavy request at 2^28 regions, on a fresh Redis and logsvc, and what another log waited meanwhile."""
    workdir.mkdir(parents=True)
    r = RedisProcess(workdir / "redis").start()
    logsvc = start_logsvc(workdir / "logsvc.log", redis_url=r.url)
    try:
        stalls = stall.measure(logsvc.target, workdir, r.url)
    finally:
        logsvc.stop()
        r.kill()
    print("\nheavy requests at 2^28 regions: the worst (and p99) latency of another log's IN_SYNC meanwhile,")
    print("and the longest single Redis command meanwhile, in units of one plain pass over a 2^28-bit bitmap")
    print(stall.Stall.header())
    for s in stalls.values():
        print(s.line())


if __name__ == "__main__":
    sys.exit(main())
