"""Tests of bridge/dispatch.py: each request type's route from payload to RPC and back, as its row declares."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys

import pytest

from bridge import dispatch, wire
from bridge.dispatch import ROUTES, ReplySizeError, block_devices, route_of
from bridge.wire import REPLY_CAPACITY, Request, RequestType, WireError
from dmulog.requests import BY_TYPE
from dmulog.v1 import dmulog_pb2 as pb

T = RequestType
NATIVE = sys.byteorder
LOG = pb.LogRef(uuid="LVM-mirror-uuid", luid=0xFFFF888812345678)
NODE = pb.Node(name="node-a", boot_id="0b6c3f4e-boot")
SERVICE = pb.DESCRIPTOR.services_by_name["DirtyLog"]


@pytest.fixture(autouse=True)
def sys_dev_block(tmp_path_factory, monkeypatch):
    """The node's /sys/dev/block, as the bridge sees it: block devices 253:2 and 7:2 only."""
    path = tmp_path_factory.mktemp("sys-dev-block")
    for name in ("253:2", "7:2"):
        (path / name).mkdir()
    monkeypatch.setattr(dispatch, "SYS_DEV_BLOCK", str(path))
    return path


def u64(v: int) -> bytes:
    """Host-order __u64."""
    return v.to_bytes(8, NATIVE)


def s64(v: int) -> bytes:
    """Host-order __s64."""
    return v.to_bytes(8, NATIVE, signed=True)


def req(request_type: int, data: bytes = b"", version: int = 3) -> Request:
    """A decoded kernel request for LOG."""
    return Request(request_type, 1234, LOG.luid, LOG.uuid, version, data, 1234, 1234)


def test_routes_cover_exactly_types_1_to_17():
    """ROUTES has one entry for each of the 17 kernel request types and nothing else."""
    expected = list(range(1, 18))
    assert expected == sorted(ROUTES)


def test_unknown_types_have_no_route():
    """Type 0, 18 and 255 have no route (the agent answers them with an error)."""
    expected = [None, None, None]
    assert expected == [ROUTES.get(t) for t in (0, 18, 255)]


def test_rpc_names():
    """Each request type is served by the RPC of the same name in CamelCase."""
    expected = {
        T.CTR: "Ctr", T.DTR: "Dtr", T.PRESUSPEND: "Presuspend", T.POSTSUSPEND: "Postsuspend",
        T.RESUME: "Resume", T.GET_REGION_SIZE: "GetRegionSize", T.IS_CLEAN: "IsClean", T.IN_SYNC: "InSync",
        T.FLUSH: "Flush", T.MARK_REGION: "MarkRegion", T.CLEAR_REGION: "ClearRegion",
        T.GET_RESYNC_WORK: "GetResyncWork", T.SET_REGION_SYNC: "SetRegionSync", T.GET_SYNC_COUNT: "GetSyncCount",
        T.STATUS_INFO: "StatusInfo", T.STATUS_TABLE: "StatusTable", T.IS_REMOTE_RECOVERING: "IsRemoteRecovering",
    }  # fmt: skip
    assert expected == {t: route.rpc for t, route in ROUTES.items()}


def test_critical_table():
    """Exactly the requests whose failure the kernel would read as "go on without the log" are critical."""
    expected = {
        T.CTR: False,
        T.DTR: False,
        T.PRESUSPEND: True,
        T.POSTSUSPEND: True,
        T.RESUME: True,
        T.GET_REGION_SIZE: False,
        T.IS_CLEAN: False,
        T.IN_SYNC: True,
        T.FLUSH: True,
        T.MARK_REGION: True,
        T.CLEAR_REGION: True,
        T.GET_RESYNC_WORK: False,
        T.SET_REGION_SYNC: True,
        T.GET_SYNC_COUNT: False,
        T.STATUS_INFO: False,
        T.STATUS_TABLE: False,
        T.IS_REMOTE_RECOVERING: False,
    }
    assert expected == {t: route.critical for t, route in ROUTES.items()}


