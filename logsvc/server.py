"""Build and run the logsvc gRPC server.

``build_server`` only assembles (tests start it on port 0); ``serve`` adds
Redis, durability checks, signals and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dmulog.logs import event
from dmulog.metrics import MetricsEndpoint, serve_metrics
from dmulog.tls import TlsFiles, server_credentials
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from logsvc.access import DEFAULT_POLICY, Access, Policy
from logsvc.embedded_redis import EmbeddedRedis
from logsvc.events import EventFeed
from logsvc.health import HealthMonitor
from logsvc.interceptor import RequestInterceptor
from logsvc.leases import DEFAULT_TTL, Leases, Reaper
from logsvc.metrics import LogsvcMetrics
from logsvc.redis_connect import RedisSecurity
from logsvc.service import DirtyLogService
from logsvc.store import MAX_CONNECTIONS, Store, text

__all__ = ["LogsvcConfig", "build_server", "serve"]

log = logging.getLogger("dmulog.logsvc")
SERVICE_NAME = "dmulog.v1.DirtyLog"
HEALTH_SERVICES = ("", SERVICE_NAME)
"""The health service names logsvc answers (``""``: the whole server); the monitor sets both."""
MAX_MESSAGE = 96 * 1024 * 1024  # GetLogState of a 2^28-region log carries two 32 MiB bitmaps
KEEPALIVE_OPTIONS: Final = (
    # Clients may keep idle connections alive with pings of their own: the
    # bridge's Exchange streams idle between bursts, and grpc-js, grpc-go and
    # grpc-java clients are commonly set to ping every 10 to 30 s. gRPC's
    # default accepts a ping without data only every 5 minutes, with 2 strikes
    # allowed, so a client pinging every 10 s on an idle stream got GOAWAY
    # ENHANCE_YOUR_CALM ("too_many_pings") at its fourth ping, 40 s in. Accept
    # one every 5 s (half the shortest period supported, so that timer jitter
    # never makes a 10 s client strike), also on a connection with no call open.
    # (The name says "min_ping_interval" but it is the server's bound on the
    # pings it receives: GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS.)
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    # A third ping closer than 5 s to the one before still ends the
    # connection: a client pinging faster than that is broken, not careful.
    ("grpc.http2.max_ping_strikes", 2),
    # Our own pings find dead peers (a node gone without a FIN keeps its
    # streams open otherwise): one after 60 s without traffic, the connection
    # dropped when no answer comes within 20 s, and they go on however long the
    # connection idles (no limit of pings without data in between).
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
)
"""Server options of logsvc's ping policy: the pings it accepts from clients, and its own."""
REFLECTED_SERVICES: Final = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
"""The services server reflection lists, so that grpcurl and other languages' tools need no .proto files."""


@dataclass(frozen=True)
class LogsvcConfig:
    """Everything ``dmulog logsvc`` can be told."""

    listen: str = "127.0.0.1:7500"
    redis_url: str | None = None
    redis_cluster: str | None = None
    """``HOST:PORT,...`` startup nodes of a Redis Cluster, instead of ``redis_url``."""
    state_dir: Path = Path("/var/lib/dmulog")
    key_prefix: str = "dmulog"
    grace: float = 5.0
    redis_connections: int = MAX_CONNECTIONS
    lease_ttl: float = DEFAULT_TTL
    durable_replicas: int = 0
    redis_security: RedisSecurity | None = None
    """TLS files and ACL user for ``redis_url`` or ``redis_cluster`` (not the embedded Redis: its socket is private)."""
    tls: TlsFiles | None = None
    """Certificate, key and client CA of the gRPC port; None: plaintext (loopback only unless --insecure)."""
    policy: Policy | None = None
    """Who may call what, with ``tls``; None there means ``access.DEFAULT_POLICY``."""
    metrics_listen: str = ""
    """``HOST:PORT`` of the Prometheus ``/metrics`` page (docs/metrics.md); ``""``: none, and nothing counted."""


