"""The log semantics, through the real gRPC API and a real Redis."""

from __future__ import annotations

import grpc
import pytest

from dmulog.v1 import dmulog_pb2 as pb
from harness.log_handle import LogHandle, dirty, out_of_sync
from harness.redis_keys import keys_left, set_log_field
from harness.servers import RedisProcess

# 8 regions of 16 sectors; the last one is partial (120 sectors in all).
SECTORS, RS, RC = 120, 16, 8


async def code_of(coro: object) -> grpc.StatusCode:
    """The status a call fails with (fails the test if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await coro  # type: ignore[misc]
    return e.value.code()


async def test_ctr_reports_region_size_and_geometry(log: LogHandle) -> None:
    """CTR accepts a cmirrord core table and GET_REGION_SIZE returns its region size."""
    assert (await log.ctr(SECTORS, "clustered-core", str(RS))).device == ""
    assert await log.region_size() == RS
    state = await log.state()
    assert (state.summary.region_count, state.summary.region_size, state.summary.log_type) == (RC, RS, "clustered-core")


@pytest.mark.parametrize(
    ("log_type", "args", "message"),
    [
        ("clustered-core", ["3"], "power of two"),
        ("clustered-core", ["0"], "power of two"),
        ("clustered-core", ["1"], "power of two"),
        ("clustered-core", ["256"], "larger than the target"),
        ("clustered-core", ["0x10"], "plain decimal"),
        ("clustered-core", [], "needs a region size"),
        ("clustered-core", ["16", "fast"], "unknown clustered-core argument"),
        ("clustered-core", ["16", "sync", "nosync"], "exclude each other"),
        ("clustered-disk", ["16"], "needs a log device"),
        ("dmulog", ["16", "block_on_error"], "unknown dmulog argument"),
        ("core", ["16"], "unknown log type"),
    ],
)
async def test_ctr_rejects_bad_arguments_and_leaves_nothing(
    log: LogHandle, log_type: str, args: list[str], message: str
) -> None:
    """A malformed constructor gets INVALID_ARGUMENT naming the problem, and no key is written."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await log.ctr(SECTORS, log_type, *args)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in e.value.details()
    assert await code_of(log.state()) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("sectors", "log_type", "args", "message"),
    [
        pytest.param(2**33, "dmulog", [str(2**32)], "region size 4294967296 exceeds the kernel's limit of 2147483648",
                     id="region-size-2^32"),
        pytest.param(2**64 - 1, "dmulog", [str(2**63)], "target length 18446744073709551615 exceeds the limit",
                     id="target-u64-max-region-2^63"),
        pytest.param(2**53, "dmulog", [str(2**31)], "target length 9007199254740992 exceeds the limit of "
                     "9007199254740991 sectors", id="target-2^53"),
        pytest.param(SECTORS, "clustered-disk", ["/dev/" + "x" * 256, "16"], "is not at most 127 ASCII bytes",
                     id="device-path-component-over-255"),
        pytest.param(SECTORS, "clustered-disk", ["9" * 200 + ":1", "16"], "is not at most 127 ASCII bytes",
                     id="device-of-200-digits"),
        pytest.param(SECTORS, "clustered-disk", ["4096:0", "16"], "does not fit the kernel's dev_t",
                     id="device-major-2^12"),
        pytest.param(SECTORS, "clustered-disk", ["/dev/vg/l\u00f6g", "16"], "is not at most 127 ASCII bytes",
                     id="device-not-ascii"),
    ],
)  # fmt: skip
async def test_ctr_refuses_what_the_kernel_or_lua_cannot_hold_and_leaves_no_key(
    log: LogHandle, redis: RedisProcess, sectors: int, log_type: str, args: list[str], message: str
) -> None:
    """A number the kernel truncates or Lua rounds, or a device name the kernel cannot take: refused, nothing kept."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await log.ctr(sectors, log_type, *args)
    assert (grpc.StatusCode.INVALID_ARGUMENT, True) == (e.value.code(), message in (e.value.details() or ""))
    assert [] == await keys_left(redis.url, log.log.uuid)


async def test_largest_region_size_the_kernel_holds(log: LogHandle) -> None:
    """2^31 sectors, the largest power of two in the kernel's u32 region size, is accepted and answered as such."""
    await log.ctr(2**33, "dmulog", str(2**31), "nosync")
    assert 2**31 == await log.region_size()
    summary = (await log.state()).summary
    assert (2**31, 4) == (summary.region_size, summary.region_count)


