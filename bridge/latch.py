"""IN_SYNC answered in the bridge, from the in-sync latch.

The kernel asks IN_SYNC for every read and twice for every first write to a
region, never caches the answer, and blocks the mirror until it comes: a
third of all requests or more. Caching sync *bits* in the bridge would be
wrong the moment another node clears one (SET_REGION_SYNC 0 after a leg
failed there, a dead node's regions), and only leases that every clearing
request waits out could bound that.

The latch is different. Once the whole log reached sync after an instance
resumed, logsvc answers IN_SYNC 1 for *every* region of that instance
whatever happens to the bits (cmirrord's rule, LVM commit 53670b18f: a node
keeps writing every leg while another marks a failed region out of sync),
until that instance is suspended, resumed, constructed again or destroyed.
Those are requests of this node's kernel about this instance, and they all
pass through this bridge. So when logsvc says an instance is latched
(``InSyncResponse.latched``) the bridge may answer its IN_SYNCs itself until
it forwards one of those requests.

One thing from elsewhere ends a latch too: another node's incarnation
expiring (its lease ran out, logsvc/leases.py). Its marked regions turn out of
sync, and this node must stop reading them from every leg. logsvc announces
each such log on the WatchLogs stream (bridge/lease.py watches it) and the
latches of that log are forgotten (:meth:`InSyncLatches.forget_log`). With
leases on, a latch is trusted only while that stream is open and said READY
before the IN_SYNC that taught it was asked (:meth:`InSyncLatches.watching`);
when the stream breaks every latch is forgotten and none is learnt until it
is READY again. The bound this gives is in docs/multi-node.md.

Races, all closed by one rule: an answer only sets the latch if nothing that
could end it was in flight or started while it was asked. Each instance has
a generation that changes when a lifecycle request starts and when it ends;
an IN_SYNC forwarded while one is in flight, or whose generation changed
before its answer came back, teaches nothing. An answer that arrives after a
RESUME began (asked before it, answered by Redis before it ran) therefore
never sets a latch the RESUME ended.

A known latch is also forgotten after ``ttl`` seconds and asked again: that
bounds what the cache could get wrong if the log changed in a way no rule
here foresees (its keys deleted by hand, a Redis failover that lost writes,
two nodes configured with the same name), at the cost of one round trip per
instance per ``ttl``.

The answer is exactly what logsvc would give, with one exception: a region
beyond the instance's end would get 1 here, not EINVAL. The kernel never
asks about one (it derives regions from bio sectors within the target).

What it does not cover: a mirror created ``nosync``, or a persistent log that
resumes already fully in sync, has no latch until a resync completes
(cmirrord sets it the same way), so its IN_SYNCs still go to logsvc.

Tested by tests/unit/test_latch.py (every interleaving of the generation
rule, one by one) and tests/integration/test_answered_here.py (reads raced
against lifecycle requests through the production read path, and a cache
that ignores resumes caught at once); on the real kernel the mirror tests
check that the bridge answered IN_SYNC itself while the legs stay identical.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

from dmulog.requests import AnswerHere, Lifecycle, RequestSpec

__all__ = ["Forwarding", "InSyncLatches", "Key"]

Key = tuple[str, int]
"""(uuid, luid): one table instance on this node."""

# More instances than any node runs; past it, idle entries are dropped
# (forgetting a latch is always safe).
_MAX_INSTANCES: Final = 65536


@dataclass(slots=True)
class _Instance:
    generation: int
    busy: int = 0  # lifecycle requests in flight
    until: float = 0.0  # monotonic time up to which it is known latched; 0: not known


class InSyncLatches:
    """What the bridge knows of its instances' latches; ``ttl`` 0 knows nothing."""

    def __init__(self, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._clock = clock
        self._instances: dict[Key, _Instance] = {}
        self._generations = itertools.count(1)
        # Whether latches may be learnt: always without leases; with them, only
        # while the event stream is READY (watching).
        self._trusted = True

    def require_watch(self) -> None:
        """Leases are on: from now on a latch is learnt only while :meth:`watching` says the stream is READY."""
        self.watching(False)

    def watching(self, ready: bool) -> None:
        """The event stream became READY (True) or broke (False: every latch is forgotten)."""
        if not ready:
            self.forget_all()
        self._trusted = ready

    def forget_all(self) -> None:
        """Every latch ends now (the node fences itself: bridge/fence.py); new ones may be learnt."""
        for key in list(self._instances):
            self._forget(key)

    def forget_log(self, uuid: str) -> int:
        """Another node's incarnation expired in log ``uuid``: its latches end now; how many there were."""
        keys = [key for key in self._instances if key[0] == uuid]
        for key in keys:
            self._forget(key)
        return len(keys)

    def _forget(self, key: Key) -> None:
        # A new generation: an IN_SYNC in flight now teaches nothing when it returns.
        inst = self._instances[key]
        inst.generation = next(self._generations)
        inst.until = 0.0

    def __len__(self) -> int:
        return len(self._instances)

    def latched(self, key: Key) -> bool:
        """Whether an IN_SYNC of ``key`` arriving now may be answered 1 here."""
        inst = self._instances.get(key)
        return self._trusted and inst is not None and inst.until > self._clock()

    def asking(self, key: Key) -> int:
        """An IN_SYNC of ``key`` goes to logsvc: the ticket to hand to :meth:`answered`."""
        if self.ttl <= 0 or not self._trusted:
            return 0
        inst = self._instances.get(key)
        if inst is None:
            if len(self._instances) >= _MAX_INSTANCES:
                self._forget_idle()
            inst = self._instances[key] = _Instance(next(self._generations))
        return 0 if inst.busy else inst.generation

    def answered(self, key: Key, ticket: int, latched: bool) -> None:
        """The answer to the IN_SYNC asked with ``ticket`` came back; ``latched`` as logsvc said."""
        inst = self._instances.get(key)
        if inst is None or ticket == 0 or inst.generation != ticket or inst.busy:
            return
        inst.until = self._clock() + self.ttl if latched else 0.0

    def begin(self, key: Key) -> None:
        """A lifecycle request of ``key`` is about to go to logsvc: forget its latch now."""
        inst = self._instances.get(key)
        if inst is None:
            inst = self._instances[key] = _Instance(0)
        inst.busy += 1
        inst.generation = next(self._generations)
        inst.until = 0.0

    def end(self, key: Key, *, gone: bool = False) -> None:
        """The lifecycle request of ``key`` ended, however it ended; ``gone``: it was a DTR."""
        inst = self._instances.get(key)
        if inst is None:
            return
        inst.busy = max(0, inst.busy - 1)
        inst.generation = next(self._generations)
        inst.until = 0.0
        if gone and not inst.busy:
            del self._instances[key]

    def forwarding(self, key: Key, spec: RequestSpec) -> Forwarding:
        """A request of ``key`` going to logsvc, as its latch sees it: enter it before the call, leave it after.

        The request's row says what it means here: a lifecycle request
        (``spec.lifecycle``) forgets the latch until it ends, and the request
        the bridge answers when latched (``AnswerHere.IF_LATCHED``) learns the
        latch from its answer.
        """
        return Forwarding(self, key, spec)

    def _forget_idle(self) -> None:
        for key in [k for k, inst in self._instances.items() if not inst.busy]:
            del self._instances[key]


class Forwarding:
    """One forwarded request's effect on its instance's latch; see :meth:`InSyncLatches.forwarding`."""

    __slots__ = ("_key", "_latches", "_lifecycle", "_teaches", "_ticket")

    def __init__(self, latches: InSyncLatches, key: Key, spec: RequestSpec):
        self._latches, self._key = latches, key
        self._lifecycle = spec.lifecycle
        self._teaches = spec.here is AnswerHere.IF_LATCHED
        self._ticket = 0

    def __enter__(self) -> Forwarding:
        if self._lifecycle.ends_latch:
            self._latches.begin(self._key)
        if self._teaches:
            self._ticket = self._latches.asking(self._key)
        return self

    def answered(self, response: Any) -> None:
        """The answer came back: what it says of the latch (``latched``) is learnt, if it was asked to teach it."""
        if self._ticket:
            self._latches.answered(self._key, self._ticket, response.latched)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if self._lifecycle.ends_latch:
            self._latches.end(self._key, gone=self._lifecycle is Lifecycle.FORGETS)
