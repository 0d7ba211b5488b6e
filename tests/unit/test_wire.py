"""Byte-exact tests of bridge/wire.py, the dm-log-userspace datagram codec.

Every expected datagram here is written independently of the module under
test: either as a literal hex string or field by field with ``int.to_bytes``,
following the C layout of include/uapi/linux/dm-log-userspace.h and
connector.h as tabled in docs/protocol.md §1.1 (nlmsghdr 16 bytes, cn_msg 20,
struct dm_ulog_request 160, payload at offset 196). All integers are in host
byte order; the literal hex vectors are written for a little-endian host.
"""

from __future__ import annotations

import errno
import random
import sys

import pytest

from bridge import wire
from bridge.wire import CtrArgs, Request, RequestType, WireError

T = RequestType
NATIVE = sys.byteorder
little_endian_only = pytest.mark.skipif(NATIVE != "little", reason="literal hex vectors are little-endian")

# Offsets in the datagram (docs/protocol.md §1.1).
OFF_NL_LEN, OFF_NL_TYPE, OFF_NL_SEQ = 0, 4, 8
OFF_CN_IDX, OFF_CN_VAL, OFF_CN_SEQ, OFF_CN_ACK, OFF_CN_LEN = 16, 20, 24, 28, 32
OFF_LUID, OFF_UUID, OFF_VERSION, OFF_ERROR = 36, 44, 176, 180
OFF_SEQ, OFF_TYPE, OFF_DATA_SIZE, OFF_DATA = 184, 188, 192, 196

UUID = "LVM-k3Jd0WfQ8xVtR2mN"
LUID = 0x1122334455667788
SEQ = 0x01020304
CN_SEQ = 0x0A0B0C0D


def u16(v: int) -> bytes:
    """Host-order __u16."""
    return v.to_bytes(2, NATIVE)


def u32(v: int) -> bytes:
    """Host-order __u32."""
    return v.to_bytes(4, NATIVE)


def s32(v: int) -> bytes:
    """Host-order __s32."""
    return v.to_bytes(4, NATIVE, signed=True)


def u64(v: int) -> bytes:
    """Host-order __u64."""
    return v.to_bytes(8, NATIVE)


def s64(v: int) -> bytes:
    """Host-order __s64."""
    return v.to_bytes(8, NATIVE, signed=True)


def field(buf: bytes, offset: int, size: int, *, signed: bool = False) -> int:
    """The host-order integer of ``size`` bytes at ``offset``."""
    return int.from_bytes(buf[offset : offset + size], NATIVE, signed=signed)


def datagram(
    request_type: int,
    data: bytes = b"",
    *,
    seq: int = SEQ,
    luid: int = LUID,
    uuid: bytes = UUID.encode(),
    version: int = 3,
    error: int = 0,
    cn_seq: int | None = None,
    nl_seq: int | None = None,
    nl_type: int = 3,
    idx: int = 7,
    val: int = 1,
    nl_len: int | None = None,
    cn_len: int | None = None,
    data_size: int | None = None,
    ack: int = 0,
    pad: bool = True,
) -> bytes:
    """A datagram laid out field by field as the kernel sends it (§1.1)."""
    cn_seq = seq if cn_seq is None else cn_seq
    nl_seq = cn_seq if nl_seq is None else nl_seq
    request = (
        u64(luid)
        + uuid.ljust(129, b"\0")[:129]
        + b"\0\0\0"
        + u32(version)
        + s32(error)
        + u32(seq)
        + u32(request_type)
        + u32(len(data) if data_size is None else data_size)
        + data
    )
    cn_len = 160 + len(data) if cn_len is None else cn_len
    cn = u32(idx) + u32(val) + u32(cn_seq) + u32(ack) + u16(cn_len) + u16(0)
    nl_len = 16 + 20 + len(request) if nl_len is None else nl_len
    nl = u32(nl_len) + u16(nl_type) + u16(0) + u32(nl_seq) + u32(0)
    out = nl + cn + request
    if pad:
        out += b"\0" * (-len(out) % 4)
    return out


def reply(
    request_type: int,
    error: int,
    data: bytes = b"",
    *,
    seq: int = SEQ,
    cn_seq: int = SEQ,
    nl_seq: int = SEQ,
    luid: int = LUID,
    uuid: bytes = UUID.encode(),
    version: int = 3,
) -> bytes:
    """The full reply datagram the bridge should send, field by field (§1.2)."""
    nl_len = 16 + 20 + 160 + len(data)
    out = (
        u32(nl_len) + u16(3) + u16(0) + u32(nl_seq) + u32(0)
        + u32(7) + u32(1) + u32(cn_seq) + u32(0) + u16(160 + len(data)) + u16(0)
        + u64(luid) + uuid.ljust(129, b"\0") + b"\0\0\0"
        + u32(version) + s32(error) + u32(seq) + u32(request_type) + u32(len(data))
        + data
    )  # fmt: skip
    return out + b"\0" * (-len(out) % 4)


def bare_ack(cn_seq: int, ack: int) -> bytes:
    """A bare ACK: nlmsghdr + cn_msg with len 0 and a positive errno in ack."""
    return u32(36) + u16(3) + u16(0) + u32(0) + u32(0) + u32(7) + u32(1) + u32(cn_seq) + u32(ack) + u16(0) + u16(0)


def request(request_type: int, data: bytes = b"", *, version: int = 3) -> Request:
    """The Request a datagram built by ``datagram`` decodes to."""
    return Request(request_type, SEQ, LUID, UUID, version, data, SEQ, SEQ)


def regions_payload(*regions: int) -> bytes:
    """A u64[] region list payload."""
    return b"".join(u64(r) for r in regions)


