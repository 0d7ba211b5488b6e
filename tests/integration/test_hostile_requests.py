"""Requests no bridge sends, through the real gRPC API: refused with INVALID_ARGUMENT, nothing stored.

A client can put anything into a request, so each test sends what a careless
or hostile one might (names with a trailing newline, strings that are not
UTF-8, megabyte arguments) and checks both the answer and that Redis holds
no key of the log afterwards.
"""

from __future__ import annotations

import re

import grpc
import pytest
import redis.asyncio as aioredis

from dmulog.v1 import dmulog_pb2 as pb
from logsvc.errors import MAX_DETAIL
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


MEGABYTE = "x" * 1_000_000


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("log_type", {"log_type": MEGABYTE}, "log_type must be at most 332 bytes, got 1000000"),
        ("args", {"args": ["/dev/vg/mlog", "16", MEGABYTE]}, "args[2] must be at most 4096 bytes, got 1000000"),
        ("args", {"args": ["/dev/vg/mlog", "16", *["sync"] * 165]}, "args must have at most 166 entries, got 167"),
        ("block_devices", {"block_devices": {MEGABYTE: "253:2"}}, "must be at most 4096 bytes, got 1000000"),
        ("block_devices", {"block_devices": {"/dev/vg/mlog": MEGABYTE}}, "must be at most 21 bytes, got 1000000"),
        ("block_devices", {"block_devices": {f"/dev/{i}": "1:1" for i in range(167)}},
         "block_devices must have at most 166 entries, got 167"),
        ("node", {"node": pb.Node(name=MEGABYTE, boot_id="boot-1")}, "node.name must be 1 to 64 characters"),
    ],
)  # fmt: skip
async def test_huge_ctr_fields_are_refused_with_a_short_detail(
    log: LogHandle, redis: RedisProcess, field: str, change: dict[str, object], message: str
) -> None:
    """A megabyte field is INVALID_ARGUMENT naming the field and its limit, not RESOURCE_EXHAUSTED (retried)."""
    fields: dict[str, object] = {"log": log.log, "node": log.node, "target_sectors": SECTORS,
                                 "log_type": "clustered-disk", "args": ["/dev/vg/mlog", "16"], **change}  # fmt: skip
    detail = await refused(log.stub.Ctr(pb.CtrRequest(**fields)))  # type: ignore[arg-type]
    assert message in detail
    assert len(detail) <= MAX_DETAIL
    assert 0 == await stored_keys(redis, log.log.uuid)


async def test_a_long_detail_is_cut_where_the_status_is_made(log: LogHandle, redis: RedisProcess) -> None:
    """An argument within its limit but quoted whole would make a 4 KB detail: it is cut, and says so."""
    word = "y" * 4000
    detail = await refused(log.ctr(SECTORS, "clustered-core", "16", word))
    assert detail.startswith("unknown clustered-core argument 'yyy")
    assert len(detail) <= MAX_DETAIL
    cut = re.search(r"\.\.\. \[cut: ([0-9]+) characters\]$", detail)
    assert cut is not None and int(cut.group(1)) > len(word)
    assert 0 == await stored_keys(redis, log.log.uuid)
