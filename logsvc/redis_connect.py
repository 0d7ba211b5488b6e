"""Turn a ``--redis`` URL into a client: one Redis, or the primary a set of Sentinels names.

Two kinds of URL:

* ``redis://``, ``rediss://``, ``unix://``: one server, as redis-py reads them.
* ``redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER-NAME`` (``rediss+sentinel``
  for TLS to the Sentinels and the data nodes): the Sentinels to ask, and the name they monitor
  the primary under. Each new connection asks them where the primary is, so
  after a failover the next connection goes to the promoted replica; a
  connection still open to a demoted primary gets READONLY, which closes it
  (redis-py's Sentinel connection) and is retried like any "not now" reply.

Either way the pool blocks at ``max_connections`` instead of failing, so a
burst queues (logsvc/store.py says why), and no retry happens inside redis-py:
the store's retries are the only ones, bounded by the request's budget.

TLS and the ACL user (:class:`RedisSecurity`, from ``--redis-tls-*``,
``--redis-username`` and the password options) apply to every kind. TLS
always verifies the server: its certificate must chain to ``--redis-tls-ca``
(else the system's CAs) and name the host dialled, whatever a ``rediss://``
URL's query string says, because a logsvc that trusted any server would give
its password, and the kernel's marks, to whoever answers. With
``rediss+sentinel://`` the Sentinels are asked over TLS too, with the same
files: a Sentinel that answered in clear could name any primary. logsvc
sends the Sentinels no credentials (the ACL user is the data nodes'): a
Sentinel with ``requirepass`` or ACL users of its own is not supported, and
its ``tls-auth-clients yes`` with logsvc's client certificate is what keeps
strangers out there. A password given as a file is read again for every new
connection, so a rotated password is picked up without a restart: the
connections that exist keep the session they authenticated.

``--redis-cluster HOST:PORT,...`` is the third kind (:func:`connect_cluster`):
a Redis Cluster found from those startup nodes. redis-py's cluster client
follows MOVED and ASK itself (a redirection says where the command must go:
nothing ran), and with ``retries=0`` lets a connection error or timeout
through to the store's retries, marking its slot table stale so that the next
command reads it again. Its per-node pools fail rather than wait when full, so
logsvc/cluster.py bounds the commands in flight itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError

from dmulog.logs import event

__all__ = ["SENTINEL_SCHEMES", "SOCKET_TIMEOUT", "TLS_SCHEMES", "PasswordFile", "RedisSecurity", "SentinelTarget",
           "connect", "connect_cluster", "parse_sentinel_url", "parse_startup_nodes", "read_password_file",
           "url_password"]

log = logging.getLogger("dmulog.logsvc.redis")

SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
TLS_SCHEMES: Final = ("rediss", "rediss+sentinel")
SOCKET_TIMEOUT: Final = 3.0
"""Seconds a command may go unanswered before its connection is dropped. Longer than any command logsvc
sends (WAIT and WAITAOF: store.DURABLE_WAIT; XREAD: events.BLOCK_MS; a bulk step: about 20 ms), and no
longer, because it is what a frozen or partitioned primary costs each request sent to it before the
failover (tests/unit/test_redis_connect.py holds it to that)."""

_CONNECTION: Final[dict[str, Any]] = {
    "decode_responses": False,
    "socket_connect_timeout": 1.0,
    "socket_timeout": SOCKET_TIMEOUT,
    "retry_on_timeout": False,
    "retry": None,
    "health_check_interval": 0,
}


def read_password_file(path: Path) -> str:
    """The password in ``path``: its text without the line end an editor or ``echo`` leaves.

    Raises:
        OSError: it cannot be read.
        ValueError: it holds no password.
    """
    password = path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    if not password:
        raise ValueError(f"{path} is empty: it must hold the Redis password")
    return password


class PasswordFile(CredentialProvider):
    """Credentials whose password is read from a file each time a connection authenticates (so it may rotate)."""

    def __init__(self, username: str | None, path: Path):
        self.username = username
        self.path = path

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        """``(username, password)``, or ``(password,)`` for the default user.

        An unreadable file fails this connection as a connection error, which
        the store retries and reports as Redis unreachable, naming the file.
        """
        try:
            password = read_password_file(self.path)
        except (OSError, ValueError) as e:
            raise RedisConnectionError(f"cannot read the Redis password file: {e}") from None
        return (self.username, password) if self.username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        """As :meth:`get_credentials`: a few bytes from a local file, not worth a thread."""
        return self.get_credentials()


@dataclass(frozen=True)
class RedisSecurity:
    """TLS files and the ACL user logsvc connects to Redis with (README, "Redis security")."""

    tls_ca: Path | None = None
    """CA certificates the server's certificate must chain to; None: the system's."""
    tls_cert: Path | None = None
    """logsvc's client certificate, for a Redis with ``tls-auth-clients yes``."""
    tls_key: Path | None = None
    username: str | None = None
    """The ACL user; None: ``default`` (or the URL's user)."""
    password: str | None = None
    password_file: Path | None = None
    """Read at each new connection; wins over ``password``."""
    tls: bool = False
    """TLS with a Cluster, whose startup nodes have no scheme to say so (URLs say it with ``rediss``)."""

    def credentials(self, url_username: str | None = None) -> CredentialProvider | None:
        """What authenticates each new connection; None when nothing was given (no AUTH)."""
        username = self.username or url_username
        if self.password_file is not None:
            return PasswordFile(username, self.password_file)
        if self.password is not None:
            return _Static(username, self.password)
        return None

    def tls_options(self) -> dict[str, Any]:
        """redis-py's TLS settings: the files, and verification of the server that no URL can turn off."""
        options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        for name, value in (("ssl_ca_certs", self.tls_ca), ("ssl_certfile", self.tls_cert),
                            ("ssl_keyfile", self.tls_key)):  # fmt: skip
            if value is not None:
                options[name] = str(value)
        return options