# One valid kernel request per type: (type, payload). Payload sizes follow the
# request table of docs/protocol.md §3.
REQUEST_VECTORS = [
    pytest.param(T.CTR, b"2097152 clustered-disk 253:2 1024", id="CTR"),
    pytest.param(T.DTR, b"", id="DTR"),
    pytest.param(T.PRESUSPEND, b"", id="PRESUSPEND"),
    pytest.param(T.POSTSUSPEND, b"", id="POSTSUSPEND"),
    pytest.param(T.RESUME, b"", id="RESUME"),
    pytest.param(T.GET_REGION_SIZE, b"", id="GET_REGION_SIZE"),
    pytest.param(T.IS_CLEAN, u64(5), id="IS_CLEAN"),
    pytest.param(T.IN_SYNC, u64(0x0102030405060708), id="IN_SYNC"),
    pytest.param(T.FLUSH, regions_payload(1, 2), id="FLUSH"),
    pytest.param(T.MARK_REGION, regions_payload(*range(32)), id="MARK_REGION"),
    pytest.param(T.CLEAR_REGION, regions_payload(7), id="CLEAR_REGION"),
    pytest.param(T.GET_RESYNC_WORK, b"", id="GET_RESYNC_WORK"),
    pytest.param(T.SET_REGION_SYNC, u64(9) + s64(1), id="SET_REGION_SYNC"),
    pytest.param(T.GET_SYNC_COUNT, b"", id="GET_SYNC_COUNT"),
    pytest.param(T.STATUS_INFO, b"", id="STATUS_INFO"),
    pytest.param(T.STATUS_TABLE, b"", id="STATUS_TABLE"),
    pytest.param(T.IS_REMOTE_RECOVERING, u64(2**64 - 1), id="IS_REMOTE_RECOVERING"),
]


def test_request_vectors_cover_all_17_types():
    """The request vector table has exactly one entry for each of the 17 kernel request types."""
    assert list(range(1, 18)) == [p.values[0] for p in REQUEST_VECTORS]


def test_request_type_numbers():
    """RequestType carries the kernel's DM_ULOG_* numbers 1..17 in header order."""
    expected = {
        "CTR": 1, "DTR": 2, "PRESUSPEND": 3, "POSTSUSPEND": 4, "RESUME": 5, "GET_REGION_SIZE": 6,
        "IS_CLEAN": 7, "IN_SYNC": 8, "FLUSH": 9, "MARK_REGION": 10, "CLEAR_REGION": 11,
        "GET_RESYNC_WORK": 12, "SET_REGION_SYNC": 13, "GET_SYNC_COUNT": 14, "STATUS_INFO": 15,
        "STATUS_TABLE": 16, "IS_REMOTE_RECOVERING": 17,
    }  # fmt: skip
    assert expected == {t.name: t.value for t in RequestType}


def test_constants():
    """The connector id, header size, payload limit and UUID length match the kernel headers."""
    expected = (7, 1, 196, 332, 129, 3)
    assert expected == (
        wire.CN_IDX_DM,
        wire.CN_VAL_DM_USERSPACE_LOG,
        wire.HEADER_SIZE,
        wire.MAX_PAYLOAD,
        wire.DM_UUID_LEN,
        wire.DM_ULOG_REQUEST_VERSION,
    )


def test_reply_capacity_table():
    """REPLY_CAPACITY lists the reply room the kernel gives each request type (protocol.md §3)."""
    expected = {
        T.CTR: 128, T.DTR: 0, T.PRESUSPEND: 0, T.POSTSUSPEND: 0, T.RESUME: 0, T.GET_REGION_SIZE: 8,
        T.IS_CLEAN: 8, T.IN_SYNC: 8, T.FLUSH: 0, T.MARK_REGION: 0, T.CLEAR_REGION: 0,
        T.GET_RESYNC_WORK: 16, T.SET_REGION_SYNC: 0, T.GET_SYNC_COUNT: 8, T.STATUS_INFO: None,
        T.STATUS_TABLE: None, T.IS_REMOTE_RECOVERING: 16,
    }  # fmt: skip
    assert expected == wire.REPLY_CAPACITY


# --- Decoding kernel datagrams -------------------------------------------------


@little_endian_only
def test_decode_golden_mark_region_hex():
    """A MARK_REGION datagram written out as literal hex decodes to every field it carries."""
    golden = bytes.fromhex(
        "d4000000" "0300" "0000" "2a000000" "00000000"  # nlmsghdr: len 212, NLMSG_DONE, seq 42
        "07000000" "01000000" "2a000000" "00000000" "b000" "0000"  # cn_msg: 7:1, seq 42, ack 0, len 176
        "8877665544332211"  # luid 0x1122334455667788 at offset 36
        "4c564d2d74657374" + "00" * 121 +  # uuid "LVM-test", NUL-filled to 129 bytes
        "000000"  # padding[3]
        "03000000" "00000000" "2a000000" "0a000000" "10000000"  # version 3, error 0, seq 42, type 10, 16 bytes
        "0100000000000000" "ffffffffffffffff"  # regions 1 and 2^64-1
    )  # fmt: skip
    expected = Request(T.MARK_REGION, 42, 0x1122334455667788, "LVM-test", 3, golden[196:], 42, 42)
    assert expected == wire.decode_request(golden)
    regions = [1, 2**64 - 1]
    assert regions == wire.decode_regions(expected.data, "MARK_REGION")


@little_endian_only
def test_decode_golden_ctr_hex_with_padding():
    """A 5-byte CTR payload arrives padded to 204 bytes and decodes to exactly those 5 bytes."""
    golden = bytes.fromhex(
        "c9000000" "0300" "0000" "07000000" "00000000"  # nlmsg_len 201 (unpadded), seq 7
        "07000000" "01000000" "07000000" "00000000" "a500" "0000"  # cn_msg.len 165
        "efcdab8967452301"
        "75" + "00" * 128 +  # uuid "u"
        "000000"
        "02000000" "00000000" "07000000" "01000000" "05000000"  # version 2, seq 7, CTR, 5 bytes
        "3220782079"  # "2 x y"
        "000000"  # datagram padding to a multiple of 4
    )  # fmt: skip
    expected = Request(T.CTR, 7, 0x0123456789ABCDEF, "u", 2, b"2 x y", 7, 7)
    assert expected == wire.decode_request(golden)


