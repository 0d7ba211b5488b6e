"""The only module that talks to Redis.

Each kernel request becomes one Function call (FCALL, or FCALL_RO for reads)
of the library in lua/dmulog.lua, so each request is one atomic step and any
logsvc replica can serve any request. The library is loaded at start-up with
FUNCTION LOAD REPLACE: Redis persists functions with the data set (unlike
EVAL's script cache), and a Redis that lost them gets them again on the first
"Function not found".

Four things travel with every call besides the request:

* **Bulk work.** No Function call passes over more than a bounded slice of a
  log (the library's header says how), so one mirror's 2^28-region CTR or a
  node's 262,144 marks never stall every other mirror. A call that finds its
  log with bulk work pending answers ESTEP; the store then runs
  ``dmulog_v4_step`` on that log until nothing is pending and asks again.
* **The deadline.** A request abandoned by its caller (``serve_one`` sets
  :data:`REQUEST_DEADLINE`) must never be carried out after logsvc answered it
  DEADLINE_EXCEEDED: a late CLEAR would drop a newer mark. Cancelling the
  coroutine cannot unsend a command Redis has not run yet (a frozen Redis runs
  it when it wakes), so the Function itself refuses to run past the deadline,
  read on Redis's own clock: the store converts it with an offset it measures
  with TIME, and moves it :data:`DEADLINE_MARGIN` earlier so a command still
  running when the answer leaves has started before it.
* **The generation seen.** The caller says which generation of the log its
  node was last answered (lua/dmulog.lua, "Generations"); a log below it lost
  writes in a failover, and its Function answers ELOST rather than from that
  state. The store then calls ``lost`` (every region out of sync), logs
  ``log_lost_writes`` and asks again.
* **Bounded concurrency.** At most ``max_connections`` commands are in flight
  per process; more wait for a connection (a blocking pool) instead of failing,
  so a burst of requests queues and no request fails for a reason that is not
  an outage.

On a Redis Cluster (``Store.from_cluster``) every Function call goes to the
shard that owns its log's slot, with its WAIT and WAITAOF on the same
connection (logsvc/cluster.py); the library is loaded on every primary,
ListLogs scans every primary, and the few commands without a key (TIME, INFO,
the WAITAOF probe, CONFIG GET) go to one primary, taken to speak for all.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster

from dmulog.logs import event
from dmulog.retry import RetryPolicy
from logsvc.cluster import ClusterRoute
from logsvc.errors import LogError, LostWrites, PendingWork, StoreUnavailable, TooLarge, from_lua_error
from logsvc.keys import DEFAULT_PREFIX, log_key_pattern, log_keys, uuid_from_log_key
from logsvc.redis_connect import RedisSecurity, connect, connect_cluster
from logsvc.snapshot import log_state

if TYPE_CHECKING:
    from logsvc.metrics import LogsvcMetrics

__all__ = [
    "CALLER_ARGS",
    "DEADLINE_MARGIN",
    "DURABLE_WAIT",
    "FUNCTION_PREFIX",
    "LIBRARY_NAME",
    "MAX_CONNECTIONS",
    "MAX_STATE_MESSAGE",
    "REQUEST_DEADLINE",
    "STATE_PIECE",
    "Caller",
    "Store",
    "UnsupportedRedis",
    "library_code",
    "text",
]

LIBRARY_NAME: Final = "dmulog_v1"
FUNCTION_PREFIX: Final = "dmulog_v4_"
CALLER_ARGS: Final = 6
"""Arguments before a kernel request's own: node, boot id, luid, deadline, epoch, generation seen."""
MAX_CONNECTIONS: Final = 64
"""Redis connections (so commands in flight) per logsvc process, by default."""
DEADLINE_MARGIN: Final = 0.05
"""Seconds before its answer time that a request's Function stops being allowed to run."""
MAX_STATE_MESSAGE: Final = 4 * 1024 * 1024
"""Bytes of the largest GetLogState answer: a client's default receive limit in every gRPC implementation.

A larger answer would reach a client with default settings as RESOURCE_EXHAUSTED "received message
larger than max" and nothing to tell it what to do instead; refused here, it says: ReadLogState."""
STATE_PIECE: Final = 1 << 18
"""Bytes of bitmap read per command (and per ReadLogState message) when a log is too large for one call."""
STEP_PAUSE: Final = 0.001
"""Seconds between two bulk-work steps of one log (see :meth:`Store.finish_jobs`)."""
DURABLE_WAIT: Final = 2.0
"""Seconds a mutating call waits at most for WAITAOF (less when the request's deadline is nearer)."""
_CLOCK_REFRESH: Final = 30.0