# What an older version stored for a region size of 2^63: Redis writes a Lua number with %.17g.
POISON = b"9.2233720368547758e+18"


async def test_one_unreadable_log_is_flagged_and_hides_no_other(log: LogHandle, redis: RedisProcess) -> None:
    """ListLogs lists a log whose state does not parse with its reason next to the others; its state is DATA_LOSS."""
    await log.ctr(SECTORS, "dmulog", "16", "nosync")
    bad = LogHandle(log.stub, log.log.uuid + "-poisoned")
    await bad.ctr(SECTORS, "dmulog", "16")
    await set_log_field(redis.url, bad.log.uuid, "region_size", POISON)
    listing = {s.uuid: s for s in (await log.stub.ListLogs(pb.ListLogsRequest())).logs}
    good = listing[log.log.uuid]
    assert (RS, RC, RC, "") == (good.region_size, good.region_count, good.sync_count, good.problem)
    expected = pb.LogSummary(uuid=bad.log.uuid, problem="region_size is '9.2233720368547758e+18', not an integer")
    assert expected == listing[bad.log.uuid]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await bad.state()
    assert grpc.StatusCode.DATA_LOSS == e.value.code()
    assert "log state unreadable: region_size is '9.2233720368547758e+18', not an integer" == e.value.details()
    assert RS == (await log.state()).summary.region_size
    await bad.dtr()  # a log never activated goes with its last table, unreadable or not
    assert [] == await keys_left(redis.url, bad.log.uuid)


async def test_ctr_is_idempotent_but_refuses_other_arguments(log: LogHandle) -> None:
    """A repeated CTR (the kernel's replay) succeeds; other arguments for the same instance are ALREADY_EXISTS."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.mark(2)
    await log.ctr(SECTORS, "clustered-core", "16")
    assert [m.region for m in (await log.state()).marks] == [2]
    assert await code_of(log.ctr(SECTORS, "clustered-core", "32")) == grpc.StatusCode.ALREADY_EXISTS


async def test_ctr_of_clustered_disk_returns_the_device(log: LogHandle) -> None:
    """clustered-disk hands its device back so the kernel can reference it."""
    assert (await log.ctr(SECTORS, "clustered-disk", "253:2", "16")).device == "253:2"


async def test_clustered_disk_names_its_device_by_the_node_s_numbers(log: LogHandle) -> None:
    """With the node's major:minor for the device path, CTR hands the numbers back and the status shows them."""
    reply = await log.ctr(SECTORS, "clustered-disk", "/dev/vg/mlog", "16", block_devices={"/dev/vg/mlog": "253:7"})
    assert "253:7" == reply.device
    assert "3 clustered-disk 253:7 A" == await log.status_info()
    assert "clustered-disk 253:7 16  " == await log.status_table()
    assert ["/dev/vg/mlog", "16"] == list((await log.state()).args)  # the table's words are kept as given


async def test_clustered_disk_without_the_node_s_numbers_shows_the_device_as_given(log: LogHandle) -> None:
    """A caller that reports nothing (an older bridge) gets the table's word back, as before."""
    assert "/dev/vg/mlog" == (await log.ctr(SECTORS, "clustered-disk", "/dev/vg/mlog", "16")).device
    assert "3 clustered-disk /dev/vg/mlog A" == await log.status_info()