@pytest.mark.parametrize(("request_type", "data"), REQUEST_VECTORS)
def test_decode_every_request_type(request_type, data):
    """Each of the 17 request types decodes with its type, seq, luid, uuid, version and exact payload."""
    dg = datagram(request_type, data, seq=0xDEADBEEF, cn_seq=0x11, nl_seq=0x22, luid=0xFEDCBA9876543210)
    expected = Request(request_type, 0xDEADBEEF, 0xFEDCBA9876543210, UUID, 3, data, 0x11, 0x22)
    assert expected == wire.decode_request(dg)


@pytest.mark.parametrize(("request_type", "data"), REQUEST_VECTORS)
def test_encode_request_matches_hand_built_datagram(request_type, data):
    """encode_request builds, byte for byte, the datagram laid out field by field from the C structs."""
    expected = datagram(request_type, data, seq=SEQ)
    assert expected == wire.encode_request(request_type, seq=SEQ, luid=LUID, uuid=UUID, data=data)


@pytest.mark.parametrize(("request_type", "data"), REQUEST_VECTORS)
def test_encode_decode_round_trip(request_type, data):
    """decode_request(encode_request(...)) gives back every field for all 17 types."""
    for version in (1, 2, 3):
        dg = wire.encode_request(request_type, seq=77, luid=2**64 - 1, uuid="é-uuid", data=data, version=version)
        expected = Request(request_type, 77, 2**64 - 1, "é-uuid", version, data, 77, 77)
        assert expected == wire.decode_request(dg)


def test_luid_is_read_at_misaligned_offset_36():
    """The luid is the 8 bytes at datagram offset 36 (4- but not 8-aligned) and decodes exactly."""
    luid = 0x0123456789ABCDEF
    dg = datagram(T.RESUME, luid=luid)
    assert OFF_LUID % 8 != 0
    assert u64(luid) == dg[OFF_LUID : OFF_LUID + 8]
    assert luid == wire.decode_request(dg).luid


@pytest.mark.parametrize(
    ("raw_type", "masked"),
    [(0x0000010A, 10), (0x00001008, 8), (0xFFFFFF11, 17), (0x00000100, 0), (0x000000FF, 255), (18, 18)],
)
def test_request_type_is_masked_with_0xff(raw_type, masked):
    """request_type keeps only its low 8 bits (DM_ULOG_REQUEST_TYPE), unknown values included."""
    assert masked == wire.decode_request(datagram(raw_type)).request_type


@pytest.mark.parametrize(("raw_type", "name"), [(8, "IN_SYNC"), (0, "UNKNOWN(0)"), (18, "UNKNOWN(18)")])
def test_type_name(raw_type, name):
    """type_name gives the kernel name of a known type and UNKNOWN(n) otherwise."""
    assert name == wire.decode_request(datagram(raw_type)).type_name


@pytest.mark.parametrize(
    ("raw_uuid", "uuid"),
    [
        (b"a", "a"),
        (b"x" * 128, "x" * 128),  # longest: the NUL is the 129th byte
        ("LVM-ünïcødé".encode(), "LVM-ünïcødé"),
        (b"LVM-" + b"A" * 32 + b"-mirror", "LVM-" + "A" * 32 + "-mirror"),
    ],
)
def test_uuid_is_read_up_to_its_nul(raw_uuid, uuid):
    """The uuid is the UTF-8 text before its NUL terminator, up to 128 bytes."""
    assert uuid == wire.decode_request(datagram(T.STATUS_INFO, uuid=raw_uuid)).uuid


@pytest.mark.parametrize("version", [1, 2, 3])
def test_supported_versions(version):
    """Request versions 1, 2 and 3 are all accepted and reported."""
    assert version == wire.decode_request(datagram(T.CTR, b"8 dmulog 2", version=version)).version


def test_max_payload_332_bytes_is_accepted():
    """A payload of exactly 332 bytes (the kernel's 512-byte staging limit) decodes."""
    data = b"9" * 332
    assert data == wire.decode_request(datagram(T.CTR, data)).data


def test_request_error_field_is_ignored():
    """The error field of a kernel request does not affect decoding."""
    assert request(T.RESUME) == wire.decode_request(datagram(T.RESUME, error=-5))


# --- Malformed datagrams ----------------------------------------------------------

GOOD = datagram(T.IS_CLEAN, u64(3), seq=SEQ, cn_seq=CN_SEQ, nl_seq=CN_SEQ)


def _patch(buf: bytes, offset: int, value: bytes) -> bytes:
    return buf[:offset] + value + buf[offset + len(value) :]


