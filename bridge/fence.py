"""Self-fencing: a node that may lose its lease stops writing its mirrors first.

Once this node's lease expires, a survivor takes its marked regions over and
resyncs them (docs/multi-node.md). This node's kernel must not write them
meanwhile, and it would: a region it holds marked (dirty in its region
hash) is written without asking the log again, and recovery elsewhere copies
one leg over the other under those writes. So when the bridge has not
renewed its lease for :data:`FENCE_FRACTION` of the time to live (logsvc or
its Redis unreachable, or this process or its whole node was paused), it
suspends every active mirror on a userspace log (bridge/mirrors.py), well
before the lease can expire anywhere: the lease runs at least ``ttl`` from
when its last renewal was *sent*.

A suspend in the kernel runs the log's PRESUSPEND, waits for the mirror's
thread, blocks new I/O at the device, waits for the writes in flight, then
runs POSTSUSPEND (dm.c __dm_suspend, dm-raid1.c mirror_presuspend). While
fenced the bridge answers PRESUSPEND and POSTSUSPEND itself (bridge/answer.py):
logsvc may be the very thing it cannot reach, and nothing of the log's
state depends on them that a resume does not set again. Every other request
goes to logsvc as ever and, logsvc unreachable, waits or gets -EAGAIN for
the critical ones: the mirror's thread, which issues every read and write of
a mirror on a userspace log, then waits inside that request, so the mirror
is stopped even where its suspend cannot complete yet. That is what the real
kernel does in practice: a region going idle, a new region written or a read
not answered from a latch each need the log, so a mirror cut off from logsvc
usually stops by itself within moments, and the suspend is what bounds it
when nothing needs the log. ``self_fenced`` is logged once every mirror has
stopped either way (``RequestSpec.mirror_thread`` says which requests count).

When the lease is live again (a renewal got through, or the lease was lost
and a new one taken) the bridge resumes what it suspended. A new incarnation's
RESUME gets NOT_FOUND, so the kernel replays CTR and RESUME under the new
epoch (docs/protocol.md §5); its region hash was emptied by the suspend, so
every later write marks its region again.

What it cannot do: a node whose kernel is frozen (a paused VM) or that stops
the bridge longer than the time to live writes on when it wakes, before any
process of it runs. External fencing covers that (docs/multi-node.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from bridge.latch import InSyncLatches
from bridge.lease import LeaseKeeper
from bridge.mirrors import Mirrors
from dmulog.logs import event

__all__ = ["FENCE_FRACTION", "SelfFence"]

log = logging.getLogger("dmulog.bridge.fence")

FENCE_FRACTION: Final = 0.6
"""Of the time to live without a renewal, after which the node fences itself.

Renewals are a third of the time to live apart (bridge/lease.py), so a fence
needs one renewal failed and the next late; the remaining 0.4 of the time to
live is for the writes in flight to finish.
"""
PREPARE_FRACTION: Final = 0.45
"""Of the time to live without a renewal, after which the mirrors to suspend are listed in advance.

