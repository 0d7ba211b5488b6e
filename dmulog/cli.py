"""The ``dmulog`` command: ``logsvc``, ``bridge`` and ``status``.

``main(argv, env)`` returns an ExitStatus and maps every expected failure to
one; ``sys.exit`` lives only in ``__main__``. Every option can also come from
an environment variable ``DMULOG_<OPTION>`` (the flag wins).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import grpc

from dmulog import logs

__all__ = ["ExitStatus", "main"]


class ExitStatus(enum.IntEnum):
    """Exit codes of ``dmulog``."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    UNAVAILABLE = 4
    MISSING_DEPENDENCY = 5
    PERMISSION = 6


def _default_state_dir(env: Mapping[str, str]) -> str:
    if os.geteuid() == 0:
        return "/var/lib/dmulog"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return str(Path(base) / "dmulog")


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def opt(p: argparse.ArgumentParser, flag: str, default: str | None, help: str, **kw: object) -> None:
        var = "DMULOG_" + flag.lstrip("-").replace("-", "_").upper()
        p.add_argument(flag, default=env.get(var, default), help=f"{help} [env {var}; default: %(default)s]", **kw)  # type: ignore[arg-type]

    parser = argparse.ArgumentParser(
        prog="dmulog",
        description="A durable, shared dirty log for device-mapper mirrors (dm-log-userspace).",
        epilog="Run a logsvc (state in Redis), a bridge on every node with mirrors, then "
        "create mirrors with a 'userspace' log. See README.md.",
    )
    opt(parser, "--log-level", "info", "debug, info, warning or error")
    opt(parser, "--log-format", "auto", "json, text, or auto (json unless stderr is a terminal)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("logsvc", help="serve the DirtyLog gRPC API with state in Redis",
                       description="Serve the DirtyLog gRPC API. Without --redis it starts and supervises "
                       "its own redis-server (AOF, appendfsync always) with data in --state-dir.")  # fmt: skip
    opt(p, "--listen", "127.0.0.1:7500", "address to serve on: HOST:PORT or unix:/PATH")
    opt(p, "--redis", None, "Redis URL (redis://, rediss://, unix://); unset = embedded redis-server")
    opt(p, "--state-dir", _default_state_dir(env), "data directory of the embedded redis-server")
    opt(p, "--key-prefix", "dmulog", "prefix of every Redis key")
    opt(p, "--redis-connections", "64", "Redis connections, so commands in flight, of this process; more requests "
        "wait for one", type=int)  # fmt: skip

    p = sub.add_parser("bridge", help="answer the kernel's dm-log-userspace requests through logsvc",
                       description="Own the kernel's NETLINK_CONNECTOR socket and forward every dm-log-userspace "
                       "request to logsvc. Needs CAP_NET_ADMIN and CAP_SYS_ADMIN; one per host.")  # fmt: skip
    opt(p, "--logsvc", None, "logsvc address: HOST:PORT or unix:/PATH (required)")
    opt(p, "--node", None, "this node's name (default: the host name)")
    opt(p, "--attempt-timeout", "3.0", "seconds one call to logsvc may take", type=float)
    opt(p, "--retry-budget", "9.0", "seconds to keep retrying an unreachable logsvc before answering the kernel",
        type=float)  # fmt: skip
    opt(p, "--journal-dir", "/run/dmulog/inflight",
        "where requests wait until answered, so a restarted bridge answers them (tmpfs; '' = none)")  # fmt: skip
    opt(p, "--latch-ttl", "1.0", "seconds the bridge answers IN_SYNC of an instance logsvc called latched "
        "before asking again (0 = always ask)", type=float)  # fmt: skip
    p.add_argument("--respawn", action="store_true", default=env.get("DMULOG_RESPAWN", "") not in ("", "0"),
                   help="hold the netlink socket in a small parent process and run the bridge as its child, "
                   "restarted at once if it dies; queued requests survive [env DMULOG_RESPAWN=1]")  # fmt: skip

    p = sub.add_parser("status", help="list logs, or show one log with a picture of its bitmap")
    p.add_argument("uuid", nargs="?", help="log UUID (omit to list every log)")
    opt(p, "--logsvc", "127.0.0.1:7500", "logsvc address: HOST:PORT or unix:/PATH")
    opt(p, "--width", "64", "cells per row of the bitmap picture", type=int)
    return parser


