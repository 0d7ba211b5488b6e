"""Node leases, and the reaper that hands a dead incarnation's logs over.

A bridge holds a lease for its node (name + boot id) and renews it off the
request path (bridge/lease.py). The table of leases is one Redis slot
(lua/leases.lua); each log is in its own. So the expiry of an incarnation
cannot be one call: the lease is *claimed* (one call in the lease slot), then
each log the incarnation joined is handed over (one ``expire_node`` call per
log, in that log's slot: its instances go, its marked regions turn out of
sync, its latches end), each such log is announced on the event stream
(logsvc/events.py, which bridges watch to drop their latches), and the
incarnation is marked done. Every replica runs a reaper; a claim lasts
``claim`` seconds, so a reaper that dies mid-way is replaced by another, and
each step is idempotent (expire_node's fence), so doing one twice is harmless.

Why no log is missed: a CTR first *joins* the log (one call: the lease must
be live, and the log goes into the incarnation's index), then constructs. A
claim happens only after the lease expired, so after every join that
succeeded; the reaper reads the index after its claim and finds every such
log. A CTR whose join came first but which runs after the log was handed
over meets the fence expire_node left there and is refused.

Bounds, with ``ttl`` the lease's time to live and ``interval`` the reaper's
period: a node that stops renewing is expired by ``ttl + interval`` after
its last renewal (plus the hand-over of its logs, about a millisecond per log
and per thousand marked regions); docs/multi-node.md says what each bound
means for the kernel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from dmulog.logs import event
from logsvc.errors import LogError
from logsvc.keys import events_key, lease_keys, lease_logs_key
from logsvc.store import Store, text

__all__ = ["DEFAULT_TTL", "EVENTS_MAXLEN", "Lease", "LeaseRecord", "Leases", "Reaper"]

DEFAULT_TTL: Final = 10.0
"""Seconds a lease lasts unless renewed (``dmulog logsvc --lease-ttl``)."""
EVENTS_MAXLEN: Final = 10_000
"""Events kept in the stream (approximately): a watcher that falls this far behind reconnects."""

log = logging.getLogger("dmulog.logsvc.leases")


@dataclass(frozen=True)
class Lease:
    """What AcquireLease and RenewLease answer."""

    epoch: int
    ttl_ms: int


@dataclass(frozen=True)
class LeaseRecord:
    """One node's lease as stored, read at ``now_ms`` (Redis's clock)."""

    name: str
    boot: str
    epoch: int
    state: str
    renewed_ms: int
    expires_ms: int
    now_ms: int
    expiring: int  # earlier incarnations still being handed over



class Leases:
    """The lease table's Functions (lua/leases.lua) through a Store's connection pool and retries."""

    def __init__(self, store: Store, ttl: float = DEFAULT_TTL):
        self._store = store
        self.ttl = ttl
        self._keys = list(lease_keys(store.prefix))

    @property
    def store(self) -> Store:
        """The store the calls go through."""
        return self._store

    @property
    def enabled(self) -> bool:
        """Leases are off with a ttl of 0: every node then runs with epoch 0, as before leases."""
        return self.ttl > 0

    @property
    def ttl_ms(self) -> int:
        """The time to live in milliseconds."""
        return max(1, round(self.ttl * 1000))

    async def _call(self, name: str, argv: list[str | int], node: str | None = None, *,
                    readonly: bool = False) -> Any:  # fmt: skip
        # The last key is the node's log index where the function uses it; any key of the slot elsewhere.
        fifth = lease_logs_key(node, self._store.prefix) if node else self._keys[0]
        return await self._store.fcall(f"dmulog_leases_{name}", [*self._keys, fifth], argv, readonly=readonly)

    async def acquire(self, node: str, boot: str) -> Lease:
        """A lease for the node's boot: the same epoch while it is live, else a new incarnation."""
        if not self.enabled:
            return Lease(0, 0)
        epoch, ttl, new = await self._call("acquire", [node, boot, self.ttl_ms])
        if new:
            event(log, logging.INFO, "lease_granted", node=node, boot_id=boot, epoch=int(epoch))
            if self._store.metrics is not None:
                self._store.metrics.lease_grants.inc()
        return Lease(int(epoch), int(ttl))

    async def renew(self, node: str, boot: str, epoch: int) -> Lease:
        """Extend a live lease; NotFound ("lease lost") when the incarnation expired or was replaced."""
        if not self.enabled:
            return Lease(0, 0)
        got, ttl = await self._call("renew", [node, boot, epoch, self.ttl_ms])
        return Lease(int(got), int(ttl))

    async def join(self, node: str, boot: str, epoch: int, uuid: str) -> None:
        """Before a CTR: the incarnation must be live, and the log goes into its index; NotFound if fenced."""
        if self.enabled and epoch > 0:
            await self._call("join", [node, boot, epoch, uuid], node)

    async def claim(self, limit: int, hold: float) -> list[tuple[str, int]]:
        """Expired incarnations to hand over, each claimed for ``hold`` seconds."""
        flat = await self._call("claim", [limit, max(1, round(hold * 1000)), self.ttl_ms])
        return [(text(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def logs_of(self, node: str) -> list[str]:
        """The logs the node joined (any incarnation)."""
        key = lease_logs_key(node, self._store.prefix)
        members = await self._store.plain(lambda: self._store.redis.smembers(key))
        return sorted(text(m) for m in members)

    async def done(self, node: str, epoch: int) -> None:
        """Every log of the incarnation was handed over."""
        await self._call("done", [node, epoch], node)

    async def records(self) -> list[LeaseRecord]:
        """Every node's lease, sorted by name."""
        flat, pending, now = await self._call("list", [], readonly=True)
        expiring: dict[str, int] = {}
        for member in pending:
            name = text(member).rpartition("|")[0]
            expiring[name] = expiring.get(name, 0) + 1
        out = []
        for i in range(0, len(flat), 2):
            name, rec = text(flat[i]), json.loads(flat[i + 1])
            out.append(LeaseRecord(name, str(rec["boot"]), int(rec["epoch"]), str(rec["state"]), int(rec["renewed"]),
                                   int(rec["expires"]), int(now), expiring.get(name, 0)))  # fmt: skip
        return sorted(out, key=lambda r: r.name)

    async def announce(self, uuid: str, node: str, epoch: int) -> None:
        """Tell every watcher that the log's latches ended (logsvc/events.py serves them)."""
        key = events_key(self._store.prefix)
        fields: dict[Any, Any] = {"kind": "node_expired", "uuid": uuid, "node": node, "epoch": str(epoch)}
        await self._store.plain(lambda: self._store.redis.xadd(key, fields, maxlen=EVENTS_MAXLEN, approximate=True))


class Reaper:
    """Finds expired incarnations and hands their logs over; one per logsvc process."""

    def __init__(self, leases: Leases, *, interval: float | None = None, batch: int = 16,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self._leases = leases
        self.interval = interval if interval is not None else min(1.0, max(0.05, leases.ttl / 10))
        self._batch = batch
        self._clock = clock

    @property
    def hold(self) -> float:
        """How long a claim lasts: long enough to hand over many logs, short enough to replace a dead reaper."""
        return max(30.0, self._leases.ttl * 3)

    async def run(self, stop: asyncio.Event) -> None:
        """Reap every ``interval`` until ``stop``; Redis outages are logged and retried."""
        if not self._leases.enabled:
            return
        while not stop.is_set():
            try:
                await self.reap_once()
            except LogError as e:
                event(log, logging.WARNING, "reaper_failed", detail=str(e))
            except Exception as e:  # noqa: BLE001 - one bad pass must not end every expiry to come
                event(log, logging.ERROR, "reaper_crashed", detail=repr(e))
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except TimeoutError:
                pass

    async def reap_once(self) -> int:
        """One pass: claim what expired, hand each over; how many incarnations were handed over."""
        count = 0
        for node, epoch in await self._leases.claim(self._batch, self.hold):
            await self.hand_over(node, epoch)
            count += 1
        return count

    async def hand_over(self, node: str, epoch: int) -> None:
        """Every log the node joined, handed over from incarnation ``epoch``; then it is done."""
        started = self._clock()
        store = self._leases.store
        logs = removed = 0
        for uuid in await self._leases.logs_of(node):
            gone = await store.expire_node(uuid, node, epoch)
            if gone:
                await self._leases.announce(uuid, node, epoch)
                removed += gone
            logs += 1
        await self._leases.done(node, epoch)
        if store.metrics is not None:
            store.metrics.lease_expiries.inc()
        event(log, logging.WARNING, "node_expired", node=node, epoch=epoch, logs=logs, instances=removed,
              seconds=round(self._clock() - started, 4))  # fmt: skip
