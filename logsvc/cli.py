"""``dmulog logsvc``: serve the DirtyLog API with state in Redis."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dmulog.cli import Command, CommandError, ExitStatus, Option
from dmulog.metrics import add_metrics_option, metrics_listen
from dmulog.tls import add_tls_options, tls_files

if TYPE_CHECKING:
    from logsvc.redis_connect import RedisSecurity

__all__ = ["COMMAND"]


def _default_state_dir(env: Mapping[str, str]) -> str:
    if os.geteuid() == 0:
        return "/var/lib/dmulog"
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return str(Path(base) / "dmulog")


def loopback(listen: str) -> bool:
    """Whether ``listen`` (``HOST:PORT`` or ``unix:PATH``) is reachable only from this machine."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class _Hidden:
    """A secret from the environment: ``--help`` says whether it is set, never what it is."""

    def __init__(self, value: str | None):
        self.value = value

    def __str__(self) -> str:
        return "(set)" if self.value else "unset"


class _FromEnvironmentOnly(argparse.Action):
    """``--redis-password`` exists only to be refused: a command line is readable by every user of the host."""

    def __init__(self, option_strings: Sequence[str], dest: str, default: Any = None, **kw: Any):
        super().__init__(option_strings, dest, default=_Hidden(default), **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        parser.error(f"{option_string} is not taken on the command line, where every user of the host can read "
                     "it: put the password in a file (--redis-password-file PATH) or in DMULOG_REDIS_PASSWORD")


def _add(p: argparse.ArgumentParser, option: Option) -> None:
    option("--listen", "127.0.0.1:7500", "address to serve on: HOST:PORT or unix:/PATH")
    option("--redis", None, "Redis URL: redis://, rediss://, unix://, or redis+sentinel://HOST:PORT,.../MASTER "
           "for the primary a set of Sentinels names; unset = embedded redis-server")  # fmt: skip
    option("--redis-cluster", None, "Redis Cluster startup nodes HOST:PORT,HOST:PORT,... (any of its nodes; the rest "
           "are discovered); instead of --redis")  # fmt: skip
    option("--redis-tls-ca", None, "CA certificates (PEM) the Redis server's certificate must chain to, for rediss://, "
           "rediss+sentinel:// (Sentinels too) and --redis-cluster; unset = the system's CAs")  # fmt: skip
    option("--redis-tls-cert", None, "client certificate (PEM) for a Redis that asks for one (tls-auth-clients); "
           "with --redis-tls-key")  # fmt: skip
    option("--redis-tls-key", None, "private key (PEM) of --redis-tls-cert")
    option("--redis-tls", None, "1: TLS to every --redis-cluster node (a URL says it with rediss://); on when any "
           "--redis-tls-* file is given")  # fmt: skip
    option("--redis-username", None, "Redis ACL user (README, Redis security); unset = default")
    option("--redis-password-file", None, "file whose content (one trailing newline dropped) is the Redis password; "
           "read again at each new connection, so it may rotate")  # fmt: skip
    option("--redis-password", None, "not on the command line: set the environment variable", metavar="ENV-ONLY",
           action=_FromEnvironmentOnly)  # fmt: skip
    option("--state-dir", _default_state_dir(os.environ), "data directory of the embedded redis-server")
    option("--key-prefix", "dmulog", "prefix of every Redis key")
    option("--redis-connections", "64", "Redis connections, so commands in flight, of this process; more requests "
           "wait for one", type=int)  # fmt: skip
    option("--redis-durable-replicas", "0", "replicas that must have fsynced a mutating call (WAITAOF 1 N) before "
           "it is acknowledged; needs --redis or --redis-cluster on Redis or Valkey 7.2+ with appendonly yes",
           type=int)  # fmt: skip
    add_tls_options(option, "every client (bridge, dmulog status)")
    option("--auth-policy", None, "TOML file of [[grant]] san/role lines mapping client certificates to roles "
           "(with TLS; unset = the default policy, README 'Security')")  # fmt: skip
    p.add_argument("--insecure", action="store_true",
                   default=os.environ.get("DMULOG_INSECURE", "") not in ("", "0"),
                   help="allow plaintext on a --listen address that is not loopback or a Unix socket: anyone who "
                   "reaches it can act as any node [env DMULOG_INSECURE=1]")  # fmt: skip
    add_metrics_option(option)
    option("--lease-ttl", "10", "seconds a node's lease lasts unless its bridge renews it; when it expires, the "
           "node's marked regions are resynced by the others; 0 turns leases off", type=float)  # fmt: skip


def _run(args: argparse.Namespace, argv: Sequence[str], out: TextIO) -> ExitStatus:
    from redis.exceptions import NoPermissionError

    from logsvc.access import Policy, PolicyError
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
    try:
        tls = tls_files(args, "logsvc")
        metrics = metrics_listen(args, "logsvc")
    except ValueError as e:
        raise CommandError(ExitStatus.USAGE, str(e)) from None
    try:
        policy = Policy.load(Path(args.auth_policy)) if args.auth_policy else None
    except PolicyError as e:
        raise CommandError(ExitStatus.USAGE, f"dmulog logsvc: --auth-policy {e}") from None
    if policy is not None and tls is None:
        raise CommandError(ExitStatus.USAGE, "dmulog logsvc: --auth-policy needs TLS (--tls-cert, --tls-key, "
                           "--tls-ca): without certificates there is no identity to apply it to")  # fmt: skip
    if tls is None and not args.insecure and not loopback(args.listen):
        raise CommandError(ExitStatus.USAGE, f"dmulog logsvc: refusing plaintext on {args.listen}, which is not "
                           "loopback: give --tls-cert, --tls-key and --tls-ca, or --insecure to accept that anyone "
                           "who reaches it can act as any node")  # fmt: skip
    security = _redis_security(args)
    config = LogsvcConfig(listen=args.listen, redis_url=args.redis, redis_cluster=args.redis_cluster,
                          state_dir=Path(args.state_dir), redis_connections=args.redis_connections,
                          key_prefix=args.key_prefix, lease_ttl=args.lease_ttl,
                          durable_replicas=args.redis_durable_replicas, tls=tls, policy=policy,
                          redis_security=security, metrics_listen=metrics)  # fmt: skip
    try:
        asyncio.run(serve(config))
    except (RedisNotInstalled, UnsupportedRedis) as e:
        raise CommandError(ExitStatus.MISSING_DEPENDENCY, f"dmulog logsvc: {e}") from None
    except (StateDirInUse, StoreUnavailable) as e:
        raise CommandError(ExitStatus.UNAVAILABLE, f"dmulog logsvc: {e}") from None
    except NoPermissionError as e:
        raise CommandError(ExitStatus.PERMISSION, f"dmulog logsvc: Redis refused a command to user "
                           f"{(security and security.username) or 'default'}: {e} (the ACL logsvc needs: "
                           "README, Redis security)") from None  # fmt: skip
    return ExitStatus.OK


def _usage(message: str) -> CommandError:
    return CommandError(ExitStatus.USAGE, f"dmulog logsvc: {message}")


def _readable(flag: str, value: str) -> Path:
    """The file a flag names, refused now rather than at the first connection, deep in a TLS handshake."""
    path = Path(value)
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise _usage(f"{flag} {value}: {e.strerror or e}") from None
    return path


def _redis_security(args: argparse.Namespace) -> RedisSecurity | None:
    """The TLS files and ACL user from the options, each checked; None for the embedded Redis, which needs none.

    A password in the ``--redis`` URL is refused: a URL ends up on command
    lines, in process listings and in manifests; the file or the variable keep
    it out of them.
    """
    from logsvc.redis_connect import SENTINEL_SCHEMES, TLS_SCHEMES, RedisSecurity, read_password_file, url_password

    tls_files = {"--redis-tls-ca": args.redis_tls_ca, "--redis-tls-cert": args.redis_tls_cert,
                 "--redis-tls-key": args.redis_tls_key}  # fmt: skip
    given = {flag: value for flag, value in tls_files.items() if value}
    password_env = args.redis_password.value
    external = args.redis is not None or args.redis_cluster is not None
    if not external:
        if given or args.redis_username or args.redis_password_file or password_env or args.redis_tls:
            raise _usage("--redis-tls-*, --redis-username and a Redis password are for --redis or --redis-cluster: "
                         "the embedded redis-server listens on a private Unix socket")  # fmt: skip
        return None
    if args.redis is not None:
        if url_password(args.redis):
            raise _usage("--redis: the URL carries a password, which would be readable in process listings: "
                         "leave it out and put it in a file (--redis-password-file PATH) or in DMULOG_REDIS_PASSWORD")
        scheme = args.redis.partition("://")[0].lower()
        if (given or args.redis_tls) and scheme not in TLS_SCHEMES:
            raise _usage(f"--redis-tls-* need a TLS URL (rediss:// or rediss+sentinel://), not {scheme}://")
        if scheme in SENTINEL_SCHEMES:
            from logsvc.redis_connect import parse_sentinel_url

            try:
                parse_sentinel_url(args.redis)
            except ValueError as e:
                raise _usage(f"--redis: {e}") from None
    if bool(args.redis_tls_cert) != bool(args.redis_tls_key):
        raise _usage("--redis-tls-cert and --redis-tls-key go together: a client certificate needs its key")
    paths = {flag: _readable(flag, value) for flag, value in given.items()}
    if args.redis_password_file and password_env:
        raise _usage("--redis-password-file and DMULOG_REDIS_PASSWORD exclude each other: give one")
    password_file = None
    if args.redis_password_file:
        password_file = _readable("--redis-password-file", args.redis_password_file)
        try:
            read_password_file(password_file)
        except (OSError, ValueError) as e:
            raise _usage(f"--redis-password-file: {e}") from None
    if args.redis_tls not in (None, "", "0", "1"):
        raise _usage(f"--redis-tls is 0 or 1, not {args.redis_tls!r}")
    return RedisSecurity(tls_ca=paths.get("--redis-tls-ca"), tls_cert=paths.get("--redis-tls-cert"),
                         tls_key=paths.get("--redis-tls-key"), username=args.redis_username or None,
                         password=password_env or None, password_file=password_file,
                         tls=args.redis_cluster is not None and (bool(given) or args.redis_tls == "1"))  # fmt: skip


COMMAND = Command(
    name="logsvc", order=1, help="serve the DirtyLog gRPC API with state in Redis",
    description="Serve the DirtyLog gRPC API. Without --redis it starts and supervises its own redis-server "
    "(AOF, appendfsync always) with data in --state-dir.",
    add=_add, run=_run,
)  # fmt: skip
