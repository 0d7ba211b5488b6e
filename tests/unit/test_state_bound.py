"""GetLogState answers in one message only when that message fits a default client's 4 MiB receive limit.

The Function's own bound (bitmaps of at most 1 MiB, at most 65,536 marks) keeps
one Redis reply short; it does not keep the answer under 4 MiB: marks with long
node names can pass it. The store measures the answer it would make instead
(the Function's reply is stood in for here: no Redis is needed to measure).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from logsvc.errors import TooLarge
from logsvc.snapshot import log_state
from logsvc.store import MAX_STATE_MESSAGE, Store

REGIONS = 1 << 23
"""The most regions whose bitmaps the Function returns inline: 1 MiB each."""


def reply(marks: int, node_name_length: int = 64) -> list[Any]:
    """A ``state`` reply of a REGIONS-region log with ``marks`` regions each marked by two long-named nodes."""
    meta = [b"type", b"dmulog", b"region_size", b"16", b"region_count", str(REGIONS).encode(), b"sync_count", b"0",
            b"args", b"dmulog 16"]  # fmt: skip
    inst = json.dumps({"node": "node-a", "boot": "b", "luid": "1", "state": "resumed", "ts": str(REGIONS * 16),
                       "rc": str(REGIONS)}).encode()  # fmt: skip
    nodes = ("|" + "|".join(c * node_name_length for c in "ab") + "|").encode()  # as the marks hash holds them
    flat = [x for r in range(marks) for x in (str(r * 97).encode(), nodes)]
    bitmap = b"\xff" * (REGIONS // 8)
    return [meta, [b"node-a/1", inst], bitmap, bitmap, flat, [], marks]


def store_replying(raw: list[Any]) -> Store:
    """A store whose ``state`` Function answers ``raw`` (the client never connects: nothing is sent)."""
    store = Store.from_url("redis://127.0.0.1:1/0")

    async def admin(op: str, uuid: str, args: Any = ()) -> Any:
        return raw

    store.admin = admin  # type: ignore[method-assign]
    return store


@pytest.mark.parametrize("marks", [1, 1000])
async def test_an_answer_within_4_mib_is_given(marks: int) -> None:
    """2 MiB of bitmaps and a few marks: one message, as before."""
    raw = reply(marks)
    assert log_state("LVM-x", raw).ByteSize() <= MAX_STATE_MESSAGE
    assert raw == await store_replying(raw).state("LVM-x")


async def test_an_answer_over_4_mib_within_the_functions_bound_is_refused() -> None:
    """30,000 marks of two 64-character node names on 2 MiB of bitmaps: over 4 MiB, so TooLarge naming ReadLogState."""
    raw = reply(30_000)
    assert log_state("LVM-x", raw).ByteSize() > MAX_STATE_MESSAGE
    with pytest.raises(TooLarge, match="too large for one message: read it with ReadLogState"):
        await store_replying(raw).state("LVM-x")


def test_the_bound_is_a_default_client_s_receive_limit() -> None:
    """4 MiB: what grpc-js, grpc-go, grpc-java and grpcio accept by default."""
    assert 4 * 1024 * 1024 == MAX_STATE_MESSAGE
