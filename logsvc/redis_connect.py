"""Turn a ``--redis`` URL into a client: one Redis, or the primary a set of Sentinels names.

Two kinds of URL:

* ``redis://``, ``rediss://``, ``unix://``: one server, as redis-py reads them.
* ``redis+sentinel://HOST:PORT,HOST:PORT,.../MASTER-NAME`` (``rediss+sentinel``
  for TLS to the data nodes): the Sentinels to ask, and the name they monitor
  the primary under. Each new connection asks them where the primary is, so
  after a failover the next connection goes to the promoted replica; a
  connection still open to a demoted primary gets READONLY, which closes it
  (redis-py's Sentinel connection) and is retried like any "not now" reply.

Either way the pool blocks at ``max_connections`` instead of failing, so a
burst queues (logsvc/store.py says why), and no retry happens inside redis-py:
the store's retries are the only ones, bounded by the request's budget.

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
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from dmulog.logs import event

__all__ = ["SENTINEL_SCHEMES", "SOCKET_TIMEOUT", "SentinelTarget", "connect", "connect_cluster", "parse_sentinel_url",
           "parse_startup_nodes"]

log = logging.getLogger("dmulog.logsvc.redis")

SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
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


def connect(url: str, *, max_connections: int) -> aioredis.Redis:
    """A client for ``url`` whose pool holds at most ``max_connections`` connections and waits beyond that."""
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        target = parse_sentinel_url(url)
        # Sentinels themselves are asked with short timeouts: one that does not
        # answer is skipped for the next.
        sentinel = Sentinel(list(target.sentinels),
                            sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0})  # fmt: skip
        return sentinel.master_for(target.master, connection_pool_class=_SentinelBlockingPool,
                                   max_connections=max_connections, timeout=None, ssl=target.tls,
                                   username=target.username, password=target.password,
                                   **_CONNECTION)  # fmt: skip
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=None, **_CONNECTION)
    return aioredis.Redis(connection_pool=pool)


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


def connect_cluster(nodes: str, *, max_connections: int) -> RedisCluster:
    """A Redis Cluster client from the startup nodes ``nodes``, ``max_connections`` (and spares) per node.

    ``require_full_coverage=False``: a slot table read while a shard is down
    (its slots unserved) is still used for the others; the servers' own
    ``cluster-require-full-coverage`` decides whether they answer meanwhile.
    """
    options = {k: v for k, v in _CONNECTION.items() if k not in ("retry", "retry_on_timeout")}
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in parse_startup_nodes(nodes)],
                        max_connections=max_connections + CLUSTER_SPARE_CONNECTIONS, retry=Retry(NoBackoff(), 0),
                        require_full_coverage=False, **options)  # fmt: skip