# (bytes, what WireError.reply must be: "none", "ack" or "full")
MALFORMED = [
    pytest.param(b"", "none", id="empty"),
    pytest.param(GOOD[:35], "none", id="shorter-than-cn_msg"),
    pytest.param(_patch(GOOD, OFF_CN_IDX, u32(8)), "none", id="wrong-connector-idx"),
    pytest.param(_patch(GOOD, OFF_CN_VAL, u32(2)), "none", id="wrong-connector-val"),
    pytest.param(_patch(GOOD[:36], OFF_CN_IDX, u32(11)), "none", id="short-and-foreign"),
    pytest.param(GOOD[:36], "ack", id="only-cn_msg"),
    pytest.param(GOOD[:100], "ack", id="truncated-request"),
    pytest.param(GOOD[:-4], "ack", id="truncated-payload"),
    pytest.param(GOOD + b"\0\0\0\0", "ack", id="trailing-bytes"),
    pytest.param(_patch(GOOD, OFF_NL_LEN, u32(208)), "ack", id="nlmsg_len-longer-than-datagram"),
    pytest.param(_patch(GOOD, OFF_NL_LEN, u32(200)), "ack", id="nlmsg_len-shorter-than-datagram"),
    pytest.param(_patch(GOOD, OFF_NL_LEN, u32(203)), "ack", id="nlmsg_len-odd"),
    pytest.param(_patch(GOOD, OFF_NL_LEN, u32(20)), "ack", id="nlmsg_len-below-headers"),
    pytest.param(_patch(GOOD, OFF_NL_LEN, u32(0xFFFFFFFF)), "ack", id="nlmsg_len-huge"),
    pytest.param(_patch(GOOD, OFF_NL_TYPE, u16(2)), "ack", id="nlmsg_type-ERROR"),
    pytest.param(_patch(GOOD, OFF_NL_TYPE, u16(0x10)), "ack", id="nlmsg_type-16"),
    pytest.param(_patch(GOOD, OFF_CN_LEN, u16(167)), "ack", id="cn_len-below-nlmsg_len"),
    pytest.param(_patch(GOOD, OFF_CN_LEN, u16(169)), "ack", id="cn_len-above-nlmsg_len"),
    pytest.param(datagram(T.IS_CLEAN, cn_seq=CN_SEQ, cn_len=100, nl_len=136)[:136], "ack", id="cn_len-below-160"),
    pytest.param(datagram(T.IS_CLEAN, cn_seq=CN_SEQ, cn_len=0, nl_len=36)[:36], "ack", id="cn_len-zero"),
    pytest.param(_patch(GOOD, OFF_DATA_SIZE, u32(7)), "full", id="data_size-below-cn_len"),
    pytest.param(_patch(GOOD, OFF_DATA_SIZE, u32(9)), "full", id="data_size-above-cn_len"),
    pytest.param(_patch(GOOD, OFF_DATA_SIZE, u32(0xFFFFFFFF)), "full", id="data_size-huge"),
    pytest.param(datagram(T.CTR, b"1" * 333, seq=SEQ, cn_seq=CN_SEQ), "full", id="data_size-333"),
    pytest.param(datagram(T.MARK_REGION, b"\0" * 400, seq=SEQ, cn_seq=CN_SEQ), "full", id="data_size-400"),
    pytest.param(_patch(GOOD, OFF_VERSION, u32(0)), "full", id="version-0"),
    pytest.param(_patch(GOOD, OFF_VERSION, u32(4)), "full", id="version-4"),
    pytest.param(_patch(GOOD, OFF_VERSION, u32(0xFFFFFFFF)), "full", id="version-huge"),
    pytest.param(_patch(GOOD, OFF_UUID, b"A" * 129), "full", id="uuid-without-nul"),
    pytest.param(_patch(GOOD, OFF_UUID, b"\0" * 129), "full", id="uuid-empty"),
    pytest.param(_patch(GOOD, OFF_UUID, b"\0abc"), "full", id="uuid-starts-with-nul"),
    pytest.param(_patch(GOOD, OFF_UUID, b"\xff\xfe\0"), "full", id="uuid-not-utf8"),
    pytest.param(_patch(GOOD, OFF_UUID, b"\xc3\0"), "full", id="uuid-truncated-utf8"),
    pytest.param(_patch(GOOD, OFF_UUID, b"abc\0x"), "full", id="uuid-garbage-after-nul"),
    pytest.param(_patch(GOOD, OFF_UUID + 128, b"x"), "full", id="uuid-garbage-in-last-byte"),
]


@pytest.mark.parametrize(("buf", "kind"), MALFORMED)
def test_malformed_datagram_raises_wire_error(buf, kind):
    """Every malformed datagram raises WireError (a ValueError) with errno EINVAL."""
    with pytest.raises(WireError) as info:
        wire.decode_request(buf)
    assert isinstance(info.value, ValueError)
    expected = errno.EINVAL
    assert expected == info.value.errno


@pytest.mark.parametrize(("buf", "kind"), MALFORMED)
def test_malformed_datagram_reply(buf, kind):
    """WireError.reply is a full -EINVAL reply matched on the dm seq, a bare ACK on cn_msg.seq, or None."""
    with pytest.raises(WireError) as info:
        wire.decode_request(buf)
    actual = info.value.reply
    if kind == "none":
        assert actual is None
    elif kind == "ack":
        assert bare_ack(CN_SEQ, errno.EINVAL) == actual
    else:
        raw_type = field(buf, OFF_TYPE, 4)
        version = field(buf, OFF_VERSION, 4)
        # The dm header was readable: matched on dm_ulog_request.seq, no uuid needed.
        expected = reply(
            raw_type & 0xFF, -errno.EINVAL, seq=SEQ, cn_seq=CN_SEQ, nl_seq=CN_SEQ, uuid=b"", version=version
        )
        assert expected == actual


def test_full_error_reply_fields_for_malformed_datagram():
    """The full reply to a bad datagram echoes dm_ulog_request.seq, carries -EINVAL and no data."""
    buf = _patch(GOOD, OFF_VERSION, u32(0))
    with pytest.raises(WireError) as info:
        wire.decode_request(buf)
    actual = info.value.reply
    assert actual is not None
    expected = (196, 196, 7, 1, 160, SEQ, -errno.EINVAL, 0, LUID)
    assert expected == (
        len(actual),
        field(actual, OFF_NL_LEN, 4),
        field(actual, OFF_CN_IDX, 4),
        field(actual, OFF_CN_VAL, 4),
        field(actual, OFF_CN_LEN, 2),
        field(actual, OFF_SEQ, 4),
        field(actual, OFF_ERROR, 4, signed=True),
        field(actual, OFF_DATA_SIZE, 4),
        field(actual, OFF_LUID, 8),
    )


def test_bare_ack_fields_for_malformed_datagram():
    """The bare ACK echoes cn_msg.seq, carries a positive EINVAL in ack and has cn_msg.len 0."""
    with pytest.raises(WireError) as info:
        wire.decode_request(_patch(GOOD, OFF_NL_TYPE, u16(2)))
    actual = info.value.reply
    assert actual is not None
    expected = (36, 36, 7, 1, CN_SEQ, errno.EINVAL, 0)
    assert expected == (
        len(actual),
        field(actual, OFF_NL_LEN, 4),
        field(actual, OFF_CN_IDX, 4),
        field(actual, OFF_CN_VAL, 4),
        field(actual, OFF_CN_SEQ, 4),
        field(actual, OFF_CN_ACK, 4),
        field(actual, OFF_CN_LEN, 2),
    )


