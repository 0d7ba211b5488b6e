"""A request's log line carries the code it really ended with, also when it ended from outside.

gRPC cancels a handler with the same CancelledError when its client cancels
and when its deadline passes; ``serve_one`` (unary calls and every call of an
Exchange stream) and the server-streaming behavior must log CANCELLED or
DEADLINE_EXCEEDED then, not OK, and let the cancellation go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from logsvc.interceptor import RequestInterceptor, serve_one


def codes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The codes of the request lines logged so far."""
    return [r.event_data["code"] for r in caplog.records if r.getMessage() == "request"]  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _request_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dmulog.logsvc.request")


async def cancelled_after(delay: float, coro: Any) -> None:
    """Run ``coro`` as a task and cancel it ``delay`` seconds later, as gRPC cancels a handler."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_request_its_client_cancels_is_logged_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled well before its deadline (or with none): CANCELLED, and the cancellation goes on."""
    await cancelled_after(0.02, serve_one("InSync", None, asyncio.sleep(10), timeout=5.0))
    await cancelled_after(0.02, serve_one("InSync", None, asyncio.sleep(10)))
    assert ["CANCELLED", "CANCELLED"] == codes(caplog)


async def test_a_request_cancelled_at_its_deadline_is_logged_deadline_exceeded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The deadline cancels the handler just before or after serve_one's own timer: DEADLINE_EXCEEDED either way."""
    await cancelled_after(0.095, serve_one("MarkRegion", None, asyncio.sleep(10), timeout=0.1))
    _, code, _ = await serve_one("MarkRegion", None, asyncio.sleep(10), timeout=0.02)
    assert ["DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"] == [*codes(caplog)[:1], code.name]


class _Context:
    """What the server-streaming behavior asks of a gRPC context, with a deadline ``remaining`` seconds away."""

    def __init__(self, remaining: float | None):
        self._remaining = remaining

    def time_remaining(self) -> float | None:
        return self._remaining

    def peer_identities(self) -> None:
        return None

    def auth_context(self) -> dict[str, Any]:
        return {}

    def code(self) -> grpc.StatusCode | None:
        return None


async def _endless(request: Any, context: Any) -> AsyncIterator[int]:
    yield 1
    await asyncio.sleep(10)
    yield 2


async def _read(stream: AsyncIterator[Any]) -> None:
    async for _ in stream:
        pass


@pytest.mark.parametrize(("remaining", "delay", "code"), [(None, 0.02, "CANCELLED"), (5.0, 0.02, "CANCELLED"),
                                                          (0.05, 0.06, "DEADLINE_EXCEEDED")])  # fmt: skip
async def test_a_stream_that_ends_from_outside_is_logged_with_its_code(
    caplog: pytest.LogCaptureFixture, remaining: float | None, delay: float, code: str
) -> None:
    """A server stream (ReadLogState, WatchLogs) whose client leaves, or whose deadline passes, says which."""
    behavior = RequestInterceptor()._unary_stream("/dmulog.v1.DirtyLog/WatchLogs", _endless)
    await cancelled_after(delay, _read(behavior(object(), _Context(remaining))))
    assert [code] == codes(caplog)
