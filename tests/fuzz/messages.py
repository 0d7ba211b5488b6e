"""Hostile gRPC requests for every RPC of DirtyLog, built from the proto's descriptors and sent as raw bytes.

Each case is a valid request with one field bent (or several, for the random
ones), serialized by hand where protobuf itself would refuse to (strings that
are not UTF-8, integers wider than their field, lengths that lie), so that
the service sees exactly the bytes a hostile client can send. A case knows
whether it is surely invalid: then OK is a finding.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from dmulog.v1 import dmulog_pb2 as pb
from logsvc.decoding import lenient

__all__ = [
    "METHODS",
    "Case",
    "Target",
    "base_request",
    "cases",
    "ctr_cases",
    "random_case",
    "wire_field",
]

SERVICE = pb.DESCRIPTOR.services_by_name["DirtyLog"]
METHODS: tuple[MethodDescriptor, ...] = tuple(SERVICE.methods)
"""Every RPC, from the descriptor: an RPC added to the proto is fuzzed without a line changed here."""

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_T = FieldDescriptor


@dataclass(frozen=True)
class Target:
    """The live log the valid requests address, made by the test before the cases run."""

    uuid: str
    luid: int
    node: str
    boot: str
    sectors: int
    log_type: str
    args: tuple[str, ...]
    devices: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Case:
    """One request: which RPC, its bytes, what it bends, and whether no valid request looks like it.

    ``message`` is the request as protobuf reads it, or None when protobuf
    cannot (then it is invalid); it names the uuids and nodes an OK answer
    may have put into Redis.
    """

    method: MethodDescriptor
    data: bytes
    what: str
    invalid: bool
    message: Message | None

    @property
    def path(self) -> str:
        """The gRPC method path."""
        return f"/{SERVICE.full_name}/{self.method.name}"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def wire_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field as protobuf writes one: tag, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested(path: list[FieldDescriptor], payload: bytes) -> bytes:
    """A field deep inside the message, as bytes that protobuf merges into the rest of the message."""
    out = wire_field(path[-1].number, payload)
    for f in reversed(path[:-1]):
        out = wire_field(f.number, out)
    return out


def base_request(descriptor: Descriptor, t: Target) -> Message:
    """A request of this type that the live log answers OK."""
    cls: Any = pb.__dict__[descriptor.name]
    fields = descriptor.fields_by_name
    kw: dict[str, Any] = {}
    if "log" in fields:
        kw["log"] = pb.LogRef(uuid=t.uuid, luid=t.luid)
    if "node" in fields:
        kw["node"] = pb.Node(name=t.node, boot_id=t.boot)
    if descriptor.name == "CtrRequest":
        kw.update(target_sectors=t.sectors, log_type=t.log_type, args=list(t.args), block_devices=t.devices)
    if "region" in fields:
        kw["region"] = 3
    if "regions" in fields:
        kw["regions"] = [3]
    if "mark_regions" in fields:
        kw["mark_regions"] = [3]
    if "in_sync" in fields:
        kw["in_sync"] = True
    if descriptor.name in ("GetLogStateRequest", "ReadLogStateRequest"):
        kw["uuid"] = t.uuid
    if descriptor.name == "ExchangeRequest":
        kw["calls"] = [pb.ExchangeCall(id=1, timeout_ms=10_000, in_sync=pb.InSyncRequest(
            log=pb.LogRef(uuid=t.uuid, luid=t.luid), node=pb.Node(name=t.node, boot_id=t.boot), region=3))]  # fmt: skip
    return cls(**kw)


# --- Values per field type: (value, why, surely invalid here?) ---------------------------------------------

HUGE = "x" * 10_240
_STRINGS: tuple[tuple[str, str], ...] = (
    ("", "empty"), (HUGE, "10 KB"), ("{a}", "braces"), ("}{", "closing brace first"), ("a:b", "colon"),
    ("%", "percent"), ("%7B", "escaped brace"), ("a/b", "slash"), ("/", "slash alone"), ("\0", "NUL"),
    ("a\0b", "NUL inside"), ("*", "glob star"), ("a?[b]", "glob"), ("node\n", "newline"), ("é", "non-ASCII"),
    ("y" * 128, "128 bytes"), ("z" * 129, "129 bytes"), ("é" * 64, "128 bytes of UTF-8"), ("leases", "the lease tag"),
    ("a b", "space"),
)  # fmt: skip
_NOT_UTF8: tuple[tuple[bytes, str], ...] = ((b"\xff", "0xff"), (b"LVM-\xc3", "truncated UTF-8"),
                                            (b"\xed\xa0\x80", "surrogate"))  # fmt: skip
_U64 = (0, 1, 2, 63, 64, 65, (1 << 31), (1 << 32), (1 << 53) - 1, 1 << 53, 1 << 63, (1 << 64) - 1)
_U32 = (0, 1, 1 << 31, (1 << 32) - 1)
_I32 = (-(1 << 31), -1, 0, 1, (1 << 31) - 1)
_REGION_LISTS: tuple[tuple[Callable[[], list[int]], str], ...] = (
    (list, "no regions"), (lambda: [0], "region 0"), (lambda: [63, 0, 63], "repeats"),
    (lambda: [64], "one past the end"),
    (lambda: [(1 << 64) - 1], "2^64-1"), (lambda: [1 << 53], "2^53"), (lambda: [0] * 4096, "4096"),
    (lambda: [0] * 4097, "4097"), (lambda: list(range(1_000_000)), "1,000,000 small regions"),
    (lambda: [(1 << 64) - 1] * 1_000_000, "1,000,000 huge regions (10 MB)"),
)  # fmt: skip


def _string_invalid(field_path: str, text: str) -> bool:
    """Whether this value of this string field makes the request invalid whatever the log's state."""
    size = len(text.encode())
    if field_path in ("log.uuid", "uuid"):
        return not 1 <= size <= 128 or "\0" in text
    if field_path.endswith(("node.name", "node.boot_id")):
        return not _NAME.fullmatch(text)
    # No log type but the target's is valid with its arguments.
    return field_path.endswith("log_type")


