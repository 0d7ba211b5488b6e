"""What mTLS, the authorization check and tenants cost: the trace through bridge → logsvc → Redis, against plaintext.

One redis-server (AOF, ``appendfsync always``) and three logsvc processes on
loopback TCP, measured side by side in one run, one mirror each:

* ``plain``: no TLS, so no check (what every earlier figure measured);
* ``mtls``: the bridge's certificate is a node's, without a tenant
  (``bench.node.dmulog``): TLS on every message, and each call's role and
  node name checked against the default policy;
* ``tenant``: a SPIFFE node certificate of tenant ``bench.example`` with a
  quota of logs, regions and rate (never reached): the check, the tenant's
  rate bucket, the stored names and the admission at CTR.

The trace is replayed three times through each, the rows taking turns.

Ratios: each row's p50 over ``plain``'s, per request type.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from bench.alone import run_alone
from bench.replay import Recorder
from bench.stack import full_stack
from dmulog.tls import TlsFiles
from harness.certs import CertAuthority
from harness.servers import LogsvcProcess, RedisProcess, free_port, start_logsvc
from logsvc.access import DEFAULT_POLICY

__all__ = ["KINDS", "measure", "table"]

KINDS = ("IN_SYNC", "FLUSH", "MARK_REGION", "CLEAR_REGION", "GET_RESYNC_WORK", "SET_REGION_SYNC")
ROWS = ("plain", "mtls", "tenant")


def _policy_file(path: Path) -> Path:
    """The default grants, and a quota for the tenant large enough never to refuse."""
    lines = [f'[[grant]]\nsan = "{g.san}"\nrole = "{g.role.value}"\n' for g in DEFAULT_POLICY.grants]
    lines.append('[[quota]]\ntenant = "bench.example"\nlogs = 1000\nregions = 1000000000\nrate = 1000000\n')
    path.write_text("\n".join(lines))
    return path


async def measure(workdir: Path, trace: list[bytes], rounds: int = 3) -> dict[str, Recorder]:
    """Samples of the three rows, the trace replayed ``rounds`` times through each, the rows taking turns.

    The three logsvc processes run side by side and the rows alternate, so a
    load that comes and goes on a shared machine falls on each row alike.
    """
    redis = RedisProcess(workdir / "redis-secure").start()
    ca = CertAuthority(workdir / "pki")
    server = ca.issue("logsvc", ips=["127.0.0.1"], server=True, client=False)
    nodes = {"mtls": ca.issue("bench", dns=["bench.node.dmulog"]),
             "tenant": ca.issue("bench-tenant", uris=["spiffe://bench.example/dmulog/node/bench"])}  # fmt: skip
    tls_flags = ["--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-ca", str(ca.cert),
                 "--auth-policy", str(_policy_file(workdir / "policy.toml"))]  # fmt: skip
    got = {row: Recorder() for row in ROWS}
    logsvcs: dict[str, LogsvcProcess] = {}
    try:
        for row in ROWS:
            logsvcs[row] = start_logsvc(workdir / f"logsvc-{row}.log", listen=f"127.0.0.1:{free_port()}",
                                        redis_url=redis.url, extra=[] if row == "plain" else tls_flags)  # fmt: skip
        for _ in range(rounds):
            for row in ROWS:
                node = nodes.get(row)
                await full_stack(logsvcs[row].target, trace, 1, got[row],
                                 tls=TlsFiles(node.cert, node.key, node.ca) if node else None)  # fmt: skip
    finally:
        for svc in logsvcs.values():
            svc.stop()
        redis.kill()
    return got


def table(got: dict[str, Recorder]) -> str:
    """p50 of each row per request type, and each row over plaintext."""
    lines = ["security: p50 µs through bridge → logsvc → Redis on loopback TCP, one mirror; ratio = row / plain",
             f"{'request':<16} {'n':>6} {'plain':>8} {'mtls':>8} {'tenant':>8} {'mtls/plain':>11} "
             f"{'tenant/plain':>13}"]  # fmt: skip
    for kind in KINDS:
        p50 = {row: statistics.median(rec.samples[kind]) for row, rec in got.items() if rec.samples.get(kind)}
        if len(p50) < len(ROWS):
            continue
        lines.append(f"{kind:<16} {len(got['tenant'].samples[kind]):>6} {p50['plain'] * 1e6:>8.0f} "
                     f"{p50['mtls'] * 1e6:>8.0f} {p50['tenant'] * 1e6:>8.0f} {p50['mtls'] / p50['plain']:>11.2f} "
                     f"{p50['tenant'] / p50['plain']:>13.2f}")  # fmt: skip
    lines.append(f"errors: {sum(rec.errors for rec in got.values())}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.secure``: the security table alone."""
    return run_alone(argv, module="bench.secure", doc=__doc__ or "", report="bench-secure",
                     table=lambda _args, trace, workdir: table(asyncio.run(measure(workdir, trace))))


if __name__ == "__main__":
    sys.exit(main())
