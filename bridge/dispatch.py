"""Each kernel request type's route: payload → API request, RPC, response → reply payload.

What a request type means is declared once, in dmulog/requests.py; this module
turns each kind of payload and reply named there into code, one decoder per
payload kind and one encoder per reply kind, and :data:`ROUTES` applies them to
each row. An encoder's reply is checked against the room the row says the
kernel has for it: a reply of another size would make the kernel fail the
request with -ENOSPC (larger) or read bytes nobody wrote (shorter), so a
mismatch is a bug that fails the request loudly instead (:class:`ReplySizeError`).
"""

from __future__ import annotations

import operator
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from bridge import wire
from bridge.wire import Request
from dmulog.requests import REQUESTS, Payload, ReplyKind, RequestSpec
from dmulog.v1 import dmulog_pb2 as pb

__all__ = [
    "DECODERS",
    "ENCODERS",
    "ROUTES",
    "SYS_DEV_BLOCK",
    "Decode",
    "ReplySizeError",
    "Route",
    "block_devices",
    "route_of",
]

#: Where the kernel lists its block devices by number ("<major>:<minor>" entries).
SYS_DEV_BLOCK = "/sys/dev/block"
_PAIR = re.compile(r"([0-9]+):([0-9]+)")

Build = Callable[[Request, pb.LogRef, pb.Node], Any]
Encode = Callable[[Request, Any], bytes]


class ReplySizeError(AssertionError):
    """A reply encoder and the table disagree on a reply's size: a bug, never bad input."""


@dataclass(frozen=True, slots=True)
class Route:
    """How one request type travels: its row, and the decoder and encoder of its kinds."""

    spec: RequestSpec
    build: Build
    reply: Encode

    @property
    def rpc(self) -> str:
        """The DirtyLog RPC that serves it."""
        return self.spec.rpc

    @property
    def critical(self) -> bool:
        """Whether an outage is answered -EAGAIN rather than reported (see RequestSpec.critical)."""
        return self.spec.critical


# --- Payload decoders: the request's bytes → the API request's payload fields ---

Decode = Callable[[bytes, str], dict[str, Any]]


def _nothing(data: bytes, name: str) -> dict[str, Any]:
    wire.expect_empty(data, name)
    return {}


def _anything(data: bytes, name: str) -> dict[str, Any]:
    return {}


def _region(data: bytes, name: str) -> dict[str, Any]:
    return {"region": wire.decode_single_region(data, name)}


def _regions(data: bytes, name: str) -> dict[str, Any]:
    return {"regions": wire.decode_regions(data, name)}


def _marks(data: bytes, name: str) -> dict[str, Any]:
    return {"mark_regions": wire.decode_regions(data, name, allow_empty=True)}


def _region_sync(data: bytes, name: str) -> dict[str, Any]:
    region, in_sync = wire.decode_set_region_sync(data)
    return {"region": region, "in_sync": in_sync}


def _ctr(data: bytes, name: str) -> dict[str, Any]:
    ctr = wire.decode_ctr(data)
    return {"target_sectors": ctr.target_sectors, "log_type": ctr.log_type, "args": ctr.args,
            "block_devices": block_devices(ctr)}  # fmt: skip


DECODERS: Final[Mapping[Payload, Decode]] = MappingProxyType({
    Payload.NONE: _nothing, Payload.ANY: _anything, Payload.CTR: _ctr, Payload.REGION: _region,
    Payload.REGIONS: _regions, Payload.MARKS: _marks, Payload.REGION_SYNC: _region_sync,
})  # fmt: skip


def block_devices(ctr: wire.CtrArgs) -> dict[str, str]:
    """What each device argument of the CTR names on this node.

    logsvc may run on another machine, so only the node can tell which block
    device a table's path means (cmirrord showed the log device's numbers
    from fstat) and whether it exists at all: the kernel opens the log device
    only after a successful CTR, and when that fails it drops the table
    without a DTR, leaving the log behind. So an absolute path the node
    cannot resolve to a block device (missing, not a block device, a loop, a
    name too long) is reported as "", and so is a bare ``major:minor`` with
    no block device behind it in SYS_DEV_BLOCK (a node without that sysfs
    directory reports no pair, taking them as given). Only a path the node
    may not look at (permissions: the kernel, looking as root, may still
    open it) gets no entry and is taken as given. A replayed CTR reports
    only devices it found: its table is already loaded, so refusing it now
    would only trap the kernel in its reconnect loop.
    """
    found: dict[str, str] = {}
    for arg in ctr.args:
        if arg in found:
            continue
        if arg.startswith("/"):
            number = _device_at(arg)
        elif (pair := _PAIR.fullmatch(arg)) and os.path.isdir(SYS_DEV_BLOCK):
            number = _device_numbered(*pair.groups())
        else:
            continue
        if number is not None and (number or not ctr.replay):
            found[arg] = number
    return found


