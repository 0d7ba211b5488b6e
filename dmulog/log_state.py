"""A log's whole state, read through ReadLogState: the parts put back together.

GetLogState answers in one message, so it refuses a log of more than 8 Mi
regions; ReadLogState sends any log in parts of about 1 MiB. ``assemble`` is
the pure half (parts in, one GetLogStateResponse out); ``read_log_state`` the
call, with GetLogState as the fallback against a logsvc that predates
ReadLogState.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

__all__ = ["assemble", "read_log_state"]


def assemble(parts: Iterable[pb.ReadLogStateResponse]) -> pb.GetLogStateResponse:
    """The GetLogStateResponse that ReadLogState's ``parts`` describe.

    Raises:
        ValueError: the parts do not start with a head, or a bitmap chunk is out of order.
    """
    state: pb.GetLogStateResponse | None = None
    bitmaps: dict[str, bytearray] = {"in_sync_bitmap": bytearray(), "dirty_bitmap": bytearray()}
    for part in parts:
        kind = part.WhichOneof("part")
        if kind == "head":
            state = pb.GetLogStateResponse()
            state.CopyFrom(part.head)
        elif state is None:
            raise ValueError(f"ReadLogState sent {kind} before its head")
        elif kind in bitmaps:
            chunk = getattr(part, kind)
            if chunk.offset != len(bitmaps[kind]):
                raise ValueError(f"{kind} chunk at {chunk.offset}, expected {len(bitmaps[kind])}")
            bitmaps[kind] += chunk.data
        elif kind == "marks":
            state.marks.extend(part.marks.marks)
    if state is None:
        raise ValueError("ReadLogState sent no head")
    state.in_sync_bitmap = bytes(bitmaps["in_sync_bitmap"])
    state.dirty_bitmap = bytes(bitmaps["dirty_bitmap"])
    state.marks.sort(key=lambda m: m.region)
    return state


async def read_log_state(stub: pb_grpc.DirtyLogStub, uuid: str, timeout: float) -> pb.GetLogStateResponse:
    """The whole state of log ``uuid``, whatever its size."""
    try:
        parts = [part async for part in stub.ReadLogState(pb.ReadLogStateRequest(uuid=uuid), timeout=timeout)]
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        return await stub.GetLogState(pb.GetLogStateRequest(uuid=uuid), timeout=timeout)
    return assemble(parts)
