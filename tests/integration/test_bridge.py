"""The bridge end to end without the kernel.

Exact kernel datagrams in, through the bridge's production read loop on the
kernel stand-in's socket (harness/kernel_side.py), the real gRPC logsvc and
Redis behind it, reply datagrams out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import stat
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from bridge import answer, wire
from bridge.dispatch import ROUTES, route_of
from bridge.journal import Journal, read_ring
from bridge.wire import RequestType as T
from dmulog.requests import BY_TYPE
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.kernel_side import LUID, KernelStandIn, next_seq, u64
from harness.redis_keys import keys_left
from harness.servers import RedisProcess, free_port, logsvc_server


@pytest.fixture
async def kernel(logsvc: str) -> AsyncIterator[KernelStandIn]:
    """A production bridge on the test's logsvc, and the kernel's end of its socket."""
    async with KernelStandIn(logsvc) as k:
        yield k
        assert 0 == k.received(), "the bridge sent a reply nobody asked for"


async def test_every_request_type_round_trips(kernel: KernelStandIn, uuid: str) -> None:
    """All 17 request types get a reply with the kernel's seq, error 0 and exactly the payload size expected."""
    ask = kernel.ask
    assert ((r := await ask(T.CTR, b"120 clustered-core 16", uuid=uuid)).error, r.data) == (0, b"")
    assert (0, u64(16)) == ((r := await ask(T.GET_REGION_SIZE, uuid=uuid)).error, r.data)
    assert (await ask(T.RESUME, uuid=uuid)).error == 0
    assert u64(0) == (await ask(T.GET_SYNC_COUNT, uuid=uuid)).data
    assert struct.pack("=qQ", 1, 0) == (await ask(T.GET_RESYNC_WORK, uuid=uuid)).data
    assert (await ask(T.SET_REGION_SYNC, struct.pack("=Qq", 0, 1), uuid=uuid)).error == 0
    assert struct.pack("=q", 1) == (await ask(T.IN_SYNC, u64(0), uuid=uuid)).data
    assert struct.pack("=q", 0) == (await ask(T.IN_SYNC, u64(1), uuid=uuid)).data
    assert (await ask(T.MARK_REGION, u64(0, 3), uuid=uuid)).error == 0
    assert (await ask(T.FLUSH, uuid=uuid)).error == 0
    assert (await ask(T.FLUSH, u64(4), uuid=uuid)).error == 0
    assert struct.pack("=q", 0) == (await ask(T.IS_CLEAN, u64(3), uuid=uuid)).data
    assert (await ask(T.CLEAR_REGION, u64(0), uuid=uuid)).error == 0
    assert struct.pack("=q", 1) == (await ask(T.IS_CLEAN, u64(0), uuid=uuid)).data
    # Region 5 is out of sync (so counts as recovering); region 0 alone is in sync: the hint is 1.
    assert struct.pack("=qQ", 1, 1) == (await ask(T.IS_REMOTE_RECOVERING, u64(5), uuid=uuid)).data
    assert (await ask(T.STATUS_INFO, uuid=uuid)).data == b"1 clustered-core\0"
    assert (await ask(T.STATUS_TABLE, uuid=uuid)).data == b"clustered-core 16  \0"
    assert (await ask(T.PRESUSPEND, uuid=uuid)).error == 0
    assert (await ask(T.POSTSUSPEND, uuid=uuid)).error == 0
    assert (await ask(T.DTR, uuid=uuid)).error == 0


