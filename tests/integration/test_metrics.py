"""The /metrics pages of both servers, scraped over HTTP on loopback, against what was sent to them.

A real redis-server and a real ``dmulog logsvc --metrics-listen`` process;
the bridge is the production read loop on the kernel stand-in's socket
(harness/kernel_side.py), fed a trace the real kernel sent
(bench/traces/, read as data), with its metrics page served as ``dmulog
bridge --metrics-listen`` serves it; and, where this host allows it, a real
``dmulog bridge`` process on the real connector socket. Every count is
compared with what the test itself sent, never with another count of the
code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge import host, wire
from bridge.metrics import BridgeMetrics
from bridge.netlink import NETLINK_CONNECTOR
from bridge.wire import RequestType as T
from dmulog.metrics import MetricsEndpoint, serve_metrics
from dmulog.requests import BY_TYPE
from harness.kernel_side import KernelStandIn, next_seq, u64
from harness.scrape import Expected, Scrape, differences, scrape
from harness.servers import LogsvcProcess, RedisProcess, free_port, redis_process, start_bridge, start_logsvc

TRACE = Path(__file__).resolve().parents[2] / "bench" / "traces" / "mixed-synced.trace"
"""Datagrams the real kernel sent: a mirror's construction, its resync, then fio's writes (bench/record_trace.py)."""
REPLAYED = 900
"""How many of them: past the resync, so that IN_SYNC and FLUSH are answered in the bridge too."""


@contextlib.contextmanager
def logsvc_process(tmp_path: Path, redis_url: str, *extra: str) -> Iterator[LogsvcProcess]:
    """``dmulog logsvc --metrics-listen 127.0.0.1:0`` on ``redis_url``, stopped at the end."""
    svc = start_logsvc(tmp_path / "logsvc.log", listen=f"127.0.0.1:{free_port()}", redis_url=redis_url,
                       extra=["--metrics-listen", "127.0.0.1:0", *extra])  # fmt: skip
    try:
        yield svc
    finally:
        svc.stop()


@contextlib.asynccontextmanager
async def bridge_with_page(target: str, **kw: float) -> AsyncIterator[tuple[KernelStandIn, MetricsEndpoint]]:
    """A production bridge counting into its metrics, served at ``/metrics`` on a free loopback port."""
    metrics = BridgeMetrics()
    page = serve_metrics("127.0.0.1:0", metrics.registry)
    try:
        async with KernelStandIn(target, metrics=metrics, **kw) as kernel:
            yield kernel, page
    finally:
        page.close()


async def scraped(address: str) -> Scrape:
    """The page, read from a thread (the request blocks; the servers in this loop must keep running)."""
    return await asyncio.to_thread(scrape, address)


def trace(uuid: str, count: int) -> list[bytes]:
    """The trace's first ``count`` datagrams, for log ``uuid`` under seqs no other request had."""
    out = []
    for line in TRACE.read_text().split()[:count]:
        req = wire.decode_request(bytes.fromhex(line))
        out.append(wire.encode_request(req.request_type, seq=next_seq(), luid=req.luid, uuid=uuid, data=req.data,
                                       version=req.version))  # fmt: skip
    return out