async def build_server(
    store: Store, listen: str, *, lease_ttl: float = DEFAULT_TTL, tls: TlsFiles | None = None,
    policy: Policy | None = None, keepalive: Sequence[tuple[str, int]] = KEEPALIVE_OPTIONS,
    metrics: LogsvcMetrics | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer, DirtyLogService]:
    """A ready-to-start server on ``listen`` (``host:port`` or ``unix:/path``); its reaper is not running.

    With ``tls``, the port requires a client certificate signed by its CA and
    every call is checked against ``policy`` (logsvc/access.py). ``keepalive``
    is the ping policy; only the test that shows what gRPC's default does to
    a pinging client passes another (``()``). ``metrics`` is what the
    server's requests and its store's Redis calls count into; the store is
    given it, so that its leases, reaper and health monitor count there too.
    """
    access = Access((policy or DEFAULT_POLICY) if tls is not None else None)
    if metrics is not None:
        store.metrics = metrics
    server = grpc.aio.server(
        interceptors=[RequestInterceptor(access=access, metrics=metrics)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            *keepalive,
        ],
    )
    service = DirtyLogService(store, Leases(store, lease_ttl), EventFeed(store), access)
    pb_grpc.add_DirtyLogServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(REFLECTED_SERVICES, server)
    port = server.add_insecure_port(listen) if tls is None else server.add_secure_port(listen, server_credentials(tls))
    if port == 0 and not listen.startswith("unix:"):
        raise OSError(f"cannot listen on {listen}")
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if metrics is not None:
        metrics.serving.set(1)
        metrics.watch_streams(lambda: service.open_streams)
    return server, port, health_servicer, service


async def _check_durability(store: Store) -> None:
    """Warn when the Redis we were given cannot keep an acknowledged mark (in a Cluster: one primary, for all)."""
    try:
        cfg = await store.config_get("append*")
    except Exception:  # noqa: BLE001 - CONFIG may be disabled on managed Redis
        event(log, logging.WARNING, "durability_unknown", reason="CONFIG GET refused")
        return
    values = {text(k): text(v) for k, v in cfg.items()}
    if store.durable_replicas:
        return  # WAITAOF 1 N waits for the primary's own fsync too, whatever appendfsync says
    if values.get("appendonly") != "yes" or values.get("appendfsync") != "always":
        event(
            log, logging.WARNING, "durability_weak",
            appendonly=values.get("appendonly"), appendfsync=values.get("appendfsync"),
            consequence="marks acknowledged to the kernel can be lost if Redis crashes",
        )  # fmt: skip


async def serve(config: LogsvcConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain: NOT_SERVING first, then stop."""
    embedded: EmbeddedRedis | None = None
    url = config.redis_url
    if config.redis_cluster is not None:
        url = config.redis_cluster
        store = Store.from_cluster(config.redis_cluster, prefix=config.key_prefix,
                                   max_connections=config.redis_connections,
                                   durable_replicas=config.durable_replicas,
                                   security=config.redis_security)  # fmt: skip
    else:
        if url is None:
            embedded = EmbeddedRedis(config.state_dir)
            await embedded.start()
            url = embedded.url
        store = Store.from_url(url, prefix=config.key_prefix, max_connections=config.redis_connections,
                               durable_replicas=config.durable_replicas,
                               security=None if embedded else config.redis_security)  # fmt: skip
    endpoint: MetricsEndpoint | None = None
    try:
        await store.load_library()
        await _check_durability(store)
        metrics = LogsvcMetrics() if config.metrics_listen else None
        server, port, health_servicer, service = await build_server(store, config.listen, lease_ttl=config.lease_ttl,
                                                                    tls=config.tls, policy=config.policy,
                                                                    metrics=metrics)  # fmt: skip
        if metrics is not None:
            # Before the gRPC port: a port that cannot be bound fails the start, not a running server.
            endpoint = serve_metrics(config.metrics_listen, metrics.registry)
            event(log, logging.INFO, "metrics_listening", address=endpoint.address, port=endpoint.port)
        await server.start()
        event(log, logging.INFO, "logsvc_listening", listen=config.listen, port=port, redis=url,
              embedded_redis=embedded is not None, redis_cluster=config.redis_cluster is not None,
              lease_ttl=config.lease_ttl, durable_replicas=config.durable_replicas,
              tls=config.tls is not None)  # fmt: skip
        stop = asyncio.Event()
        reaper = asyncio.ensure_future(Reaper(service.leases).run(stop))
        monitor = asyncio.ensure_future(HealthMonitor(store, health_servicer, HEALTH_SERVICES).run(stop))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        event(log, logging.INFO, "logsvc_stopping")
        await health_servicer.enter_graceful_shutdown()
        if metrics is not None:
            metrics.serving.set(0)
        # Streams never end on their own: ask them to, so that stop() sees
        # them finish within the grace period instead of cancelling them.
        service.drain()
        await service.feed.close()
        await server.stop(config.grace)
        await reaper
        await monitor
    finally:
        if endpoint is not None:
            endpoint.close()
        await store.close()
        if embedded:
            await embedded.stop()