def test_random_bytes_raise_only_wire_error():
    """2000 seeded random byte strings either decode or raise WireError, never anything else."""
    rng = random.Random(20240611)
    for _ in range(2000):
        buf = rng.randbytes(rng.randrange(0, 600))
        try:
            wire.decode_request(buf)
        except WireError:
            pass


def test_mutated_datagrams_raise_only_wire_error():
    """2000 seeded corruptions of valid datagrams decode or raise WireError, and any reply is well framed."""
    rng = random.Random(5)
    valid = [datagram(p.values[0], p.values[1]) for p in REQUEST_VECTORS]
    for _ in range(2000):
        buf = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(0, min(len(buf), 200))] = rng.randrange(256)
        if rng.random() < 0.3:
            buf = buf[: rng.randrange(0, len(buf) + 1)] if rng.random() < 0.5 else buf + rng.randbytes(rng.randrange(8))
        try:
            wire.decode_request(bytes(buf))
        except WireError as e:
            if e.reply is not None:
                assert len(e.reply) % 4 == 0
                assert field(e.reply, OFF_NL_LEN, 4) == 36 + field(e.reply, OFF_CN_LEN, 2)


# --- Encoding replies -----------------------------------------------------------


@little_endian_only
def test_golden_get_region_size_reply_hex():
    """The GET_REGION_SIZE reply for region size 1024 is this exact 204-byte datagram."""
    req = Request(T.GET_REGION_SIZE, 0x2A, 0x1122334455667788, "LVM-test", 3, b"", 0x2B, 0x2C)
    expected = bytes.fromhex(
        "cc000000" "0300" "0000" "2c000000" "00000000"  # nlmsg_len 204, NLMSG_DONE
        "07000000" "01000000" "2b000000" "00000000" "a800" "0000"  # cn_msg.len 168
        "8877665544332211"
        "4c564d2d74657374" + "00" * 121 +
        "000000"
        "03000000" "00000000" "2a000000" "06000000" "08000000"  # error 0, seq 0x2a, type 6, 8 bytes
        "0004000000000000"  # u64 1024
    )  # fmt: skip
    assert expected == wire.encode_reply(req, 0, wire.encode_u64(1024))


# (request type, reply payload as encoded by the module, expected payload hex-built by hand)
REPLY_PAYLOADS = [
    pytest.param(T.GET_REGION_SIZE, wire.encode_u64(1024), u64(1024), id="GET_REGION_SIZE-u64"),
    pytest.param(T.GET_SYNC_COUNT, wire.encode_u64(2**64 - 1), u64(2**64 - 1), id="GET_SYNC_COUNT-max"),
    pytest.param(T.IS_CLEAN, wire.encode_s64(True), s64(1), id="IS_CLEAN-1"),
    pytest.param(T.IS_CLEAN, wire.encode_s64(False), s64(0), id="IS_CLEAN-0"),
    pytest.param(T.IN_SYNC, wire.encode_s64(True), s64(1), id="IN_SYNC-1"),
    pytest.param(T.IN_SYNC, wire.encode_s64(False), s64(0), id="IN_SYNC-0"),
    pytest.param(T.IN_SYNC, wire.encode_s64(4), s64(1), id="IN_SYNC-truthy-is-exactly-1"),
    pytest.param(T.GET_RESYNC_WORK, wire.encode_resync_work(True, 77), s64(1) + u64(77), id="RESYNC-work"),
    pytest.param(T.GET_RESYNC_WORK, wire.encode_resync_work(False, 77), s64(0) + u64(0), id="RESYNC-none"),
    pytest.param(T.GET_RESYNC_WORK, wire.encode_resync_work(True, 0), s64(1) + u64(0), id="RESYNC-region-0"),
    pytest.param(
        T.IS_REMOTE_RECOVERING, wire.encode_remote_recovering(True, 5), s64(1) + u64(5), id="REMOTE-recovering"
    ),
    pytest.param(
        T.IS_REMOTE_RECOVERING, wire.encode_remote_recovering(False, 1000), s64(0) + u64(1000), id="REMOTE-idle"
    ),
    pytest.param(T.STATUS_INFO, wire.encode_text("1 clustered-core"), b"1 clustered-core\0", id="STATUS_INFO"),
    pytest.param(
        T.STATUS_TABLE, wire.encode_text("clustered-core 1024  "), b"clustered-core 1024  \0", id="STATUS_TABLE"
    ),
    pytest.param(T.STATUS_INFO, wire.encode_text("ü"), b"?\0", id="STATUS-non-ascii-replaced"),
    pytest.param(T.STATUS_INFO, wire.encode_text(""), b"\0", id="STATUS-empty"),
]


@pytest.mark.parametrize(("request_type", "payload", "expected"), REPLY_PAYLOADS)
def test_reply_payload_bytes(request_type, payload, expected):
    """Each reply payload encoder produces the exact C layout for its request type."""
    assert expected == payload


@pytest.mark.parametrize(("request_type", "payload", "expected"), REPLY_PAYLOADS)
def test_fixed_reply_payload_fills_capacity(request_type, payload, expected):
    """Fixed-size reply payloads are exactly as long as the kernel's reply capacity."""
    capacity = wire.REPLY_CAPACITY[request_type]
    if capacity is None:
        assert payload.endswith(b"\0")
    else:
        assert capacity == len(payload)


@pytest.mark.parametrize(("request_type", "payload", "expected"), REPLY_PAYLOADS)
def test_full_reply_datagram(request_type, payload, expected):
    """encode_reply frames a success payload byte for byte: lengths, seq echo, data_size and padding."""
    req = Request(request_type, SEQ, LUID, UUID, 3, b"", CN_SEQ, 0x99)
    actual = wire.encode_reply(req, 0, payload)
    assert reply(request_type, 0, expected, seq=SEQ, cn_seq=CN_SEQ, nl_seq=0x99) == actual


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 17, 128])
def test_reply_lengths_and_padding(size):
    """nlmsg_len is 196+data_size unpadded, cn_msg.len is 160+data_size, and the datagram is zero-padded to 4."""
    data = b"z" * size
    actual = wire.encode_reply(request(T.STATUS_INFO), 0, data)
    nl_len = 196 + size
    assert (nl_len, 160 + size, size, nl_len + (-nl_len % 4)) == (
        field(actual, OFF_NL_LEN, 4),
        field(actual, OFF_CN_LEN, 2),
        field(actual, OFF_DATA_SIZE, 4),
        len(actual),
    )
    assert data + b"\0" * (-nl_len % 4) == actual[OFF_DATA:]


