"""The only module that talks to Redis.

Each kernel request becomes exactly one Function call (FCALL, or FCALL_RO for
reads) of the ``dmulog_v1`` library in lua/dmulog.lua, so each request is
one atomic step and one round trip, and any logsvc replica can serve any
request. The library is loaded at start-up with FUNCTION LOAD REPLACE: Redis
persists functions with the data set (unlike EVAL's script cache), and a
Redis that lost them gets them again on the first "Function not found".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from dmulog.retry import RetryPolicy
from logsvc.errors import LogError, StoreUnavailable, from_lua_error
from logsvc.keys import DEFAULT_PREFIX, log_key_pattern, log_keys, uuid_from_log_key

__all__ = ["LIBRARY_NAME", "Store", "library_code"]

LIBRARY_NAME = "dmulog_v1"
FUNCTION_PREFIX = "dmulog_v1_"
log = logging.getLogger("dmulog.logsvc.store")


def library_code() -> str:
    """Source of the Redis Function library shipped with this package."""
    return resources.files("logsvc").joinpath("lua/dmulog.lua").read_text(encoding="utf-8")


def _retryable(e: BaseException) -> bool:
    return isinstance(e, (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, TimeoutError)) or (
        isinstance(e, rexc.ResponseError) and str(e).startswith(("LOADING", "TRYAGAIN", "MASTERDOWN", "READONLY"))
    )


class Store:
    """Function calls against one Redis (or Redis-compatible) endpoint."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, retry: RetryPolicy | None = None):
        self._redis = client
        self._prefix = prefix
        self._retry = retry or RetryPolicy(budget=2.5)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, retry: RetryPolicy | None = None) -> Store:
        """Client for ``redis://``, ``rediss://`` or ``unix://`` URLs; retries are ours, not redis-py's."""
        client = aioredis.from_url(
            url,
            decode_responses=False,
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            retry_on_timeout=False,
            retry=None,
            health_check_interval=0,
        )
        return cls(client, prefix=prefix, retry=retry)

    @property
    def redis(self) -> aioredis.Redis:
        """The underlying client (admin helpers and tests)."""
        return self._redis

    async def load_library(self) -> None:
        """Install or upgrade the Function library; idempotent."""
        try:
            await self._retry.run(
                lambda: self._redis.function_load(library_code(), replace=True), is_retryable=_retryable
            )
        except (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, TimeoutError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    async def call(self, op: str, uuid: str, args: Sequence[str | int | bytes], *, readonly: bool = False) -> Any:
        """Run the library function ``dmulog_v1_<op>`` on the log ``uuid``.

        Raises the LogError the function's error word names, or
        StoreUnavailable when Redis stayed unreachable for the whole budget.
        """
        keys = log_keys(uuid, self._prefix)
        command = "FCALL_RO" if readonly else "FCALL"
        name = FUNCTION_PREFIX + op

        async def once() -> Any:
            try:
                return await self._redis.execute_command(command, name, len(keys), *keys, *args)
            except rexc.ResponseError as e:
                if "Function not found" in str(e):
                    log.warning("function_library_missing", extra={"event_data": {"function": name}})
                    await self._redis.function_load(library_code(), replace=True)
                    return await self._redis.execute_command(command, name, len(keys), *keys, *args)
                raise

        try:
            return await self._retry.run(once, is_retryable=_retryable)
        except rexc.ResponseError as e:
            mapped = from_lua_error(str(e))
            raise (mapped or LogError(f"redis error: {e}")) from None
        except (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, TimeoutError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e

    async def log_uuids(self) -> list[str]:
        """UUIDs of every log, by SCAN (no global index key, so Cluster-safe)."""
        found: set[str] = set()

        async def scan() -> None:
            async for key in self._redis.scan_iter(match=log_key_pattern(self._prefix), count=1000, _type="HASH"):
                found.add(uuid_from_log_key(key.decode("utf-8"), self._prefix))

        try:
            await self._retry.run(scan, is_retryable=_retryable)
        except (rexc.ConnectionError, rexc.TimeoutError, ConnectionError, TimeoutError) as e:
            raise StoreUnavailable(f"redis unreachable: {e}") from e
        return sorted(found)
