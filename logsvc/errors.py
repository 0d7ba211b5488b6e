"""Errors of the log service and their one translation to gRPC status codes.

The Lua library starts every error with a fixed word; ``WORD_TO_ERROR`` turns
it into an exception class, and ``STATUS_OF`` turns that class into the gRPC
status the client sees (proto/dmulog/v1/dmulog.proto documents what the
bridge makes of each).
"""

from __future__ import annotations

import grpc

__all__ = [
    "STATUS_OF",
    "WORD_TO_ERROR",
    "AlreadyExists",
    "Busy",
    "InvalidArgument",
    "LogError",
    "NotFound",
    "StoreUnavailable",
    "Unreadable",
    "from_lua_error",
]


class LogError(Exception):
    """Base of every error a request can end with."""


class InvalidArgument(LogError):
    """The request is malformed or out of range; nothing was changed."""


class NotFound(LogError):
    """The log or instance is unknown (the kernel will replay CTR and RESUME)."""


class AlreadyExists(LogError):
    """The instance exists with other constructor arguments."""


class Busy(LogError):
    """The request conflicts with the log's state, e.g. another node's geometry."""


class StoreUnavailable(LogError):
    """Redis did not answer within the retry budget; nothing is known to be done."""


class Unreadable(LogError):
    """The log's stored state does not parse (e.g. written by an older version); nothing was changed."""


WORD_TO_ERROR: dict[str, type[LogError]] = {
    "EINVAL": InvalidArgument,
    "ENOENT": NotFound,
    "EEXIST": AlreadyExists,
    "EBUSY": Busy,
}

STATUS_OF: dict[type[LogError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Busy: grpc.StatusCode.FAILED_PRECONDITION,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    Unreadable: grpc.StatusCode.DATA_LOSS,
}


def from_lua_error(message: str) -> LogError | None:
    """The LogError of a Lua ``error_reply``, or None if it is not one of ours."""
    word, _, rest = message.partition(" ")
    cls = WORD_TO_ERROR.get(word)
    return cls(rest) if cls else None
