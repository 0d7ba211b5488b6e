"""Raw replies of the ``state`` and ``summary`` functions, as API messages.

Pure functions: the admin RPCs stay thin and this stays testable.
"""

from __future__ import annotations

import json
from typing import Any

from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["log_state", "log_summary", "region_marks"]

_STATES = {
    "constructed": pb.INSTANCE_STATE_CONSTRUCTED,
    "resumed": pb.INSTANCE_STATE_RESUMED,
    "presuspended": pb.INSTANCE_STATE_PRESUSPENDED,
    "suspended": pb.INSTANCE_STATE_SUSPENDED,
}


def _pairs(flat: list[bytes]) -> dict[str, bytes]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _instance(raw: bytes) -> pb.Instance:
    d = json.loads(raw)
    return pb.Instance(
        node=d["node"],
        boot_id=d["boot"],
        luid=int(d["luid"]),
        state=_STATES.get(d["state"], pb.INSTANCE_STATE_UNSPECIFIED),
        # Records stored before full field names said ts and rc.
        target_sectors=int(d["target_sectors"] if "target_sectors" in d else d["ts"]),
        region_count=int(d["region_count"] if "region_count" in d else d["rc"]),
    )


def _summary(uuid: str, meta: dict[str, bytes], instances: list[pb.Instance], dirty_count: int) -> pb.LogSummary:
    return pb.LogSummary(
        uuid=uuid,
        log_type=meta.get("type", b"").decode(),
        region_size=int(meta.get("region_size", 0)),
        region_count=int(meta.get("region_count", 0)),
        sync_count=int(meta.get("sync_count", 0)),
        dirty_count=dirty_count,
        instance_count=len(instances),
        active_count=sum(i.state in (pb.INSTANCE_STATE_RESUMED, pb.INSTANCE_STATE_PRESUSPENDED) for i in instances),
    )


def log_summary(uuid: str, raw: list[Any]) -> pb.LogSummary:
    """LogSummary from the ``summary`` function: [meta pairs, instance records, dirty count]."""
    meta_flat, inst_values, dirty_count = raw
    return _summary(uuid, _pairs(meta_flat), [_instance(v) for v in inst_values], int(dirty_count))


def region_marks(marks_flat: list[bytes]) -> list[pb.RegionMarks]:
    """RegionMarks, ascending, from a flat ``[region, "|node|node|", ...]`` list of the marks hash."""
    marks = sorted(
        (int(region), [n for n in nodes.decode().split("|") if n]) for region, nodes in _pairs(marks_flat).items()
    )
    return [pb.RegionMarks(region=r, nodes=n) for r, n in marks]


def log_state(uuid: str, raw: list[Any]) -> pb.GetLogStateResponse:
    """GetLogStateResponse from the ``state`` function: meta, instances, sync, dirty, marks, priority, dirty count.

    Parts the function left out (None: a head, or a log read in ranges) come out empty.
    """
    meta_flat, inst_flat, sync, dirty, marks_flat, prio, dirty_count = raw
    meta = _pairs(meta_flat)
    instances = sorted((_instance(v) for v in _pairs(inst_flat).values()), key=lambda i: (i.node, i.luid))
    rec_region = meta.get("rec_region", b"")
    rec_inst = meta.get("rec_inst", b"").decode()
    rec_node, _, rec_luid = rec_inst.rpartition("/")
    args = meta.get("args", b"").decode().split(" ")
    return pb.GetLogStateResponse(
        summary=_summary(uuid, meta, instances, int(dirty_count)),
        in_sync_bitmap=sync or b"",
        dirty_bitmap=dirty or b"",
        marks=region_marks(marks_flat or []),
        recovering=bool(rec_region),
        recovering_region=int(rec_region or 0),
        recoverer_node=rec_node,
        recoverer_luid=int(rec_luid or 0),
        sync_search=int(meta.get("sync_search", 0)),
        priority_regions=[int(p) for p in prio],
        instances=instances,
        args=args[1:],
    )