def test_reply_echoes_dm_seq_not_cn_seq():
    """A full reply carries the request's dm_ulog_request.seq, which the kernel matches it on."""
    req = Request(T.IN_SYNC, 0xCAFEBABE, LUID, UUID, 3, u64(1), 0x1, 0x2)
    expected = 0xCAFEBABE
    assert expected == field(wire.encode_reply(req, 0, wire.encode_s64(True)), OFF_SEQ, 4)


def test_reply_after_decode_echoes_request():
    """Replying to a decoded kernel datagram echoes its seq, luid, uuid, type and version."""
    req = wire.decode_request(datagram(T.IS_CLEAN, u64(3), seq=0x55, cn_seq=0x66, nl_seq=0x77, version=2))
    expected = reply(T.IS_CLEAN, 0, s64(1), seq=0x55, cn_seq=0x66, nl_seq=0x77, version=2)
    assert expected == wire.encode_reply(req, 0, wire.encode_s64(True))


@pytest.mark.parametrize(
    ("code", "error"),
    [(errno.EINVAL, -errno.EINVAL), (errno.ESRCH, -3), (-errno.EIO, -errno.EIO)],
)
def test_error_reply(code, error):
    """error_reply carries the negative errno, no payload (data_size 0) and the echoed seq."""
    req = request(T.FLUSH, regions_payload(1, 2, 3))
    assert reply(T.FLUSH, error) == wire.error_reply(req, code)


def test_eagain_is_a_bare_ack_so_the_kernel_keeps_its_reply_room():
    """-EAGAIN goes as a bare ACK (cn_msg.len 0, ack 11, cn seq echoed): a full reply would zero the reply room."""
    req = wire.decode_request(datagram(T.IN_SYNC, u64(3), seq=0x55, cn_seq=0x55, nl_seq=0x55))
    raw = wire.error_reply(req, errno.EAGAIN)
    parsed = wire.decode_reply(raw)
    assert (True, -errno.EAGAIN, 0x55, 36) == (parsed.bare_ack, parsed.error, parsed.seq, len(raw))


@pytest.mark.parametrize(
    ("rtype", "payload", "room"),
    [(T.IN_SYNC, u64(3), 8), (T.IS_CLEAN, u64(3), 8), (T.GET_SYNC_COUNT, b"", 8), (T.GET_RESYNC_WORK, b"", 16),
     (T.IS_REMOTE_RECOVERING, u64(3), 16), (T.MARK_REGION, u64(1), 0), (T.STATUS_INFO, b"", 0)],
)  # fmt: skip
def test_esrch_carries_zeros_of_the_whole_reply_room(rtype, payload, room):
    """-ESRCH makes the kernel ask again after CTR and RESUME, with the room this reply's data_size leaves it.

    So an -ESRCH reply carries that many zero bytes: the room of the request type
    (none for a request that gets no data, and for STATUS_INFO, whose room is the
    rest of the status buffer and unknown here). With data_size 0 the answer to
    the IN_SYNC asked again was refused -ENOSPC and read as "not in sync".
    """
    raw = wire.error_reply(wire.decode_request(datagram(rtype, payload, seq=9)), errno.ESRCH)
    parsed = wire.decode_reply(raw)
    assert (-errno.ESRCH, 9, bytes(room)) == (parsed.error, parsed.seq, parsed.data)


@little_endian_only
def test_error_reply_esrch_hex():
    """The -ESRCH reply has error bytes fdffffff and data_size 0."""
    actual = wire.error_reply(request(T.MARK_REGION, u64(1)), errno.ESRCH)
    assert bytes.fromhex("fdffffff") == actual[OFF_ERROR : OFF_ERROR + 4]
    assert bytes.fromhex("00000000") == actual[OFF_DATA_SIZE : OFF_DATA_SIZE + 4]
    expected = 196
    assert expected == len(actual)


def test_encode_reply_rejects_positive_error():
    """A positive error value (which the kernel would read as success-with-value) is refused."""
    with pytest.raises(ValueError):
        wire.encode_reply(request(T.GET_RESYNC_WORK), 5)


# --- CTR reply ---------------------------------------------------------------------

TABLE_LOAD = CtrArgs(2097152, "clustered-disk", ("253:2", "1024"), replay=False)
REPLAY = CtrArgs(2097152, "clustered-disk", ("253:2", "1024"), replay=True)


@pytest.mark.parametrize(
    ("device", "ctr", "version", "expected"),
    [
        pytest.param("253:2", TABLE_LOAD, 3, b"253:2\0", id="table-load-v3"),
        pytest.param("253:2", TABLE_LOAD, 2, b"253:2\0", id="table-load-v2"),
        pytest.param("253:2", TABLE_LOAD, 1, b"", id="table-load-v1"),
        pytest.param("253:2", REPLAY, 3, b"", id="replay-v3"),
        pytest.param("253:2", REPLAY, 2, b"", id="replay-v2"),
        pytest.param("", TABLE_LOAD, 3, b"", id="no-device"),
        pytest.param("/dev/" + "d" * 122, TABLE_LOAD, 3, b"/dev/" + b"d" * 122 + b"\0", id="128-bytes-with-nul"),
    ],
)
def test_ctr_reply_payload(device, ctr, version, expected):
    """The CTR device reply is NUL-terminated and sent only at table load to a version >= 2 kernel."""
    assert expected == wire.encode_ctr_reply(device, ctr, version)