# One valid payload per type and the API request it must become.
BUILDS = [
    pytest.param(
        T.CTR,
        b"2097152 clustered-disk 253:2 1024",
        pb.CtrRequest(
            log=LOG,
            node=NODE,
            target_sectors=2097152,
            log_type="clustered-disk",
            args=["253:2", "1024"],
            block_devices={"253:2": "253:2"},
        ),
        id="CTR",
    ),
    pytest.param(
        T.CTR,
        b"2048 clustered-core 1024 nosync\0",
        pb.CtrRequest(log=LOG, node=NODE, target_sectors=2048, log_type="clustered-core", args=["1024", "nosync"]),
        id="CTR-replay",
    ),
    pytest.param(T.DTR, b"", pb.DtrRequest(log=LOG, node=NODE), id="DTR"),
    pytest.param(T.PRESUSPEND, b"", pb.PresuspendRequest(log=LOG, node=NODE), id="PRESUSPEND"),
    pytest.param(T.POSTSUSPEND, b"", pb.PostsuspendRequest(log=LOG, node=NODE), id="POSTSUSPEND"),
    pytest.param(T.RESUME, b"", pb.ResumeRequest(log=LOG, node=NODE), id="RESUME"),
    pytest.param(T.GET_REGION_SIZE, b"", pb.GetRegionSizeRequest(log=LOG, node=NODE), id="GET_REGION_SIZE"),
    pytest.param(T.IS_CLEAN, u64(5), pb.IsCleanRequest(log=LOG, node=NODE, region=5), id="IS_CLEAN"),
    pytest.param(T.IN_SYNC, u64(2**64 - 1), pb.InSyncRequest(log=LOG, node=NODE, region=2**64 - 1), id="IN_SYNC"),
    pytest.param(T.FLUSH, b"", pb.FlushRequest(log=LOG, node=NODE), id="FLUSH-plain"),
    pytest.param(
        T.FLUSH, u64(4) + u64(2), pb.FlushRequest(log=LOG, node=NODE, mark_regions=[4, 2]), id="FLUSH-integrated"
    ),
    pytest.param(
        T.MARK_REGION,
        b"".join(u64(r) for r in range(32)),
        pb.MarkRegionRequest(log=LOG, node=NODE, regions=list(range(32))),
        id="MARK_REGION",
    ),
    pytest.param(T.CLEAR_REGION, u64(7), pb.ClearRegionRequest(log=LOG, node=NODE, regions=[7]), id="CLEAR_REGION"),
    pytest.param(T.GET_RESYNC_WORK, b"", pb.GetResyncWorkRequest(log=LOG, node=NODE), id="GET_RESYNC_WORK"),
    pytest.param(
        T.SET_REGION_SYNC,
        u64(9) + s64(1),
        pb.SetRegionSyncRequest(log=LOG, node=NODE, region=9, in_sync=True),
        id="SET_REGION_SYNC-1",
    ),
    pytest.param(
        T.SET_REGION_SYNC,
        u64(9) + s64(0),
        pb.SetRegionSyncRequest(log=LOG, node=NODE, region=9, in_sync=False),
        id="SET_REGION_SYNC-0",
    ),
    pytest.param(T.GET_SYNC_COUNT, b"", pb.GetSyncCountRequest(log=LOG, node=NODE), id="GET_SYNC_COUNT"),
    pytest.param(T.STATUS_INFO, b"", pb.StatusInfoRequest(log=LOG, node=NODE), id="STATUS_INFO"),
    pytest.param(T.STATUS_TABLE, b"", pb.StatusTableRequest(log=LOG, node=NODE), id="STATUS_TABLE"),
    pytest.param(
        T.IS_REMOTE_RECOVERING,
        u64(42),
        pb.IsRemoteRecoveringRequest(log=LOG, node=NODE, region=42),
        id="IS_REMOTE_RECOVERING",
    ),
]


def test_build_table_covers_all_types():
    """The build vector table exercises every routed request type."""
    expected = set(ROUTES)
    assert expected == {p.values[0] for p in BUILDS}