Listing them takes two ``dmsetup`` runs; done beforehand (and thrown away if a
renewal gets through), the fence itself only suspends.
"""
POLL: Final = 0.1
"""Seconds between two looks at the lease while fenced."""


class SelfFence:
    """Suspends this node's mirrors while its lease is at risk, and resumes them once it is live again."""

    def __init__(self, keeper: LeaseKeeper, mirrors: Mirrors, latches: InSyncLatches, *,
                 fraction: float = FENCE_FRACTION, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self._keeper = keeper
        self._mirrors = mirrors
        self._latches = latches
        self._fraction = fraction
        self._clock = clock
        self.active = False
        """True from the moment a fence begins until its resume begins: PRESUSPEND and POSTSUSPEND are answered here."""
        self.fences = 0  # fences begun, for tests and metrics
        self.waiting: Callable[[str], str | None] = lambda uuid: None
        """The name of a request of a log's mirror thread waiting for logsvc (bridge/agent.py: Bridge.waiting)."""
        self._listing: asyncio.Future[dict[str, str]] | None = None
        self._listed_for = float("nan")  # the renewal the listing was made after

    def _at_risk(self) -> float:
        """When (this clock) the lease stops being safe to write under."""
        return self._keeper.renewed_at + self._keeper.ttl * self._fraction

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the lease until ``stop``; fence whenever it is at risk."""
        ready, stopped = asyncio.ensure_future(self._keeper.ready.wait()), asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stopped.cancel()
        if stop.is_set() or not self._keeper.enabled:
            return
        if not self._mirrors.available:
            event(log, logging.WARNING, "self_fence_unavailable", reason="dmsetup not found",
                  consequence="a node cut off from logsvc writes on; it needs external fencing")  # fmt: skip
            return
        while not stop.is_set():
            now, renewed = self._clock(), self._keeper.renewed_at
            prepare_at = renewed + self._keeper.ttl * PREPARE_FRACTION
            if prepare_at <= now < self._at_risk() and self._listed_for != renewed:
                self._listing, self._listed_for = asyncio.ensure_future(self._mirrors.active_mirrors()), renewed
            wait = (prepare_at if now < prepare_at else self._at_risk()) - now
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return
                except TimeoutError:
                    continue  # a renewal may have moved the deadlines meanwhile
            await self.fence(stop)

    async def _names(self) -> dict[str, str]:
        """The mirrors to suspend (name → log UUID): listed in advance for this lapse of renewals, or now."""
        listing, self._listing = self._listing, None
        if listing is not None and self._listed_for == self._keeper.renewed_at:
            return await listing
        if listing is not None:
            listing.cancel()
        return await self._mirrors.active_mirrors()

    async def fence(self, stop: asyncio.Event) -> None:
        """Suspend every mirror, wait for a live lease (or ``stop``), resume them."""
        began, expires, epoch = self._clock(), self._keeper.safe_until, self._keeper.node.epoch
        self.active = True
        self.fences += 1
        self._latches.forget_all()
        event(log, logging.ERROR, "self_fence", epoch=epoch, lease_left=round(expires - began, 3),
              consequence="this node's mirrors are suspended until its lease is live again")  # fmt: skip
        names = await self._names()
        holding = asyncio.ensure_future(self._mirrors.hold(list(names)))
        reported = False
        while self._at_risk() <= self._clock():
            if not reported:
                reported = self._report_stopped(names, holding, expires)
            try:
                await asyncio.wait_for(stop.wait(), POLL)
                event(log, logging.ERROR, "self_fence_left_in_place", consequence="this node's mirrors stay "
                      "suspended; resume them (dmsetup resume) once the node has a lease again")  # fmt: skip
                holding.cancel()
                return
            except TimeoutError:
                pass
        self.active = False
        suspended, failed = await holding
        if not reported:
            self._report_stopped(names, holding, expires)
        failed = await self._mirrors.release(suspended)
        event(log, logging.INFO, "self_fence_lifted", epoch=self._keeper.node.epoch, new_incarnation=(
              self._keeper.node.epoch != epoch), fenced_s=round(self._clock() - began, 3),
              resumed=[n for n in suspended if n not in failed], failed=failed)  # fmt: skip

    def _report_stopped(self, names: dict[str, str], holding: asyncio.Future[tuple[list[str], list[str]]],
                        expires: float) -> bool:  # fmt: skip
        """Log ``self_fenced`` once every mirror has stopped; whether it did.

        A mirror has stopped when its suspend returned, or while a request of its
        own thread waits here for logsvc (RequestSpec.mirror_thread): a suspend
        cannot complete before that request does, but the mirror issues no I/O
        meanwhile. ``lease_left`` > 0: the mirror issued its last write before
        any survivor could take its regions over (a suspended one has none in
        flight either; a waiting one only those it had issued, which take what
        a leg takes to write).
        """
        suspended = holding.result()[0] if holding.done() and not holding.cancelled() else []
        how = {name: "suspended" if name in suspended else f"waiting in {wait}" if (wait := self.waiting(uuid)) else ""
               for name, uuid in names.items()}  # fmt: skip
        if not all(how.values()) and not holding.done():
            return False
        left = expires - self._clock()
        stopped = all(how.values())
        event(log, logging.WARNING if stopped and left > 0 else logging.ERROR, "self_fenced", devices=how,
              stopped=stopped, lease_left=round(left, 3))  # fmt: skip
        return True
