"""Tests of dmulog/status_view.py: the text views of ``dmulog status``."""

from __future__ import annotations

import random

import pytest

from dmulog.status_view import LEGEND, cells, render_list, render_log, render_nodes
from dmulog.v1 import dmulog_pb2 as pb


def bitmap(nregions: int, regions: set[int] | range, *, invert: bool = False) -> bytes:
    """An MSB-first bitmap: region r is bit 7 - r % 8 of byte r // 8."""
    out = bytearray(b"\xff" * ((nregions + 7) // 8) if invert else (nregions + 7) // 8)
    for r in regions:
        if invert:
            out[r // 8] &= ~(0x80 >> (r % 8)) & 0xFF
        else:
            out[r // 8] |= 0x80 >> (r % 8)
    return bytes(out)


def state(
    count: int,
    *,
    in_sync: bytes,
    dirty: bytes = b"",
    recovering: int | None = None,
    sync_count: int = 0,
    dirty_count: int = 0,
    **kw: object,
) -> pb.GetLogStateResponse:
    """A GetLogStateResponse for a log of ``count`` regions."""
    return pb.GetLogStateResponse(
        summary=pb.LogSummary(
            uuid="LVM-test", log_type="dmulog", region_size=1024, region_count=count,
            sync_count=sync_count, dirty_count=dirty_count, instance_count=1, active_count=1,
        ),
        in_sync_bitmap=in_sync,
        dirty_bitmap=dirty,
        recovering=recovering is not None,
        recovering_region=recovering or 0,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_bitmap_helper_is_msb_first():
    """The test's bitmap helper puts region 0 in the top bit and region 9 in bit 6 of byte 1."""
    expected = bytes([0b1000_0000, 0b0100_0000])
    assert expected == bitmap(16, {0, 9})


@pytest.mark.parametrize("region", range(16))
def test_msb_first_bit_order(region):
    """Region r is read from bit 7 - r % 8 of byte r // 8: exactly that one cell shows in sync."""
    expected = ["X"] * 16
    expected[region] = "."
    assert expected == cells(state(16, in_sync=bitmap(16, {region})), 16)


def test_one_cell_per_region():
    """With a cell per region each cell shows that region's own state."""
    s = state(16, in_sync=bitmap(16, {3}, invert=True), dirty=bitmap(16, {10}), recovering=12)
    expected = list("...X......d.R...")
    assert expected == cells(s, 16)


def test_cells_show_the_worst_state_in_a_run():
    """A cell of several regions shows R over X over x over d over '.'."""
    # Cells of 4 regions: [0-3] one out of sync, [4-7] clean, [8-11] all out of sync,
    # [12-15] one dirty, and [16-19] recovering although also dirty and out of sync.
    in_sync = bitmap(20, {1, 8, 9, 10, 11, 17}, invert=True)
    dirty = bitmap(20, {14, 16})
    expected = list("x.XdR")
    assert expected == cells(state(20, in_sync=in_sync, dirty=dirty, recovering=18), 5)


def test_out_of_sync_beats_dirty():
    """A cell with both a dirty and an out-of-sync region shows the out-of-sync state."""
    expected = ["x"]
    assert expected == cells(state(8, in_sync=bitmap(8, {2}, invert=True), dirty=bitmap(8, {5})), 1)


def test_recovering_flag_off_ignores_region():
    """recovering_region means nothing when recovering is false."""
    s = pb.GetLogStateResponse(
        summary=pb.LogSummary(region_count=4), in_sync_bitmap=bitmap(4, range(4)), recovering_region=2
    )
    expected = list("....")
    assert expected == cells(s, 4)


def test_short_bitmaps_read_as_zero():
    """Bitmaps shorter than the region count (Redis drops trailing zero bytes) read as zeros."""
    expected = list("XXXX")
    assert expected == cells(state(32, in_sync=b"", dirty=b""), 4)


def test_padding_bits_are_ignored():
    """Bits past the last region in the final byte change nothing."""
    s = state(10, in_sync=b"\xff\xff", dirty=b"\x00\x3f")
    expected = list("..........")
    assert expected == cells(s, 10)


@pytest.mark.parametrize(("ncells", "expected"), [(1, 1), (0, 1), (-5, 1), (3, 3), (10, 10), (100, 10)])
def test_cell_count(ncells, expected):
    """There is at least one cell and never more cells than regions."""
    assert expected == len(cells(state(10, in_sync=bitmap(10, range(10))), ncells))


def test_uneven_runs():
    """Cells are runs of ceil(regions / cells) regions; the last run may be shorter."""
    # 10 regions in 4 cells: runs of 3 -> [0-2] [3-5] [6-8] [9]; region 9 dirty.
    expected = list("...d")
    assert expected == cells(state(10, in_sync=bitmap(10, range(10)), dirty=bitmap(10, {9})), 4)


def _reference_cells(count: int, in_sync: bytes, dirty: bytes, ncells: int) -> list[str]:
    def bit(bm: bytes, r: int) -> bool:
        return r // 8 < len(bm) and bool(bm[r // 8] & (0x80 >> (r % 8)))

    span = -(-count // max(1, min(ncells, count)))
    out = []
    for start in range(0, count, span):
        run = range(start, min(count, start + span))
        synced = sum(bit(in_sync, r) for r in run)
        if synced == 0:
            out.append("X")
        elif synced < len(run):
            out.append("x")
        elif any(bit(dirty, r) for r in run):
            out.append("d")
        else:
            out.append(".")
    return out


def test_random_bitmaps_match_a_per_bit_reference():
    """On 300 seeded random logs, cells() agrees with a bit-by-bit reading of the MSB-first bitmaps."""
    rng = random.Random(1234)
    for _ in range(300):
        count = rng.randrange(1, 300)
        nbytes = (count + 7) // 8
        # Mostly-set sync bitmaps so that 'd', 'x' and '.' all occur.
        in_sync = bytes(rng.choice([0xFF, 0xFF, 0xFF, rng.randrange(256)]) for _ in range(rng.randrange(nbytes + 1)))
        dirty = bytes(rng.choice([0, 0, 0, rng.randrange(256)]) for _ in range(rng.randrange(nbytes + 1)))
        ncells = rng.randrange(1, 80)
        expected = _reference_cells(count, in_sync, dirty, ncells)
        assert expected == cells(state(count, in_sync=in_sync, dirty=dirty), ncells)


MILLION = 1_000_000


def million_state(out_of_sync: int, dirty: int) -> pb.GetLogStateResponse:
    """A 1,000,000-region log, all in sync but one region, with one dirty region."""
    return state(
        MILLION,
        in_sync=bitmap(MILLION, {out_of_sync}, invert=True),
        dirty=bitmap(MILLION, {dirty}),
        sync_count=MILLION - 1,
        dirty_count=1,
        marks=[pb.RegionMarks(region=dirty, nodes=["node-a", "node-b"])],
        instances=[pb.Instance(node="node-a", boot_id="0123456789abcdef", luid=0xABC,
                               state=pb.INSTANCE_STATE_RESUMED, region_count=MILLION)],
        args=["1024", "nosync"],
    )  # fmt: skip


def test_million_regions_keep_single_regions_visible():
    """In a 1,000,000-region log shown in 1024 cells, one out-of-sync and one dirty region stay visible."""
    actual = cells(million_state(out_of_sync=654_321, dirty=999_999), 1024)
    span = -(-MILLION // 1024)  # 977 regions per cell
    expected = ["."] * 1024
    expected[654_321 // span] = "x"
    expected[999_999 // span] = "d"
    assert expected == actual


def test_million_regions_first_region():
    """Region 0 out of sync and region 1 dirty share the first cell, which shows out of sync."""
    actual = cells(million_state(out_of_sync=0, dirty=1), 1024)
    expected = ["x"] + ["."] * 1023
    assert expected == actual


def test_render_log_million():
    """render_log shows the headline numbers, the map geometry, the marks and the instances."""
    text = render_log(million_state(out_of_sync=654_321, dirty=999_999))
    for expected in [
        "log LVM-test",
        "type dmulog  args 1024 nosync",
        "1000000 regions of 1024 sectors (512 KiB), 488.3 GiB in all",
        "in sync 999999/1000000 (100.0%)",
        "dirty 1",
        "out of sync 1",
        "recovering nothing",
        "map: 1024 cells of 977 regions each",
        "999999:node-a+node-b",
        "luid 0xabc boot 01234567 epoch 0 resumed 1000000 regions",
        LEGEND,
    ]:
        assert expected in text
    rows = [line for line in text.splitlines() if line.rstrip().endswith("|")]
    expected_rows = 16
    assert expected_rows == len(rows)
    assert "x" in "".join(rows)
    assert "d" in rows[-1]


def test_render_log_shows_each_nodes_lease_marks_and_hand_over():
    """Per node: its lease, its instances, its marked regions; then the incarnations handed over in the log."""
    st = million_state(out_of_sync=654_321, dirty=999_999)
    st.fences.append(pb.NodeFence(node="node-c", epoch=4))
    nodes = [
        pb.NodeLease(name="node-a", boot_id="01234567", epoch=9, state=pb.LEASE_STATE_LIVE, renewed_ms_ago=1200,
                     expires_in_ms=8800),
        pb.NodeLease(name="node-c", boot_id="ffff", epoch=4, state=pb.LEASE_STATE_DEAD, renewed_ms_ago=30000),
    ]  # fmt: skip
    text = render_log(st, nodes=nodes)
    for expected in [
        "node-a: epoch 9 live, renewed 1.2 s ago, expires in 8.8 s",
        "node-b: no lease",
        "marked: 1 region (999999)",
        "handed over: node-c epoch 4 (its marked regions turned out of sync; 1 out of sync in the log now), "
        "now epoch 4 dead, handed over, renewed 30.0 s ago",
    ]:
        assert expected in text, text
    listing = render_nodes(nodes)
    assert "node-c" in listing and "dead, handed over" in listing
    assert "no node leases" == render_nodes([])


def test_render_log_recovering_and_no_instances():
    """render_log names the recovering region, node and luid, and says when no instance exists."""
    s = state(64, in_sync=bitmap(64, range(32)), recovering=40, sync_count=32,
              recoverer_node="node-b", recoverer_luid=0xFF00, priority_regions=[40, 41])  # fmt: skip
    text = render_log(s)
    for expected in [
        "64 regions of 1024 sectors (512 KiB), 32 MiB in all",
        "in sync 32/64 (50.0%)",
        "out of sync 32",
        "recovering region 40 on node-b (luid 0xff00)",
        "map: 64 cells of 1 region each",
        "marked regions: none",
        "waiting writers for regions 40, 41",
        "none (persistent state only)",
        "|" + "." * 32 + "X" * 8 + "R" + "X" * 23 + "|",
    ]:
        assert expected in text


def test_render_list():
    """render_list prints one row per log with its type, region count and size, sync, dirty and activity."""
    logs = [
        pb.LogSummary(uuid="LVM-a", log_type="clustered-core", region_size=1024, region_count=2048,
                      sync_count=1024, dirty_count=7, instance_count=2, active_count=1),
        pb.LogSummary(uuid="LVM-b", log_type="dmulog", region_size=8, region_count=0),
    ]  # fmt: skip
    lines = render_list(logs).splitlines()
    expected = 3
    assert expected == len(lines)
    assert lines[0].split() == ["UUID", "TYPE", "REGIONS", "REGION", "IN", "SYNC", "DIRTY", "ACTIVE"]
    expected_a = ["LVM-a", "clustered-core", "2048", "512", "KiB", "1024", "50%", "7", "1/2"]
    assert expected_a == lines[1].split()
    expected_b = ["LVM-b", "dmulog", "0", "4", "KiB", "0", "100%", "0", "0/0"]
    assert expected_b == lines[2].split()


def test_render_list_shows_an_unreadable_log_with_its_reason():
    """A log the service could not read is one row saying so and why; the rows around it are unchanged."""
    logs = [
        pb.LogSummary(uuid="LVM-a", log_type="dmulog", region_size=8, region_count=4, sync_count=4),
        pb.LogSummary(uuid="LVM-bad", problem="region_size is '9.2233720368547758e+18', not an integer"),
    ]
    lines = render_list(logs).splitlines()
    expected = ["LVM-a", "dmulog", "4", "4", "KiB", "4", "100%", "0", "0/0"]
    assert expected == lines[1].split()
    assert "LVM-bad" + " " * 34 + "unreadable: region_size is '9.2233720368547758e+18', not an integer" == lines[2]


def test_render_list_empty():
    """render_list of no logs says so."""
    expected = "no logs"
    assert expected == render_list([])


def test_zero_region_log_has_no_cells():
    """A log with no regions has an empty picture rather than crashing."""
    expected: list[str] = []
    assert expected == cells(state(0, in_sync=b""), 1024)


def test_render_log_zero_regions():
    """render_log of a log with no regions still prints its headline (100% in sync)."""
    assert "in sync 0/0 (100.0%)" in render_log(state(0, in_sync=b""))
