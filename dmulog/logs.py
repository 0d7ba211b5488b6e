"""Structured logs for both processes: one event name plus key/values per line.

JSON lines go to stderr unless it is a terminal (then ``key=value`` text), so
log shippers get fields and people get something readable. Per-request fields
(uuid, luid, seq, request type, node) are bound once in a context variable by
whoever handles the request and appear on every line it logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["bind", "configure", "event", "unbind"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("dmulog_log_context", default=_EMPTY)


def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add fields to every log line of the current task; returns a reset token."""
    return _context.set({**_context.get(), **fields})


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    """Undo a ``bind``."""
    _context.reset(token)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log the event ``name`` with ``fields`` (snake_case names, not prose)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"event_data": fields})


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool):
        super().__init__()
        self._json = as_json

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        data.update(_context.get())
        data.update(getattr(record, "event_data", {}) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if self._json:
            return json.dumps(data, default=str)
        head = f"{data.pop('ts')} {data.pop('level'):7} {data.pop('event')}"
        data.pop("logger")
        return head + "".join(f" {k}={v}" for k, v in data.items())


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Install the formatter on the root logger (``fmt``: auto, json or text)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