async def test_a_reply_of_a_size_the_kernel_has_no_room_for_is_never_sent(
    kernel: KernelStandIn, uuid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route whose reply disagrees with the room its row declares fails the request with EIO, and serving goes on."""
    assert (await kernel.ask(T.CTR, b"120 clustered-core 16", uuid=uuid)).error == 0
    wrong = route_of(dataclasses.replace(BY_TYPE[T.GET_REGION_SIZE], capacity=16))
    monkeypatch.setattr(answer, "ROUTES", {**ROUTES, T.GET_REGION_SIZE: wrong})
    reply = await kernel.ask(T.GET_REGION_SIZE, uuid=uuid)
    assert (-errno.EIO, b"") == (reply.error, reply.data)
    assert u64(0) == (await kernel.ask(T.GET_SYNC_COUNT, uuid=uuid)).data


async def test_unknown_instance_gets_esrch(kernel: KernelStandIn) -> None:
    """A request for a log logsvc does not know is answered -ESRCH: the kernel then replays CTR and RESUME."""
    assert (await kernel.ask(T.IN_SYNC, u64(0), uuid="never-constructed")).error == -errno.ESRCH


def _a_numbered_block_device() -> str:
    """The major:minor of some block device this machine lists in /sys/dev/block (skip the test when none)."""
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir("/sys/dev/block")):
            return entry
    pytest.skip("no /sys/dev/block here")


async def test_replayed_ctr_gets_no_payload_and_succeeds(kernel: KernelStandIn, uuid: str) -> None:
    """The reconnect loop's CTR (NUL inside data_size, no reply room) succeeds with an empty reply."""
    device = _a_numbered_block_device()
    first = await kernel.ask(T.CTR, f"120 clustered-disk {device} 16".encode(), uuid=uuid)
    assert (first.error, first.data) == (0, device.encode() + b"\0")
    replay = await kernel.ask(T.CTR, f"120 clustered-disk {device} 16\0".encode(), uuid=uuid)
    assert (replay.error, replay.data) == (0, b"")


async def test_bad_requests_get_error_replies_and_the_bridge_keeps_serving(kernel: KernelStandIn, uuid: str) -> None:
    """Malformed payloads and unknown types are answered -EINVAL, garbage with a bare ACK, and serving goes on."""
    assert (await kernel.ask(T.IN_SYNC, b"\0" * 7, uuid=uuid)).error == -errno.EINVAL
    assert (await kernel.ask(T.MARK_REGION, b"", uuid=uuid)).error == -errno.EINVAL
    assert (await kernel.ask(T.CTR, b"120  clustered-core 16", uuid=uuid)).error == -errno.EINVAL
    assert (await kernel.ask(99, uuid=uuid)).error == -errno.EINVAL
    assert (await kernel.ask(0, uuid=uuid)).error == -errno.EINVAL
    broken = bytearray(wire.encode_request(T.RESUME, seq=5, luid=1, uuid=uuid))
    broken[32:34] = struct.pack("=H", 170)  # cn_msg.len disagrees with nlmsg_len
    kernel.send_datagram(bytes(broken))
    ack = await kernel.reply()
    assert (ack.bare_ack, ack.error, ack.seq) == (True, -errno.EINVAL, 5)
    kernel.send_datagram(b"\x01\x02")  # not even a header: logged, nothing to answer
    assert (await kernel.ask(T.CTR, b"120 clustered-core 16", uuid=uuid)).error == 0


async def test_bad_constructor_arguments_are_einval(kernel: KernelStandIn, uuid: str) -> None:
    """A region size that is not a power of two fails the table load with -EINVAL."""
    assert (await kernel.ask(T.CTR, b"120 clustered-core 24", uuid=uuid)).error == -errno.EINVAL


def _a_block_device() -> tuple[str, str]:
    """Some block device node of this machine, with its major:minor (skip the test when there is none)."""
    for path in sorted(Path("/dev").iterdir()):
        with contextlib.suppress(OSError):
            st = path.stat()
            if stat.S_ISBLK(st.st_mode):
                return str(path), f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    pytest.skip("no block device in /dev")


async def test_clustered_disk_device_is_named_by_its_numbers_on_this_node(kernel: KernelStandIn, uuid: str) -> None:
    """The CTR reply and the status name the log device by major:minor, as cmirrord's fstat() did (§8.2)."""
    path, number = _a_block_device()
    ctr = await kernel.ask(T.CTR, f"120 clustered-disk {path} 16".encode(), uuid=uuid)
    assert (0, number.encode() + b"\0") == (ctr.error, ctr.data)
    assert 0 == (await kernel.ask(T.RESUME, uuid=uuid)).error
    assert f"3 clustered-disk {number} A".encode() + b"\0" == (await kernel.ask(T.STATUS_INFO, uuid=uuid)).data


async def test_clustered_disk_device_missing_on_this_node_fails_ctr_without_a_trace(
    kernel: KernelStandIn, stub: pb_grpc.DirtyLogStub, uuid: str, tmp_path: Path
) -> None:
    """A log device the kernel could not open fails the CTR itself: the kernel sends no DTR after a later failure."""
    ctr = await kernel.ask(T.CTR, f"120 clustered-disk {tmp_path}/missing 16".encode(), uuid=uuid)
    assert -errno.EINVAL == ctr.error
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid))
    assert grpc.StatusCode.NOT_FOUND == e.value.code()


