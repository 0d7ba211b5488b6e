"""Errors of the log service and their one translation to gRPC status codes.

The Lua library starts every error with a fixed word; ``WORD_TO_ERROR`` turns
it into an exception class, and ``STATUS_OF`` turns that class into the gRPC
status the client sees (proto/dmulog/v1/dmulog.proto documents what the
bridge makes of each).
"""

from __future__ import annotations

import grpc

__all__ = [
    "MAX_DETAIL",
    "STATUS_OF",
    "WORD_TO_ERROR",
    "AlreadyExists",
    "Busy",
    "DeadlineExceeded",
    "InvalidArgument",
    "LogError",
    "LostWrites",
    "NotFound",
    "Overtaken",
    "PendingWork",
    "PermissionDenied",
    "QuotaExceeded",
    "StoreUnavailable",
    "TooLarge",
    "Unreadable",
    "clip",
    "from_lua_error",
    "quoted",
]

MAX_DETAIL = 512
"""Characters of a status detail. It travels in gRPC metadata, whose hard limit
(16 KiB) a quoted client argument could exceed: the client would then see
RESOURCE_EXHAUSTED, which it retries as if logsvc were down."""


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


class DeadlineExceeded(LogError):
    """The request's deadline passed before its Function ran: nothing was done."""


class TooLarge(LogError):
    """The answer would not fit one message; the message says what to ask instead."""


class PendingWork(LogError):
    """The log has bulk work pending; the store finishes it and asks again (never reaches a client)."""


class LostWrites(LogError):
    """The log lost writes the caller was answered (a failover); the store marks it so and asks again."""


class Unreadable(LogError):
    """The log's stored state does not parse (e.g. written by an older version); nothing was changed."""


class PermissionDenied(LogError):
    """The caller's certificate does not allow this call (logsvc/access.py); nothing was read or changed."""


class QuotaExceeded(LogError):
    """The caller's tenant is at one of its quotas (dmulog/quotas.py says which words mean which); nothing changed."""


class Overtaken(LogError):
    """A stream's watcher fell behind (or its source was lost) and was ended: watch again."""


WORD_TO_ERROR: dict[str, type[LogError]] = {
    "EINVAL": InvalidArgument,
    "ENOENT": NotFound,
    "EEXIST": AlreadyExists,
    "EBUSY": Busy,
    "ETIMEDOUT": DeadlineExceeded,
    "ESTEP": PendingWork,
    "ELOST": LostWrites,
    "EQUOTA": QuotaExceeded,
}

STATUS_OF: dict[type[LogError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Busy: grpc.StatusCode.FAILED_PRECONDITION,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    PendingWork: grpc.StatusCode.UNAVAILABLE,
    LostWrites: grpc.StatusCode.UNAVAILABLE,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unreadable: grpc.StatusCode.DATA_LOSS,
    Overtaken: grpc.StatusCode.UNAVAILABLE,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def from_lua_error(message: str) -> LogError | None:
    """The LogError of a Lua ``error_reply``, or None if it is not one of ours."""
    word, _, rest = message.partition(" ")
    cls = WORD_TO_ERROR.get(word)
    return cls(rest) if cls else None


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to at most ``limit`` characters, saying so at the end when it was cut."""
    if len(text) <= limit:
        return text
    marker = f"... [cut: {len(text)} characters]"
    return text[: max(0, limit - len(marker))] + marker


def quoted(value: str, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: client input may be huge."""
    return clip(repr(value), limit)