async def test_clustered_disk_device_missing_on_the_node_is_refused_and_leaves_nothing(log: LogHandle) -> None:
    """The kernel would drop the table after CTR without a DTR; refusing the CTR leaves no orphan instance."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await log.ctr(SECTORS, "clustered-disk", "/dev/nonexistent", "16", block_devices={"/dev/nonexistent": ""})
    assert grpc.StatusCode.INVALID_ARGUMENT == e.value.code()
    assert "/dev/nonexistent is not a block device on the calling node" in (e.value.details() or "")
    assert grpc.StatusCode.NOT_FOUND == await code_of(log.state())


@pytest.mark.parametrize(("log_type", "args"), [("dmulog", ["16"]), ("clustered-disk", ["253:2", "16", "nosync"])])
async def test_persistent_log_never_activated_goes_with_its_last_table(
    log: LogHandle, log_type: str, args: list[str]
) -> None:
    """A table the kernel refuses after CTR (bad leg, wrong leg count) gets DTR before any RESUME: nothing stays."""
    await log.ctr(SECTORS, log_type, *args)
    await log.dtr()
    assert grpc.StatusCode.NOT_FOUND == await code_of(log.state())
    listing = await log.stub.ListLogs(pb.ListLogsRequest())
    assert [] == [s.uuid for s in listing.logs if s.uuid == log.log.uuid]


async def test_never_activated_log_stays_while_another_table_or_a_mark_holds_it(log: LogHandle) -> None:
    """Only the last table of a never-activated log takes it along, and never one with marks (when in doubt, dirty)."""
    other = log.other(luid=0x77)
    await log.ctr(SECTORS, "dmulog", "16", "nosync")
    await other.ctr(SECTORS, "dmulog", "16", "nosync")
    await log.dtr()
    assert [other.log.luid] == [i.luid for i in (await other.state()).instances]
    await other.mark(3)
    await other.dtr()
    assert [3] == dirty(await log.state())


async def test_requests_for_an_unknown_instance_are_not_found(log: LogHandle) -> None:
    """Every per-instance request on an unknown (uuid, luid) is NOT_FOUND, so the kernel replays CTR."""
    calls = [log.resume(), log.presuspend(), log.postsuspend(), log.region_size(), log.is_clean(0), log.in_sync(0),
             log.flush(), log.mark(0), log.clear(0), log.resync_work(), log.set_sync(0), log.sync_count(),
             log.status_info(), log.status_table(), log.remote_recovering(0)]  # fmt: skip
    for call in calls:
        assert await code_of(call) == grpc.StatusCode.NOT_FOUND
    await log.dtr()  # DTR of an unknown instance is harmless: its result is ignored anyway


async def test_region_out_of_range_is_rejected_and_changes_nothing(log: LogHandle) -> None:
    """Region == region count is INVALID_ARGUMENT for every region request, and a bad batch changes nothing."""
    await log.ctr(SECTORS, "dmulog", "16", "nosync")
    await log.resume()
    before = await log.state()
    for call in [log.is_clean(RC), log.in_sync(RC), log.mark(1, RC), log.clear(1, RC), log.flush(1, RC),
                 log.set_sync(RC, False), log.remote_recovering(RC), log.mark(2**64 - 1)]:  # fmt: skip
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    assert before == await log.state()


async def test_bad_request_shapes_are_invalid_argument(log: LogHandle) -> None:
    """Missing log or node, a bad node name, an empty or huge batch: INVALID_ARGUMENT with a message."""
    stub = log.stub
    assert await code_of(stub.Resume(pb.ResumeRequest(node=log.node))) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(stub.Resume(pb.ResumeRequest(log=log.log))) == grpc.StatusCode.INVALID_ARGUMENT
    bad_node = log.other(node="no spaces")
    assert await code_of(bad_node.resume()) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(log.mark()) == grpc.StatusCode.INVALID_ARGUMENT
    assert await code_of(log.mark(*range(4097))) == grpc.StatusCode.INVALID_ARGUMENT
    no_uuid = LogHandle(stub, "")
    assert await code_of(no_uuid.resume()) == grpc.StatusCode.INVALID_ARGUMENT


async def test_core_log_resyncs_everything_once_one_region_at_a_time(log: LogHandle) -> None:
    """A default core log starts out of sync and hands out each region once, in order, one at a time."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    assert await log.sync_count() == 0
    assert not await log.in_sync(0)
    assert await log.resync_work() == 0
    assert await log.resync_work() == 0  # the kernel asking again gets the same region
    other = log.other(luid=7, node="node-b")
    await other.ctr(SECTORS, "clustered-core", "16")
    await other.resume()
    assert await other.resync_work() is None  # one recovery at a time per log
    await log.set_sync(0)
    assert await log.resync_all() == [1, 2, 3, 4, 5, 6, 7]
    assert await log.sync_count() == RC
    assert await log.resync_work() is None
    assert await log.remote_recovering(3) == (False, RC)


