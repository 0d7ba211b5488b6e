"""The health status logsvc serves: SERVING only while a request would get through to Redis.

A gRPC server that listens says nothing about its Redis: every request of a
logsvc whose Redis is frozen waits out the store's retry budget and fails.
So a monitor asks Redis once a second, with a bounded timeout, what a request
asks it: one read-only Function call of each library (FCALL_RO, granted by the
least-privilege ACL, unlike FUNCTION LIST), on keys that never exist, so it
costs nothing and touches no log. On a Redis Cluster every primary is asked
(a Cluster's primaries do not share functions), on a key of one of its slots.

A missing library is what a request repairs (store.py: "Function not found"
reloads every library and logs ``function_library_missing``). The monitor
does the same, logged the same way: a request would see a working logsvc, so
health does too, and a logsvc taken out of its Service for a missing library
would never get the request that repairs it. Only a repair that fails makes
it NOT_SERVING.

One failed probe is not an outage (a burst can hold every connection for a
moment): NOT_SERVING takes :data:`DOWN_AFTER` failures in a row; one success
is SERVING again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from grpc_health.v1 import health, health_pb2
from redis import exceptions as rexc
from redis.crc import key_slot

from dmulog.logs import event
from logsvc.store import Store

__all__ = ["DOWN_AFTER", "HealthMonitor", "probe_commands"]

log = logging.getLogger("dmulog.logsvc.health")

INTERVAL: Final = 1.0
"""Seconds from the start of one probe to the next."""
TIMEOUT: Final = 1.0
"""Seconds a probe may take (a reload of a missing library included) before it counts as failed."""
DOWN_AFTER: Final = 2
"""Failed probes in a row that make logsvc NOT_SERVING."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# (function, number of keys, arguments): one read-only function of each library logsvc loads
# (store.LIBRARIES); on keys that never exist, each answers at once ("ENOENT no log", or empty).
_PROBES: Final = (("dmulog_v4_state", 8, ("health-probe", "head")),
                  ("dmulog_leases_list", 6, ()),
                  ("dmulog_tenants_names", 1, ()))  # fmt: skip


def probe_commands(prefix: str, tag: str = "health") -> list[tuple[Any, ...]]:
    """The probe's FCALL_RO commands, on keys under ``{tag}`` (one slot) that no log or table ever has.

    The keys end in ``:probe:N``, never in a log's key names, so a log named
    like the tag shares their slot but never a key.
    """
    base = f"{prefix}:{{{tag}}}:probe:"
    return [("FCALL_RO", name, n, *(f"{base}{i}" for i in range(n)), *argv) for name, n, argv in _PROBES]


def _missing(reply: Any) -> bool:
    """Whether a probe's reply is the one store.fcall takes for a library that is gone."""
    return isinstance(reply, rexc.ResponseError) and "Function not found" in str(reply)


def _failure(replies: Sequence[Any]) -> str | None:
    """Why the replies show a Redis that would fail requests; None when each function ran."""
    for (name, _, _), reply in zip(_PROBES, replies, strict=True):
        if not isinstance(reply, BaseException):
            continue
        if isinstance(reply, rexc.ResponseError) and str(reply).startswith("ENOENT"):
            continue  # the function ran, on a log that does not exist
        return f"{name}: {type(reply).__name__}: {reply}"
    return None


class HealthMonitor:
    """Probes Redis through ``store`` and sets ``servicer``'s status of ``services`` on each transition."""

    def __init__(self, store: Store, servicer: health.aio.HealthServicer, services: Sequence[str], *,
                 interval: float = INTERVAL, timeout: float = TIMEOUT, down_after: int = DOWN_AFTER):  # fmt: skip
        self._store = store
        self._servicer = servicer
        self._services = tuple(services)
        self._interval = interval
        self._timeout = timeout
        self._down_after = down_after
        self._failures = 0
        self._tags: dict[str, str] = {}  # Cluster: a primary's name -> a hash tag of one of its slots
        self.serving = True
        """What the servicer says now: build_server starts SERVING, after the store loaded its libraries."""
        self.reason = "started"

    async def _replies(self) -> list[list[Any]]:
        """Each node's replies to the probe: the one Redis (or Sentinel's primary), or every Cluster primary."""
        cluster = self._store.cluster
        if cluster is None:
            async with self._store.redis.pipeline(transaction=False) as pipe:
                for command in probe_commands(self._store.prefix):
                    pipe.execute_command(*command)
                return [list(await pipe.execute(raise_on_error=False))]
        primaries = await cluster.primaries()
        slots = cluster.client.nodes_manager.slots_cache
        replies = []
        for node in primaries:
            tag = self._tags.get(node.name)
            owners = slots.get(key_slot(tag.encode())) if tag is not None else None
            if tag is None or not owners or owners[0].name != node.name:
                tag = self._tag_of(node.name, slots)
            commands = probe_commands(self._store.prefix, tag)
            # By key: pipeline() follows a MOVED of a slot that moved since, instead of failing on it.
            replies.append(await cluster.pipeline(str(commands[0][3]), commands))
        return replies

    def _tag_of(self, name: str, slots: dict[int, list[Any]]) -> str:
        for i in range(1 << 16):
            tag = f"health:{i}"
            owners = slots.get(key_slot(tag.encode()))
            if owners and owners[0].name == name:
                self._tags[name] = tag
                return tag
        raise LookupError(f"no slot of {name} in the slot table")

    async def probe(self) -> str | None:
        """One probe, a missing library reloaded; None when a request would get through, else why not."""
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._replies()
                gone = [name for node in replies for (name, _, _), r in zip(_PROBES, node, strict=True)
                        if _missing(r)]  # fmt: skip
                if gone:
                    # What store.fcall does on "Function not found": log it, load every library again.
                    for name in dict.fromkeys(gone):
                        event(log, logging.WARNING, "function_library_missing", function=name, by="health_check")
                    await self._store.load_library()
                    replies = await self._replies()
        except TimeoutError:
            return f"redis did not answer within {self._timeout:g} s"
        except (rexc.RedisError, OSError, LookupError) as e:
            return f"redis unreachable: {type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - e.g. StoreUnavailable from a reload: health, not a crash
            return f"{type(e).__name__}: {e}"
        for node in replies:
            if (why := _failure(node)) is not None:
                return why
        return None

    async def check(self) -> bool:
        """Probe once and set the status if it changed; whether logsvc is SERVING now."""
        why = await self.probe()
        if why is None:
            self._failures = 0
            await self._set(True, "redis answers and has every function library")
        else:
            self._failures += 1
            if self._failures >= self._down_after or not self.serving:
                await self._set(False, why)
        return self.serving

    async def _set(self, serving: bool, reason: str) -> None:
        if serving == self.serving:
            return
        self.serving, self.reason = serving, reason
        if self._store.metrics is not None:
            self._store.metrics.serving.set(1 if serving else 0)
        for name in self._services:
            await self._servicer.set(name, _SERVING if serving else _NOT_SERVING)
        event(log, logging.INFO if serving else logging.WARNING, "health_changed",
              status="SERVING" if serving else "NOT_SERVING", reason=reason)  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every ``interval`` seconds until ``stop``."""
        while not stop.is_set():
            started = time.monotonic()
            await self.check()
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, self._interval - (time.monotonic() - started)))
            except TimeoutError:
                pass
