"""Tests of logsvc/snapshot.py: raw Function replies to API messages, and what it makes of a reply it cannot read."""

from __future__ import annotations

import json

import pytest

from dmulog.v1 import dmulog_pb2 as pb
from logsvc.errors import Unreadable
from logsvc.snapshot import log_state, log_summary

# A Lua number the size of 2^63, as Redis stores it in a hash (%.17g): what an
# older version wrote for a region size of 2^63.
POISON = b"9.2233720368547758e+18"


def _inst(**over: object) -> bytes:
    d = {"node": "node-a", "boot": "boot-1", "luid": "42", "state": "resumed", "ts": "120", "rc": "8", **over}
    return json.dumps(d).encode()


def _meta(**over: bytes) -> list[bytes]:
    fields = {"type": b"dmulog", "region_size": b"16", "region_count": b"8", "sync_count": b"6",
              "args": b"dmulog 16 nosync", **over}  # fmt: skip
    return [x for k, v in fields.items() for x in (k.encode(), v)]


def _state_raw(meta: list[bytes], inst: bytes | None = None) -> list[object]:
    return [meta, [b"node-a/42", inst or _inst()], b"\xfc", b"\x40", [b"1", b"node-a"], [b"3"], 1]


def test_summary_of_a_readable_log():
    """The summary function's reply becomes the headline numbers, with no problem."""
    summary = log_summary("LVM-a", [_meta(), [_inst()], 1])
    expected = pb.LogSummary(uuid="LVM-a", log_type="dmulog", region_size=16, region_count=8, sync_count=6,
                             dirty_count=1, instance_count=1, active_count=1)  # fmt: skip
    assert expected == summary


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param([_meta(region_size=POISON), [], 0], "region_size is '9.2233720368547758e+18', not an integer",
                     id="region-size-as-a-lua-float"),
        pytest.param([_meta(sync_count=b"many"), [], 0], "sync_count is 'many', not an integer", id="sync-count"),
        pytest.param([_meta(region_count=b"-1"), [], 0], "ValueError: ", id="negative-for-a-uint64"),
        pytest.param([_meta(), [b"{not json"], 0], "instance record '{not json' does not parse (JSONDecodeError",
                     id="instance-not-json"),
        pytest.param([_meta(), [_inst(rc="1e3")], 0], "instance region count is '1e3', not an integer",
                     id="instance-region-count"),
        pytest.param([_meta(), [json.dumps({"node": "a"}).encode()], 0], "does not parse (KeyError: 'boot')",
                     id="instance-missing-key"),
        pytest.param([_meta()], "ValueError: not enough values to unpack", id="reply-of-the-wrong-shape"),
    ],
)  # fmt: skip
def test_summary_of_an_unreadable_log_says_why_instead_of_raising(raw, problem):
    """One log whose stored state does not parse is a summary with only its uuid and the reason."""
    summary = log_summary("LVM-bad", raw)
    assert problem in summary.problem
    assert pb.LogSummary(uuid="LVM-bad", problem=summary.problem) == summary


def test_state_of_a_readable_log():
    """The state function's reply becomes the whole state: marks, priority regions, instances, args."""
    state = log_state("LVM-a", _state_raw(_meta()))
    assert (16, 8, 1) == (state.summary.region_size, state.summary.region_count, state.summary.dirty_count)
    assert ([pb.RegionMarks(region=1, nodes=["node-a"])], [3]) == (list(state.marks), list(state.priority_regions))
    assert (["16", "nosync"], [42]) == (list(state.args), [i.luid for i in state.instances])


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param(_state_raw(_meta(region_size=POISON)), "region_size is '9.2233720368547758e+18', not an integer",
                     id="region-size-as-a-lua-float"),
        pytest.param(_state_raw(_meta(sync_search=b"x")), "sync_search is 'x', not an integer", id="sync-search"),
        pytest.param(_state_raw(_meta(), _inst(luid="0x2a")), "instance luid is '0x2a', not an integer",
                     id="instance-luid"),
    ],
)  # fmt: skip
def test_state_of_an_unreadable_log_is_data_loss_with_the_reason(raw, problem):
    """GetLogState of such a log fails Unreadable (DATA_LOSS) saying what did not parse, not an internal error."""
    with pytest.raises(Unreadable) as e:
        log_state("LVM-bad", raw)
    assert str(e.value).startswith("log state unreadable: ")
    assert problem in str(e.value)
