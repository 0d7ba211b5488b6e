"""Which library errors logsvc/cluster.py takes for a connection closed under a command, and which it lets through."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from logsvc.cluster import _closed_under_us


async def test_writing_on_a_connection_closed_meanwhile_is_a_lost_connection() -> None:
    """redis-py writing on a connection whose writer another task cleared: what a topology refresh leaves behind."""
    never_connected = Connection(host="127.0.0.1", port=1)
    with pytest.raises(AttributeError) as caught:
        await never_connected._send_packed_command([b"PING\r\n"])
    assert _closed_under_us(caught.value)


def _ours() -> None:
    value = None
    value.writelines([])  # type: ignore[attr-defined]


def test_the_same_error_raised_by_our_own_code_is_a_bug_not_a_lost_connection() -> None:
    """Only redis-py or asyncio raising it counts: an AttributeError of ours must surface, not be retried."""
    with pytest.raises(AttributeError) as caught:
        _ours()
    assert not _closed_under_us(caught.value)
    assert not _closed_under_us(TypeError("unsupported operand"))
