"""The one way both servers expose Prometheus metrics: prometheus_client's own HTTP server on a registry of theirs.

Each server keeps its metrics in a registry of its own, not the library's
global one, so that several servers in one process (the tests, the benchmark)
never collide over a name. ``--metrics-listen HOST:PORT`` serves it at
``/metrics`` (docs/metrics.md lists what is there); ``""`` serves nothing.
prometheus_client serves from a thread of its own, so a scrape never waits on
the event loop, nor the loop on a scrape: what a request pays is an increment
and an observation, never the rendering of the page.

Like the gRPC port, the metrics port binds loopback unless told otherwise: a
bare port or ``:PORT`` means ``127.0.0.1:PORT``. The page is plain HTTP with
no authentication; it carries counts by method, request type and code, never
a log's name, a node's or a tenant's, so a scraper learns how busy a server
is and nothing about whose logs it holds.

Nothing here imports prometheus_client at module level: the commands' option
tables import :func:`parse_listen`, and ``dmulog status`` needs no metrics.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry

__all__ = ["LOOPBACK", "Children", "MetricsEndpoint", "add_metrics_option", "metrics_listen", "new_registry",
           "parse_listen", "serve_metrics"]

LOOPBACK = "127.0.0.1"
"""The host of a ``--metrics-listen`` that names only a port."""


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``PORT`` (the last two on loopback).

    Refused rather than guessed: an IPv6 address without brackets (which
    colon ends the host?), a ``unix:`` path (prometheus_client serves TCP
    only), a port past 65535.

    Raises:
        ValueError: not one of those forms.
    """
    text = listen.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{listen!r} is not HOST:PORT (a port from 0 to 65535)")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"{listen!r}: an IPv6 host goes in brackets, as [::1]:9464")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{listen!r}: an IPv6 host goes in brackets, as [::1]:9464")
    if host in ("unix", "unix-abstract") or "/" in host or any(c.isspace() for c in host):
        raise ValueError(f"{listen!r} is not HOST:PORT: metrics are served over TCP only")
    return host or LOOPBACK, int(port)


def add_metrics_option(option: Callable[..., None]) -> None:
    """``--metrics-listen`` (env ``DMULOG_METRICS_LISTEN``), the same on every server."""
    option("--metrics-listen", "", "serve Prometheus metrics at http://HOST:PORT/metrics (a bare port: on "
           "127.0.0.1; docs/metrics.md); '' = none")  # fmt: skip


def metrics_listen(args: argparse.Namespace, command: str) -> str:
    """The ``--metrics-listen`` value, checked now so that a typo is a usage error rather than a failed start.

    Raises:
        ValueError: naming the command and the option.
    """
    listen: str = args.metrics_listen or ""
    if listen:
        try:
            parse_listen(listen)
        except ValueError as e:
            raise ValueError(f"dmulog {command}: --metrics-listen {e}") from None
    return listen


def new_registry() -> CollectorRegistry:
    """A registry of a server's own, with the process's CPU, memory, descriptors and garbage collections.

    Those come with every Prometheus client by default; a registry of our own
    (see the module's docstring) must be given them explicitly. The
    ``_created`` series are turned off (for the whole process: the library
    has no other switch): each counter and histogram would serve one beside
    every child, doubling what Prometheus stores for a timestamp nobody reads.
    """
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
        disable_created_metrics,
    )

    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


K = TypeVar("K")
V = TypeVar("V")


class Children(dict[K, V]):
    """A metric's labelled children by a key of the caller's, each made by ``make`` on first use.

    prometheus_client's ``labels()`` takes a lock and builds a tuple of label
    strings on every call; what counts on a request path keeps its children
    here instead, so a request pays one dict lookup (``__missing__`` runs once
    per key) and no label is looked up or built.
    """

    def __init__(self, make: Callable[[K], V]):
        super().__init__()
        self._make = make

    def __missing__(self, key: K) -> V:
        child = self[key] = self._make(key)
        return child


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server: where it listens, and how to stop it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def address(self) -> str:
        """``HOST:PORT`` as it listens (the port chosen when 0 was asked), brackets around an IPv6 host."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving and wait for its thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
    """Serve ``registry`` at ``http://LISTEN/metrics`` (port 0: a free one, then in ``.port``).

    Raises:
        ValueError: ``listen`` is no address (:func:`parse_listen`).
        OSError: it cannot be bound (in use, not this machine's), naming the address.
    """
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise OSError(e.errno, f"cannot serve metrics on {listen}: {e.strerror or e}") from None
    return MetricsEndpoint(host, int(server.server_address[1]), server, thread)