async def test_nosync_starts_in_sync_and_clean(log: LogHandle) -> None:
    """nosync: every region in sync and clean, no resync work, and the hint says all in sync."""
    await log.ctr(SECTORS, "clustered-core", "16", "nosync")
    await log.resume()
    assert await log.sync_count() == RC
    assert all([await log.in_sync(r) for r in range(RC)])
    assert all([await log.is_clean(r) for r in range(RC)])
    assert await log.resync_work() is None
    assert await log.remote_recovering(0) == (False, RC)


async def test_a_region_is_clean_only_when_no_node_has_it_marked(log: LogHandle) -> None:
    """Marks are per node: a region stays dirty until every node that marked it has cleared it."""
    await log.ctr(SECTORS, "clustered-core", "16", "nosync")
    await log.resume()
    b = log.other(luid=9, node="node-b")
    await b.ctr(SECTORS, "clustered-core", "16", "nosync")
    await b.resume()
    await log.mark(3)
    await b.flush(3)  # integrated flush carries marks
    await log.mark(3)  # a duplicate mark changes nothing
    assert [pb.RegionMarks(region=3, nodes=["node-a", "node-b"])] == list((await log.state()).marks)
    await log.clear(3)
    assert not await log.is_clean(3)
    await b.clear(3)
    assert await log.is_clean(3)
    assert list((await log.state()).marks) == []


async def test_clear_never_cleans_a_region_that_is_out_of_sync(log: LogHandle) -> None:
    """Clean but out of sync would come back in sync after a crash, so CLEAR leaves such a region dirty."""
    await log.ctr(SECTORS, "dmulog", "16", "nosync")
    await log.resume()
    await log.mark(5)
    await log.set_sync(5, False)  # a write failed on one leg
    await log.clear(5)
    assert not await log.is_clean(5)
    assert dirty(await log.state()) == [5]


async def test_in_sync_latch_keeps_answering_in_sync_until_resume(log: LogHandle) -> None:
    """After the log completes sync, IN_SYNC answers 1 until the instance resumes again (cmirrord's latch)."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.resync_all()
    await log.set_sync(4, False)
    assert await log.in_sync(4)
    assert await log.sync_count() == RC - 1
    await log.suspend()
    await log.resume()
    assert not await log.in_sync(4)


async def test_in_sync_says_when_its_answer_is_the_latch(log: LogHandle) -> None:
    """InSyncResponse.latched is true exactly while the latch answers, so a client may answer from it.

    Another node clearing bits does not end it; this instance's suspend, resume
    and destruction do (a presuspended instance still writes, and stays latched).
    """
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.set_sync(await log.resync_work())  # region 0 in sync, the log is not
    assert (True, False) == await log.in_sync_latched(0)
    assert (False, False) == await log.in_sync_latched(1)
    await log.resync_all()
    assert (True, True) == await log.in_sync_latched(1)
    other = log.other(node="node-b", boot="b-1")
    await other.ctr(SECTORS, "clustered-core", "16")
    await other.resume()
    await other.set_sync(4, False)  # a leg failed on node-b
    assert (True, True) == await log.in_sync_latched(4)
    assert (False, False) == await other.in_sync_latched(4)  # node-b resumed after the log completed
    await log.presuspend()
    assert (True, True) == await log.in_sync_latched(4)
    await log.postsuspend()
    assert (False, False) == await log.in_sync_latched(4)
    await log.resume()
    assert (False, False) == await log.in_sync_latched(4)
    assert (True, False) == await log.in_sync_latched(3)
    await log.set_sync(4, True)
    assert (True, True) == await log.in_sync_latched(4)
    await log.dtr()
    assert await code_of(log.in_sync_latched(4)) == grpc.StatusCode.NOT_FOUND


async def test_core_log_keeps_its_bits_across_suspend_and_resume(log: LogHandle) -> None:
    """Like the kernel's core log, a suspended and resumed table keeps its sync bits; the cursor restarts."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.set_sync(await log.resync_work())  # region 0
    await log.suspend()
    await log.resume()
    assert await log.sync_count() == 1
    assert await log.resync_work() == 1


