"""The node's lease, and the log events the bridge must hear from others.

A bridge acquires a lease for its node (name + boot id) before it serves the
kernel, and sends the lease's epoch in every request (``Node.epoch``); logsvc
uses it to order incarnations and to refuse a fenced one (lua/dmulog.lua,
"Incarnations"). The lease is renewed here, a third of its time to live
apart, never on a kernel request's path: a lease costs one small RPC per
node every few seconds, whatever the I/O.

When a renewal says "lease lost" (the lease expired: logsvc was unreachable
for longer than the time to live, or this process was paused), this node's
incarnation is over: logsvc has handed its logs over or will, and refuses its
requests (NOT_FOUND, which the kernel answers by replaying CTR and RESUME).
The keeper takes a new lease at once, so those replays construct the
instances again under the new epoch.

:class:`LogWatcher` keeps a WatchLogs stream open and forgets the in-sync
latches of every log in which another node's incarnation expired
(bridge/latch.py says why that matters and what the READY event promises).

How a deployment keeps a cut-off node from writing after its lease expired
is in docs/multi-node.md ("Fencing").
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Final

import grpc

from bridge.latch import InSyncLatches
from bridge.mirrors import Mirrors
from dmulog.logs import event
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

__all__ = ["LeaseKeeper", "LogWatcher"]

log = logging.getLogger("dmulog.bridge.lease")

RENEW_FRACTION: Final = 1 / 3
"""Of the time to live, between two renewals: two may fail before the lease expires."""
CALL_TIMEOUT: Final = 2.0
"""Seconds one lease call may take."""


def _pause(attempt: int) -> float:
    return min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0)


class LeaseKeeper:
    """Holds this node's lease; ``node.epoch`` is always the current incarnation's epoch."""

    def __init__(self, stub: pb_grpc.DirtyLogStub, node: pb.Node, *, clock: Callable[[], float] = time.monotonic):
        self._stub = stub
        self.node = node
        self._clock = clock
        self.ttl = 0.0  # seconds; 0 while leases are off (or not yet acquired)
        self.renewed_at = float("-inf")  # when the last successful grant or renewal was *sent*
        self._failures = 0  # renewals failed in a row
        self.ready = asyncio.Event()
        """Set once the node has a lease (or knows it runs without one): kernel requests wait for it."""

    @property
    def enabled(self) -> bool:
        """Whether logsvc runs with leases (known once acquired)."""
        return self.node.epoch > 0

    @property
    def safe_until(self) -> float:
        """Until when (this clock) the lease is sure to be live: its grant was sent at or before Redis granted it."""
        return self.renewed_at + self.ttl

    def held(self, now: float | None = None) -> bool:
        """Whether kernel requests may go out at ``now`` (this clock): a lease sure to be live, or leases off.

        For the metrics (bridge/metrics.py), from the scrape's thread: plain reads.
        """
        if not self.ready.is_set():
            return False
        return not self.enabled or (self._clock() if now is None else now) < self.safe_until

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Take a lease, trying until logsvc answers (or ``stop``); False if stopped first.

        Against a logsvc that predates leases (UNIMPLEMENTED) the node runs
        without one: epoch 0.
        """
        attempt = 0
        while stop is None or not stop.is_set():
            sent = self._clock()
            try:
                got = await self._stub.AcquireLease(pb.AcquireLeaseRequest(node=self.node), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                    event(log, logging.WARNING, "leases_unsupported", consequence="this node's regions are never "
                          "handed over if it dies")  # fmt: skip
                    self.node.epoch, self.ttl = 0, 0.0
                    return True
                event(log, logging.WARNING, "lease_unavailable", status=e.code().name, detail=e.details())
                await asyncio.sleep(_pause(attempt))
                attempt += 1
                continue
            new = got.epoch != self.node.epoch
            self.node.epoch, self.ttl, self.renewed_at = got.epoch, got.ttl_ms / 1000, sent
            if new:
                event(log, logging.INFO, "lease_acquired", node=self.node.name, boot_id=self.node.boot_id,
                      epoch=got.epoch, ttl_ms=got.ttl_ms)  # fmt: skip
            return True
        return False

    async def keep(self, stop: asyncio.Event, watcher: LogWatcher | None = None) -> None:
        """Acquire, then renew until ``stop``; with leases on, ``watcher`` watches meanwhile.

        The bridge serves the kernel from the start, but its requests wait for
        :attr:`ready` (bridge/answer.py): every request carries the epoch. A
        restarted bridge gets the same boot's live lease back, so the same epoch.
        """
        if not await self.acquire(stop):
            return
        self.ready.set()
        if not self.enabled:
            return
        watching = asyncio.ensure_future(watcher.run(stop)) if watcher is not None else None
        try:
            await self.run(stop)
        finally:
            if watching is not None:
                await watching

    async def run(self, stop: asyncio.Event) -> None:
        """Renew until ``stop``; take a new incarnation when the lease was lost."""
        if not self.enabled:
            return
        while not stop.is_set():
            # Due a third of the TTL after the last success; after a failure, again
            # soon but backing off, so an outage of logsvc is not a busy loop.
            due = self.ttl * RENEW_FRACTION - (self._clock() - self.renewed_at)
            wait = max(due, _pause(self._failures)) if self._failures else max(0.05, due)
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except TimeoutError:
                pass
            await self.renew(stop)

    async def renew(self, stop: asyncio.Event | None = None) -> None:
        """One renewal; on "lease lost", a new lease."""
        sent = self._clock()
        try:
            got = await self._stub.RenewLease(pb.RenewLeaseRequest(node=self.node), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                self._failures += 1
                left = self.safe_until - self._clock()
                event(log, logging.WARNING, "lease_renewal_failed", status=e.code().name, detail=e.details(),
                      lease_left=round(left, 3))  # fmt: skip
                return
            event(log, logging.ERROR, "lease_lost", node=self.node.name, epoch=self.node.epoch, detail=e.details(),
                  consequence="logsvc refuses this incarnation; the kernel constructs its logs again")  # fmt: skip
            self._failures = 0
            await self.acquire(stop)
            return
        self._failures = 0
        self.ttl, self.renewed_at = got.ttl_ms / 1000, sent


class LogWatcher:
    """Keeps a WatchLogs stream open and acts on each log another node's expiry touched.

    It forgets the log's latches and, with ``mirrors``, restarts this node's
    recovery of it (bridge/mirrors.py).
    """

    def __init__(self, stub: pb_grpc.DirtyLogStub, latches: InSyncLatches, mirrors: Mirrors | None = None,
                 node: str = ""):  # fmt: skip
        self._stub = stub
        self._latches = latches
        self._mirrors = mirrors
        self._node = node
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop``, opening the stream again whenever it ends."""
        self._latches.require_watch()
        attempt = 0
        while not stop.is_set():
            call = self._stub.WatchLogs(pb.WatchLogsRequest())
            stopper = asyncio.ensure_future(stop.wait())

            def end(_: object, c: grpc.aio.UnaryStreamCall[pb.WatchLogsRequest, pb.WatchLogsResponse] = call) -> None:
                c.cancel()

            stopper.add_done_callback(end)
            try:
                async for item in call:
                    if item.kind == pb.LOG_EVENT_KIND_READY:
                        self._latches.watching(True)
                        self.ready.set()
                        attempt = 0
                    elif item.kind == pb.LOG_EVENT_KIND_NODE_EXPIRED:
                        forgot = self._latches.forget_log(item.uuid)
                        event(log, logging.INFO, "node_expired_elsewhere", uuid=item.uuid, node=item.node,
                              epoch=item.epoch, latches_forgotten=forgot)  # fmt: skip
                        # An old incarnation of this very node: its new one's own
                        # resume already reset its kernel's hint.
                        if self._mirrors is not None and item.node != self._node:
                            self._mirrors.restart_recovery(item.uuid)
            except grpc.aio.AioRpcError as e:
                if not stop.is_set():
                    event(log, logging.WARNING, "log_events_lost", status=e.code().name, detail=e.details(),
                          consequence="IN_SYNC goes to logsvc until the stream is back")  # fmt: skip
            except asyncio.CancelledError:
                if not stop.is_set():
                    raise
            finally:
                stopper.cancel()
                self._latches.watching(False)
                self.ready.clear()
            if not stop.is_set():
                await asyncio.sleep(_pause(attempt))
                attempt += 1
