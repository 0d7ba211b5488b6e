"""``dmulog status``: every log at a glance, or one log with a picture of its bitmap.

It needs nothing but the API, so it lives in the base package: an admin
machine can run it with neither a bridge nor a logsvc installed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any, TextIO

from dmulog.cli import Command, CommandError, ExitStatus, Option
from dmulog.tls import add_tls_options, channel_credentials, tls_files

__all__ = ["COMMAND"]


def _add(p: argparse.ArgumentParser, option: Option) -> None:
    p.add_argument("uuid", nargs="?", help="log UUID (omit to list every log)")
    option("--logsvc", "127.0.0.1:7500", "logsvc address: HOST:PORT or unix:/PATH")
    option("--width", "64", "cells per row of the bitmap picture", type=int)
    add_tls_options(option, "logsvc")
    option("--tls-server-name", None, "name logsvc's certificate must carry, when --logsvc does not say it")


async def _status(args: argparse.Namespace, out: TextIO) -> ExitStatus:
    import grpc

    from dmulog import status_view
    from dmulog.log_state import read_log_state
    from dmulog.v1 import dmulog_pb2 as pb
    from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

    try:
        files = tls_files(args, "status")
    except ValueError as e:
        raise CommandError(ExitStatus.USAGE, str(e)) from None
    if files is None:
        channel = grpc.aio.insecure_channel(args.logsvc)
    else:
        options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
        channel = grpc.aio.secure_channel(args.logsvc, channel_credentials(files.read()), options=options)
    async with channel:
        stub = pb_grpc.DirtyLogStub(channel)
        nodes = await _nodes(stub)
        if args.uuid:
            state = await read_log_state(stub, args.uuid, timeout=60)
            out.write(status_view.render_log(state, width=max(8, args.width), nodes=nodes) + "\n")
        else:
            listing = await stub.ListLogs(pb.ListLogsRequest(), timeout=30)
            out.write(status_view.render_list(list(listing.logs)) + "\n")
            out.write(status_view.render_nodes(nodes) + "\n")
    return ExitStatus.OK


async def _nodes(stub: Any) -> list[Any]:
    """Every node's lease; none from a logsvc that predates leases."""
    import grpc

    from dmulog.v1 import dmulog_pb2 as pb

    try:
        return list((await stub.ListNodes(pb.ListNodesRequest(), timeout=30)).nodes)
    except grpc.aio.AioRpcError as e:
        if e.code() == grpc.StatusCode.UNIMPLEMENTED:
            return []
        raise


def _run(args: argparse.Namespace, argv: Sequence[str], out: TextIO) -> ExitStatus:
    return asyncio.run(_status(args, out))


COMMAND = Command(
    name="status", order=3, help="list logs, or show one log with a picture of its bitmap",
    description="List every log, or show one log: its numbers, instances, marks and a picture of its bitmaps.",
    add=_add, run=_run,
)  # fmt: skip