def _unresolvable(tmp_path: Path) -> dict[str, str]:
    """Log devices the kernel could never open, by why."""
    (tmp_path / "loop").symlink_to("loop")
    return {
        "path-component-over-255": "/" + "x" * 256,  # ENAMETOOLONG
        "path-that-loops": f"{tmp_path}/loop",  # ELOOP
        "major-minor-of-200-digits": "9" * 200 + ":1",
        "major-minor-outside-dev_t": "4096:0",
    }


@pytest.mark.parametrize("case", ["path-component-over-255", "path-that-loops", "major-minor-of-200-digits",
                                  "major-minor-outside-dev_t"])  # fmt: skip
async def test_clustered_disk_device_the_kernel_cannot_open_fails_ctr_and_leaves_no_key(
    kernel: KernelStandIn, redis: RedisProcess, uuid: str, tmp_path: Path, case: str
) -> None:
    """Refused at CTR, before anything is stored: past a successful CTR the kernel fails the table and sends no DTR."""
    device = _unresolvable(tmp_path)[case]
    ctr = await kernel.ask(T.CTR, f"120 clustered-disk {device} 16".encode(), uuid=uuid)
    assert -errno.EINVAL == ctr.error
    assert [] == await keys_left(redis.url, uuid)


async def test_clustered_disk_major_minor_is_checked_on_this_node(
    kernel: KernelStandIn, redis: RedisProcess, uuid: str
) -> None:
    """A major:minor the node has comes back as the kernel reads it; one it lacks fails CTR, leaving nothing."""
    major, minor = _a_numbered_block_device().split(":")
    ctr = await kernel.ask(T.CTR, f"120 clustered-disk 0{major}:0{minor} 16".encode(), uuid=uuid)
    assert (0, f"{major}:{minor}\0".encode()) == (ctr.error, ctr.data)
    assert 0 == (await kernel.ask(T.DTR, uuid=uuid)).error
    missing = "4095:1048575"  # the largest dev_t: no driver registers it
    assert not os.path.exists(f"/sys/dev/block/{missing}")
    assert -errno.EINVAL == (await kernel.ask(T.CTR, f"120 clustered-disk {missing} 16".encode(), uuid=uuid)).error
    assert [] == await keys_left(redis.url, uuid)


async def test_region_size_the_kernel_would_truncate_fails_ctr_and_leaves_no_key(
    kernel: KernelStandIn, redis: RedisProcess, uuid: str
) -> None:
    """2^32 sectors, 0 in the kernel's u32 (which then divides by it), is -EINVAL at CTR with nothing stored."""
    ctr = await kernel.ask(T.CTR, f"{2**33} dmulog {2**32} nosync".encode(), uuid=uuid)
    assert -errno.EINVAL == ctr.error
    assert [] == await keys_left(redis.url, uuid)