def test_ctr_reply_too_long_device():
    """A device name that with its NUL exceeds the kernel's 128 bytes raises WireError."""
    with pytest.raises(WireError):
        wire.encode_ctr_reply("/dev/" + "d" * 123, TABLE_LOAD, 3)


def test_ctr_reply_non_ascii_device():
    """A device name the kernel could not take (not ASCII) raises WireError like any unencodable reply."""
    with pytest.raises(WireError):
        wire.encode_ctr_reply("/dev/é", TABLE_LOAD, 3)


def test_ctr_reply_datagram_from_table_load_request():
    """A table-load CTR (no NUL in data_size) gets the device name back inside a full reply."""
    req = wire.decode_request(datagram(T.CTR, b"2097152 clustered-disk 253:2 1024"))
    payload = wire.encode_ctr_reply("253:2", wire.decode_ctr(req.data), req.version)
    expected = reply(T.CTR, 0, b"253:2\0")
    assert expected == wire.encode_reply(req, 0, payload)
    nl_len = 196 + 6
    assert nl_len == field(expected, OFF_NL_LEN, 4)


def test_ctr_reply_datagram_from_replay_request():
    """A replayed CTR (NUL inside data_size) gets a reply with data_size 0."""
    req = wire.decode_request(datagram(T.CTR, b"2097152 clustered-disk 253:2 1024\0"))
    payload = wire.encode_ctr_reply("253:2", wire.decode_ctr(req.data), req.version)
    assert reply(T.CTR, 0) == wire.encode_reply(req, 0, payload)


# --- Payload decoders --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"2048 clustered-core 1024", CtrArgs(2048, "clustered-core", ("1024",), False), id="core"),
        pytest.param(
            b"2097152 clustered-disk 253:2 1024 nosync",
            CtrArgs(2097152, "clustered-disk", ("253:2", "1024", "nosync"), False),
            id="disk",
        ),
        pytest.param(b"2048 clustered-core 1024\0", CtrArgs(2048, "clustered-core", ("1024",), True), id="replay"),
        pytest.param(b"8 dmulog", CtrArgs(8, "dmulog", (), False), id="type-only"),
        pytest.param(b"0100 dmulog 2", CtrArgs(100, "dmulog", ("2",), False), id="leading-zero-is-decimal"),
        pytest.param(
            b"18446744073709551615 dmulog 2", CtrArgs(2**64 - 1, "dmulog", ("2",), False), id="u64-max-length"
        ),
    ],
)
def test_decode_ctr_valid(data, expected):
    """The constructor string splits into target sectors, log type and arguments; a trailing NUL marks a replay."""
    assert expected == wire.decode_ctr(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\0", id="only-nul"),
        pytest.param(b"2048", id="no-type"),
        pytest.param(b"2048\0", id="no-type-replay"),
        pytest.param(b"2048 clustered-core 1024\0\0", id="two-nuls"),
        pytest.param(b"2048 clustered\0core 1024", id="embedded-nul"),
        pytest.param(b"2048\0 clustered-core", id="embedded-nul-after-length"),
        pytest.param(b"2048  clustered-core 1024", id="double-space"),
        pytest.param(b" 2048 clustered-core 1024", id="leading-space"),
        pytest.param(b"2048 clustered-core 1024 ", id="trailing-space"),
        pytest.param(b"2048\tclustered-core 1024", id="tab"),
        pytest.param(b"0 clustered-core 1024", id="zero-length"),
        pytest.param(b"000 clustered-core 1024", id="zeros-length"),
        pytest.param(b"-2048 clustered-core 1024", id="negative-length"),
        pytest.param(b"+2048 clustered-core 1024", id="plus-length"),
        pytest.param(b"0x800 clustered-core 1024", id="hex-length"),
        pytest.param(b"2e3 clustered-core 1024", id="exponent-length"),
        pytest.param(b"20.48 clustered-core 1024", id="fraction-length"),
        pytest.param(b"\xb2 clustered-core 1024", id="latin1-superscript-two"),
        pytest.param("\u00b2 clustered-core 1024".encode(), id="utf8-superscript-two"),
        pytest.param("2048 clustered-c\u00f6re 1024".encode(), id="non-ascii-type"),
        pytest.param(b"2048 clustered-core \xff", id="non-ascii-arg"),
        pytest.param(b"18446744073709551616 dmulog 2", id="u64-max-plus-one-length"),
        pytest.param(b"99999999999999999999999999999999999999 dmulog 2", id="38-digit-length"),
    ],
)
def test_decode_ctr_invalid(data):
    """Malformed constructor strings raise WireError."""
    with pytest.raises(WireError):
        wire.decode_ctr(data)


def test_decode_ctr_length_over_u64_is_einval_with_its_reason():
    """A length the kernel's u64 ti->len cannot be is malformed: -EINVAL, byte for byte, before any RPC is built."""
    req = wire.decode_request(datagram(T.CTR, b"18446744073709551616 dmulog 2"))
    with pytest.raises(WireError, match="CTR target length 18446744073709551616 does not fit 64 bits") as e:
        wire.decode_ctr(req.data)
    assert errno.EINVAL == e.value.errno
    assert reply(T.CTR, -errno.EINVAL) == wire.error_reply(req, e.value.errno)


@pytest.mark.parametrize(
    ("data", "allow_empty", "expected"),
    [
        (b"", True, []),
        (u64(0), False, [0]),
        (u64(0), True, [0]),
        (regions_payload(3, 1, 2**64 - 1), False, [3, 1, 2**64 - 1]),
        (regions_payload(*range(32)), False, list(range(32))),
    ],
)
def test_decode_regions_valid(data, allow_empty, expected):
    """A region list is a sequence of host-order u64 values, kept in kernel order."""
    assert expected == wire.decode_regions(data, "MARK_REGION", allow_empty=allow_empty)


