"""Pure codec for the kernel's dm-log-userspace datagrams.

The kernel and the bridge exchange one netlink message per datagram:
``nlmsghdr`` + ``cn_msg`` + ``struct dm_ulog_request`` + payload, all in host
byte order (include/uapi/linux/dm-log-userspace.h, connector.h). This module
turns those bytes into values and back and does nothing else: no sockets, no
logging, no clock, so every rule of the format can be tested byte for byte.

Decoding is strict. Anything the kernel would never send (a short header, a
length that disagrees with another length, a foreign connector id, a payload
of the wrong size for its request type) raises :class:`WireError`, which
carries the reply that tells the kernel so whenever the datagram was intact
enough to address one.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dmulog.requests import REQUESTS, RequestType

__all__ = [
    "CN_IDX_DM",
    "CN_VAL_DM_USERSPACE_LOG",
    "DM_ULOG_REQUEST_VERSION",
    "DM_UUID_LEN",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "REPLY_CAPACITY",
    "CtrArgs",
    "Reply",
    "Request",
    "RequestType",
    "WireError",
    "decode_ctr",
    "decode_regions",
    "decode_reply",
    "decode_request",
    "decode_set_region_sync",
    "decode_single_region",
    "encode_ctr_reply",
    "encode_remote_recovering",
    "encode_reply",
    "encode_request",
    "encode_resync_work",
    "encode_s64",
    "encode_text",
    "encode_u64",
    "error_reply",
    "expect_empty",
    "peek_type_and_size",
    "reply_errno",
]

CN_IDX_DM = 0x7
CN_VAL_DM_USERSPACE_LOG = 0x1
NLMSG_DONE = 3
DM_UUID_LEN = 129
DM_ULOG_REQUEST_VERSION = 3
DM_ULOG_REQUEST_MASK = 0xFF
CONNECTOR_MAX_MSG_SIZE = 16384
# NOTE: the kernel stages cn_msg + request + payload in a 512-byte buffer
# (DM_ULOG_PREALLOCED_SIZE), so no request payload is ever larger than this.
MAX_PAYLOAD = 512 - 20 - 160

# struct nlmsghdr { __u32 nlmsg_len; __u16 nlmsg_type; __u16 nlmsg_flags;
#                   __u32 nlmsg_seq; __u32 nlmsg_pid; }
NLMSGHDR = struct.Struct("=IHHII")
# struct cn_msg { struct cb_id { __u32 idx; __u32 val; } id; __u32 seq;
#                 __u32 ack; __u16 len; __u16 flags; __u8 data[]; }
CN_MSG = struct.Struct("=IIIIHH")
# struct dm_ulog_request { __u64 luid; char uuid[DM_UUID_LEN]; char padding[3];
#                          __u32 version; __s32 error; __u32 seq;
#                          __u32 request_type; __u32 data_size; char data[]; }
DM_ULOG_REQUEST = struct.Struct("=Q129s3xIiIII")
# The three headers back to back, as they sit in a datagram (36 + 160 bytes).
# NOTE: the request starts at offset 36, so luid is not 8-aligned in a receive
# buffer; struct's "=" (no alignment) reads it with byte copies.
HEADER = struct.Struct("=IHHIIIIIIHHQ129s3xIiIII")
HEADER_SIZE = HEADER.size
_CN_END = NLMSGHDR.size + CN_MSG.size

U64 = struct.Struct("=Q")
S64 = struct.Struct("=q")
RESYNC_WORK = struct.Struct("=qQ")  # { int64_t i; uint64_t r; }
REMOTE_RECOVERING = struct.Struct("=qQ")  # { int64_t is_recovering; uint64_t in_sync_hint; }
REGION_SYNC = struct.Struct("=Qq")  # { uint64_t region; int64_t in_sync; }

assert NLMSGHDR.size == 16 and CN_MSG.size == 20 and DM_ULOG_REQUEST.size == 160
assert HEADER_SIZE == 196


# How many reply payload bytes the kernel has room for, per request type; None =
# not fixed: STATUS_* get the rest of the status buffer. Read from the table of
# request types (dmulog/requests.py), where each type's room is declared.
REPLY_CAPACITY: Mapping[RequestType, int | None] = MappingProxyType({s.type: s.capacity for s in REQUESTS})
_KNOWN_TYPES = frozenset(int(t) for t in REPLY_CAPACITY)


class WireError(ValueError):
    """A datagram that breaks the format.

    ``errno`` is the positive errno to report; ``reply`` is the datagram that
    reports it to the kernel, or None when the input was too damaged to
    address a reply to any waiter.
    """

    def __init__(self, message: str, *, code: int = errno.EINVAL, reply: bytes | None = None):
        super().__init__(message)
        self.errno = code
        self.reply = reply


@dataclass(frozen=True, slots=True)
class Request:
    """One decoded kernel request; the payload is left raw for the dispatcher."""

    request_type: int  # masked with DM_ULOG_REQUEST_MASK; may be unknown
    seq: int  # dm_ulog_request.seq: a full reply is matched on it
    luid: int
    uuid: str
    version: int
    data: bytes
    cn_seq: int = 0
    nlmsg_seq: int = 0

    @property
    def type_name(self) -> str:
        """Kernel name of the request type, or ``UNKNOWN(n)``, for logs."""
        try:
            return RequestType(self.request_type).name
        except ValueError:
            return f"UNKNOWN({self.request_type})"


@dataclass(frozen=True, slots=True)
class CtrArgs:
    """The kernel's constructor string ``"<sectors> <type> <args...>"``, split."""

    target_sectors: int
    log_type: str
    args: tuple[str, ...]
    # True when the string carried its NUL terminator: only the kernel's
    # reconnect loop sends that, and it has no room for any reply payload.
    replay: bool