class _Static(CredentialProvider):
    """A password known at start (``DMULOG_REDIS_PASSWORD``), kept out of the pool's repr."""

    def __init__(self, username: str | None, password: str):
        self.username = username
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        return (self.username, self._password) if self.username else (self._password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def url_password(url: str) -> bool:
    """Whether a ``--redis`` URL carries a password (which would then be on a command line, or in a manifest)."""
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The Sentinels and master name of a ``redis+sentinel://`` URL.

    Raises:
        ValueError: the URL names no Sentinel, or no master, or a port that is not a number.
    """
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"{url!r} is not a redis+sentinel:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for item in filter(None, hosts.split(",")):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"sentinel address {item!r} in {url!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    master = unquote(parts.path.strip("/"))
    if not sentinels:
        raise ValueError(f"{url!r} names no sentinel (redis+sentinel://HOST:PORT,.../MASTER-NAME)")
    if not master or "/" in master:
        raise ValueError(f"{url!r} names no master (redis+sentinel://HOST:PORT,.../MASTER-NAME)")
    return SentinelTarget(tuple(sentinels), master, parts.scheme.startswith("rediss"),
                          unquote(username) or None, unquote(password) or None)  # fmt: skip


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel-managed pool that waits for a free connection, and logs every change of primary."""

    async def get_master_address(self) -> Any:
        before = self.master_address
        address = await super().get_master_address()
        if before is not None and address != before:
            event(log, logging.WARNING, "redis_primary_changed", master=self.service_name,
                  old=f"{before[0]}:{before[1]}", new=f"{address[0]}:{address[1]}")  # fmt: skip
        return address


def connect(url: str, *, max_connections: int, security: RedisSecurity | None = None) -> aioredis.Redis:
    """A client for ``url`` whose pool holds at most ``max_connections`` connections and waits beyond that."""
    security = security or RedisSecurity()
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        target = parse_sentinel_url(url)
        tls = security.tls_options() if target.tls else {}
        auth = _auth(security, target.username, target.password)
        # Sentinels themselves are asked with short timeouts: one that does not
        # answer is skipped for the next.
        sentinel = Sentinel(list(target.sentinels),
                            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0,
                                             **({"ssl": True, **tls} if target.tls else {})})  # fmt: skip
        return sentinel.master_for(target.master, connection_pool_class=_SentinelBlockingPool,
                                   max_connections=max_connections, timeout=None, ssl=target.tls,
                                   **auth, **_CONNECTION, **tls)  # fmt: skip
    options = parse_url(url)
    username, password = options.pop("username", None), options.pop("password", None)
    tls = security.tls_options() if urlsplit(url).scheme == "rediss" else {}
    settings = {**_CONNECTION, **options, **_auth(security, username, password), **tls}  # the TLS checks win
    pool = BlockingConnectionPool(max_connections=max_connections, timeout=None, **settings)
    return aioredis.Redis(connection_pool=pool)


def _auth(security: RedisSecurity, username: str | None, password: str | None) -> dict[str, Any]:
    """Connection settings that authenticate: the security's credentials, else the URL's own (tests, libraries)."""
    provider = security.credentials(username)
    if provider is not None:
        return {"credential_provider": provider}
    return {"username": username, "password": password}


def parse_startup_nodes(nodes: str) -> tuple[tuple[str, int], ...]:
    """The startup nodes of a ``--redis-cluster`` value: ``HOST:PORT,HOST:PORT,...`` (IPv6 in brackets).

    Raises:
        ValueError: it names no node, or an item is not HOST:PORT.
    """
    found = []
    for item in filter(None, (part.strip() for part in nodes.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not host.strip("[]") or any(c in host for c in "/@"):
            raise ValueError(f"cluster node {item!r} in {nodes!r} is not HOST:PORT (a list of them, not a URL)")
        found.append((host.strip("[]"), int(port)))
    if not found:
        raise ValueError(f"{nodes!r} names no cluster node (HOST:PORT,HOST:PORT,...)")
    return tuple(found)


CLUSTER_SPARE_CONNECTIONS: Final = 4
"""Connections per Cluster node beyond the Function calls' bound, for the few commands outside it.

logsvc/cluster.py bounds the Function calls in flight at ``max_connections``,
and they may all go to one shard; the event stream's blocking XREAD and the
reaper's commands take a connection of the same node's pool, which raises
rather than waits when full. These spares keep them from failing then.
"""


def connect_cluster(nodes: str, *, max_connections: int, security: RedisSecurity | None = None) -> RedisCluster:
    """A Redis Cluster client from the startup nodes ``nodes``, ``max_connections`` (and spares) per node.

    ``require_full_coverage=False``: a slot table read while a shard is down
    (its slots unserved) is still used for the others; the servers' own
    ``cluster-require-full-coverage`` decides whether they answer meanwhile.
    With ``security.tls`` every node is dialled over TLS at the address the
    slot table gives, so each node's certificate must name that address.
    """
    security = security or RedisSecurity()
    options = {k: v for k, v in _CONNECTION.items() if k not in ("retry", "retry_on_timeout")}
    provider = security.credentials()
    if provider is not None:
        options["credential_provider"] = provider
    if security.tls:
        options.update(ssl=True, **security.tls_options())
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in parse_startup_nodes(nodes)],
                        max_connections=max_connections + CLUSTER_SPARE_CONNECTIONS, retry=Retry(NoBackoff(), 0),
                        require_full_coverage=False, **options)  # fmt: skip
