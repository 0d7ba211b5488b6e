"""The Exchange stream: the kernel request RPCs, many per stream.

A unary call in Python gRPC costs more than the Redis round trip it wraps
(call set-up, metadata, status, a task per call, on both sides); a bridge
sends thousands of small requests a second, so it opens one stream and sends
them all over it. Each request on a stream is handled exactly as its unary
RPC would be: the same servicer method, the same error mapping and log line
(``serve_one``), concurrently with the stream's other requests. Results
that are ready together leave in one message, which is where a busy stream
saves most: each message costs a write through gRPC's machinery.

A message that does not parse (a string field that is not UTF-8) reaches
``serve`` as a ``decoding.Undecodable``; its calls are read one by one, the
good ones served as usual and each bad one answered INVALID_ARGUMENT under
its own id, so one bad call neither ends the stream nor loses the others.

Shutdown: ``drain`` stops every stream from reading further requests,
answers the ones already read, and ends the stream; a client then sends what
is still unanswered to another replica (or to this one once it is back), and
nothing it sent is half done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf.message import DecodeError

from dmulog.logs import event
from dmulog.v1 import dmulog_pb2 as pb
from logsvc.decoding import Undecodable, explain, lenient
from logsvc.interceptor import serve_one

if TYPE_CHECKING:
    from logsvc.metrics import LogsvcMetrics

__all__ = ["Exchanges", "methods_by_field"]

MAX_IN_FLIGHT: Final = 1024
"""Requests one stream may have in progress; past it the stream stops reading
(gRPC flow control then holds the client back) instead of growing tasks."""
MAX_IN_FLIGHT_PROCESS: Final = 8192
"""Requests all of a process's streams together may have in progress, likewise.
Behind both, at most ``--redis-connections`` commands are at Redis at once and
the rest wait for a connection (logsvc/store.py): a burst queues, it never fails."""

_END: Final = object()
_DRAIN: Final = object()


def methods_by_field() -> dict[str, str]:
    """ExchangeCall's oneof field name → the DirtyLog method that serves it.

    Derived from the descriptors, so a request type added to the proto cannot
    be routed to the wrong method.
    """
    method_of = {m.input_type.full_name: m.name for m in pb.DESCRIPTOR.services_by_name["DirtyLog"].methods}
    fields = pb.ExchangeCall.DESCRIPTOR.oneofs_by_name["request"].fields
    return {f.name: method_of[f.message_type.full_name] for f in fields}


_METHOD_OF: Final = methods_by_field()
_OK: Final = grpc.StatusCode.OK
_SERVICE: Final = "/dmulog.v1.DirtyLog/"
"""The prefix of a full method name, as logsvc/access.py names the calls it checks."""
log = logging.getLogger("dmulog.logsvc.exchange")


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """An ExchangeCall that does not parse, to be answered INVALID_ARGUMENT under its id."""

    id: int
    method: str  # the RPC its request is for, for its log line
    refusal: Undecodable


def _calls(msg: Any) -> Iterable[Any]:
    """The calls of an ExchangeRequest, or of one that did not parse: each ExchangeCall or _Unreadable.

    The message is read with the lenient types (strings as bytes) and each
    call parsed strictly again, so the bad ones are known by id. Calls of a
    message that is not even protobuf cannot be told apart: that message is
    logged and dropped, and the client's own timeout covers its calls.
    """
    if not isinstance(msg, Undecodable):
        return msg.calls
    envelope: Any = lenient(pb.ExchangeRequest.DESCRIPTOR, msg.data)
    if envelope is None:
        event(log, logging.WARNING, "exchange_request_unreadable", problem=msg.problem, size=len(msg.data))
        return []
    calls: list[Any] = []
    for call in envelope.calls:
        data = call.SerializeToString()
        try:
            calls.append(pb.ExchangeCall.FromString(data))
            continue
        except DecodeError:
            pass
        # Explained as its unary RPC would explain it, so the field paths agree.
        kind = call.WhichOneof("request")
        method, descriptor, part = "Exchange", pb.ExchangeCall.DESCRIPTOR, call
        if kind is not None:
            method, descriptor = _METHOD_OF[kind], pb.ExchangeCall.DESCRIPTOR.fields_by_name[kind].message_type
            part = getattr(call, kind)
        raw = part.SerializeToString()
        calls.append(_Unreadable(call.id, method, Undecodable(raw, explain(descriptor, raw))))
    return calls


class Exchanges:
    """Serves the Exchange streams of one servicer; knows them so it can drain them."""

    def __init__(self, servicer: Any, max_in_flight: int = MAX_IN_FLIGHT,
                 max_in_flight_process: int = MAX_IN_FLIGHT_PROCESS, metrics: LogsvcMetrics | None = None):  # fmt: skip
        self._servicer = servicer
        self._metrics = metrics
        """Each call counted as the request it carries (the interceptor never sees inside a stream)."""
        self._max_in_flight = max_in_flight
        self._process_slots = asyncio.Semaphore(max_in_flight_process)
        self._open: set[asyncio.Queue[Any]] = set()
        self._draining = False

    @property
    def open_streams(self) -> int:
        """Streams being served now."""
        return len(self._open)

    def drain(self) -> None:
        """Make every stream, open now or later, finish what it has read and end."""
        self._draining = True
        for queue in self._open:
            queue.put_nowait(_DRAIN)

    async def _one(self, msg: pb.ExchangeCall | _Unreadable, context: Any) -> pb.ExchangeResult:
        if isinstance(msg, _Unreadable):
            _, code, detail = await serve_one(msg.method, None, msg.refusal.refuse(), metrics=self._metrics)
            return pb.ExchangeResult(id=msg.id, code=code.value[0], message=detail)
        kind = msg.WhichOneof("request")
        if kind is None:
            return pb.ExchangeResult(id=msg.id, code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                     message="ExchangeCall carries no request")  # fmt: skip
        method = _METHOD_OF[kind]
        if self._metrics is not None:
            self._metrics.exchanged(method)
        inner = getattr(msg, kind)
        handling = self._servicer.access.checked(_SERVICE + method, inner, context, getattr(self._servicer, method))
        timeout = msg.timeout_ms / 1000 if msg.timeout_ms else None
        response, code, detail = await serve_one(method, inner, handling, timeout=timeout, metrics=self._metrics)
        if code is _OK:
            return pb.ExchangeResult(id=msg.id, **{kind: response})
        return pb.ExchangeResult(id=msg.id, code=code.value[0], message=detail)

    async def serve(
        self, requests: AsyncIterator[pb.ExchangeRequest | Undecodable], context: Any
    ) -> AsyncIterator[Any]:
        """Responses to ``requests``: each carries every result ready by then."""
        if self._draining:
            return
        out: asyncio.Queue[Any] = asyncio.Queue()
        slots = asyncio.Semaphore(self._max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(call: pb.ExchangeCall | _Unreadable) -> None:
            try:
                out.put_nowait(await self._one(call, context))
            finally:
                self._process_slots.release()
                slots.release()

        async def read() -> None:
            try:
                async for msg in requests:
                    for call in _calls(msg):
                        await slots.acquire()
                        await self._process_slots.acquire()
                        task = asyncio.create_task(answer(call))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            finally:
                # The client is done sending (or gone): end the stream once
                # everything read is answered.
                await asyncio.gather(*tasks, return_exceptions=True)
                out.put_nowait(_END)

        self._open.add(out)
        reader = asyncio.create_task(read())
        try:
            while True:
                item = await out.get()
                batch = []
                while item is not _END and item is not _DRAIN:
                    batch.append(item)
                    if out.empty():
                        break
                    item = out.get_nowait()
                if batch:
                    yield pb.ExchangeResponse(results=batch)
                if item is _END:
                    return
                if item is _DRAIN:
                    reader.cancel()
                    await asyncio.gather(reader, *tasks, return_exceptions=True)
                    rest = []
                    while not out.empty():
                        if isinstance(item := out.get_nowait(), pb.ExchangeResult):
                            rest.append(item)
                    if rest:
                        yield pb.ExchangeResponse(results=rest)
                    return
        finally:
            self._open.discard(out)
            reader.cancel()
            for task in tasks:
                task.cancel()