@pytest.mark.parametrize(("request_type", "data", "expected"), BUILDS)
def test_build(request_type, data, expected):
    """build() turns a valid payload into the RPC request with the log, node and payload fields set."""
    assert expected == ROUTES[request_type].build(req(request_type, data), LOG, NODE)


@pytest.mark.parametrize(("request_type", "data", "expected"), BUILDS)
def test_build_returns_the_rpc_input_type(request_type, data, expected):
    """The message build() returns is the input type of the route's RPC in the DirtyLog service."""
    route = ROUTES[request_type]
    method = SERVICE.methods_by_name[route.rpc]
    assert method.input_type.full_name == route.build(req(request_type, data), LOG, NODE).DESCRIPTOR.full_name


# Payloads of the wrong size (or shape) for each type; DTR accepts anything.
BAD_PAYLOADS = [
    pytest.param(T.CTR, b"", id="CTR-empty"),
    pytest.param(T.CTR, b"2048", id="CTR-no-type"),
    pytest.param(T.CTR, b"0 clustered-core 1024", id="CTR-zero-length"),
    pytest.param(T.PRESUSPEND, b"\0", id="PRESUSPEND-1"),
    pytest.param(T.POSTSUSPEND, u64(0), id="POSTSUSPEND-8"),
    pytest.param(T.RESUME, b"x", id="RESUME-1"),
    pytest.param(T.GET_REGION_SIZE, u64(1), id="GET_REGION_SIZE-8"),
    pytest.param(T.IS_CLEAN, b"", id="IS_CLEAN-0"),
    pytest.param(T.IS_CLEAN, b"\0" * 7, id="IS_CLEAN-7"),
    pytest.param(T.IN_SYNC, b"\0" * 9, id="IN_SYNC-9"),
    pytest.param(T.IN_SYNC, b"\0" * 16, id="IN_SYNC-16"),
    pytest.param(T.FLUSH, b"\0" * 7, id="FLUSH-7"),
    pytest.param(T.FLUSH, b"\0" * 12, id="FLUSH-12"),
    pytest.param(T.MARK_REGION, b"", id="MARK_REGION-0"),
    pytest.param(T.MARK_REGION, b"\0" * 15, id="MARK_REGION-15"),
    pytest.param(T.CLEAR_REGION, b"", id="CLEAR_REGION-0"),
    pytest.param(T.CLEAR_REGION, b"\0" * 4, id="CLEAR_REGION-4"),
    pytest.param(T.GET_RESYNC_WORK, u64(0), id="GET_RESYNC_WORK-8"),
    pytest.param(T.SET_REGION_SYNC, u64(9), id="SET_REGION_SYNC-8"),
    pytest.param(T.SET_REGION_SYNC, b"\0" * 24, id="SET_REGION_SYNC-24"),
    pytest.param(T.GET_SYNC_COUNT, b"\0", id="GET_SYNC_COUNT-1"),
    pytest.param(T.STATUS_INFO, b"\0", id="STATUS_INFO-1"),
    pytest.param(T.STATUS_TABLE, b"table", id="STATUS_TABLE-5"),
    pytest.param(T.IS_REMOTE_RECOVERING, b"", id="IS_REMOTE_RECOVERING-0"),
    pytest.param(T.IS_REMOTE_RECOVERING, b"\0" * 16, id="IS_REMOTE_RECOVERING-16"),
]


def test_bad_payload_table_covers_all_types_but_dtr():
    """Every routed type except DTR has at least one wrong payload in the table."""
    expected = set(ROUTES) - {T.DTR}
    assert expected == {p.values[0] for p in BAD_PAYLOADS}


@pytest.mark.parametrize(("request_type", "data"), BAD_PAYLOADS)
def test_build_rejects_wrong_payload(request_type, data):
    """build() raises WireError for a payload of the wrong size or shape."""
    with pytest.raises(WireError):
        ROUTES[request_type].build(req(request_type, data), LOG, NODE)


