"""Text views for ``dmulog status``: pure functions from API messages to text.

The bitmap picture fits any log on one screen: at most 16 rows of 64 cells,
each cell standing for an equal run of regions and showing the worst state
inside it, so one dirty region among a million is still visible.
"""

from __future__ import annotations

from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["LEGEND", "cells", "render_list", "render_log", "render_nodes"]

LEGEND = "R recovering   X all out of sync   x some out of sync   d dirty   . clean and in sync"
_STATE = {
    pb.INSTANCE_STATE_CONSTRUCTED: "constructed",
    pb.INSTANCE_STATE_RESUMED: "resumed",
    pb.INSTANCE_STATE_PRESUSPENDED: "presuspended",
    pb.INSTANCE_STATE_SUSPENDED: "suspended",
}
_LEASE = {
    pb.LEASE_STATE_LIVE: "live",
    pb.LEASE_STATE_EXPIRING: "expired, being handed over",
    pb.LEASE_STATE_DEAD: "dead, handed over",
}
SECTOR = 512


def _lease(n: pb.NodeLease) -> str:
    """A node's lease in a few words."""
    state = _LEASE.get(n.state, "?")
    more = f", expires in {n.expires_in_ms / 1000:.1f} s" if n.state == pb.LEASE_STATE_LIVE else ""
    older = f", {n.expiring_incarnations} older incarnation(s) being handed over" if n.expiring_incarnations else ""
    return f"epoch {n.epoch} {state}, renewed {n.renewed_ms_ago / 1000:.1f} s ago{more}{older}"


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


def render_log(state: pb.GetLogStateResponse, *, width: int = 64, rows: int = 16,
               nodes: list[pb.NodeLease] | None = None) -> str:  # fmt: skip
    """Headline, bitmap picture, marks, recovery, and the nodes with their instances, leases and marks."""
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
    lines += _log_nodes(state, {n.name: n for n in nodes or []})
    return "\n".join(lines)


def _log_nodes(state: pb.GetLogStateResponse, leases: dict[str, pb.NodeLease]) -> list[str]:
    """Per node of the log: its lease, its instances, what it has marked; then the incarnations handed over."""
    marked: dict[str, list[int]] = {}
    for m in state.marks:
        for node in m.nodes:
            marked.setdefault(node, []).append(m.region)
    names = sorted({i.node for i in state.instances} | set(marked))
    lines = ["  nodes:"]
    for name in names:
        lease = leases.get(name)
        lines.append(f"    {name}: " + (_lease(lease) if lease else "no lease"))
        for inst in (i for i in state.instances if i.node == name):
            lines.append(f"      luid {inst.luid:#x} boot {inst.boot_id[:8]} epoch {inst.epoch} "
                         f"{_STATE.get(inst.state, '?')} {inst.region_count} regions")  # fmt: skip
        regions = marked.get(name, [])
        shown = ", ".join(map(str, regions[:16])) + (f" (+{len(regions) - 16} more)" if len(regions) > 16 else "")
        lines.append(f"      marked: {len(regions)} region{'s' if len(regions) != 1 else ''}" +
                     (f" ({shown})" if regions else ""))  # fmt: skip
    if not names:
        lines.append("    none (persistent state only)")
    out_of_sync = state.summary.region_count - state.summary.sync_count
    for f in state.fences:
        lease = leases.get(f.node)
        now = f", now {_lease(lease)}" if lease else ""
        lines.append(f"  handed over: {f.node} epoch {f.epoch} (its marked regions turned out of sync; "
                     f"{out_of_sync} out of sync in the log now){now}")  # fmt: skip
    return lines


def render_nodes(nodes: list[pb.NodeLease]) -> str:
    """One line per node that ever took a lease."""
    if not nodes:
        return "no node leases"
    return "\n".join(["nodes:"] + [f"  {n.name:<24} boot {n.boot_id[:8]}  {_lease(n)}" for n in nodes])


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
