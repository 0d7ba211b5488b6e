"""The health judges on their own: the bridge's from its inputs, logsvc's replies classified."""

from __future__ import annotations

import asyncio

import grpc
from redis import exceptions as rexc

from bridge.health import BridgeHealth
from bridge.lease import LeaseKeeper
from dmulog.v1 import dmulog_pb2 as pb
from logsvc.health import _failure, _missing, probe_commands


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Judged = tuple[BridgeHealth, LeaseKeeper, Clock, list[grpc.ChannelConnectivity]]


def judge() -> Judged:
    """A BridgeHealth on a real LeaseKeeper (no stub: nothing is called) and a channel state the test sets."""
    clock, states = Clock(), [grpc.ChannelConnectivity.READY]
    keeper = LeaseKeeper(None, pb.Node(name="n", boot_id="b"), clock=clock)  # type: ignore[arg-type]
    return BridgeHealth(keeper, lambda: states[0], clock=clock, recent=5.0), keeper, clock, states


def test_each_input_alone_makes_it_not_serving() -> None:
    """Joined, reachable and leased: SERVING; take away any one and it says which."""
    h, keeper, clock, states = judge()
    assert h.problem() == "kernel socket not joined to the connector group"
    h.joined = True
    assert h.problem() == "no lease yet"
    keeper.node.epoch, keeper.ttl, keeper.renewed_at = 3, 10.0, clock.now
    keeper.ready.set()
    assert h.problem() is None
    states[0] = grpc.ChannelConnectivity.TRANSIENT_FAILURE
    assert h.problem() is None  # a renewal 0 s ago: reachable a moment ago
    clock.now += 5.0
    assert "logsvc unreachable (channel TRANSIENT_FAILURE" in (h.problem() or "")
    states[0] = grpc.ChannelConnectivity.READY
    clock.now += 5.0
    assert h.problem() == "lease of epoch 3 not renewed in time"


def test_without_leases_only_join_and_channel_count() -> None:
    """A logsvc run with leases off (epoch 0): no lease to expire."""
    h, keeper, clock, _ = judge()
    h.joined = True
    keeper.ready.set()
    clock.now += 1000
    assert h.problem() is None


def test_the_status_changes_once_per_transition() -> None:
    """check() reports the judgement; a repeated one changes nothing."""
    h, keeper, _, _ = judge()

    async def go() -> list[bool]:
        got = [await h.check()]
        h.joined = True
        keeper.ready.set()
        got += [await h.check(), await h.check()]
        return got

    assert asyncio.run(go()) == [False, True, True]
    assert h.reason == "joined, logsvc reachable, lease held"


def test_probe_replies_classified() -> None:
    """Only "Function not found" is a missing library (what store.fcall reloads on); ENOENT is a function that ran."""
    assert _missing(rexc.ResponseError("Function not found"))
    assert not _missing(rexc.ResponseError("ENOENT no log health-probe"))
    assert _failure([rexc.ResponseError("ENOENT no log x"), [[], [], 1], []]) is None
    why = _failure([rexc.ResponseError("ENOENT no log x"), rexc.NoPermissionError("NOPERM no"), []])
    assert why is not None and why.startswith("dmulog_leases_list: NoPermissionError")


def test_probe_keys_share_one_slot_and_no_log_key() -> None:
    """One hash tag (one Cluster slot) for every probe key, under the prefix the ACL grants, never a log's key."""
    commands = probe_commands("dmulog", "health:7")
    assert [c[1] for c in commands] == ["dmulog_v4_state", "dmulog_leases_list", "dmulog_tenants_names"]
    keys = [k for c in commands for k in c[3 : 3 + int(c[2])]]
    assert all(str(k).startswith("dmulog:{health:7}:probe:") for k in keys)
