"""How long one log's heavy request holds up every other log.

Redis runs one command (and one Function call) at a time, and logsvc one
event loop, so a call that works through a whole 2^28-region log stalls every
other mirror's requests for as long as it runs. This module measures that
stall the way a user feels it: a *probe* process asks IN_SYNC of a small log
over and over through logsvc (a process of its own) and records each
latency, while a *heavy* process runs one heavy request on another log. The
stall of the heavy request is the probe's worst latency while it ran.

That latency is wall-clock time on a shared machine: an AOF fsync or a busy
core can add hundreds of milliseconds to any one sample. So the bound the tests
hold is measured inside Redis and as a ratio: the longest single command Redis
ran while the heavy request ran (SLOWLOG records every command's own run time,
fsync excluded) against the *unit*, the longest of a few plain whole-bitmap
passes over a 2^28-region bitmap measured the same way in the same run. A
Function call is allowed about one such pass (lua/dmulog.lua, "Bounded
work"), so its ratio stays near 1; before bulk work was cut into steps, a CTR
of 2^28 regions was one call of about 50 units.

The heavy process runs at nice 19: on a machine of two cores its own work
(building and parsing requests of tens of MiB) would otherwise take CPU from
Redis and logsvc and count as their stall, which it is not in production,
where that client runs elsewhere.

Used by ``tests/integration/test_stall.py`` (the bounds) and ``bench.scale``
(the figures). ``python -m harness.stall probe TARGET OUT`` is the probe,
``python -m harness.stall heavy TARGET OP UUID [N]`` one heavy request.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis

from dmulog.log_state import read_log_state
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle

__all__ = ["BIG_REGIONS", "HEAVY", "MARKS", "PROBE_LOG", "REGION_SECTORS", "Probe", "Stall", "heavy_node", "measure",
           "prepare", "probe", "unit_pass"]

PROBE_LOG = "stall-probe"
"""UUID of the small log the probe asks about (created by the probe)."""
BIG_REGIONS = 1 << 28
"""The most regions a log may have: the size every heavy request is measured at."""
REGION_SECTORS = 8
MARKS = 262_144
"""Marks of the node whose reap and last DTR are measured."""
_PROBE_NODE = pb.Node(name="probe", boot_id="probe-boot")

HEAVY: dict[str, tuple[str, str, str, int]] = {
    "ctr": ("CTR of a new 2^28-region log", "ctr", "stall-big", 1),
    "resume": ("its first RESUME (dirty bits to sync bits)", "resume", "stall-big", 1),
    "ctr-nosync": ("CTR of a new 2^28-region nosync log", "ctr-nosync", "stall-nosync", 1),
    "resume-grown": ("RESUME of a table grown to 2^28 regions", "resume", "stall-grow", 1),
    "read-state": ("8 ReadLogStates of a 2^28-region log", "read-state", "stall-big", 8),
    "list-logs": ("ListLogs with those logs", "list-logs", "-", 1),
    "reap": (f"CTR of a new boot reaping {MARKS} marks", "ctr-new-boot", "stall-reap", 1),
    "drop": (f"last DTR of a node dropping {MARKS} marks", "dtr", "stall-drop", 1),
}
"""Every heavy request measured, in the order they run: (what, op, log, how many at once)."""


@dataclass(frozen=True)
class Stall:
    """What the probe saw while one heavy request ran."""

    what: str
    seconds: float  # how long the heavy request itself took (its process's start included)
    worst: float  # the probe's worst latency in that time
    p99: float
    samples: int  # probe requests answered in that time
    longest_call: float  # the longest single command Redis ran meanwhile (its SLOWLOG)
    unit: float  # the longest plain whole-bitmap pass of the same run (see unit_pass)

    @property
    def ratio(self) -> float:
        """``longest_call`` in units."""
        return self.longest_call / self.unit

    def line(self) -> str:
        """One row of a report."""
        return (f"{self.what:<48} {self.seconds * 1e3:>9.0f} ms {self.worst * 1e3:>8.1f} ms "
                f"{self.p99 * 1e3:>8.1f} ms {self.samples:>7} {self.longest_call * 1e3:>8.1f} ms "
                f"{self.ratio:>6.2f}")  # fmt: skip

    @staticmethod
    def header() -> str:
        """Column titles of :meth:`line`."""
        return (f"{'heavy request':<48} {'it took':>12} {'worst':>11} {'p99':>11} {'probes':>7} "
                f"{'longest call':>11} {'units':>6}")  # fmt: skip


class Slowlog:
    """Every command's own run time in one Redis, read from its SLOWLOG."""

    def __init__(self, url: str):
        self._redis = redis.Redis.from_url(url)
        self._redis.config_set("slowlog-log-slower-than", 0)
        self._redis.config_set("slowlog-max-len", 1_000_000)

    def reset(self) -> None:
        """Forget what ran so far."""
        self._redis.slowlog_reset()

    def longest(self) -> float:
        """Seconds of the longest command since :meth:`reset` (SLOWLOG's own commands aside)."""
        entries = self._redis.slowlog_get(-1)
        return max((e["duration"] for e in entries if not bytes(e["command"]).upper().startswith(b"SLOWLOG")),
                   default=0) / 1e6  # fmt: skip

    def close(self) -> None:
        """Close the connection."""
        self._redis.close()


