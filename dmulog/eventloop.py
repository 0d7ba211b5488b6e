"""Which asyncio event loop the dmulog processes run on.

uvloop (libuv) by default: every request crosses the event loop of the
bridge and of logsvc several times (kernel socket, gRPC's completion queue,
Redis), and on uvloop a request through the whole stack took about a fifth
less time than on the standard loop (``make bench``, README). The standard
loop stays one setting away, for debugging or for a platform without uvloop:
``DMULOG_EVENT_LOOP=asyncio``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["ENV", "current", "name", "run"]

ENV = "DMULOG_EVENT_LOOP"
T = TypeVar("T")


def name(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` uses."""
    wanted = env.get(ENV, "uvloop") or "uvloop"
    if wanted not in ("uvloop", "asyncio"):
        raise ValueError(f"{ENV} must be 'uvloop' or 'asyncio', not {wanted!r}")
    return wanted


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on the chosen loop (as :func:`asyncio.run`)."""
    if name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def current() -> str:
    """The running loop's kind, for the start-up log line."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
