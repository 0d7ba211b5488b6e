"""What the fuzzers found, each kept as a plain test of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle
from logsvc import validate
from logsvc.errors import InvalidArgument


@pytest.mark.parametrize("value", [1 << 53, 1 << 63, (1 << 64) - 1])
def test_a_generation_lua_cannot_count_on_is_refused(value: int) -> None:
    """From 2^53 on a generation is refused before Redis sees it, as an epoch is."""
    request = pb.DtrRequest(log=pb.LogRef(uuid="u", luid=1, generation=value), node=pb.Node(name="n", boot_id="b"))
    with pytest.raises(InvalidArgument, match=r"log\.generation must be below 2\^53"):
        validate.caller(request)


def test_the_largest_generation_below_2_53_is_taken() -> None:
    """The bound is exclusive: 2^53 - 1 passes, as node.epoch's does."""
    request = pb.DtrRequest(log=pb.LogRef(uuid="u", luid=1, generation=(1 << 53) - 1),
                            node=pb.Node(name="n", boot_id="b"))  # fmt: skip
    assert validate.caller(request) == ("n", "b", "1", 0)


@pytest.fixture
async def channel(logsvc: str) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a real logsvc on the session's redis-server."""
    async with grpc.aio.insecure_channel(logsvc) as ch:
        yield ch


@pytest.mark.parametrize("value", [1 << 63, (1 << 64) - 1])
async def test_a_huge_generation_leaves_the_log_working(channel: grpc.aio.Channel, uuid: str, value: int) -> None:
    """A generation of 2^63 or more once made the log store it, and every later write failed INTERNAL.

    The library stored the number in gen:<node>, then counted on with
    HINCRBY ("hash value is not an integer"), and the reply's generation
    wrapped negative: the log was dead to every node. Now it is refused
    INVALID_ARGUMENT and the log goes on.
    """
    stub = pb_grpc.DirtyLogStub(channel)
    log = LogHandle(stub, uuid)
    await log.ctr(120, "clustered-core", "16")
    await log.resume()
    bent = pb.MarkRegionRequest(log=pb.LogRef(uuid=uuid, luid=log.log.luid, generation=value), node=log.node,
                                regions=[0])  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.MarkRegion(bent)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    await stub.MarkRegion(pb.MarkRegionRequest(log=log.log, node=log.node, regions=[0]))
    await stub.Dtr(pb.DtrRequest(log=log.log, node=log.node))