def unit_pass(slowlog: Slowlog, reps: int = 3) -> float:
    """The longest of ``reps`` plain passes over a fresh bitmap of BIG_REGIONS bits: the unit of a bounded call.

    Each pass is what a bulk step does at most once: allocate a zeroed bitmap
    (SETBIT at its last bit) and invert it (BITOP NOT).
    """
    r, key, worst = slowlog._redis, "stall-unit", 0.0
    for _ in range(reps):
        slowlog.reset()
        r.setbit(key, BIG_REGIONS - 1, 0)
        r.bitop("NOT", key, key)
        worst = max(worst, slowlog.longest())
        r.delete(key)
    return worst


class Probe:
    """A running probe process."""

    def __init__(self, target: str, proc: subprocess.Popen[bytes], out: Path, slowlog: Slowlog):
        self.target = target
        self._proc = proc
        self._out = out
        self._slowlog = slowlog
        self.unit = unit_pass(slowlog)

    def _samples(self) -> list[tuple[float, float]]:
        rows = []
        for line in self._out.read_text().splitlines():
            start, _, took = line.partition(" ")
            with contextlib.suppress(ValueError):
                rows.append((float(start), float(took)))
        return rows

    def heavy(self, what: str, op: str, uuid: str, count: int = 1) -> Stall:
        """Run ``python -m harness.stall heavy`` at nice 19 and measure the probe meanwhile.

        A probe request that started before the heavy one but was still waiting when
        it began counts too: its latency is what the heavy request made it wait.
        """
        time.sleep(0.2)  # a few quiet samples first, so the window starts on a live probe
        self._slowlog.reset()
        t0 = time.monotonic()
        run = subprocess.run(["nice", "-n", "19", sys.executable, "-m", "harness.stall", "heavy", self.target, op, uuid,
                              str(count)], capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
        t1 = time.monotonic()
        longest = self._slowlog.longest()
        if run.returncode != 0:
            raise RuntimeError(f"heavy {op} {uuid} failed ({run.returncode}): {run.stderr[-2000:]}")
        time.sleep(0.3)  # the probe request caught behind the end of the heavy one lands
        seen = sorted(d for s, d in self._samples() if s + d >= t0 and s <= t1)
        if not seen:
            raise RuntimeError(f"the probe answered nothing while {what} ran; see {self._out}")
        p99 = seen[min(len(seen) - 1, int(len(seen) * 0.99))]
        return Stall(what, t1 - t0, seen[-1], p99, len(seen), longest, self.unit)

    def stop(self) -> None:
        """End the probe process."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


@contextlib.contextmanager
def probe(target: str, workdir: Path, redis_url: str) -> Iterator[Probe]:
    """Run the probe against the logsvc at ``target`` (it creates its own small log), on the Redis at ``redis_url``."""
    out = workdir / "probe.txt"
    out.write_text("")
    proc = subprocess.Popen([sys.executable, "-m", "harness.stall", "probe", target, str(out)],
                            stdin=subprocess.DEVNULL)  # fmt: skip
    slowlog = Slowlog(redis_url)
    p = Probe(target, proc, out, slowlog)
    try:
        deadline = time.monotonic() + 60
        while out.read_text().count("\n") < 20:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the probe did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield p
    finally:
        p.stop()
        slowlog.close()


def heavy_node(boot: str = "boot-1") -> pb.Node:
    """The node the heavy requests come from."""
    return pb.Node(name="heavy", boot_id=boot)


async def prepare(target: str) -> None:
    """The logs the heavy requests work on, beyond the ones they create themselves."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        node = heavy_node()
        for uuid in ("stall-reap", "stall-drop"):
            log = LogHandle(stub, uuid, luid=1, node=node.name, boot=node.boot_id)
            await log.ctr(MARKS * REGION_SECTORS, "dmulog", str(REGION_SECTORS), "nosync")
            await log.resume()
            for start in range(0, MARKS, 4096):
                await log.mark(*range(start, start + 4096))
        # A persistent table of half the size, gone; then the full size constructed: its
        # RESUME grows the dirty bits.
        half = LogHandle(stub, "stall-grow", luid=2, node=node.name, boot=node.boot_id)
        await half.ctr(BIG_REGIONS // 2 * REGION_SECTORS, "dmulog", str(REGION_SECTORS))
        await half.resume()
        await half.suspend()
        await half.dtr()
        await half.other(luid=1).ctr(BIG_REGIONS * REGION_SECTORS, "dmulog", str(REGION_SECTORS))


def measure(target: str, workdir: Path, redis_url: str) -> dict[str, Stall]:
    """Prepare, start the probe, run every HEAVY request once with the probe (and Redis's SLOWLOG) watching."""
    asyncio.run(prepare(target))
    with probe(target, workdir, redis_url) as p:
        return {key: p.heavy(what, op, uuid, count) for key, (what, op, uuid, count) in HEAVY.items()}


async def _probe_loop(target: str, out: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        log = pb.LogRef(uuid=PROBE_LOG, luid=1)
        await stub.Ctr(pb.CtrRequest(log=log, node=_PROBE_NODE, target_sectors=1024 * 8, log_type="dmulog",
                                     args=["8", "nosync"]))  # fmt: skip
        await stub.Resume(pb.ResumeRequest(log=log, node=_PROBE_NODE))
        request = pb.InSyncRequest(log=log, node=_PROBE_NODE, region=7)
        with out.open("a", buffering=1) as f:
            while not stop.is_set():
                start = time.monotonic()
                await stub.InSync(request, timeout=30)
                f.write(f"{start:.6f} {time.monotonic() - start:.6f}\n")
                await asyncio.sleep(0.002)


def _ctr(log: pb.LogRef, node: pb.Node, *args: str) -> pb.CtrRequest:
    return pb.CtrRequest(log=log, node=node, target_sectors=BIG_REGIONS * REGION_SECTORS, log_type="dmulog",
                         args=[str(REGION_SECTORS), *args])  # fmt: skip


async def _heavy(target: str, op: str, uuid: str, count: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        log, node = pb.LogRef(uuid=uuid, luid=1), heavy_node()
        ops: dict[str, Callable[[], Awaitable[object]]] = {
            # A new log of 2^28 regions, persistent (dirty bits all 1) or nosync (sync bits all 1).
            "ctr": lambda: stub.Ctr(_ctr(log, node)),
            "ctr-nosync": lambda: stub.Ctr(_ctr(log, node, "nosync")),
            "resume": lambda: stub.Resume(pb.ResumeRequest(log=log, node=node)),
            # The same node back with a new boot: its old instance's marks are reaped.
            "ctr-new-boot": lambda: stub.Ctr(_ctr(log, heavy_node("boot-2"))),
            "dtr": lambda: stub.Dtr(pb.DtrRequest(log=log, node=node)),
            "read-state": lambda: asyncio.gather(*(read_log_state(stub, uuid, 300) for _ in range(count))),
            "list-logs": lambda: stub.ListLogs(pb.ListLogsRequest(), timeout=300),
        }
        await ops[op]()


def main(argv: list[str]) -> int:
    """``probe TARGET OUT`` or ``heavy TARGET OP UUID [N]``."""
    if len(argv) == 3 and argv[0] == "probe":
        asyncio.run(_probe_loop(argv[1], Path(argv[2])))
        return 0
    if len(argv) in (4, 5) and argv[0] == "heavy":
        asyncio.run(_heavy(argv[1], argv[2], argv[3], int(argv[4]) if len(argv) == 5 else 1))
        return 0
    print("usage: python -m harness.stall probe TARGET OUT | heavy TARGET OP UUID [N]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