async def test_replayed_resume_keeps_state(log: LogHandle) -> None:
    """A RESUME of an already active instance (the kernel's reconnect loop) changes no bit."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.resync_all()
    await log.mark(1)
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    assert await log.sync_count() == RC
    assert [m.region for m in (await log.state()).marks] == [1]


async def test_persistent_log_resyncs_exactly_the_dirty_regions_after_a_crash(log: LogHandle) -> None:
    """Dmulog type: after the node reboots, marked regions are out of sync and clean ones are not resynced."""
    await log.ctr(SECTORS, "dmulog", "16")
    await log.resume()
    await log.resync_all()
    await log.mark(2, 6)
    await log.flush()
    # The node crashes: a new boot constructs a new instance (new luid).
    rebooted = log.other(luid=0x1234, boot="boot-2")
    await rebooted.ctr(SECTORS, "dmulog", "16")
    assert out_of_sync(await log.state()) == [2, 6]
    await rebooted.resume()
    assert out_of_sync(await log.state()) == [2, 6]
    assert await rebooted.resync_all() == [2, 6]
    assert dirty(await log.state()) == []
    assert await code_of(log.in_sync(0)) == grpc.StatusCode.NOT_FOUND  # the old boot's instance is gone


async def test_persistent_log_survives_dtr_and_applies_the_disk_rule(log: LogHandle) -> None:
    """Dmulog type: state outlives every table; reactivation marks dirty regions out of sync."""
    await log.ctr(SECTORS, "dmulog", "16")
    await log.resume()
    await log.resync_all()
    await log.mark(7)
    await log.suspend()
    await log.dtr()
    again = log.other(luid=0x99)
    await again.ctr(SECTORS, "dmulog", "16")
    await again.resume()
    assert out_of_sync(await again.state()) == [7]


async def test_core_log_state_goes_with_its_last_table(log: LogHandle) -> None:
    """clustered-core: the last DTR removes the log."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.suspend()
    await log.dtr()
    assert await code_of(log.state()) == grpc.StatusCode.NOT_FOUND


async def test_explicit_sync_on_a_persistent_log_resyncs_everything(log: LogHandle) -> None:
    """As in the kernel disk log, an explicit 'sync' treats the log as new at every resume."""
    await log.ctr(SECTORS, "dmulog", "16", "sync")
    await log.resume()
    await log.resync_all()
    await log.suspend()
    await log.resume()
    assert await log.sync_count() == 0


async def test_table_reload_to_a_larger_target_resyncs_only_the_new_regions(log: LogHandle) -> None:
    """A reload (new luid, same UUID) that grows the target makes only the added regions out of sync."""
    await log.ctr(SECTORS, "dmulog", "16")
    await log.resume()
    await log.resync_all()
    new = log.other(luid=0x2000)
    await new.ctr(SECTORS + 64, "dmulog", "16")  # 12 regions; the old table is still live
    await log.suspend()
    await new.resume()
    await log.dtr()
    state = await new.state()
    assert (state.summary.region_count, out_of_sync(state)) == (12, [8, 9, 10, 11])
    assert await new.resync_all() == [8, 9, 10, 11]


