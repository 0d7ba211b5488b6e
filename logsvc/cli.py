"""``dmulog logsvc``: serve the DirtyLog API with state in Redis."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from dmulog.cli import Command, CommandError, ExitStatus, Option

__all__ = ["COMMAND"]


def _default_state_dir(env: Mapping[str, str]) -> str:
    if os.geteuid() == 0:
        return "/var/lib/dmulog"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return str(Path(base) / "dmulog")


def _add(p: argparse.ArgumentParser, option: Option) -> None:
    option("--listen", "127.0.0.1:7500", "address to serve on: HOST:PORT or unix:/PATH")
    option("--redis", None, "Redis URL: redis://, rediss://, unix://, or redis+sentinel://HOST:PORT,.../MASTER "
           "for the primary a set of Sentinels names; unset = embedded redis-server")  # fmt: skip
    option("--redis-cluster", None, "Redis Cluster startup nodes HOST:PORT,HOST:PORT,... (any of its nodes; the rest "
           "are discovered); instead of --redis")  # fmt: skip
    option("--state-dir", _default_state_dir(os.environ), "data directory of the embedded redis-server")
    option("--key-prefix", "dmulog", "prefix of every Redis key")
    option("--redis-connections", "64", "Redis connections, so commands in flight, of this process; more requests "
           "wait for one", type=int)  # fmt: skip
    option("--redis-durable-replicas", "0", "replicas that must have fsynced a mutating call (WAITAOF 1 N) before "
           "it is acknowledged; needs --redis or --redis-cluster on Redis or Valkey 7.2+ with appendonly yes",
           type=int)  # fmt: skip
    option("--lease-ttl", "10", "seconds a node's lease lasts unless its bridge renews it; when it expires, the "
           "node's marked regions are resynced by the others; 0 turns leases off", type=float)  # fmt: skip


def _run(args: argparse.Namespace, argv: Sequence[str], out: TextIO) -> ExitStatus:
    from logsvc.embedded_redis import RedisNotInstalled, StateDirInUse
    from logsvc.errors import StoreUnavailable
    from logsvc.server import LogsvcConfig, serve
    from logsvc.store import UnsupportedRedis

    if args.redis_durable_replicas < 0:
        raise CommandError(ExitStatus.USAGE, "dmulog logsvc: --redis-durable-replicas must be 0 or more")
    if args.redis is not None and args.redis_cluster is not None:
        raise CommandError(ExitStatus.USAGE, "dmulog logsvc: --redis and --redis-cluster exclude each other: "
                           "give one (a Cluster is --redis-cluster HOST:PORT,...)")  # fmt: skip
    if args.redis_cluster is not None:
        from logsvc.redis_connect import parse_startup_nodes

        try:
            parse_startup_nodes(args.redis_cluster)
        except ValueError as e:
            raise CommandError(ExitStatus.USAGE, f"dmulog logsvc: --redis-cluster: {e}") from None
    if args.redis_durable_replicas and args.redis is None and args.redis_cluster is None:
        raise CommandError(ExitStatus.USAGE, "dmulog logsvc: --redis-durable-replicas needs --redis: the embedded "
                           "redis-server has no replicas")  # fmt: skip
    config = LogsvcConfig(listen=args.listen, redis_url=args.redis, redis_cluster=args.redis_cluster,
                          state_dir=Path(args.state_dir), redis_connections=args.redis_connections,
                          key_prefix=args.key_prefix, lease_ttl=args.lease_ttl,
                          durable_replicas=args.redis_durable_replicas)  # fmt: skip
    try:
        asyncio.run(serve(config))
    except (RedisNotInstalled, UnsupportedRedis) as e:
        raise CommandError(ExitStatus.MISSING_DEPENDENCY, f"dmulog logsvc: {e}") from None
    except (StateDirInUse, StoreUnavailable) as e:
        raise CommandError(ExitStatus.UNAVAILABLE, f"dmulog logsvc: {e}") from None
    return ExitStatus.OK


COMMAND = Command(
    name="logsvc", order=1, help="serve the DirtyLog gRPC API with state in Redis",
    description="Serve the DirtyLog gRPC API. Without --redis it starts and supervises its own redis-server "
    "(AOF, appendfsync always) with data in --state-dir.",
    add=_add, run=_run,
)  # fmt: skip