REQUEST_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("dmulog_request_deadline",
                                                                               default=None)  # fmt: skip
"""``time.monotonic()`` by which the current request is answered, if it has a deadline."""

Caller = tuple[str, str, str, int]
"""(node name, boot id, luid as a decimal string, lease epoch): who sends a kernel request."""

log = logging.getLogger("dmulog.logsvc.store")


def text(value: Any) -> str:
    """A Redis reply as text: the client keeps replies as bytes (bitmaps are binary)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def library_code(name: str = "dmulog") -> str:
    """Source of a Redis Function library shipped with this package: ``dmulog`` (logs), ``leases``, ``tenants``."""
    return resources.files("logsvc").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")


LIBRARIES: Final = ("dmulog", "leases", "tenants")
"""Every Function library logsvc loads."""


_UNREACHABLE = (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, TimeoutError)


# Replies that say "not now" rather than "no": a Redis loading its data
# (BusyLoadingError, a ConnectionError), a cluster slot moving (TRYAGAIN), a
# primary without its replicas (MASTERDOWN), a server demoted to replica in a
# failover (READONLY). redis-py strips the word from the message and raises
# these classes, so they are told apart by class.
_NOT_NOW = (rexc.TryAgainError, rexc.MasterDownError, rexc.ReadOnlyError)


def _no_replicas(e: BaseException) -> bool:
    """A primary that ``min-replicas-to-write`` stops from writing (it lost its replicas, e.g. partitioned)."""
    return isinstance(e, rexc.ResponseError) and str(e).startswith("NOREPLICAS")


# What a Cluster says while a shard fails over or a slot moves (CLUSTERDOWN; redis-py's "TTL exhausted"
# after too many redirections; a slot no node serves in the client's table; a MOVED or ASK that
# logsvc/cluster.py gave up following): "not now" there, and never sent by a server outside a Cluster.
_CLUSTER_NOT_NOW = (rexc.ClusterError, rexc.SlotNotCoveredError, rexc.AskError)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, (*_UNREACHABLE, *_NOT_NOW)) or _no_replicas(e)


def _retryable_in_cluster(e: BaseException) -> bool:
    return _retryable(e) or isinstance(e, _CLUSTER_NOT_NOW)


def _unavailable(e: BaseException) -> StoreUnavailable:
    """What a retryable failure becomes once the budget is spent."""
    if isinstance(e, (*_NOT_NOW, *_CLUSTER_NOT_NOW)) or _no_replicas(e):
        return StoreUnavailable(f"redis not ready: {e}")
    return StoreUnavailable(f"redis unreachable: {e}")


class UnsupportedRedis(RuntimeError):
    """The Redis we were given cannot do what logsvc was told to ask of it (e.g. WAITAOF)."""


class Store:
    """Function calls against one Redis (or Redis-compatible) endpoint, or a Redis Cluster."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str = DEFAULT_PREFIX,
                 retry: RetryPolicy | None = None, durable_replicas: int = 0,
                 max_connections: int = MAX_CONNECTIONS):  # fmt: skip
        if durable_replicas < 0:
            raise ValueError(f"durable replicas must be 0 or more, not {durable_replicas}")
        self._redis = client
        self._cluster = ClusterRoute(client, max_connections) if isinstance(client, RedisCluster) else None
        self._not_now = _NOT_NOW if self._cluster is None else (*_NOT_NOW, *_CLUSTER_NOT_NOW)
        self._retryable = _retryable if self._cluster is None else _retryable_in_cluster
        self._durable_replicas = durable_replicas
        self._prefix = prefix
        self._retry = dataclasses.replace(retry or RetryPolicy(budget=2.5), on_retry=self._retried)
        self.metrics: LogsvcMetrics | None = None
        """What the server of this store counts into (``build_server`` sets it); None: nothing is counted.
        Kept here because everything that counts (the service, leases, the reaper, health) holds the store."""
        self._offset = 0.0  # Redis's wall clock minus ours, in seconds
        self._offset_at = float("-inf")
        self._clock_task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, retry: RetryPolicy | None = None,
                 max_connections: int = MAX_CONNECTIONS, durable_replicas: int = 0,
                 security: RedisSecurity | None = None) -> Store:  # fmt: skip
        """Client for a ``--redis`` URL (logsvc/redis_connect.py); retries are ours, not redis-py's."""
        return cls(connect(url, max_connections=max_connections, security=security), prefix=prefix, retry=retry,
                   durable_replicas=durable_replicas)  # fmt: skip

    @classmethod
    def from_cluster(cls, nodes: str, *, prefix: str = DEFAULT_PREFIX, retry: RetryPolicy | None = None,
                     max_connections: int = MAX_CONNECTIONS, durable_replicas: int = 0,
                     security: RedisSecurity | None = None) -> Store:  # fmt: skip
        """Client for a ``--redis-cluster HOST:PORT,...`` value: ``max_connections`` per node and in flight."""
        return cls(connect_cluster(nodes, max_connections=max_connections, security=security), prefix=prefix,
                   retry=retry,
                   durable_replicas=durable_replicas, max_connections=max_connections)  # fmt: skip

    def _retried(self, e: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.redis_retry(isinstance(e, _UNREACHABLE))

    def _gave_up(self, e: BaseException) -> StoreUnavailable:
        """What a retryable failure becomes once the budget is spent, counted."""
        if self.metrics is not None:
            self.metrics.redis_unavailable.inc()
        return _unavailable(e)

    @property
    def prefix(self) -> str:
        """The prefix of every key."""
        return self._prefix

    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        """The underlying client (admin helpers and tests): commands with a key route themselves in a Cluster."""
        return self._redis

    @property
    def cluster(self) -> ClusterRoute | None:
        """The Cluster routing, or None outside a Cluster."""
        return self._cluster

    @property
    def durable_replicas(self) -> int:
        """Replicas that must have fsynced a mutating call's writes before it is acknowledged."""
        return self._durable_replicas

    async def load_library(self) -> None:
        """Install or upgrade the Function library; idempotent. Also reads Redis's clock.

        Raises:
            UnsupportedRedis: durable replicas were asked for and Redis cannot give them.
        """
        try:
            await self._retry.run(self._load_libraries, is_retryable=self._retryable)
            await self._retry.run(self.measure_clock, is_retryable=self._retryable)
            if self._durable_replicas:
                await self._retry.run(self._check_waitaof, is_retryable=self._retryable)
        except (*_UNREACHABLE, *self._not_now) as e:
            raise _unavailable(e) from e

    async def _keyless(self, *command: Any) -> Any:
        """A command without a key: to the one Redis, or in a Cluster to one primary (it speaks for all)."""
        if self._cluster is not None:
            return await self._cluster.on_one_primary(*command)
        return await self._redis.execute_command(*command)

    async def _check_waitaof(self) -> None:
        """Refuse to start, rather than acknowledge marks no replica holds, when WAITAOF cannot work.

        In a Cluster this asks one primary: the shards are expected to run one
        version with one configuration; a shard that does not is caught on its
        first mutating call, which then answers "redis cannot confirm durability".
        """
        info = await self._keyless("INFO", "server")
        server = "valkey" if "valkey_version" in info else "redis"
        version = text(info.get("valkey_version") or info.get("redis_version") or "?")
        try:
            await self._keyless("WAITAOF", 0, 0, 1)  # asks for nothing: answers at once where it exists
        except rexc.ResponseError as e:
            raise UnsupportedRedis(f"--redis-durable-replicas {self._durable_replicas} needs WAITAOF, which "
                                   f"Redis 7.2+ and Valkey 7.2+ have; this is {server} {version} ({e})") from None
        try:
            await self._keyless("WAITAOF", 1, 0, 100)
        except rexc.ResponseError as e:
            raise UnsupportedRedis(f"--redis-durable-replicas needs appendonly yes on the primary: {e}") from None

    async def _load_libraries(self) -> None:
        """FUNCTION LOAD REPLACE of every library: on the one Redis, or on every primary of the Cluster.

        A Cluster's primaries do not share functions (a replica gets its
        primary's); a primary added later, or one that lost them, answers
        "Function not found" and :meth:`fcall` loads them everywhere again.
        """
        for name in LIBRARIES:
            if self._cluster is not None:
                await self._cluster.on_each_primary("FUNCTION LOAD", "REPLACE", library_code(name))
            else:
                await self._redis.function_load(library_code(name), replace=True)

    async def config_get(self, pattern: str) -> dict[Any, Any]:
        """CONFIG GET ``pattern``; in a Cluster, of one primary (the shards are expected to agree)."""
        reply = await self._keyless("CONFIG GET", pattern)
        return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))

    async def close(self) -> None:
        """Close the connection pool."""
        if self._clock_task is not None:
            self._clock_task.cancel()
        await self._redis.aclose()

    async def measure_clock(self) -> None:
        """Measure how far Redis's clock is from ours (TIME, halfway through the round trip).

        In a Cluster, one primary's clock stands for every shard's: they are
        expected to be NTP-synchronised, and :data:`DEADLINE_MARGIN` covers the rest.
        """
        before = time.time()
        seconds, micros = await self._keyless("TIME")
        after = time.time()
        self._offset = int(seconds) + int(micros) / 1e6 - (before + after) / 2
        self._offset_at = time.monotonic()

    def _redis_deadline(self) -> int:
        """The current request's deadline on Redis's clock, in µs; 0 when it has none."""
        deadline = REQUEST_DEADLINE.get()
        if deadline is None:
            return 0
        now = time.monotonic()
        if now - self._offset_at > _CLOCK_REFRESH and (self._clock_task is None or self._clock_task.done()):
            self._clock_task = asyncio.ensure_future(self._refresh_clock())
        left = deadline - now
        margin = min(DEADLINE_MARGIN, left / 2) if left > 0 else 0.0
        return max(1, int((time.time() + left - margin + self._offset) * 1e6))

    async def _refresh_clock(self) -> None:
        try:
            await self.measure_clock()
        except (*_UNREACHABLE, rexc.RedisError) as e:
            event(log, logging.WARNING, "redis_clock_unmeasured", detail=str(e))

    async def call(self, op: str, uuid: str, caller: Caller, args: Sequence[str | int | bytes] = (), *,
                   readonly: bool = False) -> Any:  # fmt: skip
        """The reply of :meth:`answer` without its generation."""
        reply, _ = await self.answer(op, uuid, caller, args, readonly=readonly)
        return reply

    async def answer(self, op: str, uuid: str, caller: Caller, args: Sequence[str | int | bytes] = (), *,
                     readonly: bool = False, seen: int = 0) -> tuple[Any, int]:  # fmt: skip
        """Run the kernel-request function ``dmulog_v4_<op>`` on the log ``uuid`` for ``caller``.

        ``seen`` is the generation of the log the caller's node was last
        answered (0: none known). Returns the reply and the log's generation
        for the node after it.

        Raises the LogError the function's error word names, or
        StoreUnavailable when Redis stayed unreachable for the whole budget.
        """
        node, boot, luid, epoch = caller
        while True:
            argv = [node, boot, luid, self._redis_deadline(), epoch, seen, *args]
            try:
                reply, generation = await self._fcall(op, uuid, argv, readonly)
                return reply, int(generation)
            except PendingWork:
                await self.finish_jobs(uuid)
            except LostWrites as e:
                await self._lost(uuid, node, seen, str(e))

    async def _lost(self, uuid: str, node: str, seen: int, detail: str) -> None:
        """The log lost writes ``node`` was answered: every region out of sync (lua/dmulog.lua ``lost``)."""
        done, had, pending = await self._fcall("lost", uuid, (node, seen), False)
        if done:
            event(log, logging.ERROR, "log_lost_writes", node=node, answered=seen, found=int(had),
                  consequence="every region of the log is out of sync and will be resynced", detail=detail)  # fmt: skip
        if pending:
            await self.finish_jobs(uuid)

    async def admin(self, op: str, uuid: str, args: Sequence[str | int | bytes] = ()) -> Any:
        """Run the read-only admin function ``dmulog_v4_<op>`` (no caller, no deadline) on the log ``uuid``."""
        return await self._fcall(op, uuid, args, True)

    async def finish_jobs(self, uuid: str) -> int:
        """Run the log's bulk work to its end, one bounded Function call at a time; how many calls.

        Between two calls the store pauses a moment: a request that reached this
        process during a step is then sent to Redis before the next step, instead of
        waiting behind all of them.
        """
        steps = 1
        while await self._fcall("step", uuid, (), False):
            steps += 1
            await asyncio.sleep(STEP_PAUSE)
        return steps

    async def expire_node(self, uuid: str, node: str, epoch: int) -> int:
        """Hand over the log ``uuid`` from an expired incarnation (lua/dmulog.lua expire_node); instances removed."""
        gone, pending = await self._fcall("expire_node", uuid, (node, epoch), False)
        if pending:
            await self.finish_jobs(uuid)
        return int(gone)

    async def announced(self, uuid: str, announce: int) -> None:
        """The log's pending announcement ``announce`` was made (lua/dmulog.lua, ANNOUNCING)."""
        await self._fcall("announced", uuid, (announce,), False)

    async def _fcall(self, op: str, uuid: str, argv: Sequence[str | int | bytes], readonly: bool) -> Any:
        return await self.fcall(FUNCTION_PREFIX + op, log_keys(uuid, self._prefix), argv, readonly=readonly)

    async def fcall(self, name: str, keys: Sequence[str], argv: Sequence[str | int | bytes], *,
                    readonly: bool = False) -> Any:  # fmt: skip
        """Call the Function ``name``, with retries; its error word becomes a LogError (any library)."""
        command = "FCALL_RO" if readonly else "FCALL"
        durable = self._durable_replicas > 0 and not readonly

        async def sent() -> Any:
            if durable:
                return await self._durably(command, name, len(keys), *keys, *argv)
            if self._cluster is not None:
                return await self._in_cluster((command, name, len(keys), *keys, *argv))
            return await self._redis.execute_command(command, name, len(keys), *keys, *argv)

        async def send() -> Any:
            metrics = self.metrics
            if metrics is None:
                return await sent()
            start = time.perf_counter()
            try:
                reply = await sent()
            except rexc.ResponseError:
                metrics.redis_call(name, time.perf_counter() - start)  # Redis answered, with an error word
                raise
            metrics.redis_call(name, time.perf_counter() - start)
            return reply

        async def once() -> Any:
            try:
                return await send()
            except rexc.ResponseError as e:
                if "Function not found" in str(e):
                    event(log, logging.WARNING, "function_library_missing", function=name)
                    await self._load_libraries()
                    return await send()
                raise

        try:
            return await self._retry.run(once, is_retryable=self._retryable)
        except (*_UNREACHABLE, *self._not_now) as e:
            raise self._gave_up(e) from e
        except rexc.ResponseError as e:
            if _no_replicas(e):
                raise self._gave_up(e) from e
            mapped = from_lua_error(str(e))
            raise (mapped or LogError(f"redis error: {e}")) from None

    async def _durably(self, *command: Any) -> Any:
        """``command``, then ``WAIT N`` and ``WAITAOF 1 N``, on one connection in one round trip (a pipeline).

        WAITAOF waits for the connection's own last write, which is why it must
        share the connection; and, the replication stream being one sequence,
        every earlier write of any connection (a lease's XADD, say) is then
        fsynced too. An answer short of the counts is StoreUnavailable, which
        the bridge retries and the kernel waits on: the writes may be on the
        primary alone, and a failover now would lose them, so nothing was
        acknowledged. Sending the Function again is what the store's retries
        after a lost reply, and the kernel's own resend after a timeout, do
        already.

        Why WAIT first: a primary asks its replicas for their offsets (REPLCONF
        GETACK) once per blocked WAIT or WAITAOF, and a replica answers at once,
        with the offset it had fsynced *before* the write that came with the
        question (it fsyncs after the event-loop pass that applied it). Alone,
        WAITAOF then waits for the replica's next unprompted ACK, once a second
        (measured: 1.006 s p50 against 1.8 ms with WAIT first; Valkey 9.1).
        WAIT returns once that first answer shows the write applied; WAITAOF,
        blocking next, asks again, and the replica, which has fsynced it by
        then (``appendfsync always``), says so.
        """
        wait = max(1, self._wait_ms() // 2)  # each; so the two together stay within the budget
        if self._cluster is not None:  # to the shard that owns the call's first key, on one of its connections
            waits = [("WAIT", self._durable_replicas, wait), ("WAITAOF", 1, self._durable_replicas, wait)]
            reply, _applied, acked = await self._cluster.pipeline(command[3], [command, *waits])
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                pipe.execute_command("WAIT", self._durable_replicas, wait)
                pipe.execute_command("WAITAOF", 1, self._durable_replicas, wait)
                reply, _applied, acked = await pipe.execute(raise_on_error=False)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(acked, BaseException):
            raise StoreUnavailable(f"redis cannot confirm durability: {acked}")
        local, replicas = (int(n) for n in acked)
        if local < 1 or replicas < self._durable_replicas:
            raise StoreUnavailable(f"not durable: fsynced on {'the primary and ' if local else ''}{replicas} of "
                                   f"{self._durable_replicas} replicas in time")  # fmt: skip
        return reply

    async def _in_cluster(self, command: tuple[Any, ...]) -> Any:
        """A Function call (``FCALL name numkeys key ...``) on the shard that owns its first key."""
        assert self._cluster is not None
        if not command[2]:  # no key: any primary will do
            return await self._cluster.on_one_primary(*command)
        (reply,) = await self._cluster.pipeline(command[3], [command])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _wait_ms(self) -> int:
        """WAITAOF's timeout: :data:`DURABLE_WAIT`, or the request's time left if less; never 0 (forever)."""
        wait = DURABLE_WAIT
        deadline = REQUEST_DEADLINE.get()
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic() - DEADLINE_MARGIN)
        return max(1, int(wait * 1000))

    async def state(self, uuid: str) -> list[Any]:
        """The raw ``state`` of a log, read in one call (at one instant), for an answer of one message.

        The Function leaves out bitmaps and marks too large for one Redis reply
        (past 1 MiB of bitmap or 65,536 marks it would hold Redis up); the
        answer built of what it did return must still fit a default client's
        receive limit (:data:`MAX_STATE_MESSAGE`), so it is measured as the
        message it becomes: marks with long node names, or many instances, can
        exceed it with bitmaps far below the Function's bound.

        Raises:
            TooLarge: the log's answer would exceed one message; :meth:`state_head`,
                :meth:`bitmap` and :meth:`marks` read it in pieces.
        """
        raw = await self.admin("state", uuid, [uuid])
        if any(part is None for part in raw[2:5]) or log_state(uuid, list(raw)).ByteSize() > MAX_STATE_MESSAGE:
            raise TooLarge(f"log {uuid} is too large for one message: read it with ReadLogState")
        return list(raw)

    async def state_head(self, uuid: str) -> list[Any]:
        """The raw ``state`` of a log without its bitmaps and marks (None in their places)."""
        return list(await self.admin("state", uuid, [uuid, "head"]))

    async def bitmap(self, uuid: str, name: str, size: int) -> AsyncIterator[tuple[int, bytes]]:
        """``(offset, bytes)`` pieces of the log's ``sync`` or ``dirty`` bitmap, cut or padded to ``size`` bytes."""
        key = getattr(log_keys(uuid, self._prefix), name)
        for start in range(0, size, STATE_PIECE):
            end = min(size, start + STATE_PIECE)
            data = await self.plain(lambda s=start, e=end: self._redis.getrange(key, s, e - 1))
            yield start, data + b"\0" * (end - start - len(data))

    async def marks(self, uuid: str) -> AsyncIterator[list[bytes]]:
        """The log's marks hash, a page of flat ``[region, nodes, ...]`` at a time."""
        key = log_keys(uuid, self._prefix).marks
        cursor: int | bytes = 0
        while True:
            cursor, page = await self.plain(lambda c=cursor: self._redis.hscan(key, c, count=1024))
            if page:
                yield [item for pair in page.items() for item in pair]
            if int(cursor) == 0:
                return

    async def plain(self, command: Any) -> Any:
        """Run ``command()`` (a plain Redis command) with the store's retries and errors."""
        try:
            return await self._retry.run(command, is_retryable=self._retryable)
        except (*_UNREACHABLE, *self._not_now) as e:
            raise self._gave_up(e) from e

    async def log_uuids(self) -> list[str]:
        """UUIDs of every log, by SCAN (no global index key, so Cluster-safe); in a Cluster, of every primary.

        A log whose slot is moving may be found on two primaries: found once.
        """
        found: set[str] = set()
        pattern = log_key_pattern(self._prefix)

        async def scan() -> None:
            if self._cluster is not None:
                for node in await self._cluster.primaries():
                    cursor: Any = 0
                    while True:
                        cursor, keys = await self._cluster.on_node(node, "SCAN", cursor, "MATCH", pattern,
                                                                   "COUNT", 1000, "TYPE", "HASH")  # fmt: skip
                        found.update(uuid_from_log_key(text(key), self._prefix) for key in keys)
                        if int(cursor) == 0:
                            break
                return
            async for key in self._redis.scan_iter(match=pattern, count=1000, _type="HASH"):
                found.add(uuid_from_log_key(key.decode("utf-8"), self._prefix))

        await self.plain(scan)
        return sorted(found)