@pytest.mark.parametrize(
    ("data", "allow_empty"),
    [(b"", False), (b"\0" * 7, False), (b"\0" * 9, False), (b"\0" * 7, True), (b"\0" * 12, True), (b"\0", True)],
)
def test_decode_regions_invalid(data, allow_empty):
    """An empty list (unless allowed) or a length that is not a multiple of 8 raises WireError."""
    with pytest.raises(WireError):
        wire.decode_regions(data, "CLEAR_REGION", allow_empty=allow_empty)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (u64(9) + s64(1), (9, True)),
        (u64(9) + s64(0), (9, False)),
        (u64(2**64 - 1) + s64(-1), (2**64 - 1, True)),
        (u64(0) + s64(2), (0, True)),
    ],
)
def test_decode_set_region_sync_valid(data, expected):
    """SET_REGION_SYNC is { u64 region; s64 in_sync; } with region first and any non-zero in_sync true."""
    assert expected == wire.decode_set_region_sync(data)


@little_endian_only
def test_decode_set_region_sync_hex():
    """Region 9 in sync is 0900000000000000 0100000000000000 on the wire."""
    expected = (9, True)
    assert expected == wire.decode_set_region_sync(bytes.fromhex("0900000000000000" + "0100000000000000"))


@pytest.mark.parametrize("size", [0, 8, 15, 17, 24])
def test_decode_set_region_sync_invalid(size):
    """A SET_REGION_SYNC payload that is not exactly 16 bytes raises WireError."""
    with pytest.raises(WireError):
        wire.decode_set_region_sync(b"\1" * size)


@pytest.mark.parametrize("value", [0, 1, 5, 2**32, 2**64 - 1])
def test_decode_single_region_valid(value):
    """A single-region payload is one host-order u64."""
    assert value == wire.decode_single_region(u64(value), "IN_SYNC")


@little_endian_only
def test_decode_single_region_hex():
    """Region 0x0102030405060708 is 0807060504030201 on a little-endian wire."""
    expected = 0x0102030405060708
    assert expected == wire.decode_single_region(bytes.fromhex("0807060504030201"), "IS_CLEAN")


@pytest.mark.parametrize("size", [0, 1, 7, 9, 16])
def test_decode_single_region_invalid(size):
    """A single-region payload that is not exactly 8 bytes raises WireError."""
    with pytest.raises(WireError):
        wire.decode_single_region(b"\0" * size, "IS_REMOTE_RECOVERING")


def test_expect_empty_accepts_nothing():
    """An empty payload passes expect_empty."""
    assert wire.expect_empty(b"", "RESUME") is None


@pytest.mark.parametrize("data", [b"\0", b"x" * 8, b"2048 dmulog 2"])
def test_expect_empty_rejects_payload(data):
    """Any payload on a payload-less request raises WireError."""
    with pytest.raises(WireError):
        wire.expect_empty(data, "PRESUSPEND")


@pytest.mark.parametrize("uuid", ["", "x" * 129, "é" * 65])
def test_encode_request_rejects_bad_uuid(uuid):
    """encode_request refuses a uuid that is empty or longer than 128 bytes."""
    with pytest.raises(ValueError):
        wire.encode_request(T.RESUME, seq=1, luid=1, uuid=uuid)


# --- Reading replies back (decode_reply) -----------------------------------------


@pytest.mark.parametrize(
    ("buf", "expected"),
    [
        pytest.param(reply(T.IN_SYNC, 0, s64(1), seq=9), wire.Reply(9, 0, s64(1), False), id="full-success"),
        pytest.param(reply(T.FLUSH, -errno.ESRCH, seq=10), wire.Reply(10, -3, b"", False), id="full-error"),
        pytest.param(reply(T.STATUS_INFO, 0, b"1 dmulog\0", seq=11), wire.Reply(11, 0, b"1 dmulog\0", False),
                     id="full-padded"),
        pytest.param(bare_ack(12, errno.EAGAIN), wire.Reply(12, -errno.EAGAIN, b"", True), id="bare-ack"),
    ],
)  # fmt: skip
def test_decode_reply(buf, expected):
    """decode_reply reads a hand-built reply the way the kernel does: seq, error (ack negated) and data."""
    assert expected == wire.decode_reply(buf)


@pytest.mark.parametrize(("request_type", "data"), REQUEST_VECTORS)
def test_decode_reply_inverts_encode_reply(request_type, data):
    """decode_reply(encode_reply(...)) gives back the dm seq, the error and the payload."""
    expected = wire.Reply(SEQ, -errno.EIO, data, False)
    assert expected == wire.decode_reply(wire.encode_reply(request(request_type), -errno.EIO, data))


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bare_ack(1, 0)[:35], id="short"),
        pytest.param(_patch(bare_ack(1, 0), OFF_CN_IDX, u32(3)), id="foreign-connector"),
        pytest.param(_patch(bare_ack(1, 0), OFF_NL_LEN, u32(40)), id="nlmsg_len-disagrees"),
        pytest.param(
            _patch(_patch(reply(T.RESUME, 0), OFF_CN_LEN, u16(100)), OFF_NL_LEN, u32(136))[:136], id="cn_len-below-160"
        ),
        pytest.param(_patch(reply(T.RESUME, 0), OFF_DATA_SIZE, u32(4)), id="data_size-disagrees"),
        pytest.param(reply(T.IS_CLEAN, 0, s64(1))[:200], id="truncated"),
    ],
)
def test_decode_reply_rejects_malformed(buf):
    """A reply the kernel would drop or misread raises WireError."""
    with pytest.raises(WireError):
        wire.decode_reply(buf)


def test_peek_type_and_size_reads_the_masked_type_and_data_size_without_decoding():
    """The look before decoding: request_type masked as decode_request masks it, data_size as sent, nothing checked."""
    datagram = wire.encode_request(T.FLUSH | 0x300, seq=SEQ, luid=LUID, uuid=UUID, data=u64(1) + u64(2))
    assert (T.FLUSH, 16) == wire.peek_type_and_size(datagram)
    assert (T.IN_SYNC, 8) == wire.peek_type_and_size(wire.encode_request(T.IN_SYNC, seq=1, luid=1, uuid="u",
                                                                          data=u64(0)))  # fmt: skip
    assert None is wire.peek_type_and_size(datagram[: wire.HEADER_SIZE - 1])