def _align4(n: int) -> int:
    return (n + 3) & ~3


_TYPE_AND_SIZE = struct.Struct("=II")
_TYPE_OFFSET = HEADER_SIZE - _TYPE_AND_SIZE.size


def peek_type_and_size(buf: bytes) -> tuple[int, int] | None:
    """``(request type, data_size)`` of a datagram before decoding it, or None if it is too short.

    Nothing is checked: it is for the bridge to tell, at the cost of one
    unpack, the few requests that may be answered without a call; whatever
    it then does with one starts with :func:`decode_request`.
    """
    if len(buf) < HEADER_SIZE:
        return None
    rtype, size = _TYPE_AND_SIZE.unpack_from(buf, _TYPE_OFFSET)
    return rtype & DM_ULOG_REQUEST_MASK, size


def decode_request(buf: bytes) -> Request:
    """Decode one kernel → server datagram, strictly.

    Raises WireError for anything that is not a well-formed dm-log-userspace
    request. The request type is masked but not checked here: an unknown type
    is a well-formed datagram that the dispatcher answers with an error.
    """
    n = len(buf)
    if n < _CN_END:
        raise WireError(f"datagram of {n} bytes is shorter than nlmsghdr + cn_msg")
    nl_len, nl_type, _nl_flags, nl_seq, _nl_pid = NLMSGHDR.unpack_from(buf, 0)
    idx, val, cn_seq, _ack, cn_len, _cn_flags = CN_MSG.unpack_from(buf, NLMSGHDR.size)
    if (idx, val) != (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG):
        raise WireError(f"connector id {idx}:{val} is not dm-log-userspace {CN_IDX_DM}:{CN_VAL_DM_USERSPACE_LOG}")

    def bad_ack(message: str) -> WireError:
        return WireError(message, reply=_bare_ack(cn_seq, errno.EINVAL))

    if nl_len > n or nl_len < _CN_END or n != _align4(nl_len):
        raise bad_ack(f"nlmsg_len {nl_len} does not match a datagram of {n} bytes")
    if nl_type != NLMSG_DONE:
        raise bad_ack(f"nlmsg_type {nl_type} is not NLMSG_DONE")
    if nl_len != _CN_END + cn_len:
        raise bad_ack(f"cn_msg.len {cn_len} disagrees with nlmsg_len {nl_len}")
    if nl_len < HEADER_SIZE:
        raise bad_ack(f"cn_msg.len {cn_len} is shorter than struct dm_ulog_request")
    (luid, raw_uuid, version, _error, seq, raw_type, data_size) = DM_ULOG_REQUEST.unpack_from(buf, _CN_END)
    request_type = raw_type & DM_ULOG_REQUEST_MASK

    def bad(message: str) -> WireError:
        partial = Request(request_type, seq, luid, "", version, b"", cn_seq, nl_seq)
        return WireError(message, reply=encode_reply(partial, -errno.EINVAL))

    if cn_len != DM_ULOG_REQUEST.size + data_size:
        raise bad(f"data_size {data_size} disagrees with cn_msg.len {cn_len}")
    if data_size > MAX_PAYLOAD:
        raise bad(f"data_size {data_size} exceeds the kernel's {MAX_PAYLOAD}-byte limit")
    if not 1 <= version <= DM_ULOG_REQUEST_VERSION:
        raise bad(f"unsupported request version {version}")
    end = raw_uuid.find(b"\0")
    if end <= 0:
        raise bad("uuid is empty or not NUL-terminated")
    if raw_uuid[end:].strip(b"\0"):
        raise bad("uuid has bytes after its NUL terminator")
    try:
        uuid = raw_uuid[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise bad("uuid is not UTF-8") from None
    data = bytes(buf[HEADER_SIZE : HEADER_SIZE + data_size])
    return Request(request_type, seq, luid, uuid, version, data, cn_seq, nl_seq)


def encode_request(
    request_type: int,
    *,
    seq: int,
    luid: int,
    uuid: str,
    data: bytes = b"",
    version: int = DM_ULOG_REQUEST_VERSION,
) -> bytes:
    """Build a datagram exactly as the kernel sends it (for tests and replay)."""
    raw_uuid = uuid.encode("utf-8")
    if not 0 < len(raw_uuid) < DM_UUID_LEN:
        raise ValueError("uuid must be 1 to 128 bytes")
    cn_len = DM_ULOG_REQUEST.size + len(data)
    nl_len = _CN_END + cn_len
    head = HEADER.pack(
        nl_len, NLMSG_DONE, 0, seq, 0,
        CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, seq, 0, cn_len, 0,
        luid, raw_uuid, version, 0, seq, request_type, len(data),
    )  # fmt: skip
    return head + data + b"\0" * (_align4(nl_len) - nl_len)


def encode_reply(request: Request, error: int, data: bytes = b"") -> bytes:
    """Build the full reply to ``request``.

    ``error`` is 0 or a negative errno. The kernel matches a full reply on
    dm_ulog_request.seq and copies data_size bytes, so both are exact here;
    cn_msg.len is always 160 + data_size (the kernel does not check it).
    """
    if error > 0:
        raise ValueError("error must be 0 or a negative errno")
    cn_len = DM_ULOG_REQUEST.size + len(data)
    nl_len = _CN_END + cn_len
    raw_uuid = request.uuid.encode("utf-8")[: DM_UUID_LEN - 1]
    head = HEADER.pack(
        nl_len, NLMSG_DONE, 0, request.nlmsg_seq, 0,
        CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, request.cn_seq, 0, cn_len, 0,
        request.luid, raw_uuid, request.version, error, request.seq, request.request_type, len(data),
    )  # fmt: skip
    return head + data + b"\0" * (_align4(nl_len) - nl_len)


@dataclass(frozen=True, slots=True)
class Reply:
    """A server → kernel datagram as the kernel reads it."""

    seq: int  # the waiter it completes: dm seq for a full reply, cn seq for a bare ACK
    error: int  # 0 or a negative errno
    data: bytes
    bare_ack: bool


def decode_reply(buf: bytes) -> Reply:
    """Read a reply the way the kernel's connector callback does (tests, replay tools)."""
    if len(buf) < _CN_END:
        raise WireError("reply shorter than nlmsghdr + cn_msg")
    nl_len = NLMSGHDR.unpack_from(buf, 0)[0]
    idx, val, cn_seq, ack, cn_len, _ = CN_MSG.unpack_from(buf, NLMSGHDR.size)
    if (idx, val) != (CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG) or nl_len != _CN_END + cn_len or len(buf) < nl_len:
        raise WireError("reply framing is inconsistent")
    if cn_len == 0:
        return Reply(cn_seq, -ack, b"", True)
    if cn_len < DM_ULOG_REQUEST.size:
        raise WireError("reply shorter than struct dm_ulog_request")
    (_luid, _uuid, _version, error, seq, _type, data_size) = DM_ULOG_REQUEST.unpack_from(buf, _CN_END)
    if cn_len != DM_ULOG_REQUEST.size + data_size:
        raise WireError("reply data_size disagrees with cn_msg.len")
    return Reply(seq, error, bytes(buf[HEADER_SIZE : HEADER_SIZE + data_size]), False)


_CN_ACK_AND_LEN = struct.Struct("=I H")  # cn_msg.ack, cn_msg.len
_CN_ACK_OFFSET = NLMSGHDR.size + 12
_S32 = struct.Struct("=i")
_ERROR_OFFSET = _CN_END + 8 + DM_UUID_LEN + 3 + 4  # dm_ulog_request.error, after luid, uuid, padding, version


def reply_errno(buf: bytes) -> int:
    """The positive errno a reply this module built carries (0: success), read without decoding it.

    For the bridge's metrics, once per reply: two unpacks, where
    :func:`decode_reply` would check and copy everything. A bare ACK carries
    it in ``cn_msg.ack``, a full reply in ``dm_ulog_request.error``.
    """
    ack, cn_len = _CN_ACK_AND_LEN.unpack_from(buf, _CN_ACK_OFFSET)
    if cn_len == 0:
        return int(ack)
    return -int(_S32.unpack_from(buf, _ERROR_OFFSET)[0])


def _bare_ack(cn_seq: int, code: int) -> bytes:
    """A reply with cn_msg.len = 0: matched on cn_msg.seq, result = -ack."""
    return NLMSGHDR.pack(_CN_END, NLMSG_DONE, 0, 0, 0) + CN_MSG.pack(
        CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG, cn_seq, code, 0, 0
    )


def error_reply(request: Request, code: int) -> bytes:
    """Reply carrying ``-code``: no payload, except where the kernel asks again.

    NOTE: the kernel's fill_pkg sets the caller's reply room to the data_size
    of an error reply (to 0 for a bare ACK, except a bare-ACK EAGAIN, which
    keeps it). Two errors make the kernel ask the same request again with that
    room: -EAGAIN (at once) and -ESRCH (after replaying CTR and RESUME). With
    a room of 0 the answer to the request asked again is refused with -ENOSPC
    ("Insufficient space to receive package"), and an IN_SYNC then reads as
    "not in sync": the write goes to the primary leg only while the log says
    in sync, and the legs differ. So -EAGAIN goes as a bare ACK (matched on
    cn_msg.seq, which the kernel sets equal to the request seq), and -ESRCH as
    a full reply carrying zeros of the request type's whole reply room.
    """
    if abs(code) == errno.EAGAIN:
        return _bare_ack(request.cn_seq, errno.EAGAIN)
    room = None
    if abs(code) == errno.ESRCH and request.request_type in _KNOWN_TYPES:
        room = REPLY_CAPACITY[RequestType(request.request_type)]
    return encode_reply(request, -abs(code), bytes(room or 0))


def expect_empty(data: bytes, what: str) -> None:
    """Payload-less requests must carry nothing."""
    if data:
        raise WireError(f"{what} carries {len(data)} payload bytes, expected none")


def decode_single_region(data: bytes, what: str) -> int:
    """u64 region payload of IS_CLEAN, IN_SYNC and IS_REMOTE_RECOVERING."""
    if len(data) != U64.size:
        raise WireError(f"{what} payload is {len(data)} bytes, expected 8")
    return int(U64.unpack(data)[0])


def decode_regions(data: bytes, what: str, *, allow_empty: bool = False) -> list[int]:
    """u64[] region list of MARK_REGION, CLEAR_REGION and integrated FLUSH."""
    if len(data) % U64.size or (not data and not allow_empty):
        raise WireError(f"{what} payload is {len(data)} bytes, expected a non-empty multiple of 8")
    return [r for (r,) in U64.iter_unpack(data)]


def decode_set_region_sync(data: bytes) -> tuple[int, bool]:
    """``{ u64 region; s64 in_sync; }``; any non-zero in_sync means in sync."""
    if len(data) != REGION_SYNC.size:
        raise WireError(f"SET_REGION_SYNC payload is {len(data)} bytes, expected 16")
    region, in_sync = REGION_SYNC.unpack(data)
    return int(region), in_sync != 0


def decode_ctr(data: bytes) -> CtrArgs:
    """Split the constructor string ``"<sectors> <type> <arg>..."``.

    The kernel joins the table words with single spaces and sends the string
    without its NUL at table load, and with it from the reconnect loop. The
    length is the kernel's u64 ti->len, so a longer number is malformed.
    """
    replay = data.endswith(b"\0")
    text_bytes = data[:-1] if replay else data
    if b"\0" in text_bytes:
        raise WireError("CTR string has an embedded NUL")
    try:
        text = text_bytes.decode("ascii")
    except UnicodeDecodeError:
        raise WireError("CTR string is not ASCII") from None
    words = text.split(" ")
    if len(words) < 2 or any(not w for w in words):
        raise WireError(f"CTR string {text!r} is not '<sectors> <log type> <args...>'")
    if not words[0].isdigit() or int(words[0]) == 0:
        raise WireError(f"CTR target length {words[0]!r} is not a positive decimal number")
    if int(words[0]) >= 1 << 64:
        raise WireError(f"CTR target length {words[0]} does not fit 64 bits")
    return CtrArgs(int(words[0]), words[1], tuple(words[2:]), replay)


def encode_u64(value: int) -> bytes:
    """u64 reply payload (GET_REGION_SIZE, GET_SYNC_COUNT)."""
    return U64.pack(value)


def encode_s64(flag: bool) -> bytes:
    """s64 reply that is exactly 0 or 1 (IS_CLEAN, IN_SYNC).

    NOTE: the region hash tests ``== 1``; any other non-zero value reads as
    "not in sync" (the cmirrord corruption fixed by LVM commit 498747d79).
    """
    return S64.pack(1 if flag else 0)


def encode_resync_work(has_work: bool, region: int) -> bytes:
    """``{ s64 i; u64 r; }`` reply of GET_RESYNC_WORK."""
    return RESYNC_WORK.pack(1 if has_work else 0, region if has_work else 0)


def encode_remote_recovering(is_recovering: bool, in_sync_hint: int) -> bytes:
    """``{ s64 is_recovering; u64 in_sync_hint; }`` reply of IS_REMOTE_RECOVERING."""
    return REMOTE_RECOVERING.pack(1 if is_recovering else 0, in_sync_hint)


def encode_text(text: str) -> bytes:
    """Status text with its NUL inside data_size.

    The kernel copies exactly data_size bytes into the status buffer and adds
    no terminator; sending the NUL keeps ``dmsetup status`` from reading past
    the text whatever the buffer held before.
    """
    return text.encode("ascii", "replace") + b"\0"


def encode_ctr_reply(device: str, ctr: CtrArgs, version: int) -> bytes:
    """CTR reply payload: the log device name for the kernel to reference.

    Sent only when the kernel has room: never to a replayed CTR (capacity 0)
    nor to a version-1 kernel, which does not expect one.
    """
    if not device or ctr.replay or version < 2:
        return b""
    try:
        raw = device.encode("ascii") + b"\0"
    except UnicodeEncodeError:
        raise WireError(f"log device name {device!r} is not ASCII") from None
    if len(raw) > 128:
        raise WireError(f"log device name {device!r} does not fit the kernel's 128 bytes")
    return raw
