"""The pieces every latency bench runs: the Redis floor of a trace, and the trace through a real bridge.

``python -m bench`` and ``python -m bench.durable`` measure with the same
code, so their rows compare.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.replay import Recorder, Replayer, rewrite
from bridge import wire
from bridge.agent import Bridge
from bridge.client import ClientConfig, LogsvcClient
from bridge.dispatch import ROUTES
from bridge.journal import Journal
from bridge.metrics import BridgeMetrics
from dmulog.tls import TlsFiles
from dmulog.v1 import dmulog_pb2 as pb
from harness.kernel_side import serving, socket_pair
from logsvc.keys import log_keys
from logsvc.service import DirtyLogService
from logsvc.store import Caller, Store

__all__ = ["NODE", "TimedStore", "full_stack", "redis_floor", "through_bridge"]

NODE = pb.Node(name="bench", boot_id="bench-boot")


class TimedStore(Store):
    """A Store that records how long each Function call took."""

    def __init__(self, *args: object, **kw: object):
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.last = 0.0

    async def answer(self, op: str, uuid: str, caller: Caller, args: Sequence[str | int | bytes] = (), *,
                     readonly: bool = False, seen: int = 0) -> tuple[Any, int]:  # fmt: skip
        """Time the inherited call."""
        t0 = time.perf_counter()
        try:
            return await super().answer(op, uuid, caller, args, readonly=readonly, seen=seen)
        finally:
            self.last = time.perf_counter() - t0


async def redis_floor(url: str, trace: list[bytes], rec: Recorder, getbit: Recorder, *,
                      durable_replicas: int = 0) -> None:  # fmt: skip
    """The logsvc Function calls of the trace, made in-process and timed at the Redis round trip.

    With ``durable_replicas``, each writing call is followed by WAIT and WAITAOF
    in the same pipeline, as logsvc sends them.
    """
    store = TimedStore.from_url(url, durable_replicas=durable_replicas)
    await store.load_library()
    service = DirtyLogService(store)  # type: ignore[arg-type]
    uuid, luid = f"floor-{time.monotonic_ns()}", 0xFFFF888000FF0000
    for i, raw in enumerate(trace):
        req = wire.decode_request(rewrite(raw, uuid=uuid, luid=luid, seq=i + 1))
        route = ROUTES[req.request_type]
        message = route.build(req, pb.LogRef(uuid=uuid, luid=luid), NODE)
        await getattr(service, route.rpc)(message, None)
        name = wire.RequestType(req.request_type).name
        rec.add(name, store.last, 0)
        if req.request_type == wire.RequestType.IN_SYNC:
            t0 = time.perf_counter()
            await store.redis.getbit(log_keys(uuid).sync, wire.decode_single_region(req.data, "IN_SYNC"))
            getbit.add(name, time.perf_counter() - t0, 0)
    await store.close()


async def through_bridge(client: object, trace: list[bytes], mirrors: int, rec: Recorder, *,
                         metrics: BridgeMetrics | None = None) -> float:  # fmt: skip
    """Replay the trace through a real Bridge on the kernel stand-in's socket pair; returns wall seconds.

    With ``metrics``, the bridge counts into them as ``--metrics-listen`` makes it.
    """
    kernel_end, sock = socket_pair()
    # The journal as in production: a mapped file of slots on tmpfs.
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    journal_dir = Path(tempfile.mkdtemp(prefix="dmulog-bench-journal-", dir=shm))
    journal = Journal(journal_dir)
    bridge = Bridge(client, NODE, sock.send, journal=journal,  # type: ignore[arg-type]
                    send_nowait=sock.send_nowait, metrics=metrics)  # fmt: skip
    if metrics is not None:
        metrics.watch(bridge.tasks)
    try:
        async with serving(bridge, sock):
            wall = await Replayer(kernel_end).run(trace, mirrors, rec)
        rec.here.update(bridge.answered_here)
        return wall
    finally:
        kernel_end.close()
        sock.close()
        journal.close()
        shutil.rmtree(journal_dir, ignore_errors=True)


async def full_stack(target: str, trace: list[bytes], mirrors: int, rec: Recorder, transport: str = "stream", *,
                     tls: TlsFiles | None = None, metrics: BridgeMetrics | None = None) -> float:  # fmt: skip
    """The trace through bridge → logsvc → Redis (with ``tls``: the node's certificate, as ``--tls-*``)."""
    config = ClientConfig(attempt_timeout=10.0, budget=20.0, transport=transport, tls=tls)  # type: ignore[arg-type]
    client = LogsvcClient(target, config, metrics=metrics)
    try:
        return await through_bridge(client, trace, mirrors, rec, metrics=metrics)
    finally:
        await client.close()
