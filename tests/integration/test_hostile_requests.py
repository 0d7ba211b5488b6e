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
from google.protobuf.message import Message

from dmulog.v1 import dmulog_pb2 as pb
from harness.log_handle import LogHandle
from harness.servers import RedisProcess
from logsvc.errors import MAX_DETAIL
from logsvc.keys import log_keys

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


def _ctr(log: LogHandle, **change: object) -> pb.CtrRequest:
    fields: dict[str, object] = {"log": log.log, "node": log.node, "target_sectors": SECTORS,
                                 "log_type": "clustered-disk", "args": ["/dev/vg/mlog", "16"], **change}  # fmt: skip
    return pb.CtrRequest(**fields)  # type: ignore[arg-type]


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
    detail = await refused(log.stub.Ctr(_ctr(log, **change)))
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


def spoiled(message: Message, placeholder: str = "bad-X") -> bytes:
    """``message`` serialized with its one ``placeholder`` string made invalid UTF-8 (same length, so still framed)."""
    data = message.SerializeToString()
    assert 1 == data.count(placeholder.encode())
    return data.replace(placeholder.encode(), placeholder.encode()[:-1] + b"\xff")


async def raw_call(target: str, method: str, data: bytes) -> grpc.aio.AioRpcError:
    """Send hand-built bytes as the request of a DirtyLog method; the error it must end with."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/dmulog.v1.DirtyLog/{method}", request_serializer=None,
                                   response_deserializer=None)  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(data)
    return e.value


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"node": pb.Node(name="bad-X", boot_id="boot-1")}, "node.name"),
        ({"node": pb.Node(name="node-a", boot_id="bad-X")}, "node.boot_id"),
        ({"log_type": "bad-X"}, "log_type"),
        ({"args": ["/dev/vg/mlog", "16", "bad-X"]}, "args[2]"),
        ({"block_devices": {"/dev/vg/mlog": "253:2", "/bad-X": "1:1"}}, "block_devices.key"),
        ({"block_devices": {"/dev/vg/mlog": "bad-X"}}, "block_devices.value"),
    ],
)
async def test_a_string_that_is_not_utf8_is_invalid_argument_naming_the_field(
    logsvc: str, log: LogHandle, redis: RedisProcess, change: dict[str, object], path: str
) -> None:
    """Protobuf refuses such a request before any servicer code runs: still INVALID_ARGUMENT, nothing stored."""
    error = await raw_call(logsvc, "Ctr", spoiled(_ctr(log, **change)))
    assert (grpc.StatusCode.INVALID_ARGUMENT, f"{path} is not valid UTF-8") == (error.code(), error.details())
    assert 0 == await stored_keys(redis, log.log.uuid)


async def test_a_bad_string_changes_nothing_on_a_live_log(logsvc: str, log: LogHandle) -> None:
    """A MARK whose node name is not UTF-8 marks nothing; the log keeps serving."""
    await log.ctr(SECTORS, "dmulog", "16", "nosync")
    await log.resume()
    mark = pb.MarkRegionRequest(log=log.log, node=pb.Node(name="bad-X", boot_id="boot-1"), regions=[5])
    error = await raw_call(logsvc, "MarkRegion", spoiled(mark))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "node.name is not valid UTF-8") == (error.code(), error.details())
    assert await log.is_clean(5)
    error = await raw_call(logsvc, "GetLogState", spoiled(pb.GetLogStateRequest(uuid="bad-X")))
    assert (grpc.StatusCode.INVALID_ARGUMENT, "uuid is not valid UTF-8") == (error.code(), error.details())


async def test_bytes_that_are_not_protobuf_are_invalid_argument(logsvc: str) -> None:
    """Not a message at all: INVALID_ARGUMENT saying which message was expected, not UNKNOWN."""
    error = await raw_call(logsvc, "Resume", b"\xff\xff\xff")
    assert (grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid ResumeRequest message") == (
        error.code(), error.details())  # fmt: skip
