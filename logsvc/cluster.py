"""Commands of one log sent, in one pipeline on one connection, to the Cluster shard that owns the log.

Every key of a log shares its hash tag (logsvc/keys.py), so one slot, so one
shard: a Function call is atomic there. redis-py's cluster client routes a
lone FCALL by its first key, but not what must share its connection:

* WAIT and WAITAOF after a mutating call (store.Store._durably) wait for the
  connection's own last write, so they must follow the FCALL on the
  connection that sent it, to the shard that ran it; RedisCluster's pipeline
  sends keyless commands wherever it likes.
* ASKING, during a slot's migration, allows only the next command of its
  connection into the importing shard; redis-py's async client sends ASKING
  and the command as two commands, each on whichever free connection comes
  first, so under load the command can arrive without it (and bounce back
  with MOVED).

So :meth:`ClusterRoute.pipeline` takes one connection of the owning primary
(the client's slot table says which), sends ``[ASKING,] commands`` in one
write, and follows a MOVED (the slot table is patched) or an ASK (once, to the
node named) itself. A connection error or timeout marks the slot table stale,
so the next attempt reads it again from the cluster, and propagates to the
store's retries: a shard failing over answers nothing, then CLUSTERDOWN or
TRYAGAIN, which are retried like any "not now". Commands in flight are
bounded here (redis-py's per-node pools raise rather than wait when full).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

__all__ = ["REDIRECTS", "ClusterRoute", "Redirects"]

REDIRECTS: Final = 5
"""MOVED or ASK replies followed for one pipeline before it counts as a retryable failure (the slot is moving)."""
_UNREACHABLE: Final = (rexc.ConnectionError, rexc.TimeoutError, OSError)


@dataclass
class Redirects:
    """How many redirections this process followed: what a slot migration or a failover cost in round trips."""

    moved: int = 0
    asked: int = 0


class ClusterRoute:
    """Pipelines addressed by key to the primary that owns its slot; at most ``max_in_flight`` at a time."""

    def __init__(self, client: RedisCluster, max_in_flight: int):
        self._client = client
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.redirects = Redirects()

    @property
    def client(self) -> RedisCluster:
        """The redis-py cluster client whose slot table and node pools this uses."""
        return self._client

    def stale(self) -> None:
        """Read the slot table again before the next command (redis-py does so on its own connection errors)."""
        self._client._initialize = True  # redis-py's own flag, set the same way by its execute_command

    async def primaries(self) -> list[ClusterNode]:
        """Every primary of the slot table (read first if stale)."""
        await self._client.initialize()
        return self._client.get_primaries()

    async def on_each_primary(self, *command: Any) -> list[Any]:
        """``command`` on every primary, one after the other; the replies in that order."""
        replies = []
        for node in await self.primaries():
            replies.append(await self.on_node(node, *command))
        return replies

    async def on_one_primary(self, *command: Any) -> Any:
        """``command`` (one without keys) on the first primary of the slot table."""
        return await self.on_node((await self.primaries())[0], *command)

    async def on_node(self, node: ClusterNode, *command: Any) -> Any:
        """``command`` on ``node``, on one of its connections; a connection error marks the slot table stale."""
        (reply,) = await self._send(node, [command])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def pipeline(self, key: str | bytes, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies (an exception in place of an error reply) of ``commands``, sent together to ``key``'s shard.

        The first command is the one with ``key``; a MOVED or ASK in its place
        is followed (up to :data:`REDIRECTS` times), never returned.

        Raises:
            redis.exceptions.ConnectionError, TimeoutError: the shard did not answer (the slot table is stale now).
            redis.exceptions.TryAgainError: the slot kept moving for :data:`REDIRECTS` redirections.
        """
        asking: ClusterNode | None = None
        for _ in range(REDIRECTS):
            await self._client.initialize()
            node = asking or self._client.get_node_from_key(key)  # type: ignore[arg-type]
            if node is None:
                raise rexc.SlotNotCoveredError(f"no node serves the slot of {key!r}")
            prefix: list[Sequence[Any]] = [("ASKING",)] if asking is not None else []
            replies = (await self._send(node, [*prefix, *commands]))[len(prefix):]
            first = replies[0]
            if isinstance(first, rexc.MovedError):
                self.redirects.moved += 1
                await self._client.nodes_manager.move_slot(first)
                asking = None
            elif isinstance(first, rexc.AskError):
                self.redirects.asked += 1
                asking = self._client.get_node(host=first.host, port=first.port)
                if asking is None:  # a node the slot table does not know yet
                    self.stale()
                    raise rexc.TryAgainError(f"ASK to unknown node {first.host}:{first.port}")
            else:
                if isinstance(first, rexc.ClusterDownError):
                    self.stale()
                return replies
        raise rexc.TryAgainError(f"slot of {key!r} still moving after {REDIRECTS} redirections")

    async def _send(self, node: ClusterNode, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` on one connection of ``node``; a connection lost on the way is a ConnectionError.

        The other connections to a node that failed are left alone: each fails
        on its next use and is reconnected by redis-py then. Closing them here
        would race with commands that have just taken one from the pool.
        """
        batch = [PipelineCommand(i, *c) for i, c in enumerate(commands)]
        async with self._in_flight:
            try:
                await node.execute_pipeline(batch)
                # A reply unread (the connection dropped, or timed out) is in its place, not raised.
                lost = next((c.result for c in batch if isinstance(c.result, _UNREACHABLE)), None)
                if lost is not None:
                    raise lost
            except _UNREACHABLE:
                self.stale()
                raise
            except (AttributeError, TypeError) as e:
                if not _closed_under_us(e):
                    raise
                self.stale()
                raise rexc.ConnectionError(f"connection to {node.name} closed during the command ({e!r})") from e
        return [c.result for c in batch]


def _closed_under_us(e: BaseException) -> bool:
    """Whether ``e`` is redis-py or asyncio writing to a connection that was closed meanwhile.

    A topology refresh of redis-py closes the connections of a node that left
    the slot table, and a peer's reset tears down the transport; a command
    that had already taken such a connection then fails inside the library
    with ``'NoneType' object has no attribute 'writelines'`` (or a TypeError),
    not a ConnectionError (redis/redis-py#4287; 8.2 raises a ConnectionError on
    the write, which is retried as one already). Nothing was sent, or nothing
    can be read back: a connection error, retried like one. Raised anywhere
    else, the error is ours and propagates.
    """
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return "NoneType" in str(e) and any(part in where for part in ("/redis/", "/asyncio/"))
