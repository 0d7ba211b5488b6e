"""The Exchange stream against a real logsvc and Redis, and the bridge client on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from bridge.client import ClientConfig, LogsvcClient
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle
from harness.servers import RedisProcess, free_port, logsvc_server
from logsvc.errors import MAX_DETAIL
from logsvc.exchange import methods_by_field
from logsvc.server import build_server
from logsvc.service import DirtyLogService
from logsvc.store import Store

NODE = pb.Node(name="node-a", boot_id="boot-1")
S = grpc.StatusCode
OK, INVALID, NOT_FOUND, DEADLINE = (c.value[0] for c in (S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.DEADLINE_EXCEEDED))


class Stream:
    """One raw Exchange stream: send calls, collect results by id."""

    def __init__(self, stub: pb_grpc.DirtyLogStub | None = None, *, channel: grpc.aio.Channel | None = None):
        """A stream of ``stub``; or on ``channel``, written as bytes, so ``send_bytes`` can send what no stub would."""
        self._raw = channel is not None
        if channel is not None:
            self.call = channel.stream_stream("/dmulog.v1.DirtyLog/Exchange", request_serializer=None,
                                              response_deserializer=pb.ExchangeResponse.FromString)()  # fmt: skip
        else:
            assert stub is not None
            self.call = stub.Exchange()
        self.results: dict[int, pb.ExchangeResult] = {}
        self.messages = 0

    async def send(self, *calls: pb.ExchangeCall) -> None:
        message = pb.ExchangeRequest(calls=calls)
        await self.call.write(message.SerializeToString() if self._raw else message)

    async def send_bytes(self, data: bytes) -> None:
        await self.call.write(data)

    async def wait(self, *ids: int, timeout: float = 5.0) -> list[pb.ExchangeResult]:
        async def collect() -> None:
            while not set(ids) <= self.results.keys():
                response = await self.call.read()
                assert response is not grpc.aio.EOF, "the stream ended early"
                self.messages += 1
                for result in response.results:
                    assert result.id not in self.results, f"two results for id {result.id}"
                    self.results[result.id] = result

        await asyncio.wait_for(collect(), timeout)
        return [self.results[i] for i in ids]


def ref(uuid: str) -> pb.LogRef:
    """The one instance each test drives."""
    return pb.LogRef(uuid=uuid, luid=7)


async def open_log(s: Stream, uuid: str, regions: int = 8) -> None:
    """CTR then RESUME, each waited for: calls on one stream run concurrently."""
    await s.send(pb.ExchangeCall(id=1, ctr=pb.CtrRequest(log=ref(uuid), node=NODE, target_sectors=16 * regions,
                                                          log_type="dmulog", args=["16", "nosync"])))  # fmt: skip
    assert OK == (await s.wait(1))[0].code
    await s.send(pb.ExchangeCall(id=2, resume=pb.ResumeRequest(log=ref(uuid), node=NODE)))
    assert OK == (await s.wait(2))[0].code


def test_every_kernel_request_type_has_its_field_and_method() -> None:
    """The oneof covers exactly the 17 kernel RPCs, each routed to the method of the same name."""
    routes = methods_by_field()
    kernel_rpcs = {m.name for m in pb.DESCRIPTOR.services_by_name["DirtyLog"].methods} - {
        "Exchange", "ListLogs", "GetLogState", "ReadLogState", "AcquireLease", "RenewLease", "WatchLogs",
        "ListNodes"}  # fmt: skip
    assert 17 == len(routes)
    assert kernel_rpcs == set(routes.values())
    for field, method in routes.items():
        assert field.replace("_", "") == method.lower()


async def test_calls_in_one_message_are_each_answered_by_id(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """A batch mixing good and bad calls: every id gets its own result; a failure does not end the stream."""
    s = Stream(stub)
    await open_log(s, uuid)
    k = {"log": ref(uuid), "node": NODE}
    await s.send(
        pb.ExchangeCall(id=10, mark_region=pb.MarkRegionRequest(**k, regions=[3])),
        pb.ExchangeCall(id=11, in_sync=pb.InSyncRequest(**k, region=999)),
        pb.ExchangeCall(id=12),
        pb.ExchangeCall(id=13, get_region_size=pb.GetRegionSizeRequest(**k)),
        pb.ExchangeCall(id=14, get_sync_count=pb.GetSyncCountRequest(**k)),
    )
    mark, bad_region, empty, size, count = await s.wait(10, 11, 12, 13, 14)
    assert (OK, "mark_region") == (mark.code, mark.WhichOneof("response"))
    assert (INVALID, None) == (bad_region.code, bad_region.WhichOneof("response"))
    assert "999" in bad_region.message
    assert (INVALID, "ExchangeCall carries no request") == (empty.code, empty.message)
    assert (OK, 16) == (size.code, size.get_region_size.region_size)
    assert (OK, 8) == (count.code, count.get_sync_count.sync_count)  # nosync: every region starts in sync
    # The stream still works after the failures, and the mark is real.
    await s.send(pb.ExchangeCall(id=15, is_clean=pb.IsCleanRequest(**k, region=3)))
    (clean,) = await s.wait(15)
    assert (OK, False) == (clean.code, clean.is_clean.clean)
    s.call.cancel()


async def test_errors_are_those_of_the_unary_rpc(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """The same request fails with the same status code and message on both transports."""
    request = pb.InSyncRequest(log=ref(uuid), node=NODE, region=0)  # no such log
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.InSync(request)
    s = Stream(stub)
    await s.send(pb.ExchangeCall(id=1, in_sync=request))
    (result,) = await s.wait(1)
    assert (unary.value.code().value[0], unary.value.details()) == (result.code, result.message)
    assert NOT_FOUND == result.code
    s.call.cancel()


async def test_timeout_abandons_a_call_waiting_for_redis(tmp_path: Path, uuid: str) -> None:
    """A call past its timeout_ms is answered DEADLINE_EXCEEDED and never carried out, even once Redis is back.

    The same call without a timeout waits for Redis and is carried out: the
    control that shows the first outcome is the timeout's doing.
    """
    redis = RedisProcess(tmp_path / "redis").start()
    processes = [redis]
    try:
        async with logsvc_server(redis.url) as target, grpc.aio.insecure_channel(target) as channel:
            stub = pb_grpc.DirtyLogStub(channel)
            s = Stream(stub)
            await open_log(s, uuid)
            k = {"log": ref(uuid), "node": NODE}
            redis.kill()
            start = time.monotonic()
            await s.send(pb.ExchangeCall(id=10, timeout_ms=300, mark_region=pb.MarkRegionRequest(**k, regions=[5])),
                         pb.ExchangeCall(id=11, mark_region=pb.MarkRegionRequest(**k, regions=[6])))  # fmt: skip
            (abandoned,) = await s.wait(10)
            assert DEADLINE == abandoned.code
            assert time.monotonic() - start < 1.5
            processes.append(RedisProcess(tmp_path / "redis", port=redis.port).start())  # same AOF, same port
            (waited,) = await s.wait(11, timeout=10)
            assert OK == waited.code
            await asyncio.sleep(3.0)  # past logsvc's own Redis retry budget (2.5 s)
            handle = LogHandle(stub, uuid, luid=7)
            assert await handle.is_clean(5), "the abandoned MARK was carried out after all"
            assert not await handle.is_clean(6)
            s.call.cancel()
    finally:
        for process in processes:
            process.kill()


@pytest.fixture
async def served(redis: RedisProcess) -> AsyncIterator[tuple[grpc.aio.Server, DirtyLogService, str]]:
    """A logsvc server whose servicer the test can drain."""
    store = Store.from_url(redis.url)
    await store.load_library()
    server, port, _health, service = await build_server(store, "127.0.0.1:0")
    await server.start()
    try:
        yield server, service, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        await store.close()


async def test_drain_answers_what_was_read_then_ends_every_stream(
    served: tuple[grpc.aio.Server, DirtyLogService, str], uuid: str
) -> None:
    """Shutting down: open streams end on their own, so the server stops at once rather than after its grace."""
    server, service, target = served
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        s = Stream(stub)
        await open_log(s, uuid)
        k = {"log": ref(uuid), "node": NODE}
        await s.send(
            *(pb.ExchangeCall(id=100 + r, mark_region=pb.MarkRegionRequest(**k, regions=[r])) for r in range(8))
        )
        service.drain()
        # Whatever the server read before the drain is answered; the stream then ends cleanly.
        while (response := await asyncio.wait_for(s.call.read(), 5)) is not grpc.aio.EOF:
            s.results.update((r.id, r) for r in response.results)
        assert grpc.StatusCode.OK == await s.call.code()
        assert all(r.code == OK for r in s.results.values())
        late = Stream(stub)  # a stream opened while draining ends at once
        assert grpc.aio.EOF == await asyncio.wait_for(late.call.read(), 5)
        start = time.monotonic()
        await server.stop(5.0)
        assert time.monotonic() - start < 1.0


async def test_client_falls_back_to_unary_calls_on_a_logsvc_without_exchange(redis: RedisProcess, uuid: str) -> None:
    """Against an older logsvc (no Exchange method) requests still succeed, over unary calls."""
    store = Store.from_url(redis.url)
    await store.load_library()
    service = DirtyLogService(store)
    unary = {
        m.name: grpc.unary_unary_rpc_method_handler(
            getattr(service, m.name),
            request_deserializer=getattr(pb, m.input_type.name).FromString,
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in pb.DESCRIPTOR.services_by_name["DirtyLog"].methods
        if m.name != "Exchange"
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("dmulog.v1.DirtyLog", unary),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = LogsvcClient(f"127.0.0.1:{port}", ClientConfig(attempt_timeout=2.0, budget=4.0))
    try:
        assert "stream" == client.transport
        request = pb.CtrRequest(log=ref(uuid), node=NODE, target_sectors=128, log_type="dmulog", args=["16"])
        await client.call("Ctr", request, critical=False)
        assert "unary" == client.transport
        size = await client.call("GetRegionSize", pb.GetRegionSizeRequest(log=ref(uuid), node=NODE), critical=False)
        assert 16 == size.region_size
    finally:
        await client.close()
        await server.stop(0)
        await store.close()


async def test_client_spreads_streams_and_survives_a_stream_ending(redis: RedisProcess, uuid: str) -> None:
    """Two replicas, one drained and stopped: pending and later calls land on the other, without an error."""
    a_port, b_port = free_port(), free_port()
    async with logsvc_server(redis.url, listen=f"127.0.0.1:{b_port}"):
        store = Store.from_url(redis.url)
        server, _port, _health, service = await build_server(store, f"127.0.0.1:{a_port}")
        await server.start()
        client = LogsvcClient(
            f"ipv4:127.0.0.1:{a_port},127.0.0.1:{b_port}", ClientConfig(attempt_timeout=1.0, budget=6.0)
        )
        try:
            k = {"log": ref(uuid), "node": NODE}
            await client.call(
                "Ctr", pb.CtrRequest(**k, target_sectors=128, log_type="dmulog", args=["16"]), critical=True
            )
            await client.call("Resume", pb.ResumeRequest(**k), critical=True)
            marks = [
                asyncio.create_task(client.call("MarkRegion", pb.MarkRegionRequest(**k, regions=[r]), critical=True))
                for r in range(8)
            ]
            service.drain()
            await server.stop(2.0)
            await asyncio.gather(*marks)
            for r in range(8):
                clean = await client.call("IsClean", pb.IsCleanRequest(**k, region=r), critical=False)
                assert not clean.clean
            assert "stream" == client.transport
        finally:
            await client.close()
            await server.stop(0)
            await store.close()


async def test_warm_opens_every_stream_before_the_first_request(
    served: tuple[grpc.aio.Server, DirtyLogService, str],
) -> None:
    """A (standby) bridge has its streams open before the kernel asks anything."""
    _server, service, target = served
    client = LogsvcClient(target)
    try:
        client.warm()
        deadline = time.monotonic() + 5
        while service.open_streams < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert 2 == service.open_streams
    finally:
        await client.close()


async def test_a_silent_stream_is_replaced_and_its_calls_go_elsewhere(redis: RedisProcess, uuid: str) -> None:
    """A replica that takes requests and never answers costs one attempt timeout per stream, not every call."""

    async def swallow(requests: AsyncIterator[pb.ExchangeRequest], context: object) -> AsyncIterator[bytes]:
        async for _ in requests:
            pass
        yield b""  # never reached while the client keeps the stream open

    silent = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        swallow, request_deserializer=pb.ExchangeRequest.FromString, response_serializer=lambda b: b
    )
    silent.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("dmulog.v1.DirtyLog", {"Exchange": handler}),)
    )
    silent_port = silent.add_insecure_port("127.0.0.1:0")
    await silent.start()
    good_port = free_port()
    async with logsvc_server(redis.url, listen=f"127.0.0.1:{good_port}"):
        target = f"ipv4:127.0.0.1:{silent_port},127.0.0.1:{good_port}"
        client = LogsvcClient(target, ClientConfig(attempt_timeout=0.3, budget=8.0))
        try:
            k = {"log": ref(uuid), "node": NODE}
            await client.call(
                "Ctr", pb.CtrRequest(**k, target_sectors=128, log_type="dmulog", args=["16"]), critical=True
            )
            start = time.monotonic()
            for r in range(8):
                await client.call("MarkRegion", pb.MarkRegionRequest(**k, regions=[r]), critical=True)
            # Without replacing the silent stream, every other call would wait out its
            # attempt (0.3 s, plus 0.25 s of slack) at least once.
            assert time.monotonic() - start < 4 * (0.3 + 0.25)
        finally:
            await client.close()
            await silent.stop(0)


async def test_a_huge_argument_gets_a_short_error_on_the_stream(stub: pb_grpc.DirtyLogStub, uuid: str) -> None:
    """As on a unary call: INVALID_ARGUMENT naming the field and its limit, a bounded message, the stream goes on."""
    s = Stream(stub)
    huge = pb.CtrRequest(log=ref(uuid), node=NODE, target_sectors=128, log_type="dmulog", args=["16", "x" * 1_000_000])
    long = pb.CtrRequest(log=ref(uuid), node=NODE, target_sectors=128, log_type="dmulog", args=["16", "y" * 4000])
    await s.send(pb.ExchangeCall(id=1, ctr=huge), pb.ExchangeCall(id=2, ctr=long))
    too_big, too_long = await s.wait(1, 2)
    assert (INVALID, "args[1] must be at most 4096 bytes, got 1000000") == (too_big.code, too_big.message)
    assert INVALID == too_long.code
    assert len(too_long.message) <= MAX_DETAIL and too_long.message.endswith(" characters]")
    await s.send(pb.ExchangeCall(id=3, get_region_size=pb.GetRegionSizeRequest(log=ref(uuid), node=NODE)))
    assert NOT_FOUND == (await s.wait(3))[0].code  # the stream goes on, and neither CTR left an instance
    s.call.cancel()


def spoiled(message: Message, placeholder: bytes = b"bad-X") -> bytes:
    """``message`` serialized with its one ``placeholder`` string made invalid UTF-8 (same length, still framed)."""
    data = message.SerializeToString()
    assert 1 == data.count(placeholder)
    return data.replace(placeholder, placeholder[:-1] + b"\xff")


async def test_a_call_that_is_not_utf8_is_answered_by_id_and_the_rest_are_served(logsvc: str, uuid: str) -> None:
    """One bad call in a message gets its own INVALID_ARGUMENT; its neighbours are served and the stream goes on."""
    async with grpc.aio.insecure_channel(logsvc) as channel:
        s = Stream(channel=channel)
        await open_log(s, uuid)
        k = {"log": ref(uuid), "node": NODE}
        bad_mark = pb.MarkRegionRequest(log=ref(uuid), node=pb.Node(name="bad-X", boot_id="boot-1"), regions=[5])
        await s.send_bytes(spoiled(pb.ExchangeRequest(calls=[
            pb.ExchangeCall(id=10, mark_region=pb.MarkRegionRequest(**k, regions=[3])),
            pb.ExchangeCall(id=11, mark_region=bad_mark),
            pb.ExchangeCall(id=12, get_region_size=pb.GetRegionSizeRequest(**k)),
        ])))  # fmt: skip
        mark, bad, size = await s.wait(10, 11, 12)
        assert (OK, OK, 16) == (mark.code, size.code, size.get_region_size.region_size)
        assert (INVALID, "node.name is not valid UTF-8", None) == (bad.code, bad.message, bad.WhichOneof("response"))
        unary = channel.unary_unary("/dmulog.v1.DirtyLog/MarkRegion", request_serializer=None,
                                    response_deserializer=None)  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await unary(spoiled(bad_mark))
        assert (e.value.code().value[0], e.value.details()) == (bad.code, bad.message)  # as the unary RPC answers
        await s.send(pb.ExchangeCall(id=13, is_clean=pb.IsCleanRequest(**k, region=3)),
                     pb.ExchangeCall(id=14, is_clean=pb.IsCleanRequest(**k, region=5)))  # fmt: skip
        marked, untouched = await s.wait(13, 14)
        assert (False, True) == (marked.is_clean.clean, untouched.is_clean.clean)
        s.call.cancel()


async def test_a_message_that_is_not_protobuf_does_not_end_the_stream(logsvc: str, uuid: str) -> None:
    """Nothing in it can be answered (no call can be told apart), but the stream and later calls go on."""
    async with grpc.aio.insecure_channel(logsvc) as channel:
        s = Stream(channel=channel)
        await s.send_bytes(b"\xff\xff\xff")
        await open_log(s, uuid)
        assert {1, 2} == s.results.keys()
        s.call.cancel()
