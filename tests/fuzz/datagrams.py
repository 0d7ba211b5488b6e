"""Hostile kernel datagrams, and what the kernel could do with the answer to each.

The seeds are the datagrams the real kernel sent (tests/unit/fixtures/kernel),
so the mutations start from exactly the bytes a bridge sees and reach past
the framing checks into every payload decoder. The layout used to mutate and
to judge is written here from the C structs (docs/protocol.md §1.1), not read
from bridge/wire.py, so that the fuzzers do not take the codec's word for
what it is checking.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dmulog.requests import REQUESTS, Payload

__all__ = [
    "FIELDS",
    "FIXTURES",
    "Field",
    "Hostile",
    "canonical",
    "fixture",
    "hostile",
    "kernel_shaped",
    "reply_keys",
    "reseq",
    "u32_at",
]

FIXTURE_DIR = Path(__file__).parent.parent / "unit" / "fixtures" / "kernel"
FIXTURES: dict[str, bytes] = {p.stem: bytes.fromhex(p.read_text()) for p in sorted(FIXTURE_DIR.glob("*.hex"))}

NATIVE = sys.byteorder
CN_END = 36  # nlmsghdr (16) + cn_msg (20)
HEADER = 196  # + struct dm_ulog_request (160)
UUID_AT, UUID_LEN, PAD_AT = 44, 129, 173
MAX_PAYLOAD = 332  # 512-byte kernel buffer less cn_msg and the request header


@dataclass(frozen=True)
class Field:
    """One integer field of the three headers: where it is, how wide, signed or not."""

    name: str
    offset: int
    size: int
    signed: bool = False


FIELDS: tuple[Field, ...] = (
    Field("nlmsg_len", 0, 4), Field("nlmsg_type", 4, 2), Field("nlmsg_flags", 6, 2), Field("nlmsg_seq", 8, 4),
    Field("nlmsg_pid", 12, 4), Field("cn_idx", 16, 4), Field("cn_val", 20, 4), Field("cn_seq", 24, 4),
    Field("cn_ack", 28, 4), Field("cn_len", 32, 2), Field("cn_flags", 34, 2), Field("luid", 36, 8),
    Field("version", 176, 4), Field("error", 180, 4, signed=True), Field("seq", 184, 4),
    Field("request_type", 188, 4), Field("data_size", 192, 4),
)  # fmt: skip
_BY_NAME = {f.name: f for f in FIELDS}

_PAYLOAD_OF = {int(s.type): s.payload for s in REQUESTS}


def fixture(name: str) -> bytes:
    """A captured datagram by its file's stem (``CTR``, ``GET_REGION_SIZE``, ...)."""
    return FIXTURES[name]


def u32_at(buf: bytes, offset: int) -> int:
    """The host-order u32 at ``offset``."""
    return int.from_bytes(buf[offset : offset + 4], NATIVE)


def _get(buf: bytes, f: Field) -> int:
    return int.from_bytes(buf[f.offset : f.offset + f.size], NATIVE, signed=f.signed)


def _put(buf: bytearray, f: Field, value: int) -> None:
    if f.offset + f.size <= len(buf):
        bits = 8 * f.size
        value %= 1 << bits
        if f.signed and value >= 1 << (bits - 1):
            value -= 1 << bits
        buf[f.offset : f.offset + f.size] = value.to_bytes(f.size, NATIVE, signed=f.signed)


def reseq(datagram: bytes, seq: int) -> bytes:
    """``datagram`` under another seq, set in all three places the kernel sets it (nlmsg, cn_msg, request)."""
    buf = bytearray(datagram)
    for name in ("nlmsg_seq", "cn_seq", "seq"):
        _put(buf, _BY_NAME[name], seq)
    return bytes(buf)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _set_payload(buf: bytearray, payload: bytes, *, fix_lengths: bool) -> bytearray:
    """The header of ``buf`` with ``payload`` after it; with ``fix_lengths`` every length agrees with it."""
    head = bytearray(buf[:HEADER].ljust(HEADER, b"\0"))
    if fix_lengths:
        _put(head, _BY_NAME["data_size"], len(payload))
        _put(head, _BY_NAME["cn_len"], 160 + len(payload))
        _put(head, _BY_NAME["nlmsg_len"], HEADER + len(payload))
        return head + payload + b"\0" * (_align4(HEADER + len(payload)) - HEADER - len(payload))
    return head + payload


# --- What the kernel sends, judged from the C layout alone ---------------------------------------------------