async def test_a_replayed_trace_is_counted_on_both_pages(redis: RedisProcess, tmp_path: Path, uuid: str) -> None:
    """N requests of a type sent: N on the bridge's page, N less the ones answered there on logsvc's, every one OK.

    Per type, the bridge's requests (errno 0) and latency count are what was
    sent; its answered-here count is what the bridge's own counter says it
    answered without a call; logsvc's requests (code OK), Exchange calls and
    latency count are the rest, under the type's RPC; each MARK_REGION and
    CLEAR_REGION is one round trip of its Function.
    """
    datagrams = trace(uuid, REPLAYED)
    sent = Counter(T(wire.decode_request(d).request_type).name for d in datagrams)
    with logsvc_process(tmp_path, redis.url) as svc:
        async with bridge_with_page(svc.target) as (kernel, page):
            for datagram in datagrams:  # one at a time, as kmirrord sends them
                kernel.send_datagram(datagram)
                assert 0 == (await kernel.reply()).error
            here = dict(kernel.bridge.answered_here)
            bridge, logsvc = await scraped(page.address), await scraped(svc.metrics_address)

    assert {"IN_SYNC", "FLUSH"} <= {name for name, n in here.items() if n}, "the trace no longer reaches the latch"
    expected = [Expected("dmulog_bridge_journal_depth", {}, 0)]
    for name, n in sent.items():
        spec = next(s for s in BY_TYPE.values() if s.name == name)
        called = n - here.get(name, 0)
        expected += [
            Expected("dmulog_bridge_requests_total", {"type": name}, n),
            Expected("dmulog_bridge_requests_total", {"type": name, "errno": "0"}, n),
            Expected("dmulog_bridge_request_duration_seconds_count", {"type": name}, n),
            Expected("dmulog_bridge_answered_here_total", {"type": name}, here.get(name, 0)),
            Expected("dmulog_logsvc_requests_total", {"method": spec.rpc}, called),
            Expected("dmulog_logsvc_requests_total", {"method": spec.rpc, "code": "OK"}, called),
            Expected("dmulog_logsvc_exchange_requests_total", {"type": name}, called),
            Expected("dmulog_logsvc_request_duration_seconds_count", {"method": spec.rpc}, called),
        ]
        if name in ("MARK_REGION", "CLEAR_REGION"):
            expected.append(Expected("dmulog_logsvc_redis_round_trip_seconds_count",
                                     {"function": f"dmulog_v4_{spec.function}"}, called))  # fmt: skip
    mismatched = differences(bridge, on_page("dmulog_bridge_", expected))
    assert [] == mismatched + differences(logsvc, on_page("dmulog_logsvc_", expected))
    assert bridge.value("dmulog_bridge_logsvc_retries_total") == 0
    assert bridge.value("dmulog_bridge_request_duration_seconds_sum", type="MARK_REGION") > 0
    assert logsvc.value("dmulog_logsvc_exchange_streams") >= 2  # the bridge keeps two streams open
    assert logsvc.value("dmulog_logsvc_serving") == 1
    assert logsvc.value("process_cpu_seconds_total") > 0


def on_page(prefix: str, rows: list[Expected]) -> list[Expected]:
    """The rows of one page: the bridge's metrics are on the bridge's, logsvc's on logsvc's."""
    return [e for e in rows if e.name.startswith(prefix)]


async def test_redis_down_is_counted_as_unavailable_retries_and_not_serving(tmp_path: Path, uuid: str) -> None:
    """Redis killed: each attempt of one MARK_REGION fails UNAVAILABLE on logsvc's page, and is retried on the bridge's.

    The bridge answers the kernel EAGAIN once its budget is spent; every
    attempt it made reached logsvc, so logsvc's UNAVAILABLE count is its
    retries plus one. Health goes to 0 while Redis is down, and back to 1.
    """
    with redis_process(tmp_path / "redis") as r, logsvc_process(tmp_path, r.url) as svc:
        async with bridge_with_page(svc.target, attempt_timeout=4.0, budget=5.0) as (kernel, page):
            r.kill()
            reply = await kernel.ask(T.MARK_REGION, u64(1), uuid=uuid, timeout=14)
            bridge, logsvc = await scraped(page.address), await scraped(svc.metrics_address)
            deadline = time.monotonic() + 10
            while (await scraped(svc.metrics_address)).value("dmulog_logsvc_serving") != 0:
                assert time.monotonic() < deadline, "still serving with Redis down"
                await asyncio.sleep(0.2)
            r.start()
            while (await scraped(svc.metrics_address)).value("dmulog_logsvc_serving") != 1:
                assert time.monotonic() < deadline + 10, "not serving again with Redis back"
                await asyncio.sleep(0.2)

    assert -reply.error == errno.EAGAIN
    retries = bridge.value("dmulog_bridge_logsvc_retries_total", code="UNAVAILABLE")
    assert retries >= 1
    assert [] == differences(bridge, [
        Expected("dmulog_bridge_requests_total", {"type": "MARK_REGION", "errno": "EAGAIN"}, 1),
        Expected("dmulog_bridge_requests_total", {"type": "MARK_REGION"}, 1),
    ]) + differences(logsvc, [
        Expected("dmulog_logsvc_requests_total", {"method": "MarkRegion", "code": "UNAVAILABLE"}, retries + 1),
        Expected("dmulog_logsvc_requests_total", {"method": "MarkRegion"}, retries + 1),
    ])  # fmt: skip
    # Every store call given up counts, the reaper's lease claims while Redis was down too.
    assert logsvc.value("dmulog_logsvc_redis_unavailable_total") >= retries + 1
    assert logsvc.value("dmulog_logsvc_redis_retries_total", reason="unreachable") >= retries + 1


