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
from logsvc.errors import InvalidArgument

__all__ = ["MAX_BATCH", "caller", "regions", "uuid"]

MAX_BATCH = 4096
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


def caller(request: _Addressed) -> list[str]:
    """``[node, boot_id, luid]``: the first arguments of every library function."""
    if not request.HasField("log"):
        raise InvalidArgument("log is required")
    if not request.HasField("node"):
        raise InvalidArgument("node is required")
    uuid(request.log.uuid)
    for field, value in (("node.name", request.node.name), ("node.boot_id", request.node.boot_id)):
        if not _NAME.fullmatch(value):
            raise InvalidArgument(f"{field} must be 1 to 64 characters of [A-Za-z0-9._-], got {value!r}")
    return [request.node.name, request.node.boot_id, str(request.log.luid)]


def regions(values: Sequence[int], *, allow_empty: bool = False) -> list[int]:
    """A batch of region numbers (range is checked in Redis against the log)."""
    if not values and not allow_empty:
        raise InvalidArgument("regions must not be empty")
    if len(values) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} regions per request, got {len(values)}")
    return list(values)