@pytest.mark.parametrize("data", [b"", b"2048 clustered-core 1024", b"\0" * 7])
def test_dtr_ignores_its_payload(data):
    """DTR accepts any payload: the kernel sends none although its header says it sends the CTR string."""
    expected = pb.DtrRequest(log=LOG, node=NODE)
    assert expected == ROUTES[T.DTR].build(req(T.DTR, data), LOG, NODE)


# (type, request payload, RPC response, expected reply payload)
REPLIES = [
    pytest.param(T.DTR, b"", pb.DtrResponse(), b"", id="DTR"),
    pytest.param(T.PRESUSPEND, b"", pb.PresuspendResponse(), b"", id="PRESUSPEND"),
    pytest.param(T.POSTSUSPEND, b"", pb.PostsuspendResponse(), b"", id="POSTSUSPEND"),
    pytest.param(T.RESUME, b"", pb.ResumeResponse(), b"", id="RESUME"),
    pytest.param(T.GET_REGION_SIZE, b"", pb.GetRegionSizeResponse(region_size=1024), u64(1024), id="GET_REGION_SIZE"),
    pytest.param(T.IS_CLEAN, u64(1), pb.IsCleanResponse(clean=True), s64(1), id="IS_CLEAN-1"),
    pytest.param(T.IS_CLEAN, u64(1), pb.IsCleanResponse(clean=False), s64(0), id="IS_CLEAN-0"),
    pytest.param(T.IN_SYNC, u64(1), pb.InSyncResponse(in_sync=True), s64(1), id="IN_SYNC-1"),
    pytest.param(T.IN_SYNC, u64(1), pb.InSyncResponse(), s64(0), id="IN_SYNC-0"),
    pytest.param(T.FLUSH, b"", pb.FlushResponse(), b"", id="FLUSH"),
    pytest.param(T.MARK_REGION, u64(1), pb.MarkRegionResponse(), b"", id="MARK_REGION"),
    pytest.param(T.CLEAR_REGION, u64(1), pb.ClearRegionResponse(), b"", id="CLEAR_REGION"),
    pytest.param(
        T.GET_RESYNC_WORK,
        b"",
        pb.GetResyncWorkResponse(has_work=True, region=77),
        s64(1) + u64(77),
        id="GET_RESYNC_WORK-work",
    ),
    pytest.param(
        T.GET_RESYNC_WORK,
        b"",
        pb.GetResyncWorkResponse(has_work=False, region=77),
        s64(0) + u64(0),
        id="GET_RESYNC_WORK-none",
    ),
    pytest.param(T.SET_REGION_SYNC, u64(1) + s64(1), pb.SetRegionSyncResponse(), b"", id="SET_REGION_SYNC"),
    pytest.param(T.GET_SYNC_COUNT, b"", pb.GetSyncCountResponse(sync_count=12345), u64(12345), id="GET_SYNC_COUNT"),
    pytest.param(
        T.STATUS_INFO, b"", pb.StatusInfoResponse(text="1 clustered-core"), b"1 clustered-core\0", id="STATUS_INFO"
    ),
    pytest.param(
        T.STATUS_TABLE,
        b"",
        pb.StatusTableResponse(text="clustered-core 1024  "),
        b"clustered-core 1024  \0",
        id="STATUS_TABLE",
    ),
    pytest.param(
        T.IS_REMOTE_RECOVERING,
        u64(3),
        pb.IsRemoteRecoveringResponse(is_recovering=True, in_sync_hint=3),
        s64(1) + u64(3),
        id="IS_REMOTE_RECOVERING-1",
    ),
    pytest.param(
        T.IS_REMOTE_RECOVERING,
        u64(3),
        pb.IsRemoteRecoveringResponse(is_recovering=False, in_sync_hint=100),
        s64(0) + u64(100),
        id="IS_REMOTE_RECOVERING-0",
    ),
    pytest.param(
        T.CTR, b"2048 clustered-disk 253:2 1024", pb.CtrResponse(device="253:2"), b"253:2\0", id="CTR-table-load"
    ),
    pytest.param(T.CTR, b"2048 clustered-disk 253:2 1024\0", pb.CtrResponse(device="253:2"), b"", id="CTR-replay"),
    pytest.param(T.CTR, b"2048 clustered-core 1024", pb.CtrResponse(), b"", id="CTR-no-device"),
]


