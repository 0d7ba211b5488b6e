"""``dmulog bridge``: answer the kernel's dm-log-userspace requests through logsvc."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from dmulog.cli import Command, CommandError, ExitStatus, Option
from dmulog.metrics import add_metrics_option, metrics_listen
from dmulog.tls import add_tls_options, tls_files

__all__ = ["COMMAND"]


def _add(p: argparse.ArgumentParser, option: Option) -> None:
    option("--logsvc", None, "logsvc address: HOST:PORT or unix:/PATH (required)")
    option("--node", None, "this node's name (default: the host name)")
    add_tls_options(option, "logsvc")
    option("--tls-server-name", None, "name logsvc's certificate must carry, when --logsvc does not say it")
    option("--attempt-timeout", "3.0", "seconds one call to logsvc may take", type=float)
    option("--retry-budget", "9.0", "seconds to keep retrying an unreachable logsvc before answering the kernel",
           type=float)  # fmt: skip
    option("--journal-dir", "/run/dmulog/inflight",
           "where requests wait until answered, so a restarted bridge answers them (tmpfs; '' = none)")  # fmt: skip
    option("--health-socket", "/run/dmulog/health.sock",
           "Unix socket of the bridge's gRPC health service, for 'dmulog health --socket' ('' = none)")  # fmt: skip
    add_metrics_option(option)
    option("--latch-ttl", "1.0", "seconds the bridge answers IN_SYNC of an instance logsvc called latched "
           "before asking again (0 = always ask)", type=float)  # fmt: skip
    p.add_argument("--no-self-fence", dest="self_fence", action="store_false",
                   default=os.environ.get("DMULOG_SELF_FENCE", "1") not in ("", "0"),
                   help="do not suspend this node's mirrors when its lease is at risk (a deployment with external "
                   "fencing; docs/multi-node.md) [env DMULOG_SELF_FENCE=0]")  # fmt: skip
    p.add_argument("--respawn", action="store_true", default=os.environ.get("DMULOG_RESPAWN", "") not in ("", "0"),
                   help="hold the netlink socket in a small parent process and run the bridge as its child, "
                   "restarted at once if it dies; queued requests survive [env DMULOG_RESPAWN=1]")  # fmt: skip


def _run(args: argparse.Namespace, argv: Sequence[str], out: TextIO) -> ExitStatus:
    from bridge.agent import BridgeConfig, run
    from bridge.startup import MissingCapabilities, StartupError

    if not args.logsvc:
        raise CommandError(ExitStatus.USAGE, "dmulog bridge: --logsvc (or DMULOG_LOGSVC) is required")
    try:
        tls = tls_files(args, "bridge")
        metrics = metrics_listen(args, "bridge")
    except ValueError as e:
        raise CommandError(ExitStatus.USAGE, str(e)) from None
    try:
        if args.respawn and "LISTEN_FDS" not in os.environ:  # (a respawned bridge inherits the socket)
            from bridge.keeper import keep

            return ExitStatus(keep(["-m", "dmulog", *(a for a in argv if a != "--respawn")]))
        asyncio.run(run(BridgeConfig(logsvc=args.logsvc, node=args.node, attempt_timeout=args.attempt_timeout,
                                     budget=args.retry_budget, latch_ttl=args.latch_ttl, self_fence=args.self_fence,
                                     journal_dir=Path(args.journal_dir) if args.journal_dir else None,
                                     tls=tls, tls_server_name=args.tls_server_name,
                                     health_socket=Path(args.health_socket) if args.health_socket else None,
                                     metrics_listen=metrics)))  # fmt: skip
    except MissingCapabilities as e:
        raise CommandError(ExitStatus.PERMISSION, f"dmulog bridge: {e}") from None
    except StartupError as e:
        raise CommandError(ExitStatus.ERROR, f"dmulog bridge: {e}") from None
    return ExitStatus.OK


COMMAND = Command(
    name="bridge", order=2, help="answer the kernel's dm-log-userspace requests through logsvc",
    description="Own the kernel's NETLINK_CONNECTOR socket and forward every dm-log-userspace request to logsvc. "
    "Needs CAP_NET_ADMIN and CAP_SYS_ADMIN; one per host.",
    add=_add, run=_run,
)  # fmt: skip
