"""What a durable replica costs: MARK_REGION, FLUSH and CLEAR_REGION with N = 0 and N = 1, against their floors.

A Valkey primary and one replica (both AOF, ``appendfsync always``, loopback),
measured side by side in one run:

* ``floor N=0``: the request's Function call alone, timed at the Redis round
  trip (as ``redis`` in ``python -m bench``);
* ``floor N=1``: the same call followed by ``WAIT 1`` and ``WAITAOF 1 1`` in
  one pipeline, made directly: the new floor (logsvc/store.py says why WAIT
  comes first);
* ``full N=0`` and ``full N=1``: the trace through bridge → logsvc → Valkey,
  logsvc started with ``--redis-durable-replicas`` 0 and 1.

Ratios: full over its own floor (what dmulog adds), and N=1 over N=0 (what
the replica costs), per request type.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from bench.alone import run_alone
from bench.replay import Recorder
from bench.stack import full_stack, redis_floor
from harness.redis_ha import ValkeyNode
from harness.servers import start_logsvc

__all__ = ["KINDS", "measure", "table"]

KINDS = ("MARK_REGION", "FLUSH", "CLEAR_REGION")


async def measure(workdir: Path, trace: list[bytes]) -> dict[str, Recorder]:
    """The four rows' samples: ``floor0``, ``floor1``, ``full0``, ``full1``."""
    primary = ValkeyNode(workdir / "primary").start()
    replica = ValkeyNode(workdir / "replica", replica_of=primary.port).start()
    got = {name: Recorder() for name in ("floor0", "floor1", "full0", "full1")}
    try:
        while not replica.replicating(primary.port):
            await asyncio.sleep(0.05)
        for n in (0, 1):
            await redis_floor(primary.url, trace, got[f"floor{n}"], Recorder(), durable_replicas=n)
            logsvc = start_logsvc(workdir / f"logsvc-{n}.log", redis_url=primary.url,
                                  extra=["--redis-durable-replicas", str(n)])  # fmt: skip
            try:
                await full_stack(logsvc.target, trace, 1, got[f"full{n}"])
            finally:
                logsvc.stop()
    finally:
        replica.kill()
        primary.kill()
    return got


def table(got: dict[str, Recorder]) -> str:
    """p50 of each row per request type, and the ratios."""
    lines = ["durable replicas: p50 µs, Valkey primary + 1 replica, appendfsync always on both",
             f"{'request':<14} {'n':>6} {'floor N=0':>10} {'floor N=1':>10} {'full N=0':>9} {'full N=1':>9} "
             f"{'full/floor N=0':>15} {'full/floor N=1':>15} {'N=1/N=0 full':>13}"]  # fmt: skip
    for kind in KINDS:
        p50 = {name: statistics.median(rec.samples[kind]) for name, rec in got.items() if rec.samples.get(kind)}
        if len(p50) < 4:
            continue
        n = len(got["full1"].samples[kind])
        lines.append(f"{kind:<14} {n:>6} {p50['floor0'] * 1e6:>10.0f} {p50['floor1'] * 1e6:>10.0f} "
                     f"{p50['full0'] * 1e6:>9.0f} {p50['full1'] * 1e6:>9.0f} {p50['full0'] / p50['floor0']:>15.2f} "
                     f"{p50['full1'] / p50['floor1']:>15.2f} {p50['full1'] / p50['full0']:>13.2f}")  # fmt: skip
    errors = sum(rec.errors for rec in got.values())
    lines.append(f"errors: {errors}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.durable``: the durable-replica table alone."""
    return run_alone(argv, module="bench.durable", doc=__doc__ or "", report="bench-durable",
                     table=lambda _args, trace, workdir: table(asyncio.run(measure(workdir, trace))))


if __name__ == "__main__":
    sys.exit(main())
