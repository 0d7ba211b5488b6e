"""The bridge's gRPC client of logsvc: one channel, long-lived streams, bounded retries.

Requests travel over ``Exchange`` streams (proto/dmulog/v1/dmulog.proto): a
unary call in Python gRPC costs more than the Redis round trip behind it, on
both sides, and the bridge sends thousands of small requests a second. The
channel, stub and streams are made once and reused. Against a logsvc that
does not know Exchange (UNIMPLEMENTED), the client falls back to one unary
call per request, which is also what ``transport="unary"`` selects.

The target may name several logsvc replicas (``ipv4:10.0.0.5:7500,10.0.0.6:7500``,
or a ``dns:///`` name with several addresses): the channel balances
round-robin over the ones that are up, so the client keeps one stream per
named address (at least two), each placed by that balancer when it opens,
and a replica that goes away just drops out: its streams end and are opened
again elsewhere. A request whose fate is unknown (logsvc or its Redis
unreachable, the stream broke before the answer) is sent again with a
jittered backoff for ``budget`` seconds; each attempt has its own timeout,
which logsvc also applies, and the whole stays under the kernel's 15 s
request timeout, so the kernel never logs "Request timed out" on our account.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import grpc

from bridge.errors import RETRYABLE, UNREACHABLE_ERRNO, errno_of, retryable
from dmulog.logs import event
from dmulog.retry import RetryPolicy
from dmulog.tls import RECHECK, TlsFiles, TlsWatch, channel_credentials
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from bridge.metrics import BridgeMetrics

__all__ = ["CallFailed", "ClientConfig", "LogsvcClient"]

log = logging.getLogger("dmulog.bridge.client")

_CODE: Final = {code.value[0]: code for code in grpc.StatusCode}
# Request message name -> its field in ExchangeCall.request (and ExchangeResult.response).
_FIELD_OF: Final = {f.message_type.name: f.name for f in pb.ExchangeCall.DESCRIPTOR.oneofs_by_name["request"].fields}
# How a whole stream may end without saying anything about its requests (their
# own outcomes travel in ExchangeResults). INTERNAL is what gRPC's core reports
# when a write meets a stream whose server just went away ("Failed
# execute_batch"): the request was never delivered, so it is sent again.
_STREAM_LOST: Final = RETRYABLE | {
    grpc.StatusCode.CANCELLED, grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
}
# The response time logsvc is allowed past its own timeout before the client gives
# up on an attempt: the request must be abandoned there before it is sent again.
_SLACK: Final = 0.25


class CallFailed(Exception):
    """The request ended with ``errno`` (positive) for the kernel."""

    def __init__(self, code: int, detail: str):
        super().__init__(detail)
        self.errno = code


class _Retryable(Exception):
    """An attempt whose outcome says nothing about the request: try again."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _Final(Exception):
    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class _Unimplemented(Exception):
    """logsvc has no Exchange: it predates it."""


@dataclass(frozen=True)
class ClientConfig:
    """Timing and transport of calls to logsvc."""

    attempt_timeout: float = 3.0
    budget: float = 9.0
    transport: Literal["stream", "unary"] = "stream"
    streams: int = 0
    """Streams to keep open; 0: one per address named in the target, at least two."""
    tls: TlsFiles | None = None
    """This node's certificate and key, and the CA of logsvc's; None: plaintext."""
    server_name: str | None = None
    """The name logsvc's certificate must carry, when it is not the target's host."""


def _addresses(target: str) -> int:
    """How many addresses a target names (1 for a name to be resolved)."""
    scheme, _, rest = target.partition(":")
    if scheme in ("ipv4", "ipv6"):
        return len(rest.split(","))
    return 1


