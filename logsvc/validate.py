"""Checks every gRPC request passes before it reaches Redis.

The Lua library trusts its arguments' shape (it still checks ranges against
the log), so anything a client could get wrong is caught here with a message
that names the field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from dmulog.v1 import dmulog_pb2 as pb
from logsvc.errors import InvalidArgument, quoted

__all__ = [
    "MAX_ARGS",
    "MAX_BATCH",
    "MAX_DEVICE_NUMBER",
    "MAX_LOG_TYPE",
    "MAX_PATH",
    "caller",
    "constructor",
    "regions",
    "uuid",
]

MAX_BATCH = 4096
MAX_LOG_TYPE = 332
"""Bytes of CtrRequest.log_type: the kernel's whole CTR string fits in 332 (a request's payload)."""
MAX_ARGS = 166
"""CtrRequest.args and block_devices entries: 332 bytes hold fewer words than this."""
MAX_PATH = 4096
"""Bytes of one argument or block_devices key: an argument may be a path, and a path fits in PATH_MAX."""
MAX_DEVICE_NUMBER = 21
"""Bytes of a block_devices value: "major:minor", at most 10 digits each."""
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # always fullmatch: "$" also matches before a final newline


class _Addressed(Protocol):
    @property
    def log(self) -> pb.LogRef: ...
    @property
    def node(self) -> pb.Node: ...
    def HasField(self, field_name: str) -> bool: ...


def uuid(value: str) -> str:
    """A log UUID: what the kernel accepts (1 to 128 bytes, no NUL)."""
    size = len(value.encode("utf-8"))
    if not 1 <= size <= 128 or "\0" in value:
        raise InvalidArgument(f"log uuid must be 1 to 128 bytes without NUL, got {size} bytes")
    return value


def _bounded(field: str, value: str, limit: int) -> None:
    size = len(value.encode("utf-8"))
    if size > limit:
        raise InvalidArgument(f"{field} must be at most {limit} bytes, got {size}")


def constructor(request: pb.CtrRequest) -> None:
    """Bound CTR's free-form fields before anything parses or quotes them."""
    _bounded("log_type", request.log_type, MAX_LOG_TYPE)
    for field, count in (("args", len(request.args)), ("block_devices", len(request.block_devices))):
        if count > MAX_ARGS:
            raise InvalidArgument(f"{field} must have at most {MAX_ARGS} entries, got {count}")
    for i, arg in enumerate(request.args):
        _bounded(f"args[{i}]", arg, MAX_PATH)
    for path, number in request.block_devices.items():
        _bounded(f"block_devices key {quoted(path)}", path, MAX_PATH)
        _bounded(f"block_devices[{quoted(path)}]", number, MAX_DEVICE_NUMBER)


def caller(request: _Addressed) -> tuple[str, str, str, int]:
    """``(node, boot_id, luid, epoch)``: who sends a kernel request, as the library functions take it.

    Being the first check of every request, it also bounds CtrRequest's
    free-form fields (``constructor``).
    """
    if not request.HasField("log"):
        raise InvalidArgument("log is required")
    if not request.HasField("node"):
        raise InvalidArgument("node is required")
    uuid(request.log.uuid)
    generation(request.log)
    node(request.node)
    if isinstance(request, pb.CtrRequest):
        constructor(request)
    return request.node.name, request.node.boot_id, str(request.log.luid), int(request.node.epoch)


def node(value: pb.Node, *, with_epoch: bool = False) -> pb.Node:
    """A valid Node: name and boot id, an epoch below 2^53, and not 0 when ``with_epoch``."""
    for field, text in (("node.name", value.name), ("node.boot_id", value.boot_id)):
        if not _NAME.fullmatch(text):
            raise InvalidArgument(f"{field} must be 1 to 64 characters of [A-Za-z0-9._-], got {quoted(text)}")
    if with_epoch and value.epoch == 0:
        raise InvalidArgument("node.epoch is required (the epoch AcquireLease gave)")
    epoch(value)
    return value


def epoch(value: pb.Node) -> int:
    """The node's epoch; Lua counts in doubles, so it must stay below 2^53."""
    if value.epoch >= 1 << 53:
        raise InvalidArgument(f"node.epoch must be below 2^53, got {value.epoch}")
    return int(value.epoch)


def generation(value: pb.LogRef) -> int:
    """The generation the caller was answered; below 2^53 like the epoch, for the same reason.

    The Lua library stores it in the log's hash when it finds the log behind
    it, and counts on from there with HINCRBY: from 2^63 on the stored number
    is no integer Redis can count on (every later write to the log failed),
    and from 2^53 on Lua no longer holds it exactly.
    """
    if value.generation >= 1 << 53:
        raise InvalidArgument(f"log.generation must be below 2^53, got {value.generation}")
    return int(value.generation)


def regions(values: Sequence[int], *, allow_empty: bool = False) -> list[int]:
    """A batch of region numbers (range is checked in Redis against the log)."""
    if not values and not allow_empty:
        raise InvalidArgument("regions must not be empty")
    if len(values) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} regions per request, got {len(values)}")
    return list(values)