def test_a_metrics_port_in_use_stops_logsvc_naming_it(tmp_path: Path, redis: RedisProcess) -> None:
    """A page that cannot be served fails the start (exit 1) before the gRPC port is served, and says where."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = start_logsvc(tmp_path / "logsvc.log", listen=f"127.0.0.1:{free_port()}", redis_url=redis.url,
                           extra=["--metrics-listen", f"127.0.0.1:{port}"], wait=False)  # fmt: skip
        assert 1 == svc.proc.wait(30)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in svc.text()
    assert [] == svc.events("logsvc_listening")


@pytest.mark.skipif(os.geteuid() != 0, reason="joining the connector group needs root")
def test_a_bridge_process_serves_its_page(tmp_path: Path, redis: RedisProcess) -> None:
    """``dmulog bridge --metrics-listen``: its lease held on its page, its grant on logsvc's, a stray datagram refused.

    The host has no dm-log-userspace, so no kernel request can reach the
    bridge; a userspace sender's datagram does, and is counted as not the kernel's.
    """
    if host.other_listeners(wire.CN_IDX_DM, 0):
        pytest.skip("another process on this host listens to connector group 7")
    with logsvc_process(tmp_path, redis.url) as svc:
        bridge = start_bridge(tmp_path / "bridge.log", svc.target, "--metrics-listen", "127.0.0.1:0",
                              "--journal-dir", str(tmp_path / "inflight"), "--health-socket", "",
                              "--node", f"metrics-{os.getpid()}")  # fmt: skip
        try:
            [listening] = bridge.wait_for("bridge_listening")
            address = bridge.metrics_address
            deadline = time.monotonic() + 15
            while scrape(address).value("dmulog_bridge_lease_held") != 1:
                assert time.monotonic() < deadline, "no lease on the bridge's page"
                time.sleep(0.1)
            with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR) as sender:
                sender.bind((0, 0))
                sender.sendto(b"\0" * 40, (int(listening["port_id"]), 0))
            bridge.wait_for("datagram_not_from_kernel")
            page, logsvc = scrape(address), scrape(svc.metrics_address)
        finally:
            bridge.proc.send_signal(signal.SIGTERM)
            bridge.proc.wait(20)
    assert [] == differences(page, [
        Expected("dmulog_bridge_datagrams_refused_total", {"reason": "not_from_kernel"}, 1),
        Expected("dmulog_bridge_datagrams_refused_total", {}, 1),
        Expected("dmulog_bridge_requests_total", {}, 0),
        Expected("dmulog_bridge_journal_depth", {}, 0),
    ]) + differences(logsvc, [Expected("dmulog_logsvc_lease_grants_total", {}, 1)])  # fmt: skip
    assert page.value("dmulog_bridge_lease_epoch") > 0
