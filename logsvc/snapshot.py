"""Raw replies of the ``state`` and ``summary`` functions, as API messages.

Pure functions: the admin RPCs stay thin and this stays testable. What Redis
holds may have been written by another version, so a field that does not
parse is reported, never raised as an internal error: one such log must not
break ListLogs for every other log.
"""

from __future__ import annotations

import json
from typing import Any

from dmulog.v1 import dmulog_pb2 as pb
from logsvc.errors import Unreadable

__all__ = ["log_state", "log_summary", "region_marks"]

_STATES = {
    "constructed": pb.INSTANCE_STATE_CONSTRUCTED,
    "resumed": pb.INSTANCE_STATE_RESUMED,
    "presuspended": pb.INSTANCE_STATE_PRESUSPENDED,
    "suspended": pb.INSTANCE_STATE_SUSPENDED,
}


class _BadField(ValueError):
    """A stored value that does not parse; the message says which and why."""


# What reading a malformed reply can raise: a field that is no number or one
# out of its message field's range (ValueError, which covers JSON and UTF-8
# errors too), a missing key, a reply of the wrong shape.
_UNREADABLE = (ValueError, KeyError, TypeError, IndexError)


def _show(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _int(value: bytes | str | int, what: str) -> int:
    """``value`` as an integer; _BadField naming ``what`` when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _BadField(f"{what} is {_show(value)}, not an integer") from None


def _why(e: Exception) -> str:
    return str(e) if isinstance(e, _BadField) else f"{type(e).__name__}: {e}"


def _pairs(flat: list[bytes]) -> dict[str, bytes]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _instance(raw: bytes) -> pb.Instance:
    try:
        d = json.loads(raw)
        return pb.Instance(
            node=d["node"],
            boot_id=d["boot"],
            luid=_int(d["luid"], "instance luid"),
            state=_STATES.get(d["state"], pb.INSTANCE_STATE_UNSPECIFIED),
            # Records stored before full field names said ts and rc.
            target_sectors=_int(d["target_sectors"] if "target_sectors" in d else d["ts"], "instance target length"),
            region_count=_int(d["region_count"] if "region_count" in d else d["rc"], "instance region count"),
            epoch=_int(d.get("epoch", 0), "instance epoch"),  # 0 in records stored before leases
        )
    except _BadField:
        raise
    except _UNREADABLE as e:
        raise _BadField(f"instance record {_show(raw)} does not parse ({_why(e)})") from None


def _summary(uuid: str, meta: dict[str, bytes], instances: list[pb.Instance], dirty_count: int) -> pb.LogSummary:
    return pb.LogSummary(
        uuid=uuid,
        log_type=meta.get("type", b"").decode(),
        region_size=_int(meta.get("region_size", 0), "region_size"),
        region_count=_int(meta.get("region_count", 0), "region_count"),
        sync_count=_int(meta.get("sync_count", 0), "sync_count"),
        dirty_count=dirty_count,
        instance_count=len(instances),
        active_count=sum(i.state in (pb.INSTANCE_STATE_RESUMED, pb.INSTANCE_STATE_PRESUSPENDED) for i in instances),
    )


def log_summary(uuid: str, raw: list[Any]) -> pb.LogSummary:
    """LogSummary from the ``summary`` function: [meta pairs, instance records, dirty count].

    A log whose state does not parse gets a summary with only ``uuid`` and
    ``problem`` set.
    """
    try:
        meta_flat, inst_values, dirty_count = raw
        return _summary(uuid, _pairs(meta_flat), [_instance(v) for v in inst_values], _int(dirty_count, "dirty_count"))
    except _UNREADABLE as e:
        return pb.LogSummary(uuid=uuid, problem=_why(e))


def region_marks(marks_flat: list[bytes]) -> list[pb.RegionMarks]:
    """RegionMarks, ascending, from a flat ``[region, "|node|node|", ...]`` list of the marks hash."""
    marks = sorted(
        (_int(region, "marked region"), [n for n in nodes.decode().split("|") if n])
        for region, nodes in _pairs(marks_flat).items()
    )
    return [pb.RegionMarks(region=r, nodes=n) for r, n in marks]


def log_state(uuid: str, raw: list[Any]) -> pb.GetLogStateResponse:
    """GetLogStateResponse from the ``state`` function: meta, instances, sync, dirty, marks, priority, dirty count.

    Parts the function left out (None: a head, or a log read in ranges) come
    out empty. Raises Unreadable (DATA_LOSS) when the log's state does not parse.
    """
    try:
        return _state(uuid, raw)
    except _UNREADABLE as e:
        raise Unreadable(f"log state unreadable: {_why(e)}") from None


def _state(uuid: str, raw: list[Any]) -> pb.GetLogStateResponse:
    meta_flat, inst_flat, sync, dirty, marks_flat, prio, dirty_count = raw
    meta = _pairs(meta_flat)
    instances = sorted((_instance(v) for v in _pairs(inst_flat).values()), key=lambda i: (i.node, i.luid))
    rec_region = meta.get("rec_region", b"")
    rec_inst = meta.get("rec_inst", b"").decode()
    rec_node, _, rec_luid = rec_inst.rpartition("/")
    args = meta.get("args", b"").decode().split(" ")
    return pb.GetLogStateResponse(
        summary=_summary(uuid, meta, instances, _int(dirty_count, "dirty_count")),
        in_sync_bitmap=sync or b"",
        dirty_bitmap=dirty or b"",
        marks=region_marks(marks_flat or []),
        recovering=bool(rec_region),
        recovering_region=_int(rec_region or 0, "rec_region"),
        recoverer_node=rec_node,
        recoverer_luid=_int(rec_luid or 0, "recoverer luid"),
        sync_search=_int(meta.get("sync_search", 0), "sync_search"),
        priority_regions=[_int(p, "priority region") for p in prio],
        instances=instances,
        args=args[1:],
        fences=[pb.NodeFence(node=k.removeprefix("fence:"), epoch=_int(v, "fence epoch"))
                for k, v in sorted(meta.items()) if k.startswith("fence:")],
    )
