"""The bridge's Prometheus metrics (docs/metrics.md lists each): what the kernel asked, and what it was answered.

One :class:`BridgeMetrics` per bridge, in a registry of its own
(dmulog/metrics.py). What the kernel sees is measured where the kernel meets
the bridge, in the read loop (bridge/agent.py): a request is counted once
its reply is written, by its type (dmulog/requests.py names the 17) and the
errno it carries, and timed from the moment it was read to that write; a
request answered without a call (bridge/answer.py) is counted the same way
and also as answered here, so ``requests`` is every answer the kernel got
and the two together say how much of the load never reaches logsvc. The
calls to logsvc are counted by the client (bridge/client.py): attempts sent
again, streams opened again. Depth and lease are read at each scrape from
what the bridge keeps anyway, so they cost a request nothing.

Per request the cost is one increment and one observation: the labelled
children are kept by wire number, made on first use (dmulog/metrics.py
``Children``), with no label lookup and no string built on the request path.
"""

from __future__ import annotations

import errno
from collections.abc import Sized
from typing import TYPE_CHECKING, Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dmulog.metrics import Children, new_registry
from dmulog.requests import BY_TYPE

if TYPE_CHECKING:
    from bridge.lease import LeaseKeeper

__all__ = ["LATENCY_BUCKETS", "BridgeMetrics", "errno_label", "type_label"]

LATENCY_BUCKETS: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                          0.5, 1.0, 2.5, 5.0, 10.0, 15.0)  # fmt: skip
"""Seconds: an answer given here takes tens of µs, one through logsvc a millisecond or two, and the kernel
gives up at 15 s (bridge/agent.py KERNEL_TIMEOUT)."""


def type_label(rtype: int) -> str:
    """The ``type`` label of wire number ``rtype``: the kernel's name, or ``UNKNOWN`` (one label for all others)."""
    spec = BY_TYPE.get(rtype)
    return spec.name if spec is not None else "UNKNOWN"


def errno_label(code: int) -> str:
    """The ``errno`` label of a positive errno: ``0`` for success, else its name (``EAGAIN``)."""
    return "0" if code == 0 else errno.errorcode.get(code, str(code))


class BridgeMetrics:
    """The counters, histograms and gauges of one bridge."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else new_registry()
        r = self.registry
        self.requests = Counter("dmulog_bridge_requests", "Kernel requests answered, by request type and the errno "
                                "of the answer (0: success)", ("type", "errno"), registry=r)  # fmt: skip
        self.duration = Histogram("dmulog_bridge_request_duration_seconds", "Time from reading a kernel request "
                                  "to writing its reply, by request type", ("type",), buckets=LATENCY_BUCKETS,
                                  registry=r)  # fmt: skip
        self.here = Counter("dmulog_bridge_answered_here", "Kernel requests answered in the bridge without a call "
                            "to logsvc (IN_SYNC of a latched instance, FLUSH without marks), by request type",
                            ("type",), registry=r)  # fmt: skip
        self.stale = Counter("dmulog_bridge_replies_stale", "Replies not sent because they were ready 15 s or more "
                             "after their request, when the kernel had given up on it, by request type", ("type",),
                             registry=r)  # fmt: skip
        self.refused = Counter("dmulog_bridge_datagrams_refused", "Datagrams not taken as requests: not_from_kernel "
                               "(a userspace sender, ignored) or malformed (answered EINVAL where it can be)",
                               ("reason",), registry=r)  # fmt: skip
        self.logsvc_retries = Counter("dmulog_bridge_logsvc_retries", "Calls to logsvc sent again after an attempt "
                                      "that said nothing of the request, by that attempt's gRPC status", ("code",),
                                      registry=r)  # fmt: skip
        self.logsvc_reconnects = Counter("dmulog_bridge_logsvc_reconnects", "Exchange streams to logsvc opened "
                                         "again after one ended (a replica went away, or a stream was stuck)",
                                         registry=r)  # fmt: skip
        self.journal_depth = Gauge("dmulog_bridge_journal_depth", "Kernel requests read and not yet answered "
                                   "(what the journal holds)", registry=r)  # fmt: skip
        self.lease_held = Gauge("dmulog_bridge_lease_held", "1 while kernel requests may go out: the node holds a "
                                "lease sure to be live (or logsvc runs without leases); else 0",
                                registry=r)  # fmt: skip
        self.lease_epoch = Gauge("dmulog_bridge_lease_epoch", "Epoch of the node's current incarnation (0: none, "
                                 "or leases off)", registry=r)  # fmt: skip
        self._answers: Children[tuple[int, int], Counter] = Children(
            lambda key: self.requests.labels(type_label(key[0]), errno_label(key[1])))
        self._durations: Children[int, Histogram] = Children(lambda rtype: self.duration.labels(type_label(rtype)))
        self._here: Children[str, tuple[Counter, Histogram, Counter]] = Children(
            lambda name: (self.requests.labels(name, "0"), self.duration.labels(name), self.here.labels(name)))
        self._retries: Children[grpc.StatusCode, Counter] = Children(
            lambda code: self.logsvc_retries.labels(code.name))
        self._refused = {reason: self.refused.labels(reason) for reason in ("not_from_kernel", "malformed")}

    def answered(self, rtype: int, code: int, seconds: float) -> None:
        """A reply to a request of wire type ``rtype``, carrying errno ``code``, written ``seconds`` after the read."""
        self._answers[rtype, code].inc()
        self._durations[rtype].observe(seconds)

    def answered_here(self, name: str, seconds: float) -> None:
        """A request of type ``name`` answered in the bridge with success, ``seconds`` after it was read."""
        answered, histogram, here = self._here[name]
        answered.inc()
        histogram.observe(seconds)
        here.inc()

    def went_stale(self, rtype: int) -> None:
        """A reply left unsent: the kernel had given up on its request."""
        self.stale.labels(type_label(rtype)).inc()

    def refuse(self, reason: str) -> None:
        """A datagram not taken as a request: ``not_from_kernel`` or ``malformed``."""
        self._refused[reason].inc()

    def logsvc_retry(self, code: grpc.StatusCode) -> None:
        """A call to logsvc about to be sent again after an attempt that ended ``code``."""
        self._retries[code].inc()

    def watch(self, in_flight: Sized, keeper: LeaseKeeper | None = None) -> None:
        """Read the journal's depth (``len(in_flight)``: a task per request read) and the lease at each scrape.

        Read from the scrape's thread: a length and a few numbers the event
        loop writes whole, so a scrape may see them a moment old, never torn.
        """
        self.journal_depth.set_function(lambda: len(in_flight))
        if keeper is not None:
            self.lease_held.set_function(lambda: 1.0 if keeper.held() else 0.0)
            self.lease_epoch.set_function(lambda: keeper.node.epoch)