class _Stream:
    """One Exchange stream and the requests waiting for their answers on it."""

    def __init__(self, stub: pb_grpc.DirtyLogStub):
        self._outbox: asyncio.Queue[pb.ExchangeCall | None] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[pb.ExchangeResult]] = {}
        self._call = stub.Exchange(self._requests())
        self.ended: BaseException | None = None
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.ExchangeRequest]:
        """What gRPC writes: every call queued by the time the last write finished, as one message."""
        outbox = self._outbox
        while (call := await outbox.get()) is not None:
            calls = [call]
            while not outbox.empty():
                if (call := outbox.get_nowait()) is None:
                    yield pb.ExchangeRequest(calls=calls)
                    return
                calls.append(call)
            yield pb.ExchangeRequest(calls=calls)

    async def _read(self) -> None:
        ended: BaseException
        try:
            async for response in self._call:
                for result in response.results:
                    waiter = self._waiting.pop(result.id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(result)
            ended = _Retryable(grpc.StatusCode.UNAVAILABLE, "logsvc ended the stream")
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                ended = _Unimplemented(e.details())
            elif code in _STREAM_LOST:
                ended = _Retryable(code, e.details() or code.name)
            else:
                ended = _Final(code, e.details() or code.name)
        except asyncio.CancelledError:
            ended = _Retryable(grpc.StatusCode.CANCELLED, "stream closed")
        self.ended = ended
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ended)
        self._waiting.clear()

    @property
    def waiting(self) -> int:
        """Requests sent on this stream and not yet answered."""
        return len(self._waiting)

    async def ask(self, msg: pb.ExchangeCall, timeout: float) -> pb.ExchangeResult:
        """Send one request and wait up to ``timeout`` for its result."""
        if self.ended is not None:
            raise self.ended
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[pb.ExchangeResult] = loop.create_future()
        self._waiting[msg.id] = waiter
        self._outbox.put_nowait(msg)
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except _Retryable as e:
            if e.code == grpc.StatusCode.DEADLINE_EXCEEDED and self.ended is None:
                # logsvc answers every call within its timeout, even with an
                # error; silence means the stream (or its replica) is stuck.
                # End it, so this call's retry and everything after it go to
                # a new stream rather than waiting out the same silence.
                self._call.cancel()
            raise
        finally:
            timer.cancel()
            self._waiting.pop(msg.id, None)

    async def close(self) -> None:
        """Stop sending; end the call."""
        self._outbox.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class _CurrentStub:
    """The client's stub of the moment: a rotation replaces the channel under those who kept a stub."""

    def __init__(self, client: LogsvcClient):
        self._client = client

    def __getattr__(self, rpc: str) -> Any:
        self._client._follow_rotation()
        return getattr(self._client._stub, rpc)


async def _retire(channel: grpc.aio.Channel, streams: list[_Stream], grace: float) -> None:
    """Close ``streams`` once nothing waits on them (at most ``grace`` seconds), then ``channel``."""
    deadline = time.monotonic() + grace
    while any(s.waiting for s in streams) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.gather(*(s.close() for s in streams), return_exceptions=True)
    await channel.close(grace)


