"""The bridge's health, served on a local Unix socket: SERVING only while kernel requests would be answered.

Three things must hold for that, and each one alone is not enough:

* the kernel socket is bound and joined to the connector group (a bridge
  still starting, or leaving at SIGTERM, gets no requests);
* logsvc is reachable: the channel is READY, or a call (a lease grant or
  renewal) succeeded within :data:`RECENT` seconds, so a channel that is
  reconnecting between two good calls is no outage;
* the node holds its lease (bridge/lease.py): kernel requests wait for
  ``ready``, and a lease past ``safe_until`` may be expired in logsvc, whose
  answer is then "lease lost".

A standby bridge (``--respawn``, waiting in bridge/startup.py wait_for_turn)
binds no health socket until its turn comes: binding would take the path over
from the bridge that serves, and the probe would see the standby's
NOT_SERVING. The socket is never TLS: it is this node's, for a local probe
(``dmulog health --socket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bridge.client import LogsvcClient
from bridge.lease import LeaseKeeper
from dmulog.logs import event

__all__ = ["RECENT", "BridgeHealth", "channel_state"]

log = logging.getLogger("dmulog.bridge.health")

RECENT: Final = 5.0
"""Seconds a successful lease call counts as proof that logsvc is reachable (renewals come every TTL/3)."""
INTERVAL: Final = 1.0
"""Seconds between two evaluations."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def channel_state(client: LogsvcClient) -> grpc.ChannelConnectivity:
    """The connectivity of the client's current channel (it is replaced when the certificate rotates)."""
    return client._channel.get_state()  # LogsvcClient has no public accessor for it yet


class BridgeHealth:
    """Judges the bridge's health from its real parts and serves it as the health service ``""``."""

    def __init__(self, keeper: LeaseKeeper, logsvc_state: Callable[[], grpc.ChannelConnectivity], *,
                 clock: Callable[[], float] = time.monotonic, recent: float = RECENT):  # fmt: skip
        self._keeper = keeper
        self._logsvc_state = logsvc_state
        self._clock = clock
        self.recent = recent
        """Seconds a successful lease call counts as proof that logsvc is reachable."""
        self.joined = False
        """Set by the read loop once the kernel socket joined the connector group, cleared when it leaves."""
        self.serving = False
        self.reason = "starting"
        self._servicer = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._path: Path | None = None
        self._inode = 0  # of the socket file this bridge bound, so that close() removes only its own

    def problem(self) -> str | None:
        """Why the kernel's requests would not be answered now; None when they would."""
        if not self.joined:
            return "kernel socket not joined to the connector group"
        now = self._clock()
        state = self._logsvc_state()
        if state != grpc.ChannelConnectivity.READY and now - self._keeper.renewed_at >= self.recent:
            return f"logsvc unreachable (channel {state.name}, no lease call succeeded in {self.recent:g} s)"
        if not self._keeper.ready.is_set():
            return "no lease yet"
        if self._keeper.enabled and now >= self._keeper.safe_until:
            return f"lease of epoch {self._keeper.node.epoch} not renewed in time"
        return None

    async def check(self) -> bool:
        """Evaluate once; set and log the status when it changed. Whether SERVING."""
        why = self.problem()
        serving = why is None
        if serving != self.serving or self._server is None:
            self.serving, self.reason = serving, why or "joined, logsvc reachable, lease held"
            await self._servicer.set("", _SERVING if serving else _NOT_SERVING)
            if self._server is not None:
                event(log, logging.INFO if serving else logging.WARNING, "health_changed",
                      status="SERVING" if serving else "NOT_SERVING", reason=self.reason)  # fmt: skip
        return serving

    async def start(self, path: Path) -> bool:
        """Serve the health service on the Unix socket ``path``; False (logged) when it cannot be bound.

        A socket file left by a bridge that died is removed first: only the
        bridge whose turn it is gets here (the instance lock, or the keeper).
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
        except OSError as e:
            event(log, logging.ERROR, "health_socket_unavailable", path=str(path), detail=str(e))
            return False
        await self.check()  # NOT_SERVING until the first evaluation says otherwise
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        try:
            server.add_insecure_port(f"unix:{path}")
        except RuntimeError as e:
            event(log, logging.ERROR, "health_socket_unavailable", path=str(path), detail=str(e))
            return False
        await server.start()
        self._server, self._path, self._inode = server, path, path.lstat().st_ino
        event(log, logging.INFO, "health_listening", path=str(path), status="NOT_SERVING", reason=self.reason)
        return True

    async def run(self, stop: asyncio.Event, interval: float = INTERVAL) -> None:
        """Evaluate every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            await self.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def close(self) -> None:
        """NOT_SERVING, then stop serving and remove the socket file, unless a successor bound it since."""
        if self._server is None:
            return
        await self._servicer.enter_graceful_shutdown()
        await self._server.stop(0)
        self._server = None
        if self._path is not None:
            with contextlib.suppress(OSError):
                if self._path.lstat().st_ino == self._inode:
                    os.unlink(self._path)
