"""The server interceptor.

Per-request log context, one canonical log line per request, and the single
place where a LogError becomes a gRPC status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import grpc

from dmulog.logs import bind, event, unbind
from logsvc.access import Access
from logsvc.decoding import Undecodable, method_input, tolerant
from logsvc.errors import STATUS_OF, LogError, clip
from logsvc.store import REQUEST_DEADLINE
from logsvc.tenancy import TENANT

if TYPE_CHECKING:
    from logsvc.metrics import LogsvcMetrics

__all__ = ["RequestInterceptor", "serve_one"]

log = logging.getLogger("dmulog.logsvc.request")

_MAX_FIELD: Final = 160
"""Characters of a request's uuid or node name on its log lines (a uuid has at most 128 bytes)."""
_DEADLINE_SLACK: Final = 0.01
"""Seconds before its deadline from which a cancelled request counts as ended by it."""


def _fields(request: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    ref = getattr(request, "log", None)
    if ref is not None and hasattr(ref, "uuid"):
        fields.update(uuid=clip(ref.uuid, _MAX_FIELD), luid=ref.luid)
    node = getattr(request, "node", None)
    if node is not None and hasattr(node, "name"):
        fields["node"] = clip(node.name, _MAX_FIELD)
    return fields


def _ending(deadline: float | None) -> tuple[grpc.StatusCode, str]:
    """The code of a request cancelled from outside: by its deadline if that has passed, else by its client.

    gRPC cancels the handler with the same CancelledError whether the client
    cancelled or the deadline passed; only the clock tells them apart (the
    deadline as computed here, ``time.monotonic()`` plus the time remaining,
    is a little later than gRPC's own: hence the slack). A server stopping
    cancels its calls too; they are logged CANCELLED.
    """
    if deadline is not None and time.monotonic() >= deadline - _DEADLINE_SLACK:
        return grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the answer"
    return grpc.StatusCode.CANCELLED, "cancelled by the client"


async def serve_one(
    method: str, request: Any, handling: Awaitable[Any], slow_ms: float = 100.0, timeout: float | None = None,
    context: grpc.aio.ServicerContext | None = None, metrics: LogsvcMetrics | None = None,
) -> tuple[Any, grpc.StatusCode, str]:
    """Await ``handling`` under the request's log context: (response, code, detail).

    The one place where a LogError becomes a gRPC status (its detail cut by
    ``errors.clip``) and where a request gets its log line, shared by unary
    calls and Exchange streams so that both answer and log a request
    identically. Past ``timeout`` seconds the request is cancelled and ends
    DEADLINE_EXCEEDED (a timer, not a task per request), and its Function
    refuses to run from a little before then on, so a request answered
    DEADLINE_EXCEEDED is never carried out afterwards. A request cancelled
    from outside (its client, its call's deadline, its stream ending) is
    logged CANCELLED or DEADLINE_EXCEEDED and stays cancelled. Each request
    is counted in ``metrics`` under ``method`` with the code it was logged with.
    """
    token = bind(method=method, **_fields(request))
    start = time.perf_counter()
    code, detail = grpc.StatusCode.OK, ""
    # The store makes the Function refuse to run past this (see logsvc/store.py).
    ends = None if timeout is None else time.monotonic() + timeout
    deadline = REQUEST_DEADLINE.set(ends)
    try:
        async with asyncio.timeout(timeout):
            return await handling, code, detail
    except asyncio.CancelledError:
        code, detail = _ending(ends)
        raise
    except LogError as e:
        code, detail = STATUS_OF.get(type(e), grpc.StatusCode.INTERNAL), clip(str(e))
    except TimeoutError:
        code, detail = grpc.StatusCode.DEADLINE_EXCEEDED, "request abandoned after its timeout"
    except grpc.aio.AbortError:
        # The handler ended the call with a status of its own (``context``'s): grpc_health answers a Check
        # of an unknown service NOT_FOUND so. Not a failure of ours, and the call must keep that status.
        code = (context.code() if context is not None else None) or grpc.StatusCode.UNKNOWN
        detail = (context.details() if context is not None else None) or ""
        raise
    except Exception as e:
        log.exception("request_failed")
        code, detail = grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}"
    finally:
        seconds = time.perf_counter() - start
        if metrics is not None:
            metrics.request(method, code, seconds)
        ms = seconds * 1000
        # Failures and slow requests at INFO; the rest at DEBUG, since a
        # busy mirror sends thousands of requests a second.
        level = logging.INFO if code != grpc.StatusCode.OK or ms >= slow_ms else logging.DEBUG
        event(log, level, "request", code=code.name, ms=round(ms, 3), **({"detail": detail} if detail else {}))
        REQUEST_DEADLINE.reset(deadline)
        unbind(token)
    return None, code, detail


class RequestInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary handler of the server, and makes every request parse.

    A request protobuf refuses (a string field that is not UTF-8) would fail
    before any handler runs: a unary call with UNKNOWN, a stream by ending.
    Unary and stream-stream handlers get a ``decoding.tolerant`` deserializer
    instead: a unary request that does not parse is answered
    INVALID_ARGUMENT here, naming the field; a stream servicer reads a
    ``decoding.Undecodable`` in the message's place and answers it itself
    (the Exchange stream answers each call in it).
    """

    def __init__(self, slow_ms: float = 100.0, access: Access | None = None, metrics: LogsvcMetrics | None = None):
        self._slow_ms = slow_ms
        self._access = access or Access(None)
        self._metrics = metrics
        # One wrapped handler per method, built on its first call: building it
        # per request would cost every request an allocation of closures.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the handler of ``details``: unary and server-streaming ones answered here, bidi ones parse."""
        full_name: str = details.method
        wrapped = self._wrapped.get(full_name)
        if wrapped is not None:
            return wrapped
        handler = await continuation(details)
        if handler is None:
            return handler
        descriptor = method_input(full_name)
        deserializer = handler.request_deserializer
        if descriptor is not None and deserializer is not None:
            deserializer = tolerant(deserializer, descriptor)
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._unary(full_name, handler.unary_unary),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._unary_stream(full_name, handler.unary_stream),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.stream_stream is not None:
            wrapped = grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._wrapped[full_name] = wrapped
        return wrapped

    def _unary(
        self, full_name: str, inner: Callable[[Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        slow_ms, access, method, metrics = self._slow_ms, self._access, full_name.rsplit("/", 1)[-1], self._metrics

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            handling = (request.refuse() if isinstance(request, Undecodable)
                        else access.checked(full_name, request, context, inner))  # fmt: skip
            response, code, detail = await serve_one(method, request, handling, slow_ms, context.time_remaining(),
                                                     context, metrics)
            if code is grpc.StatusCode.OK:
                return response
            await context.abort(code, detail)

        return behavior

    def _unary_stream(
        self, full_name: str, inner: Callable[[Any, Any], AsyncIterator[Any]]
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        """A server-streaming behavior whose LogErrors end the stream with their status, logged like a unary call."""
        access, method, metrics = self._access, full_name.rsplit("/", 1)[-1], self._metrics

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = bind(method=method, **_fields(request))
            start = time.perf_counter()
            code, detail = grpc.StatusCode.OK, ""
            remaining = context.time_remaining()
            ends = None if remaining is None else time.monotonic() + remaining
            try:
                if isinstance(request, Undecodable):
                    await request.refuse()
                who = access.check(full_name, request, context)
                if who is not None and who.tenant:
                    access.admit(who.tenant)
                tenant = TENANT.set(who.tenant if who is not None else None)
                try:
                    async for response in inner(request, context):
                        yield response
                finally:
                    TENANT.reset(tenant)
            except LogError as e:
                code, detail = STATUS_OF.get(type(e), grpc.StatusCode.INTERNAL), clip(str(e))
            except (asyncio.CancelledError, GeneratorExit):
                code, detail = _ending(ends)  # as in serve_one: the client went away, or the deadline passed
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN  # ended with a status of its own, as in serve_one
                raise
            except Exception as e:
                log.exception("request_failed")
                code, detail = grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}"
            finally:
                seconds = time.perf_counter() - start
                if metrics is not None:
                    metrics.request(method, code, seconds)  # a stream's whole life, WatchLogs' hours included
                event(log, logging.INFO, "request", code=code.name, ms=round(seconds * 1000, 3),
                      **({"detail": detail} if detail else {}))  # fmt: skip
                unbind(token)
            if code is not grpc.StatusCode.OK:
                await context.abort(code, detail)

        return behavior