def _device_numbered(major: str, minor: str) -> str:
    """``major:minor`` as the kernel reads it (decimal, leading zeros dropped) if that block device exists, else ""."""
    number = f"{major.lstrip('0') or '0'}:{minor.lstrip('0') or '0'}"
    return number if os.path.exists(os.path.join(SYS_DEV_BLOCK, number)) else ""


def _device_at(path: str) -> str | None:
    """``major:minor`` of the block device at ``path``, "" if there is none, None if it may not be looked at."""
    try:
        st = os.stat(path)
    except PermissionError:
        return None
    except OSError:  # ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, ...: nothing the kernel could open either
        return ""
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if stat.S_ISBLK(st.st_mode) else ""


# --- Reply encoders: the RPC response's fields → the reply payload ---

Write = Callable[[Request, tuple[Any, ...]], bytes]
"""An encoder: the request (the CTR reply depends on it) and the values of the row's reply fields, in order."""


def _no_reply(req: Request, values: tuple[Any, ...]) -> bytes:
    return b""


def _u64(req: Request, values: tuple[Any, ...]) -> bytes:
    return wire.encode_u64(values[0])


def _flag(req: Request, values: tuple[Any, ...]) -> bytes:
    return wire.encode_s64(values[0])


def _resync_work(req: Request, values: tuple[Any, ...]) -> bytes:
    return wire.encode_resync_work(*values)


def _recovering(req: Request, values: tuple[Any, ...]) -> bytes:
    return wire.encode_remote_recovering(*values)


def _text(req: Request, values: tuple[Any, ...]) -> bytes:
    return wire.encode_text(values[0])


def _device(req: Request, values: tuple[Any, ...]) -> bytes:
    return wire.encode_ctr_reply(values[0], wire.decode_ctr(req.data), req.version)


ENCODERS: Final[Mapping[ReplyKind, Write]] = MappingProxyType({
    ReplyKind.NONE: _no_reply, ReplyKind.U64: _u64, ReplyKind.FLAG: _flag, ReplyKind.RESYNC_WORK: _resync_work,
    ReplyKind.RECOVERING: _recovering, ReplyKind.TEXT: _text, ReplyKind.DEVICE: _device,
})  # fmt: skip


def _values(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """Reads the reply fields of a response, in order (attrgetter: the reply path runs for every request)."""
    if not fields:
        return lambda response: ()
    get = operator.attrgetter(*fields)
    if len(fields) == 1:
        return lambda response: (get(response),)
    return get


def _builder(spec: RequestSpec) -> Build:
    decode, message, name = DECODERS[spec.payload], getattr(pb, f"{spec.rpc}Request"), spec.name

    def build(req: Request, log: pb.LogRef, node: pb.Node) -> Any:
        return message(log=log, node=node, **decode(req.data, name))

    return build


def _encoder(spec: RequestSpec) -> Encode:
    write, values = ENCODERS[spec.reply.kind], _values(spec.reply.fields)
    capacity, exact = spec.capacity, spec.reply.kind.exact

    def reply(req: Request, response: Any) -> bytes:
        data = write(req, values(response))
        if capacity is not None and (len(data) != capacity if exact else len(data) > capacity):
            raise ReplySizeError(f"{spec.name} reply of {len(data)} bytes, the kernel has room for "
                                 f"{'exactly' if exact else 'at most'} {capacity}")  # fmt: skip
        return data

    return reply


def route_of(spec: RequestSpec) -> Route:
    """The route of one row (a test may give it a row of its own)."""
    return Route(spec, _builder(spec), _encoder(spec))


ROUTES: Final[Mapping[int, Route]] = MappingProxyType({int(s.type): route_of(s) for s in REQUESTS})
"""Every kernel request type's route, by wire number; an unknown number has none."""