def _payload_fits(rtype: int, data: bytes) -> bool:
    """Whether a payload has the shape its request type's row declares (docs/protocol.md §2)."""
    kind = _PAYLOAD_OF.get(rtype)
    if kind is None:
        return False
    n = len(data)
    if kind is Payload.NONE:
        return n == 0
    if kind is Payload.ANY:
        return True
    if kind is Payload.REGION:
        return n == 8
    if kind is Payload.REGION_SYNC:
        return n == 16
    if kind in (Payload.REGIONS, Payload.MARKS):
        return n % 8 == 0 and (n > 0 or kind is Payload.MARKS)
    # CTR: "<sectors> <type> <args...>" in ASCII, words split by single spaces, its NUL only at the end.
    text = data[:-1] if data.endswith(b"\0") else data
    if b"\0" in text or any(b >= 0x80 for b in text):
        return False
    words = text.decode("ascii").split(" ")
    return len(words) >= 2 and all(words) and words[0].isdigit() and 0 < int(words[0]) < 1 << 64


def kernel_shaped(buf: bytes) -> bool:
    """Whether ``buf`` is framed as the kernel frames a request and carries a payload of its type's shape.

    Such a datagram may well be answered 0 (or -ESRCH, or a range error
    from logsvc); every other datagram the bridge answers must get an error.
    """
    n = len(buf)
    if n < HEADER:
        return False
    g = {f.name: _get(buf, f) for f in FIELDS}
    if (g["cn_idx"], g["cn_val"], g["nlmsg_type"]) != (7, 1, 3):
        return False
    if g["nlmsg_len"] != CN_END + g["cn_len"] or n != _align4(g["nlmsg_len"]) or g["nlmsg_len"] < HEADER:
        return False
    size = g["data_size"]
    if g["cn_len"] != 160 + size or size > MAX_PAYLOAD or not 1 <= g["version"] <= 3:
        return False
    uuid = buf[UUID_AT : UUID_AT + UUID_LEN]
    end = uuid.find(b"\0")
    if end <= 0 or uuid[end:].strip(b"\0"):
        return False
    try:
        uuid[:end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _payload_fits(g["request_type"] & 0xFF, buf[HEADER : HEADER + size])


def addressable(buf: bytes) -> bool:
    """Whether the kernel could match a reply to ``buf`` to a waiter: our connector, and a cn_msg to echo.

    A shorter datagram, or one for another connector, has no waiter here to
    answer; it is logged and dropped.
    """
    return len(buf) >= CN_END and (u32_at(buf, 16), u32_at(buf, 20)) == (7, 1)


def reply_keys(buf: bytes) -> set[tuple[bool, int]]:
    """The replies the kernel would match to ``buf``'s waiter: a bare ACK on cn_msg.seq, a full reply on its seq."""
    keys = {(True, u32_at(buf, 24))}
    if len(buf) >= HEADER:
        keys.add((False, u32_at(buf, 184)))
    return keys


def canonical(buf: bytes, seq: int, request_type: int) -> bytes:
    """``buf`` with every field the decoder ignores set as the kernel sets it.

    What decodes must re-encode to exactly this: the kernel sends flags, pid,
    ack, error and padding as zero and one seq in all three headers, and the
    codec promises kernel datagrams byte for byte (tests/unit/test_wire_kernel_fixtures.py).
    """
    out = bytearray(buf[: _align4(_get(buf, _BY_NAME["nlmsg_len"]))])
    for name in ("nlmsg_flags", "nlmsg_pid", "cn_ack", "cn_flags", "error"):
        _put(out, _BY_NAME[name], 0)
    for name in ("nlmsg_seq", "cn_seq", "seq"):
        _put(out, _BY_NAME[name], seq)
    _put(out, _BY_NAME["request_type"], request_type)
    out[PAD_AT : PAD_AT + 3] = b"\0\0\0"
    nl_len = _get(buf, _BY_NAME["nlmsg_len"])
    out[nl_len:] = b"\0" * (len(out) - nl_len)
    return bytes(out)


# --- Mutations ---------------------------------------------------------------------------------------------


def _boundaries(f: Field, buf: bytes) -> list[int]:
    bits = 8 * f.size
    values = [0, 1, 2, 3, 4, (1 << bits) - 1, (1 << bits) - 2, 1 << (bits - 1), (1 << (bits - 1)) - 1]
    n, here = len(buf), _get(buf, f) if len(buf) >= f.offset + f.size else 0
    values += [here - 1, here + 1, here + 4, here - 4, here ^ (1 << (bits - 1))]
    if f.name in ("nlmsg_len", "cn_len", "data_size"):
        values += [n, n - 1, n + 1, n - CN_END, n - HEADER, 35, 36, 160, 195, 196, 197, 332, 333, 512, 16384]
    elif f.name == "request_type":
        values += [*range(0, 19), 255, 256, 257, 0x100 | 8, 0xFFFFFF09]
    elif f.name == "version":
        values += [0, 1, 2, 3, 4]
    elif f.name == "nlmsg_type":
        values += [1, 2, 3, 16]
    elif f.name in ("cn_idx", "cn_val"):
        values += [7, 1, 0x107]
    return values


_NASTY_UUIDS: tuple[bytes, ...] = (
    b"", b"a", b"x" * 128, b"y" * 129, b"\xff\xfe", b"LVM-\xc3", b"{a}", b"}{", b"%7B", b"a:b", b"/", b"*", b"?",
    b"a\nb", b"\0abc", "é".encode() * 64,
)  # fmt: skip


def _ctr_text(rng: random.Random) -> bytes:
    words = [rng.choice([b"16384", b"0", b"18446744073709551616", b"-1", b"1" * 30, b"12a", b""]),
             rng.choice([b"clustered-core", b"clustered-disk", b"dmulog", b"core", b"", b"\xff"]),
             *rng.choices([b"1024", b"16", b"3", b"0", b"nosync", b"sync", b"block_on_error", b"/dev/null",
                           b"8:0", b"2147483648", b"99999999999:1", b""], k=rng.randrange(0, 5))]  # fmt: skip
    text = b" ".join(words) if rng.random() < 0.9 else b"  ".join(words)
    return text + (b"\0" if rng.random() < 0.2 else b"")


def _mutate_once(rng: random.Random, buf: bytearray) -> bytearray:
    op = rng.randrange(11)
    n = len(buf)
    if op == 0 and n:  # bit flips
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and n:  # random bytes, mostly in the headers
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(min(n, HEADER + 16))] = rng.randrange(256)
    elif op == 2:  # truncation, often right at a boundary
        cut = rng.choice([0, 1, 15, 16, 35, 36, 37, 195, 196, 197, n - 1, n - 4, rng.randrange(n + 1)])
        buf = buf[: max(0, min(n, cut))]
    elif op == 3:  # extension
        buf += rng.choice([b"\0" * rng.randrange(1, 9), rng.randbytes(rng.randrange(1, 600))])
    elif op in (4, 5, 6):  # a field overwritten with a boundary value
        f = rng.choice(FIELDS)
        _put(buf, f, rng.choice(_boundaries(f, bytes(buf))))
    elif op == 7 and n >= HEADER:  # the uuid
        raw = rng.choice(_NASTY_UUIDS)
        area = (raw + b"\0" * UUID_LEN)[:UUID_LEN]
        if rng.random() < 0.2:
            area = area[:-1] + b"z"  # bytes after the NUL
        buf[UUID_AT : UUID_AT + UUID_LEN] = area
    elif op == 8:  # another payload, lengths made to agree (or not)
        payload = rng.choice([b"", b"\0" * 7, b"\0" * 8, b"\xff" * 8, b"\0" * 16, rng.randbytes(rng.randrange(0, 340)),
                              b"\xff" * 8 * rng.randrange(1, 42), _ctr_text(rng),
                              rng.choice(list(FIXTURES.values()))[HEADER:]])  # fmt: skip
        buf = _set_payload(buf, payload, fix_lengths=rng.random() < 0.8)
    elif op == 9 and n >= HEADER:  # another request type for the same payload
        _put(buf, _BY_NAME["request_type"], rng.randrange(0, 19))
    elif op == 10 and n >= 176:  # padding after the uuid, or the error field
        buf[PAD_AT + rng.randrange(3)] = rng.randrange(1, 256)
    return buf


@dataclass(frozen=True)
class Hostile:
    """One fuzz input: the bytes, and from which port they come (0 is the kernel)."""

    datagram: bytes
    sender: int = 0


def hostile(rng: random.Random, seq: Callable[[], int] | None = None) -> Hostile:
    """One input: random bytes now and then, else a captured datagram put through one to four mutations.

    ``seq`` gives the seed datagram a fresh seq first, so that the bridge's
    replies can be told apart.
    """
    roll = rng.random()
    if roll < 0.05:
        return Hostile(rng.randbytes(rng.randrange(0, 600)))
    if roll < 0.07:
        return Hostile(rng.randbytes(rng.randrange(0, HEADER)))
    base = rng.choice(list(FIXTURES.values()))
    if seq is not None:
        base = reseq(base, seq())
    buf = bytearray(base)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        buf = _mutate_once(rng, buf)
    return Hostile(bytes(buf), 4242 if rng.random() < 0.01 else 0)
