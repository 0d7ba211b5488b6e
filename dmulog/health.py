"""``dmulog health``: one gRPC health Check of a logsvc or of a node's bridge; exit 0 only when SERVING.

It is what a Kubernetes exec probe runs: the kubelet's own gRPC probe speaks
no TLS, and logsvc with mTLS answers nothing but TLS. It lives in the base
package, like ``dmulog status``, so it needs neither part installed. Every
outcome that is not SERVING (NOT_SERVING, an unknown service, no answer)
exits 1 with the status printed: a probe only needs to tell ready from not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from typing import TextIO

from dmulog.cli import Command, CommandError, ExitStatus, Option
from dmulog.tls import add_tls_options, channel_credentials, tls_files

__all__ = ["COMMAND", "check"]


def _add(p: argparse.ArgumentParser, option: Option) -> None:
    option("--logsvc", "127.0.0.1:7500", "logsvc address: HOST:PORT or unix:/PATH")
    # The bridge's own variable: a bridge's pod has it set for both the bridge and this probe.
    p.add_argument("--socket", default=os.environ.get("DMULOG_HEALTH_SOCKET") or None,
                   help="check the bridge's health socket at this path instead of --logsvc "
                   "[env DMULOG_HEALTH_SOCKET]")  # fmt: skip
    option("--service", "", "health service name to check ('' = the whole server)")
    option("--timeout", "5.0", "seconds to wait for the answer", type=float)
    add_tls_options(option, "logsvc")
    option("--tls-server-name", None, "name logsvc's certificate must carry, when --logsvc does not say it")


async def check(target: str, service: str = "", *, timeout: float = 5.0,
                credentials: object | None = None, server_name: str | None = None) -> str:  # fmt: skip
    """The status name ``target`` answers for ``service``: SERVING, NOT_SERVING, NOT_FOUND, or UNREACHABLE (...)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)  # fmt: skip
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return "NOT_FOUND"
            return f"UNREACHABLE ({e.code().name}: {e.details()})"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _run(args: argparse.Namespace, argv: Sequence[str], out: TextIO) -> ExitStatus:
    if args.socket:
        target, credentials = f"unix:{args.socket}", None  # the bridge's socket: local, never TLS
    else:
        try:
            files = tls_files(args, "health")
        except ValueError as e:
            raise CommandError(ExitStatus.USAGE, str(e)) from None
        target, credentials = args.logsvc, channel_credentials(files.read()) if files is not None else None
    status = asyncio.run(check(target, args.service, timeout=args.timeout, credentials=credentials,
                               server_name=args.tls_server_name))  # fmt: skip
    out.write(f"{status}\n")
    return ExitStatus.OK if status == "SERVING" else ExitStatus.ERROR


COMMAND = Command(
    name="health", order=4, help="check a logsvc's or a bridge's health (exit 0 only when SERVING)",
    description="Ask a logsvc (--logsvc, with the TLS options) or this node's bridge (--socket) for its gRPC "
    "health status, print it, and exit 0 when it is SERVING, 1 otherwise: a Kubernetes exec probe.",
    add=_add, run=_run,
)  # fmt: skip
