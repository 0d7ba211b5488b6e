"""One retry budget per kernel request, counted from the moment it was read.

The kernel waits 15 s for an answer (docs/protocol.md §5). A request that first
waits for the node's lease and then for logsvc must spend one budget on both,
or a lease that arrives late followed by a slow logsvc would answer after the
kernel gave up. The client here is a stand-in that records the budget it is
handed; what a real logsvc does with a call is the integration tests' business.
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import Any, cast

from bridge import wire
from bridge.answer import Answerer
from bridge.client import LogsvcClient
from bridge.latch import InSyncLatches
from dmulog.requests import RequestType
from dmulog.v1 import dmulog_pb2 as pb

BUDGET = 9.0
NODE = pb.Node(name="n", boot_id="b", epoch=1)


class RecordingClient:
    """Answers every call at once with an empty response and keeps the budget each was given."""

    budget = BUDGET

    def __init__(self) -> None:
        self.budgets: list[float | None] = []

    async def call(self, rpc: str, request: Any, *, critical: bool, budget: float | None = None) -> Any:
        self.budgets.append(budget)
        return getattr(pb, f"{rpc}Response")()


def _request() -> wire.Request:
    return wire.decode_request(wire.encode_request(int(RequestType.FLUSH), seq=7, luid=1, uuid="log-1"))


def _answerer(client: RecordingClient, ready: asyncio.Event | None = None) -> Answerer:
    return Answerer(cast(LogsvcClient, client), NODE, InSyncLatches(), lease_ready=ready)


async def test_the_budget_counts_from_the_moment_the_request_was_read() -> None:
    """A request read 4 s ago has 5 s of its 9 left; one read 10 s ago has none, and still one attempt."""
    client = RecordingClient()
    answerer = _answerer(client)
    now = time.monotonic()

    await answerer.answer(_request(), now - 4.0)
    await answerer.answer(_request(), now - 10.0)

    assert 4.9 < (client.budgets[0] or 0) <= 5.0
    assert [0.0] == client.budgets[1:]


async def test_a_wait_for_the_lease_is_spent_from_the_same_budget() -> None:
    """The lease comes 0.3 s after the request: logsvc gets what is left, not a fresh 9 s."""
    client = RecordingClient()
    ready = asyncio.Event()
    answerer = _answerer(client, ready)
    asyncio.get_running_loop().call_later(0.3, ready.set)

    reply = wire.decode_reply(await answerer.answer(_request(), time.monotonic()))

    assert 0 == reply.error
    [given] = client.budgets
    assert given is not None and given <= BUDGET - 0.3


async def test_a_lease_that_never_comes_fails_the_request_within_its_budget() -> None:
    """No lease within what is left of the budget: EAGAIN for a critical request, and no call."""
    client = RecordingClient()
    answerer = _answerer(client, asyncio.Event())
    start = time.monotonic()

    reply = wire.decode_reply(await answerer.answer(_request(), start - (BUDGET - 0.2)))

    assert -errno.EAGAIN == reply.error  # the kernel asks again at once
    assert time.monotonic() - start < 1.0
    assert [] == client.budgets