def test_reply_table_covers_all_types():
    """The reply vector table exercises every routed request type."""
    expected = set(ROUTES)
    assert expected == {p.values[0] for p in REPLIES}


@pytest.mark.parametrize(("request_type", "data", "response", "expected"), REPLIES)
def test_reply_payload(request_type, data, response, expected):
    """reply() turns the RPC response into the exact reply payload the kernel expects."""
    assert expected == ROUTES[request_type].reply(req(request_type, data), response)


@pytest.mark.parametrize(("request_type", "data", "response", "expected"), REPLIES)
def test_reply_fits_capacity(request_type, data, response, expected):
    """A fixed-capacity reply is exactly REPLY_CAPACITY bytes; CTR stays within its 128 bytes."""
    capacity = REPLY_CAPACITY[request_type]
    actual = len(ROUTES[request_type].reply(req(request_type, data), response))
    if request_type == T.CTR:
        assert actual <= capacity
    elif capacity is not None:
        assert capacity == actual


def test_a_reply_that_does_not_fill_the_declared_room_fails_when_encoded():
    """An encoder whose reply is not the size the table declares raises at once, before any byte leaves."""
    spec = dataclasses.replace(BY_TYPE[T.GET_REGION_SIZE], capacity=16)
    with pytest.raises(ReplySizeError, match=r"GET_REGION_SIZE reply of 8 bytes.*exactly 16"):
        route_of(spec).reply(req(T.GET_REGION_SIZE), pb.GetRegionSizeResponse(region_size=1024))


def test_a_reply_beyond_the_declared_room_fails_when_encoded():
    """A reply that may be shorter than its room (the CTR's device name) still may not be longer."""
    spec = dataclasses.replace(BY_TYPE[T.CTR], capacity=4)
    request = req(T.CTR, b"2048 clustered-disk 253:2 1024")
    with pytest.raises(ReplySizeError, match=r"CTR reply of 6 bytes.*at most 4"):
        route_of(spec).reply(request, pb.CtrResponse(device="253:2"))
    assert b"" == route_of(spec).reply(request, pb.CtrResponse())


def test_routes_are_their_rows_routes():
    """ROUTES is route_of applied to each row: what a test builds from a row is what the bridge runs."""
    for rtype, route in ROUTES.items():
        assert BY_TYPE[rtype] is route.spec
        assert (route.rpc, route.critical) == (route.spec.rpc, route.spec.critical)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_ctr_reply_depends_on_version(version):
    """The CTR device name goes back only to a kernel of protocol version 2 or later."""
    request = req(T.CTR, b"2048 clustered-disk 253:2 1024", version=version)
    expected = b"253:2\0" if version >= 2 else b""
    assert expected == ROUTES[T.CTR].reply(request, pb.CtrResponse(device="253:2"))


def test_every_route_replies_to_its_rpc_output_type():
    """Every route's reply() takes a default response of its RPC's output type and frames into a full reply."""
    for request_type, route in ROUTES.items():
        data = {T.CTR: b"8 dmulog 2", T.SET_REGION_SYNC: u64(0) + s64(0)}.get(request_type, b"")
        if request_type in (T.IS_CLEAN, T.IN_SYNC, T.IS_REMOTE_RECOVERING, T.MARK_REGION, T.CLEAR_REGION):
            data = u64(0)
        request = req(request_type, data)
        response = getattr(pb, SERVICE.methods_by_name[route.rpc].output_type.name)()
        payload = route.reply(request, response)
        full = wire.encode_reply(request, 0, payload)
        expected = 196 + len(payload)
        assert expected == int.from_bytes(full[0:4], NATIVE)


def _ctr(text: str) -> wire.CtrArgs:
    return wire.decode_ctr(text.encode())


