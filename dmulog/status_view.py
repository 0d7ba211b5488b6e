"""Text views for ``dmulog status``: pure functions from API messages to text.

The bitmap picture fits any log on one screen: at most 16 rows of 64 cells,
each cell standing for an equal run of regions and showing the worst state
inside it, so one dirty region among a million is still visible.
"""

from __future__ import annotations

from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["LEGEND", "cells", "render_list", "render_log"]

LEGEND = "R recovering   X all out of sync   x some out of sync   d dirty   . clean and in sync"
_STATE = {
    pb.INSTANCE_STATE_CONSTRUCTED: "constructed",
    pb.INSTANCE_STATE_RESUMED: "resumed",
    pb.INSTANCE_STATE_PRESUSPENDED: "presuspended",
    pb.INSTANCE_STATE_SUSPENDED: "suspended",
}
SECTOR = 512


def _size(sectors: int) -> str:
    value = float(sectors * SECTOR)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} PiB"  # pragma: no cover


def _count(bitmap: bytes, start: int, end: int) -> int:
    """Set bits of regions [start, end) in an MSB-first bitmap."""
    if end <= start:
        return 0
    first, last = start // 8, (end - 1) // 8
    chunk = int.from_bytes(bitmap[first : last + 1].ljust(last + 1 - first, b"\0"), "big")
    width = (last + 1 - first) * 8
    skip_head, skip_tail = start - first * 8, (last + 1) * 8 - end
    chunk &= (1 << (width - skip_head)) - 1
    return (chunk >> skip_tail).bit_count()


def cells(state: pb.GetLogStateResponse, ncells: int) -> list[str]:
    """One character per cell, each cell an equal run of regions."""
    total = state.summary.region_count
    if total == 0:
        return []
    ncells = max(1, min(ncells, total))
    span = -(-total // ncells)
    recovering = state.recovering_region if state.recovering else -1
    out = []
    for start in range(0, total, span):
        end = min(total, start + span)
        n = end - start
        synced = _count(state.in_sync_bitmap, start, end)
        if start <= recovering < end:
            out.append("R")
        elif synced == 0:
            out.append("X")
        elif synced < n:
            out.append("x")
        elif _count(state.dirty_bitmap, start, end):
            out.append("d")
        else:
            out.append(".")
    return out


def render_log(state: pb.GetLogStateResponse, *, width: int = 64, rows: int = 16) -> str:
    """Headline, bitmap picture, marks, recovery and instances of one log."""
    s = state.summary
    pct = 100.0 * s.sync_count / s.region_count if s.region_count else 100.0
    lines = [
        f"log {s.uuid}",
        f"  type {s.log_type}  args {' '.join(state.args)}",
        f"  {s.region_count} regions of {s.region_size} sectors ({_size(s.region_size)}), "
        f"{_size(s.region_size * s.region_count)} in all",
        f"  in sync {s.sync_count}/{s.region_count} ({pct:.1f}%)   dirty {s.dirty_count}   "
        f"out of sync {s.region_count - s.sync_count}",
    ]
    if state.recovering:
        lines.append(f"  recovering region {state.recovering_region} on {state.recoverer_node} "
                     f"(luid {state.recoverer_luid:#x})")  # fmt: skip
    else:
        lines.append("  recovering nothing")
    picture = cells(state, width * rows)
    span = -(-s.region_count // len(picture)) if picture else 0
    lines.append(f"  map: {len(picture)} cells of {span} region{'s' if span != 1 else ''} each")
    for i in range(0, len(picture), width):
        first = i * span
        lines.append(f"  {first:>10} |{''.join(picture[i : i + width])}|")
    lines.append(f"  {LEGEND}")
    if state.marks:
        shown = ", ".join(f"{m.region}:{'+'.join(m.nodes)}" for m in state.marks[:16])
        more = f" (+{len(state.marks) - 16} more)" if len(state.marks) > 16 else ""
        lines.append(f"  marked regions (region:nodes) {shown}{more}")
    else:
        lines.append("  marked regions: none")
    if state.priority_regions:
        lines.append(f"  waiting writers for regions {', '.join(map(str, state.priority_regions[:16]))}")
    lines.append("  instances:")
    for inst in state.instances:
        lines.append(f"    {inst.node} luid {inst.luid:#x} boot {inst.boot_id[:8]} {_STATE.get(inst.state, '?')} "
                     f"{inst.region_count} regions")  # fmt: skip
    if not state.instances:
        lines.append("    none (persistent state only)")
    return "\n".join(lines)


def render_list(logs: list[pb.LogSummary]) -> str:
    """One line per log; a log the service could not read says so and why, in place of its numbers."""
    if not logs:
        return "no logs"
    head = f"{'UUID':<40} {'TYPE':<15} {'REGIONS':>10} {'REGION':>9} {'IN SYNC':>16} {'DIRTY':>8} {'ACTIVE':>6}"
    rows = [head]
    for s in logs:
        if s.problem:
            rows.append(f"{s.uuid:<40} unreadable: {s.problem}")
            continue
        pct = 100.0 * s.sync_count / s.region_count if s.region_count else 100.0
        rows.append(
            f"{s.uuid:<40} {s.log_type:<15} {s.region_count:>10} {_size(s.region_size):>9} "
            f"{f'{s.sync_count} {pct:.0f}%':>16} {s.dirty_count:>8} {f'{s.active_count}/{s.instance_count}':>6}"
        )
    return "\n".join(rows)
