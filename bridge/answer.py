"""The answer to one kernel request: by a call to logsvc, or here when the table allows it.

:meth:`Answerer.answer` follows the request's row (dmulog/requests.py) through
its route (bridge/dispatch.py): payload to API request, one call, response to
reply, with the instance's in-sync latch kept right on the way
(bridge/latch.py). It never raises for bad input or an outage: every request
gets a reply datagram.

Two requests need no call, and :meth:`Answerer.answer_here` answers them as
soon as they are read (the rows say which: ``RequestSpec.here``): an IN_SYNC of
an instance whose in-sync latch is known (bridge/latch.py), and a FLUSH without
marks. The kernel sends a FLUSH only after the MARK and CLEAR batches it commits
were answered (docs/protocol.md §4.2), and every change logsvc acknowledged is
already as durable as Redis makes it, so such a FLUSH has nothing to commit (the
Flush RPC in the proto says any client may skip it); the one thing it used to
check, that the instance still exists, the next MARK or CLEAR checks as well. A
FLUSH that carries marks (integrated flush) goes to logsvc. Such a reply leaves
before its request leaves the socket queue, so it needs no journal entry: killed
at any point, the request is still queued and answered again (the kernel ignores
a second reply).

While the node fences itself (bridge/fence.py), PRESUSPEND and POSTSUSPEND are
answered here too: they are the steps of the fence's own suspend, which must
not wait for the logsvc it may not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

from bridge import wire
from bridge.client import CallFailed, LogsvcClient
from bridge.dispatch import DECODERS, ROUTES, Decode
from bridge.errors import UNREACHABLE_ERRNO
from bridge.latch import InSyncLatches
from dmulog.logs import event
from dmulog.requests import REQUESTS, AnswerHere, RequestSpec, RequestType
from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["Answerer"]

log = logging.getLogger("dmulog.bridge")


# What a request answered here gets (the table's rules keep every such row to
# these reply kinds): an instance known latched is in sync at every region; a
# FLUSH without marks has nothing to commit.
_HERE_REPLY: Final = {AnswerHere.IF_LATCHED: wire.encode_s64(True), AnswerHere.IF_EMPTY: b""}

# The requests that may be answered here, by wire number: (when, payload decoder, name, reply payload).
_HERE: Final[Mapping[int, tuple[AnswerHere, Decode, str, bytes]]] = MappingProxyType({
    int(s.type): (s.here, DECODERS[s.payload], s.name, _HERE_REPLY[s.here])
    for s in REQUESTS if s.here is not AnswerHere.NEVER
})  # fmt: skip


# Answered here, with success, while the node is fenced.
_WHILE_FENCED: Final = frozenset({int(RequestType.PRESUSPEND), int(RequestType.POSTSUSPEND)})


class Answerer:
    """Answers decoded requests through a logsvc client; answers the few that need no call itself."""

    def __init__(self, client: LogsvcClient, node: pb.Node, latches: InSyncLatches,
                 send_nowait: Callable[[bytes], bool] | None = None, *,
                 lease_ready: asyncio.Event | None = None, fenced: Callable[[], bool] | None = None):  # fmt: skip
        self._client = client
        self._fenced = fenced
        # Requests of a mirror's own thread now waiting for logsvc, by log UUID
        # (RequestSpec.mirror_thread): while one waits, that mirror issues no I/O.
        self._waiting: dict[str, dict[int, str]] = {}
        self._node = node
        self.latches = latches
        self._send_nowait = send_nowait
        self._lease_ready = lease_ready
        # The largest generation of each log this node was answered, sent back
        # with every request of that log (proto: LogRef.generation), so that no
        # answer comes from a state that lost what an earlier answer reported:
        # a high-water mark of the answers themselves, not a copy of the log,
        # and only ever raised, so it cannot go stale; forgotten at the log's
        # DTR, and with the process (then the log is merely not checked).
        self._generations: dict[str, int] = {}

    def answer_here(self, datagram: bytes) -> str | None:
        """Answer ``datagram`` without logsvc if its row allows it now; the request type's name if it did.

        Anything else, including a datagram that does not decode, is left to the
        ordinary path; so is a reply the socket cannot take at once.
        """
        if self._send_nowait is None or (peeked := wire.peek_type_and_size(datagram)) is None:
            return None
        rtype, size = peeked
        rule = _HERE.get(rtype)
        if rule is None:
            return None
        when, decode, name, payload = rule
        if when is AnswerHere.IF_EMPTY and size:
            return None
        try:
            req = wire.decode_request(datagram)
            if when is AnswerHere.IF_LATCHED:
                if not self.latches.latched((req.uuid, req.luid)):
                    return None
                decode(req.data, name)  # only a payload the RPC would take
            reply = wire.encode_reply(req, 0, payload)
        except wire.WireError:
            return None
        try:
            if not self._send_nowait(reply):
                return None
        except OSError:
            return None  # the ordinary path sends it again, and logs what fails
        return req.type_name

    def _answered(self, req: wire.Request, generation: int) -> None:
        if req.request_type == RequestType.DTR:
            self._generations.pop(req.uuid, None)
        elif generation > self._generations.get(req.uuid, 0):
            self._generations[req.uuid] = generation

    def _left(self, received: float) -> float:
        """What is left of the retry budget of a request read at ``received``."""
        return max(0.0, self._client.budget - (time.monotonic() - received))

    def waiting(self, uuid: str) -> str | None:
        """The name of a request of log ``uuid``'s mirror thread now waiting for logsvc, if one is."""
        names = self._waiting.get(uuid)
        return next(iter(names.values())) if names else None

    @contextlib.contextmanager
    def _wait(self, req: wire.Request, spec: RequestSpec) -> Iterator[None]:
        if not spec.mirror_thread:
            yield
            return
        names = self._waiting.setdefault(req.uuid, {})
        names[req.seq] = req.type_name
        try:
            yield
        finally:
            names.pop(req.seq, None)
            if not names:
                self._waiting.pop(req.uuid, None)

    async def answer(self, req: wire.Request, received: float | None = None) -> bytes:
        """The reply datagram for a decoded request. Never raises for bad input.

        The retry budget counts from ``received`` (monotonic; default now), the
        moment the request was read, and covers a wait for the node's lease
        too: the kernel waits 15 s for its answer, and the budget (9 s, with a
        last attempt of at most 3 s) keeps every answer inside that however
        the time was spent.
        """
        received = time.monotonic() if received is None else received
        route = ROUTES.get(req.request_type)
        if route is None:
            event(log, logging.WARNING, "request_unknown_type", request_type=req.request_type)
            return wire.error_reply(req, errno.EINVAL)
        if req.request_type in _WHILE_FENCED and self._fenced is not None and self._fenced():
            self.latches.forget_log(req.uuid)  # a suspend ends the latch, as in logsvc
            event(log, logging.INFO, "answered_while_fenced")
            return wire.encode_reply(req, 0, b"")
        if self._lease_ready is not None and not self._lease_ready.is_set():
            # The node's epoch goes into the request: wait for the lease as for
            # logsvc itself, and fail the same way when it does not come.
            try:
                await asyncio.wait_for(self._lease_ready.wait(), self._left(received))
            except TimeoutError:
                code = errno.EAGAIN if route.critical else UNREACHABLE_ERRNO
                event(log, logging.WARNING, "request_without_lease", errno=errno.errorcode.get(code, code))
                return wire.error_reply(req, code)
        try:
            ref = pb.LogRef(uuid=req.uuid, luid=req.luid, generation=self._generations.get(req.uuid, 0))
            message = route.build(req, ref, self._node)
        except wire.WireError as e:
            event(log, logging.WARNING, "request_malformed", detail=str(e))
            return wire.error_reply(req, e.errno)
        with self.latches.forwarding((req.uuid, req.luid), route.spec) as latch, self._wait(req, route.spec):
            try:
                response = await self._client.call(route.rpc, message, critical=route.critical,
                                                   budget=self._left(received))
                latch.answered(response)
                self._answered(req, response.generation)
                return wire.encode_reply(req, 0, route.reply(req, response))
            except CallFailed as e:
                level = logging.DEBUG if e.errno == errno.ESRCH else logging.INFO
                event(log, level, "request_failed", errno=errno.errorcode.get(e.errno, e.errno), detail=str(e))
                return wire.error_reply(req, e.errno)
            except wire.WireError as e:
                event(log, logging.ERROR, "reply_unencodable", detail=str(e))
                return wire.error_reply(req, e.errno)