def _walk(descriptor: Descriptor, prefix: list[FieldDescriptor]) -> Iterator[list[FieldDescriptor]]:
    for f in descriptor.fields:
        path = [*prefix, f]
        yield path
        if f.type == _T.TYPE_MESSAGE and not f.is_repeated and f.message_type.name in ("LogRef", "Node"):
            yield from _walk(f.message_type, path)


def _holder(message: Message, path: list[FieldDescriptor]) -> Any:
    obj: Any = message
    for f in path[:-1]:
        obj = getattr(obj, f.name)
    return obj


def _set(base: Message, path: list[FieldDescriptor], value: Any) -> Message:
    m = type(base)()
    m.CopyFrom(base)
    holder, f = _holder(m, path), path[-1]
    if f.is_repeated:
        target = getattr(holder, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            target.clear()
            target.update(value)
        else:
            del target[:]
            target.extend(value)
    else:
        setattr(holder, f.name, value)
    return m


def _cleared(base: Message, path: list[FieldDescriptor]) -> Message:
    m = type(base)()
    m.CopyFrom(base)
    _holder(m, path).ClearField(path[-1].name)
    return m


def _kernel_rpc(method: MethodDescriptor) -> bool:
    return "log" in method.input_type.fields_by_name


def _field_cases(method: MethodDescriptor, base: Message, *, huge: bool = True
                 ) -> Iterator[tuple[Message | bytes, str, bool]]:  # fmt: skip
    """(request or raw bytes, what was bent, surely invalid) for every field of the method's request.

    ``huge`` includes the lists of a million regions, which take a while to build.
    """
    name = method.name
    for path in _walk(method.input_type, []):
        f, dotted = path[-1], ".".join(p.name for p in path)
        if f.type == _T.TYPE_MESSAGE and not f.is_repeated:
            yield _cleared(base, path), f"{dotted} unset", dotted in ("log", "node") or name == "AcquireLease"
        elif f.type == _T.TYPE_STRING and not f.is_repeated:
            for text, why in _STRINGS:
                yield _set(base, path, text), f"{dotted} {why}", _string_invalid(dotted, text)
            for raw, why in _NOT_UTF8:
                yield base.SerializeToString() + _nested(path, raw), f"{dotted} not UTF-8 ({why})", True
        elif f.type == _T.TYPE_STRING:  # repeated: CtrRequest.args
            for value, why in (([], "none"), (["16"] * 167, "167"), ([HUGE], "10 KB"), (["16", "\0"], "NUL"),
                               (["16", "{", "}"], "braces"), (["16", "nosync", "nosync"], "twice"))[:6]:  # fmt: skip
                yield _set(base, path, value), f"{dotted} {why}", why != "braces" and why != "twice"
            yield base.SerializeToString() + _nested(path, b"\xff"), f"{dotted} not UTF-8", True
        elif f.message_type is not None and f.message_type.GetOptions().map_entry:  # block_devices
            for mapping, why in (({"/dev/x": "8:0"}, "one device"), ({f"/d{i}": "" for i in range(167)}, "167"),
                               ({"/" + HUGE: ""}, "10 KB key"), ({"/dev/x": HUGE}, "10 KB value"),
                               ({"16": "%{}:"}, "odd value")):  # fmt: skip
                yield _set(base, path, mapping), f"{dotted} {why}", why in ("167", "10 KB key", "10 KB value")
            entry = wire_field(1, b"\xff/dev") + wire_field(2, b"8:0")
            yield base.SerializeToString() + _nested(path, entry), f"{dotted} key not UTF-8", True
        elif f.type in (_T.TYPE_UINT64, _T.TYPE_INT64) and f.is_repeated:
            for make, why in _REGION_LISTS:
                if ("1,000,000" in why and not huge) or ("10 MB" in why and name != "MarkRegion"):
                    continue  # past the 4 MiB limit gRPC refuses it unread: once is enough, and it takes a second
                empty_bad = why == "no regions" and name in ("MarkRegion", "ClearRegion")
                yield _set(base, path, make()), f"{dotted} {why}", empty_bad or why.startswith(("4097", "1,000,000"))
        elif f.type == _T.TYPE_UINT64:
            for v in _U64:
                bad = (dotted in ("node.epoch", "log.generation") and v >= 1 << 53) or (
                    dotted == "target_sectors" and (v == 0 or v >= 1 << 53))
                yield _set(base, path, v), f"{dotted}={v}", bad
        elif f.type == _T.TYPE_UINT32:
            for v in _U32:
                yield _set(base, path, v), f"{dotted}={v}", False
        elif f.type == _T.TYPE_INT32:
            for v in _I32:
                yield _set(base, path, v), f"{dotted}={v}", False
        elif f.type == _T.TYPE_BOOL:
            for v in (False, True):
                yield _set(base, path, v), f"{dotted}={v}", False
        elif f.type == _T.TYPE_MESSAGE and f.is_repeated:  # ExchangeRequest.calls: handled by _exchange_cases
            continue
    raw = base.SerializeToString()
    yield raw + bytes([0x98, 0x06, 0x01]), "an unknown field", False
    yield b"\x0a\xff\xff\xff\xff\x0f", "a length past the end", True
    yield b"\x08" + b"\xff" * 10 + b"\x01", "a varint of 11 bytes", True
    if raw:
        yield raw[:-1], "cut by one byte", False  # may still parse: a shorter string or number
    yield b"\xff" * 16, "garbage", True


def _exchange_cases(base: Message, t: Target, *, huge: bool = True) -> Iterator[tuple[Message | bytes, str, bool]]:
    """ExchangeRequests: the call's id and timeout bent, and a sample of every kernel RPC's bent requests inside."""
    by_field = {f.message_type.name: f.name for f in pb.ExchangeCall.DESCRIPTOR.oneofs_by_name["request"].fields}
    in_sync = base.calls[0].in_sync
    for v in _U64:
        with_id = pb.ExchangeCall(id=v, timeout_ms=5000, in_sync=in_sync)
        yield pb.ExchangeRequest(calls=[with_id]), f"calls[0].id={v}", False
    for v in _U32:
        with_timeout = pb.ExchangeCall(id=1, timeout_ms=v, in_sync=in_sync)
        yield pb.ExchangeRequest(calls=[with_timeout]), f"calls[0].timeout_ms={v}", False
    yield pb.ExchangeRequest(calls=[pb.ExchangeCall(id=1)]), "a call with no request", True
    yield pb.ExchangeRequest(), "no calls", False
    for method in METHODS:
        if not _kernel_rpc(method):
            continue
        inner_base = base_request(method.input_type, t)
        kind = by_field[method.input_type.name]
        for i, (inner, what, invalid) in enumerate(_field_cases(method, inner_base, huge=huge)):
            if i % 5:
                continue  # a fifth of each: the unary cases cover every one
            payload = inner if isinstance(inner, bytes) else inner.SerializeToString()
            field_number = pb.ExchangeCall.DESCRIPTOR.fields_by_name[kind].number
            raw = _varint(1 << 3) + _varint(7) + _varint(2 << 3) + _varint(10_000) + wire_field(field_number, payload)
            yield wire_field(1, raw), f"Exchange {method.name}: {what}", invalid


def _case(method: MethodDescriptor, request: Message | bytes, what: str, invalid: bool) -> Case:
    if isinstance(request, bytes):
        data = request
        try:
            message: Message | None = pb.__dict__[method.input_type.name].FromString(data)
        except Exception:  # noqa: BLE001 - DecodeError or worse: either way no valid request
            message = None
    else:
        data, message = request.SerializeToString(), request
    # An Exchange whose envelope does not parse still has each readable call answered on its own.
    unreadable = message is None and method.name != "Exchange"
    return Case(method, data, what, invalid or unreadable, message)


def cases(t: Target, *, huge: bool = True) -> Iterator[Case]:
    """Every RPC with every field bent every way above, in the proto's order of RPCs."""
    for method in METHODS:
        base = base_request(method.input_type, t)
        yield _case(method, base, "valid", False)
        if method.name == "Exchange":
            for request, what, invalid in _exchange_cases(base, t, huge=False):  # the unary cases have them
                yield _case(method, request, what, invalid)
            continue
        for request, what, invalid in _field_cases(method, base, huge=huge):
            yield _case(method, request, what, invalid)


_OPTIONS: dict[tuple[str, Target], tuple[bytes, list[tuple[bytes, str, bool]]]] = {}


def _options(method: MethodDescriptor, t: Target) -> tuple[bytes, list[tuple[bytes, str, bool]]]:
    """The method's valid request and its bends as bytes, built once; without the megabyte ones.

    A bend claims invalidity after merging only if it is raw bytes protobuf
    refuses: merged into a valid request, a cleared field or a bad value
    may be overwritten by the next bend.
    """
    key = (method.name, t)
    if key not in _OPTIONS:
        base = base_request(method.input_type, t)
        bends = (_exchange_cases(base, t, huge=False) if method.name == "Exchange"
                 else _field_cases(method, base, huge=False))  # fmt: skip
        _OPTIONS[key] = (base.SerializeToString(), [
            (r if isinstance(r, bytes) else r.SerializeToString(), what, bad and isinstance(r, bytes))
            for r, what, bad in bends])  # fmt: skip
    return _OPTIONS[key]


def ctr_cases(t: Target) -> Iterator[Case]:
    """Every bend of a CtrRequest for another target: another log type's arguments and block devices."""
    method = SERVICE.methods_by_name["Ctr"]
    base = base_request(method.input_type, t)
    yield _case(method, base, "valid", False)
    for request, what, invalid in _field_cases(method, base, huge=False):
        yield _case(method, request, what, invalid)


def _renumbered(envelope: bytes, n: int) -> bytes:
    """An ExchangeRequest's bytes with call ids of its own (``n``), so each result can be told from the others.

    Read and written with the lenient types, which keep what is not UTF-8 as it is.
    """
    message: Any = lenient(pb.ExchangeRequest.DESCRIPTOR, envelope)
    if message is None:
        return envelope
    for i, call in enumerate(message.calls):
        call.id = 1000 * (n + 1) + i
    return message.SerializeToString()


def random_case(rng: random.Random, t: Target) -> Case:
    """Two or three bends of one request at once, or its bytes mutated: no claim of invalidity unless sure."""
    method = rng.choice(METHODS)
    base, options = _options(method, t)
    picks = rng.sample(options, min(len(options), rng.randrange(1, 4)))
    # Concatenated messages merge: a later scalar wins, lists grow, sub-messages merge. Each bend of an
    # Exchange is a call of its own, so the valid call of the base is left out, and the request is invalid
    # only if every call is.
    exchange = method.name == "Exchange"
    data, whats = b"" if exchange else base, []
    for n, (request, what, _) in enumerate(picks):
        data += _renumbered(request, n) if exchange else request
        whats.append(what)
    bads = [bad for _, _, bad in picks]
    invalid = all(bads) if exchange else any(bads)
    if rng.random() < 0.3 and data:
        buf = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data, invalid = bytes(buf), False
        whats.append("bytes flipped")
    return _case(method, data, " + ".join(whats), invalid)
