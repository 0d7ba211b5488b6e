"""logsvc's Prometheus metrics (docs/metrics.md lists each): requests, their latency, Redis round trips.

One :class:`LogsvcMetrics` per server, in a registry of its own
(dmulog/metrics.py says why), handed to ``build_server``, which gives it to
the interceptor and to the store; everything else that counts (the Exchange
streams, leases, the reaper, the health monitor) reaches it through the
store it already holds. Handed, not found in a context variable: two servers
in one process (the tests) must each count their own, whatever task gRPC
runs a handler in.

Where each number is taken, and why there:

* requests and their latency in ``interceptor.serve_one``, which unary calls
  and every call carried by an Exchange stream share, so a MarkRegion counts
  as MarkRegion whichever way it came; a stream is never one request;
* Redis round trips in ``Store.fcall``, around the one command (or pipeline,
  with ``--redis-durable-replicas``) that reaches Redis, so retries and the
  wait for a connection are not in them;
* retries in the store's retry policy, so that every call that goes through
  the store, a request's or the reaper's, is seen.

Per request the cost is a counter increment and a histogram observation:
the labelled children are made on first use and kept (dmulog/metrics.py
``Children``), so no label lookup (and no string building) happens on the
request path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dmulog.metrics import Children, new_registry
from dmulog.requests import REQUESTS

__all__ = ["LATENCY_BUCKETS", "LogsvcMetrics"]

LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a Redis round trip on a LAN is under a millisecond, the kernel gives up at 15 s."""

_TYPE_OF: Final = {s.rpc: s.name for s in REQUESTS}
"""A kernel request RPC → the kernel's name of its request type (the bridge's ``type`` label)."""


class LogsvcMetrics:
    """The counters, histograms and gauges of one logsvc server."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else new_registry()
        r = self.registry
        self.requests = Counter("dmulog_logsvc_requests", "Requests answered, by gRPC method (an Exchange call: "
                                "the method it carries) and status code", ("method", "code"), registry=r)  # fmt: skip
        self.duration = Histogram("dmulog_logsvc_request_duration_seconds",
                                  "Time from a request's arrival to its answer, by gRPC method", ("method",),
                                  buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.exchange = Counter("dmulog_logsvc_exchange_requests", "Kernel requests that arrived on Exchange "
                                "streams, by kernel request type", ("type",), registry=r)  # fmt: skip
        self.streams = Gauge("dmulog_logsvc_exchange_streams", "Exchange streams open now", registry=r)
        self.redis_duration = Histogram("dmulog_logsvc_redis_round_trip_seconds",
                                        "Time of one Redis Function call that Redis answered (one round trip, "
                                        "retries apart), by Function", ("function",), buckets=LATENCY_BUCKETS,
                                        registry=r)  # fmt: skip
        self.redis_retries = Counter("dmulog_logsvc_redis_retries", "Redis calls sent again, by why: "
                                     "unreachable (a new connection) or not_ready (loading, failing over, "
                                     "read-only, no replicas, a Cluster slot moving)", ("reason",),
                                     registry=r)  # fmt: skip
        self.redis_unavailable = Counter("dmulog_logsvc_redis_unavailable", "Redis calls given up after their "
                                         "retry budget: each fails its request UNAVAILABLE", registry=r)  # fmt: skip
        self.lease_grants = Counter("dmulog_logsvc_lease_grants", "Leases granted to a new incarnation of a node "
                                    "by this replica", registry=r)  # fmt: skip
        self.lease_expiries = Counter("dmulog_logsvc_lease_expiries", "Expired incarnations whose logs this "
                                      "replica's reaper handed over", registry=r)  # fmt: skip
        self.serving = Gauge("dmulog_logsvc_serving", "1 while the health service says SERVING, else 0",
                             registry=r)  # fmt: skip
        self._requests: Children[tuple[str, grpc.StatusCode], Counter] = Children(
            lambda key: self.requests.labels(key[0], key[1].name))
        self._durations: Children[str, Histogram] = Children(self.duration.labels)
        self._exchange: Children[str, Counter] = Children(
            lambda method: self.exchange.labels(_TYPE_OF.get(method, method)))
        self._functions: Children[str, Histogram] = Children(self.redis_duration.labels)
        self._retries = {True: self.redis_retries.labels("unreachable"), False: self.redis_retries.labels("not_ready")}

    def request(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """One request of ``method`` answered ``code`` after ``seconds``."""
        self._requests[method, code].inc()
        self._durations[method].observe(seconds)

    def exchanged(self, method: str) -> None:
        """One call of ``method`` read off an Exchange stream (counted under its kernel request type)."""
        self._exchange[method].inc()

    def redis_call(self, function: str, seconds: float) -> None:
        """One Redis round trip of Function ``function`` that took ``seconds``."""
        self._functions[function].observe(seconds)

    def redis_retry(self, unreachable: bool) -> None:
        """A Redis call about to be sent again: Redis was ``unreachable``, or answered "not now"."""
        self._retries[unreachable].inc()

    def watch_streams(self, open_streams: Callable[[], int]) -> None:
        """Read the open Exchange streams at each scrape (a count the service keeps anyway)."""
        self.streams.set_function(open_streams)
