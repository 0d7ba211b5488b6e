"""What a log left in Redis, read and changed behind logsvc's back.

Tests check a refusal by what it did not store, and play a log written by
another version by overwriting a field; both go to Redis directly, under the
key names logsvc itself uses (logsvc/keys.py).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from logsvc.keys import log_keys

__all__ = ["keys_left", "set_log_field"]


async def keys_left(redis_url: str, uuid: str) -> list[str]:
    """Which of the log's keys exist in Redis: a refused CTR must leave none."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [key for key in log_keys(uuid) if await client.exists(key)]
    finally:
        await client.aclose()


async def set_log_field(redis_url: str, uuid: str, field: str, value: bytes) -> None:
    """Overwrite one field of the log's hash directly, as another version might have stored it."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.hset(log_keys(uuid).log, field, value)
    finally:
        await client.aclose()