async def _status(args: argparse.Namespace, out: TextIO) -> ExitStatus:
    from dmulog import status_view
    from dmulog.log_state import read_log_state
    from dmulog.v1 import dmulog_pb2 as pb
    from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(args.logsvc) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        if args.uuid:
            state = await read_log_state(stub, args.uuid, timeout=60)
            out.write(status_view.render_log(state, width=max(8, args.width)) + "\n")
        else:
            listing = await stub.ListLogs(pb.ListLogsRequest(), timeout=30)
            out.write(status_view.render_list(list(listing.logs)) + "\n")
    return ExitStatus.OK


def _program(args: argparse.Namespace, out: TextIO, argv: Sequence[str]) -> ExitStatus:
    if args.command == "logsvc":
        from logsvc.server import LogsvcConfig, serve

        asyncio.run(serve(LogsvcConfig(listen=args.listen, redis_url=args.redis, state_dir=Path(args.state_dir),
                                       redis_connections=args.redis_connections,
                                       key_prefix=args.key_prefix)))  # fmt: skip
        return ExitStatus.OK
    if args.command == "bridge":
        from bridge.agent import BridgeConfig, run

        if not args.logsvc:
            raise _Usage("dmulog bridge: --logsvc (or DMULOG_LOGSVC) is required")
        if args.respawn and "LISTEN_FDS" not in os.environ:  # (a respawned bridge inherits the socket)
            from bridge.keeper import keep

            return ExitStatus(keep(["-m", "dmulog", *(a for a in argv if a != "--respawn")]))
        asyncio.run(run(BridgeConfig(logsvc=args.logsvc, node=args.node, attempt_timeout=args.attempt_timeout,
                                     budget=args.retry_budget, latch_ttl=args.latch_ttl,
                                     journal_dir=Path(args.journal_dir) if args.journal_dir else None)))  # fmt: skip
        return ExitStatus.OK
    return asyncio.run(_status(args, out))


class _Usage(Exception):
    pass


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, *,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> ExitStatus:  # fmt: skip
    """Run ``dmulog`` and return its exit status; all error handling is here."""
    env = os.environ if env is None else env
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = _parser(env).parse_args(argv)
    except SystemExit as e:
        return ExitStatus.OK if e.code == 0 else ExitStatus.USAGE
    logs.configure(args.log_level, args.log_format)
    from bridge.agent import StartupError
    from logsvc.embedded_redis import RedisNotInstalled, StateDirInUse
    from logsvc.errors import StoreUnavailable

    try:
        return _program(args, out, argv)
    except _Usage as e:
        err.write(f"{e}\n")
        return ExitStatus.USAGE
    except RedisNotInstalled as e:
        err.write(f"dmulog logsvc: {e}\n")
        return ExitStatus.MISSING_DEPENDENCY
    except StateDirInUse as e:
        err.write(f"dmulog logsvc: {e}\n")
        return ExitStatus.UNAVAILABLE
    except StoreUnavailable as e:
        err.write(f"dmulog {args.command}: {e}\n")
        return ExitStatus.UNAVAILABLE
    except StartupError as e:
        err.write(f"dmulog bridge: {e}\n")
        return ExitStatus.PERMISSION if "needs CAP" in str(e) else ExitStatus.ERROR
    except grpc.aio.AioRpcError as e:
        err.write(f"dmulog {args.command}: {e.code().name}: {e.details()}\n")
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return ExitStatus.NOT_FOUND
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ExitStatus.UNAVAILABLE
        return ExitStatus.ERROR
    except OSError as e:
        err.write(f"dmulog {args.command}: {e}\n")
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        return ExitStatus.OK


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
