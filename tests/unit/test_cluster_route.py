"""Which library errors logsvc/cluster.py takes for a connection closed under a command, and which it lets through."""

from __future__ import annotations

import pytest
from redis import exceptions as rexc
from redis.asyncio.connection import Connection

from logsvc.cluster import _UNREACHABLE, _closed_under_us


async def test_writing_on_a_connection_closed_meanwhile_is_a_lost_connection() -> None:
    """redis-py writing on a connection whose writer another task cleared: what a topology refresh leaves behind.

    Releases up to 8.1 fail inside the library with an AttributeError on
    ``None`` (redis/redis-py#4287), later ones with a ConnectionError; either
    must come out as a lost connection, which the route retries.
    """
    never_connected = Connection(host="127.0.0.1", port=1)
    with pytest.raises((AttributeError, TypeError, rexc.ConnectionError)) as caught:
        await never_connected._send_packed_command([b"PING\r\n"])
    assert isinstance(caught.value, _UNREACHABLE) or _closed_under_us(caught.value)


def _ours() -> None:
    value = None
    value.writelines([])  # type: ignore[attr-defined]


def test_the_library_quirk_is_recognised_by_where_it_was_raised() -> None:
    """The AttributeError of redis-py <= 8.1, as raised from inside the library, counts as a lost connection."""
    namespace: dict[str, object] = {}
    library_file = "/venv/site-packages/redis/asyncio/connection.py"  # a frame that stands for the library's
    exec(compile("def send(writer):\n    writer.writelines([])\n", library_file, "exec"), namespace)
    with pytest.raises(AttributeError) as caught:
        namespace["send"](None)  # type: ignore[operator]
    assert _closed_under_us(caught.value)


def test_the_same_error_raised_by_our_own_code_is_a_bug_not_a_lost_connection() -> None:
    """Only redis-py or asyncio raising it counts: an AttributeError of ours must surface, not be retried."""
    with pytest.raises(AttributeError) as caught:
        _ours()
    assert not _closed_under_us(caught.value)
    assert not _closed_under_us(TypeError("unsupported operand"))