async def test_ctr_length_over_u64_is_einval_in_one_log_line(
    kernel: KernelStandIn, redis: RedisProcess, uuid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A length word past 2^64 - 1 is a malformed request (-EINVAL, logged once), not a crash answered -EIO."""
    with caplog.at_level("INFO", logger="dmulog.bridge"):
        ctr = await kernel.ask(T.CTR, f"{2**64} dmulog 2".encode(), uuid=uuid)
    assert -errno.EINVAL == ctr.error
    lines = [(r.getMessage(), getattr(r, "event_data", {}).get("detail")) for r in caplog.records
             if r.name.startswith("dmulog.bridge")]  # fmt: skip
    assert [("request_malformed", "CTR target length 18446744073709551616 does not fit 64 bits")] == lines
    assert [] == await keys_left(redis.url, uuid)


async def test_datagrams_not_from_the_kernel_are_ignored(kernel: KernelStandIn, uuid: str) -> None:
    """A request from a userspace port (not 0) is never answered."""
    kernel.send(T.CTR, b"120 clustered-core 16", uuid=uuid, sender=4242)
    with pytest.raises(TimeoutError):
        await kernel.reply(timeout=0.5)


async def test_unreachable_logsvc_critical_requests_get_eagain(uuid: str) -> None:
    """With no logsvc, IN_SYNC (whose failure would skip a leg) gets -EAGAIN after the bounded wait."""
    async with KernelStandIn(f"127.0.0.1:{free_port()}", budget=1.0, attempt_timeout=0.5) as k:
        start = time.monotonic()
        reply = await k.ask(T.IN_SYNC, u64(0), uuid=uuid)
        elapsed = time.monotonic() - start
        assert (-errno.EAGAIN, True) == (reply.error, reply.bare_ack)
        assert 0.5 < elapsed < 5
        assert (await k.ask(T.GET_SYNC_COUNT, uuid=uuid)).error == -errno.EHOSTDOWN


async def test_stale_seq_is_never_answered(redis: RedisProcess, uuid: str) -> None:
    """A reply ready only after the kernel's timeout is dropped; the kernel's re-send under a new seq is answered."""
    port = free_port()
    # The kernel's timeout (scaled down) must exceed the channel's longest reconnect
    # backoff (1 s + jitter), or even the re-sent request could not be answered in time.
    async with KernelStandIn(f"127.0.0.1:{port}", budget=8.0, attempt_timeout=0.5, kernel_timeout=2.0) as k:
        first = k.send(T.CTR, b"120 clustered-core 16", uuid=uuid)
        await asyncio.sleep(2.2)  # the kernel has given up on `first` and re-sends
        second = k.send(T.CTR, b"120 clustered-core 16", uuid=uuid)
        async with logsvc_server(redis.url, listen=f"127.0.0.1:{port}"):
            reply = await k.reply()
            assert (second, 0) == (reply.seq, reply.error)
            with pytest.raises(TimeoutError):
                await k.reply(timeout=1.0)
    assert first != second


async def test_identical_concurrent_requests_are_each_answered(kernel: KernelStandIn, uuid: str) -> None:
    """Two identical requests in flight (kmirrord and a status ioctl) are two waiters: both get a reply."""
    await kernel.ask(T.CTR, b"120 clustered-core 16", uuid=uuid)
    seqs = {kernel.send(T.GET_SYNC_COUNT, uuid=uuid) for _ in range(3)}
    replies = [await kernel.reply() for _ in range(3)]
    assert seqs == {r.seq for r in replies}
    assert {0} == {r.error for r in replies}


async def test_requests_are_counted_by_type(kernel: KernelStandIn, uuid: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every decoded kernel request is counted by type (what `request_counts` logs on SIGUSR1); others are not."""
    await kernel.ask(T.CTR, b"120 clustered-core 16", uuid=uuid)
    for _ in range(2):
        await kernel.ask(T.IN_SYNC, u64(0), uuid=uuid)
    kernel.send(T.FLUSH, uuid=uuid, sender=4242)  # not from the kernel: ignored, not counted
    await kernel.taken()
    assert {"CTR": 1, "IN_SYNC": 2} == kernel.bridge.counts
    with caplog.at_level("INFO", logger="dmulog.bridge"):
        kernel.bridge.log_counts()
    [record] = [r for r in caplog.records if r.getMessage() == "request_counts"]
    assert {"counts": {"CTR": 1, "IN_SYNC": 2}, "answered_here": {}} == record.event_data  # type: ignore[attr-defined]


async def test_logsvc_restart_within_the_budget_is_invisible(redis: RedisProcess, uuid: str) -> None:
    """A logsvc that comes back within the retry budget costs the kernel time, not an error."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    async with KernelStandIn(target, budget=8.0, attempt_timeout=0.5) as k:
        async with logsvc_server(redis.url, listen=target):
            assert (await k.ask(T.CTR, b"120 dmulog 16 nosync", uuid=uuid)).error == 0
            assert (await k.ask(T.RESUME, uuid=uuid)).error == 0
        seq = k.send(T.MARK_REGION, u64(2), uuid=uuid)
        await asyncio.sleep(1.0)
        async with logsvc_server(redis.url, listen=target):
            reply = await k.reply()
            assert (seq, 0) == (reply.seq, reply.error)


async def test_a_restarted_bridge_answers_what_its_predecessor_left_unanswered(
    kernel: KernelStandIn, logsvc: str, uuid: str, tmp_path: Path
) -> None:
    """Journalled requests are answered with their own seq by the next bridge; ones the kernel gave up on are not."""
    await kernel.ask(T.CTR, b"120 clustered-core 16", uuid=uuid)
    await kernel.ask(T.RESUME, uuid=uuid)
    # A bridge read these two requests, journalled them and died before answering.
    journal = Journal(tmp_path / "inflight")
    fresh_seq, stale_seq = next_seq(), next_seq()
    journal.record(wire.encode_request(T.GET_REGION_SIZE, seq=fresh_seq, luid=LUID, uuid=uuid))
    born = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 16_000_000_000  # past the kernel's 15 s
    stale = wire.encode_request(T.IN_SYNC, seq=stale_seq, luid=LUID, uuid=uuid, data=u64(0))
    (tmp_path / "inflight" / f"{born:020d}-1-0").write_bytes(stale)  # (an entry of the older format)
    journal.close()  # the bridge is gone

    async with KernelStandIn(logsvc, journal=Journal(tmp_path / "inflight")) as restarted:
        assert 1 == restarted.replayed
        # Answered before the read loop started, so before anything newer is read.
        assert 1 == restarted.received()
        reply = await restarted.reply()
        assert (fresh_seq, 0, u64(16)) == (reply.seq, reply.error, reply.data)
        await asyncio.sleep(0.3)
        assert 0 == restarted.received(), "the request the kernel already re-sent must not be answered"
        assert [restarted.bridge.journal.path] == list((tmp_path / "inflight").iterdir())
        assert [] == restarted.bridge.journal.pending()


async def test_answered_requests_leave_the_journal(logsvc: str, uuid: str, tmp_path: Path) -> None:
    """A request is in the journal while logsvc works on it and gone once the reply is out."""
    async with KernelStandIn(logsvc, journal=Journal(tmp_path / "j")) as k:
        datagram = wire.encode_request(T.CTR, seq=next_seq(), luid=1, uuid=uuid, data=b"120 clustered-core 16")
        k.send_datagram(datagram)
        deadline = time.monotonic() + 15
        while not (journalled := read_ring(k.bridge.journal.path)) and time.monotonic() < deadline:
            await asyncio.sleep(0)  # the read loop journals it, then logsvc works on it for many turns of the loop
        assert [datagram] == [d for _, d in journalled]
        assert 0 == (await k.reply()).error
        await asyncio.sleep(0)  # the task's cleanup runs after the send
        assert [] == read_ring(k.bridge.journal.path)
        k.bridge.journal.close()
        assert [] == list((tmp_path / "j").iterdir())


async def test_two_replicas_serve_alike_and_one_going_away_is_invisible(redis: RedisProcess, uuid: str) -> None:
    """With both replicas named in the target, calls keep succeeding, at once, while one replica is down."""
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    async with KernelStandIn(f"ipv4:{a},{b}", budget=8.0, attempt_timeout=0.5) as k, logsvc_server(redis.url, listen=b):
        async with logsvc_server(redis.url, listen=a):
            assert (await k.ask(T.CTR, b"120 dmulog 16 nosync", uuid=uuid)).error == 0
            assert (await k.ask(T.RESUME, uuid=uuid)).error == 0
            for r in range(4):
                assert (await k.ask(T.MARK_REGION, u64(r), uuid=uuid)).error == 0
        start = time.monotonic()
        for r in range(4):  # replica a is gone: each call is answered by b, without a retry pause
            assert struct.pack("=q", 0) == (await k.ask(T.IS_CLEAN, u64(r), uuid=uuid)).data
        assert time.monotonic() - start < 2.0