def test_block_devices_names_missing_paths_and_files_as_no_device(tmp_path):
    """A path that is missing or not a block device on the node is reported as '' (logsvc refuses it)."""
    plain = tmp_path / "logdev"
    plain.write_bytes(b"")
    ctr = _ctr(f"2048 clustered-disk {tmp_path}/missing 1024 {plain} {plain}/below")
    expected = {f"{tmp_path}/missing": "", str(plain): "", f"{plain}/below": ""}
    assert expected == block_devices(ctr)


def test_block_devices_gives_major_minor_of_a_block_device(monkeypatch):
    """A block device path becomes its decimal major:minor, what cmirrord's fstat() showed."""
    real_stat = os.stat
    device = os.stat_result((stat.S_IFBLK | 0o600, 0, 0, 1, 0, 0, 0, 0, 0, 0), {"st_rdev": os.makedev(253, 7)})
    monkeypatch.setattr(os, "stat", lambda path, *a, **kw: device if path == "/dev/vg/mlog" else real_stat(path))
    assert {"/dev/vg/mlog": "253:7"} == block_devices(_ctr("2048 clustered-disk /dev/vg/mlog 1024 nosync"))


def test_block_devices_names_loops_and_overlong_names_as_no_device(tmp_path):
    """A path the kernel could not resolve either (ELOOP, ENAMETOOLONG) is '' too, not taken as given."""
    (tmp_path / "loop").symlink_to("loop")
    long_name = f"{tmp_path}/{'x' * 256}"
    ctr = _ctr(f"2048 clustered-disk {tmp_path}/loop 1024 {long_name}")
    assert {f"{tmp_path}/loop": "", long_name: ""} == block_devices(ctr)


def test_block_devices_skips_words_that_name_no_device():
    """Region sizes and options are no devices: nothing to report."""
    assert {} == block_devices(_ctr("2048 clustered-core 1024 nosync block_on_error"))


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        pytest.param("253:2", "253:2", id="present"),
        pytest.param("0253:002", "253:2", id="leading-zeros-read-as-the-kernel-reads-them"),
        pytest.param("0:0", "", id="zero"),
        pytest.param("253:3", "", id="absent"),
        pytest.param("9" * 200 + ":1", "", id="200-digit-major"),
    ],
)
def test_block_devices_checks_a_bare_major_minor_on_the_node(word, expected):
    """A major:minor is a device too: the node says whether it has it, by the numbers the kernel would open."""
    assert {word: expected} == block_devices(_ctr(f"2048 clustered-disk {word} 1024"))


def test_block_devices_takes_pairs_as_given_without_sysfs(monkeypatch, tmp_path):
    """A node without /sys/dev/block cannot tell: its pairs get no entry (logsvc checks what it can)."""
    monkeypatch.setattr(dispatch, "SYS_DEV_BLOCK", str(tmp_path / "no-sysfs"))
    assert {} == block_devices(_ctr("2048 clustered-disk 253:2 1024"))


def test_block_devices_of_a_replayed_ctr_reports_only_what_it_found(tmp_path):
    """The reconnect loop's CTR is for a table already loaded: a vanished path must not make it fail forever."""
    assert {} == block_devices(_ctr(f"2048 clustered-disk {tmp_path}/gone 1024\0"))
    assert {} == block_devices(_ctr("2048 clustered-disk 253:3 1024\0"))
    assert {"253:2": "253:2"} == block_devices(_ctr("2048 clustered-disk 253:2 1024\0"))


def test_block_devices_omits_paths_it_could_not_look_at(monkeypatch):
    """A path the node may not look at (permissions; the kernel looks as root) is taken as given, not refused."""

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "stat", denied)
    assert {} == block_devices(_ctr("2048 clustered-disk /dev/vg/mlog 1024"))


def test_ctr_carries_the_block_devices(tmp_path):
    """The CtrRequest the bridge sends holds the node's findings next to the table's words."""
    built = ROUTES[T.CTR].build(req(T.CTR, f"2048 clustered-disk {tmp_path}/gone 1024".encode()), LOG, NODE)
    assert {f"{tmp_path}/gone": ""} == dict(built.block_devices)