def _expire(waiter: asyncio.Future[pb.ExchangeResult]) -> None:
    if not waiter.done():
        waiter.set_exception(_Retryable(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer within the attempt timeout"))


class LogsvcClient:
    """Calls DirtyLog RPCs by name."""

    def __init__(self, target: str, config: ClientConfig | None = None, channel: grpc.aio.Channel | None = None,
                 *, metrics: BridgeMetrics | None = None):  # fmt: skip
        self.target = target
        self._metrics = metrics
        self._config = config or ClientConfig()
        self._tls = TlsWatch(self._config.tls, recheck=RECHECK) if self._config.tls is not None else None
        self._channel = channel or self._new_channel()
        self._stub = pb_grpc.DirtyLogStub(self._channel)
        self._retiring: set[asyncio.Task[None]] = set()
        self._retry = RetryPolicy(budget=self._config.budget, base=0.05, cap=1.0, retryable=(_Retryable,),
                                  on_retry=self._retried)  # fmt: skip
        self._use_stream = self._config.transport == "stream"
        self._streams: list[_Stream | None] = [None] * (self._config.streams or max(2, _addresses(target)))
        self._turn = itertools.count()
        self._ids = itertools.count(1)

    def _new_channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.keepalive_time_ms", 10000),
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
        ]
        if self._tls is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        if self._config.server_name:
            options.append(("grpc.ssl_target_name_override", self._config.server_name))
        return grpc.aio.secure_channel(self.target, channel_credentials(self._tls.current), options=options)

    def _follow_rotation(self) -> None:
        """A rotated certificate: new calls and streams go on a new channel, the old one ends once it is idle.

        A channel's credentials are fixed when it is made, and a reconnection
        of the old channel would present the old (maybe expired) certificate.
        Requests already waiting on an old stream get their answers there.
        """
        if self._tls is None or not self._tls.poll():
            return
        old_channel, old_streams = self._channel, [s for s in self._streams if s is not None]
        self._channel = self._new_channel()
        self._stub = pb_grpc.DirtyLogStub(self._channel)
        self._streams = [None] * len(self._streams)
        task = asyncio.ensure_future(_retire(old_channel, old_streams, self._config.attempt_timeout + _SLACK))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _retried(self, e: BaseException) -> None:
        if self._metrics is not None and isinstance(e, _Retryable):
            self._metrics.logsvc_retry(e.code)

    @property
    def budget(self) -> float:
        """Seconds a request is retried for before it fails."""
        return self._config.budget

    @property
    def stub(self) -> pb_grpc.DirtyLogStub:
        """A stub for the calls that are not kernel requests (leases, events), on the current channel.

        The lease keeper and the log watcher keep it for their lifetime, so it
        follows a certificate rotation to the new channel itself.
        """
        return cast(pb_grpc.DirtyLogStub, _CurrentStub(self))

    @property
    def transport(self) -> str:
        """``stream`` or ``unary``: what requests travel over now."""
        return "stream" if self._use_stream else "unary"

    def warm(self) -> None:
        """Start connecting now and open the streams, without waiting for either.

        A bridge (or a standby waiting to take over) pays the connection set-up
        before its first request instead of during it; under emulation that is
        most of a second. A stream that fails meanwhile is opened again on use.
        """
        self._channel.get_state(try_to_connect=True)
        if self._use_stream:
            for i in range(len(self._streams)):
                if self._streams[i] is None:
                    self._streams[i] = _Stream(self._stub)

    async def close(self) -> None:
        """End the streams and close the channel."""
        streams = [s for s in self._streams if s is not None]
        self._streams = [None] * len(self._streams)
        await asyncio.gather(*(s.close() for s in streams))
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._channel.close()

    async def call(self, rpc: str, request: Any, *, critical: bool, budget: float | None = None) -> Any:
        """Call ``rpc``; raise CallFailed with the errno the kernel should get.

        After the retry budget (``budget`` when given, what is left of the
        request's own; else the configured one) a critical request fails with
        EAGAIN (the kernel asks again at once, so it keeps waiting without
        acting on an answer we could not make durable); any other with
        EHOSTDOWN. One attempt is always made.
        """
        try:
            # Fast path: one attempt with no retry machinery; the policy only
            # comes in once logsvc has failed to answer.
            start = time.monotonic()
            try:
                return await self._attempt(rpc, request)
            except _Retryable as e:
                self._retried(e)  # the policy below counts the retries after this first one
                total = self._config.budget if budget is None else budget
                left = max(0.0, total - (time.monotonic() - start))
                return await dataclasses.replace(self._retry, budget=left).run(lambda: self._attempt(rpc, request))
        except _Retryable as e:
            code = errno.EAGAIN if critical else UNREACHABLE_ERRNO
            event(log, logging.WARNING, "logsvc_unreachable", target=self.target, rpc=rpc,
                  status=e.code.name, detail=e.detail, errno=code)  # fmt: skip
            raise CallFailed(code, f"logsvc unreachable: {e.detail}") from None
        except _Final as e:
            raise CallFailed(errno_of(e.code, e.detail), e.detail or e.code.name) from None

    async def _attempt(self, rpc: str, request: Any) -> Any:
        self._follow_rotation()
        if self._use_stream:
            try:
                return await self._exchange(request)
            except _Unimplemented:
                event(log, logging.WARNING, "exchange_unimplemented", target=self.target,
                      consequence="one unary call per request from now on")  # fmt: skip
                self._use_stream = False
        return await self._unary(rpc, request)

    async def _unary(self, rpc: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, rpc)(request, timeout=self._config.attempt_timeout)
        except grpc.aio.AioRpcError as e:
            code, detail = e.code(), e.details() or e.code().name
            if retryable(code, detail):
                raise _Retryable(code, detail) from e
            raise _Final(code, detail) from e

    def _stream(self) -> _Stream:
        """The next stream in turn, opened again if it has ended."""
        i = next(self._turn) % len(self._streams)
        stream = self._streams[i]
        if stream is None or stream.ended is not None:
            if stream is not None and self._metrics is not None:
                self._metrics.logsvc_reconnects.inc()
            stream = self._streams[i] = _Stream(self._stub)
        return stream

    async def _exchange(self, request: Any) -> Any:
        field = _FIELD_OF[request.DESCRIPTOR.name]
        timeout = self._config.attempt_timeout
        msg = pb.ExchangeCall(id=next(self._ids), timeout_ms=max(1, int(timeout * 1000)), **{field: request})
        response = await self._stream().ask(msg, timeout + _SLACK)
        if response.code:
            code = _CODE.get(response.code, grpc.StatusCode.UNKNOWN)
            if retryable(code, response.message):
                raise _Retryable(code, response.message)
            raise _Final(code, response.message)
        return getattr(response, field)
