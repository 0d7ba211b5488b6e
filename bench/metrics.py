"""What the Prometheus metrics cost: the trace through bridge → logsvc → Redis with them on, against off.

One redis-server (AOF, ``appendfsync always``) and two logsvc processes on
loopback TCP, measured side by side in one run, one mirror each:

* ``off``: no ``--metrics-listen`` on either side (nothing is counted);
* ``on``: logsvc with ``--metrics-listen``, the bridge with its metrics
  (bridge/metrics.py) served over HTTP, and both pages scraped every second
  meanwhile, far more often than a Prometheus would.

The trace is replayed three times through each, the rows taking turns, so a
load that comes and goes on a shared machine falls on each alike.

Ratios: ``on``'s p50 over ``off``'s, per request type. Then what the counting
itself costs per request, timed alone (the two methods a request calls), and
whether the pages counted exactly what was sent.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import timeit
from collections import Counter
from pathlib import Path

import grpc

from bench.alone import run_alone
from bench.replay import Recorder, pct
from bench.stack import full_stack
from bridge import wire
from bridge.metrics import BridgeMetrics
from dmulog.metrics import serve_metrics
from harness.scrape import Scrape, scrape
from harness.servers import LogsvcProcess, RedisProcess, free_port, start_logsvc
from logsvc.metrics import LogsvcMetrics

__all__ = ["KINDS", "measure", "table"]

KINDS = ("IN_SYNC", "FLUSH", "MARK_REGION", "CLEAR_REGION", "GET_RESYNC_WORK", "SET_REGION_SYNC")
ROWS = ("off", "on")


class _Scraper:
    """Scrapes the given pages every ``period`` seconds from a thread, as a Prometheus would (more often)."""

    def __init__(self, addresses: list[str], period: float = 1.0):
        self._addresses, self._period = addresses, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.scrapes = 0

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for address in self._addresses:
                scrape(address)
                self.scrapes += 1

    def __enter__(self) -> _Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


async def measure(workdir: Path, trace: list[bytes], rounds: int = 3) -> tuple[dict[str, Recorder], list[str]]:
    """Samples of both rows, the trace replayed ``rounds`` times through each, taking turns; and the checks' lines."""
    redis = RedisProcess(workdir / "redis-metrics").start()
    got = {row: Recorder() for row in ROWS}
    logsvcs: dict[str, LogsvcProcess] = {}
    bridge_metrics = BridgeMetrics()
    page = serve_metrics("127.0.0.1:0", bridge_metrics.registry)
    checks: list[str] = []
    try:
        for row in ROWS:
            extra = ["--metrics-listen", "127.0.0.1:0"] if row == "on" else []
            logsvcs[row] = start_logsvc(workdir / f"logsvc-{row}.log", listen=f"127.0.0.1:{free_port()}",
                                        redis_url=redis.url, extra=extra)  # fmt: skip
        pages = [page.address, logsvcs["on"].metrics_address]
        with _Scraper(pages) as scraper:
            for _ in range(rounds):
                for row in ROWS:
                    await full_stack(logsvcs[row].target, trace, 1, got[row],
                                     metrics=bridge_metrics if row == "on" else None)  # fmt: skip
        bridge_page, logsvc_page = (scrape(a) for a in pages)
        checks = _checks(trace, rounds, got["on"], bridge_page, logsvc_page)
        checks.append(f"pages scraped during the run: {scraper.scrapes}")
    finally:
        page.close()
        for svc in logsvcs.values():
            svc.stop()
        redis.kill()
    return got, checks


def _checks(trace: list[bytes], rounds: int, on: Recorder, bridge: Scrape, logsvc: Scrape) -> list[str]:
    """Whether each page counted what was sent: every request on the bridge's, every call on logsvc's."""
    sent = Counter(wire.decode_request(d).type_name for d in trace * rounds)
    bridge_counted = bridge.labels("dmulog_bridge_requests_total", "type")
    here = bridge.labels("dmulog_bridge_answered_here_total", "type")
    called = logsvc.labels("dmulog_logsvc_exchange_requests_total", "type")
    bad = [t for t in sent if bridge_counted.get(t, 0) != sent[t] or called.get(t, 0) != sent[t] - here.get(t, 0)]
    return [f"counted: bridge {sum(bridge_counted.values()):.0f} of {sum(sent.values())} requests sent, "
            f"{sum(here.values()):.0f} of them answered here; logsvc {sum(called.values()):.0f} calls; "
            f"{'every type exact' if not bad else 'MISMATCH in ' + ', '.join(sorted(bad))}",
            f"errors: {on.errors}"]  # fmt: skip


def counting_cost(calls: int = 200_000) -> tuple[float, float]:
    """Seconds per request of the counting alone: (logsvc's ``request``, the bridge's ``answered``)."""
    logsvc, bridge = LogsvcMetrics(), BridgeMetrics()
    ok, mark = grpc.StatusCode.OK, int(wire.RequestType.MARK_REGION)
    per_logsvc = timeit.timeit(lambda: logsvc.request("MarkRegion", ok, 0.0012), number=calls) / calls
    per_bridge = timeit.timeit(lambda: bridge.answered(mark, 0, 0.0015), number=calls) / calls
    return per_logsvc, per_bridge


def table(got: dict[str, Recorder], checks: list[str]) -> str:
    """p50 and p99 of each row per request type, and on over off."""
    lines = ["metrics: p50 µs through bridge → logsvc → Redis on loopback TCP, one mirror; ratio = on / off",
             f"{'request':<16} {'n':>6} {'off p50':>8} {'on p50':>8} {'on/off':>7} {'off p99':>8} "
             f"{'on p99':>8}"]  # fmt: skip
    for kind in KINDS:
        if not all(rec.samples.get(kind) for rec in got.values()):
            continue
        off, on = got["off"].samples[kind], got["on"].samples[kind]
        p50_off, p50_on = statistics.median(off), statistics.median(on)
        p99_off, p99_on = pct(off, 0.99), pct(on, 0.99)
        lines.append(f"{kind:<16} {len(on):>6} {p50_off * 1e6:>8.0f} {p50_on * 1e6:>8.0f} {p50_on / p50_off:>7.2f} "
                     f"{p99_off * 1e6:>8.0f} {p99_on * 1e6:>8.0f}")  # fmt: skip
    per_logsvc, per_bridge = counting_cost()
    lines.append(f"the counting alone, per request: logsvc {per_logsvc * 1e6:.2f} µs, bridge {per_bridge * 1e6:.2f} µs")
    lines.extend(checks)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.metrics``: the metrics table alone."""
    return run_alone(argv, module="bench.metrics", doc=__doc__ or "", report="bench-metrics",
                     table=lambda _args, trace, workdir: table(*asyncio.run(measure(workdir, trace))))


if __name__ == "__main__":
    sys.exit(main())
