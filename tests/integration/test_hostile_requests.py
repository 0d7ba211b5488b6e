"""Requests no bridge sends, through the real gRPC API: refused with INVALID_ARGUMENT, nothing stored.

A client can put anything into a request, so each test sends what a careless
or hostile one might (names with a trailing newline, strings that are not
UTF-8, megabyte arguments) and checks both the answer and that Redis holds
no key of the log afterwards.
"""

from __future__ import annotations

import grpc
import pytest
import redis.asyncio as aioredis

from logsvc.keys import log_keys
from tests.servers import LogHandle, RedisProcess

SECTORS = 120


async def stored_keys(redis: RedisProcess, uuid: str) -> int:
    """How many of the log's keys exist in Redis."""
    client = aioredis.from_url(redis.url)
    try:
        return int(await client.exists(*log_keys(uuid)))
    finally:
        await client.aclose()


async def refused(coro: object) -> str:
    """The detail of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await coro  # type: ignore[misc]
    assert grpc.StatusCode.INVALID_ARGUMENT == e.value.code(), e.value.details()
    return e.value.details() or ""


@pytest.mark.parametrize(("node", "boot"), [("node-a\n", "boot-1"), ("node-a", "boot-1\n"), ("node-a\r\n", "boot-1")])
async def test_a_name_with_a_trailing_newline_is_not_another_node(
    log: LogHandle, redis: RedisProcess, node: str, boot: str
) -> None:
    """A name that ends in a line break would be a second node beside "node-a": refused, nothing stored."""
    bad = log.other(node=node, boot=boot)
    detail = await refused(bad.ctr(SECTORS, "dmulog", "16", "nosync"))
    assert "must be 1 to 64 characters of [A-Za-z0-9._-]" in detail
    assert 0 == await stored_keys(redis, log.log.uuid)