async def test_other_node_with_other_geometry_is_refused(log: LogHandle) -> None:
    """A second node cannot join an active log with another region size: FAILED_PRECONDITION."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    b = log.other(luid=5, node="node-b")
    assert await code_of(b.ctr(SECTORS, "clustered-core", "32")) == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_second_node_joins_without_resetting_the_log(log: LogHandle) -> None:
    """A node that resumes while another is active shares the bits as they are."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.resync_all()
    b = log.other(luid=5, node="node-b")
    await b.ctr(SECTORS, "clustered-core", "16")
    await b.resume()
    assert await b.sync_count() == RC


async def test_remote_recovering_prioritises_regions_writers_wait_for(log: LogHandle) -> None:
    """IS_REMOTE_RECOVERING on an out-of-sync region puts it first in line for recovery."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    assert await log.remote_recovering(6) == (True, 0)
    assert await log.resync_work() == 6
    await log.set_sync(6)
    assert await log.resync_work() == 0
    await log.set_sync(0)
    # In sync now: 0 and 6, so every region below 1 (the hint).
    assert await log.remote_recovering(6) == (False, 1)


async def two_active_nodes(log: LogHandle) -> LogHandle:
    """``log`` and a second node's instance of the same clustered-core log, both resumed; the second."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    b = log.other(luid=5, node="node-b")
    await b.ctr(SECTORS, "clustered-core", "16")
    await b.resume()
    return b


async def test_remote_recovering_and_its_priority_work_between_nodes(log: LogHandle) -> None:
    """One recovery at a time across nodes; a write on one node waits for the other's recovery and goes first."""
    b = await two_active_nodes(log)
    assert await b.resync_work() == 0  # node b recovers region 0 ...
    assert await log.resync_work() is None  # ... and so nobody else recovers anything meanwhile
    assert await log.remote_recovering(0) == (True, 0)  # node a's write to 0 waits for node b's recovery
    assert await log.remote_recovering(6) == (True, 0)  # and its write to 6 puts 6 first in line
    await b.set_sync(0)
    assert await b.resync_work() == 6
    await b.set_sync(6)
    assert await log.remote_recovering(0) == (False, 1)
    assert await log.resync_work() == 1  # the queue is free again, for either node


async def test_presuspended_instance_stops_recovery(log: LogHandle) -> None:
    """Between PRESUSPEND and RESUME an instance gets no resync work and no write is delayed."""
    await log.ctr(SECTORS, "clustered-core", "16")
    await log.resume()
    await log.presuspend()
    assert await log.resync_work() is None
    assert await log.remote_recovering(3) == (False, RC)


async def test_postsuspend_gives_up_the_recovery_assignment(log: LogHandle) -> None:
    """A suspended recoverer frees its region for another node."""
    b = await two_active_nodes(log)
    assert await log.resync_work() == 0
    await log.suspend()
    assert await b.resync_work() == 0


async def test_status_texts(log: LogHandle) -> None:
    """STATUS_INFO and STATUS_TABLE read as cmirrord's."""
    await log.ctr(SECTORS, "clustered-disk", "253:2", "16", "nosync")
    assert await log.status_info() == "3 clustered-disk 253:2 A"
    assert await log.status_table() == "clustered-disk 253:2 16 nosync  "


async def test_list_logs_and_state(log: LogHandle) -> None:
    """ListLogs finds the log; GetLogState shows instances, marks and recovery."""
    await log.ctr(SECTORS, "dmulog", "16", "nosync")
    await log.resume()
    await log.mark(1)
    await log.set_sync(2, False)
    assert await log.resync_work() == 2
    listing = await log.stub.ListLogs(pb.ListLogsRequest())
    mine = [s for s in listing.logs if s.uuid == log.log.uuid]
    assert len(mine) == 1
    assert (mine[0].sync_count, mine[0].dirty_count, mine[0].instance_count, mine[0].active_count) == (RC - 1, 2, 1, 1)
    state = await log.state()
    assert (True, 2, "node-a", log.log.luid) == (
        state.recovering,
        state.recovering_region,
        state.recoverer_node,
        state.recoverer_luid,
    )
    assert [i.state for i in state.instances] == [pb.INSTANCE_STATE_RESUMED]
    assert list(state.args) == ["16", "nosync"]
