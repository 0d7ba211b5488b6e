"""Bulk work done in bounded steps ends in exactly the state one step would have left.

Against a real redis-server and logsvc: a reap and a last DTR of more marks than one
call handles, a table grown and one shrunk at the largest size (each bitmap pass a
call of its own), requests that meet a log with work pending, a log stored by the
previous schema, and the calls of services that predate deadlines.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis as redis_sync

from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, dirty, out_of_sync
from harness.servers import RedisProcess, logsvc_server
from logsvc.errors import PendingWork
from logsvc.keys import log_keys
from logsvc.store import Store, library_code

MARKS = 3000  # about three calls' worth of per-region work
BIG = 1 << 28
SCHEMA_1 = Path(__file__).parent / "fixtures" / "dmulog-schema1.lua"
"""The library as it was before jobs, kept to write a log the way that version did."""


@pytest.fixture
def r(redis: RedisProcess) -> redis_sync.Redis:
    """A plain client on the session Redis, to look at the bits themselves."""
    return redis_sync.Redis(port=redis.port)


def bits(r: redis_sync.Redis, uuid: str, name: str, start: int, end: int) -> int:
    """Ones among bits start..end-1 of the log's ``sync`` or ``dirty`` bitmap."""
    return int(r.execute_command("BITCOUNT", getattr(log_keys(uuid), name), start, end - 1, "BIT"))


def counts(r: redis_sync.Redis, uuid: str) -> tuple[int, int, bool]:
    """(sync_count, dirty_count, whether jobs are pending) as the log hash says."""
    sync, dirtyc, jobs = r.hmget(log_keys(uuid).log, "sync_count", "dirty_count", "jobs")
    return int(sync), int(dirtyc), jobs is not None


async def test_a_new_boot_reaps_more_marks_than_one_call_handles(log: LogHandle, r: redis_sync.Redis) -> None:
    """Every region the old boot had marked ends dirty and out of sync; another node's mark stays."""
    await log.ctr(4096 * 8, "dmulog", "8", "nosync")
    await log.resume()
    other = log.other(node="node-b", luid=9)
    await other.ctr(4096 * 8, "dmulog", "8", "nosync")
    await other.resume()
    for start in range(0, MARKS, 1000):
        await log.mark(*range(start, start + 1000))
    await other.mark(5, 3500)
    rebooted = log.other(boot="boot-2", luid=2)
    await rebooted.ctr(4096 * 8, "dmulog", "8", "nosync")
    state = await log.state()
    assert list(range(MARKS)) == out_of_sync(state)
    assert [*range(MARKS), 3500] == dirty(state)
    assert [(5, ["node-b"]), (3500, ["node-b"])] == [(m.region, list(m.nodes)) for m in state.marks]
    assert (4096 - MARKS, MARKS + 1, False) == counts(r, log.log.uuid)
    assert 2 == int(r.zcard(log_keys(log.log.uuid).nodemarks))


async def test_a_node_s_last_dtr_drops_more_marks_than_one_call_handles(log: LogHandle, r: redis_sync.Redis) -> None:
    """The marks go, the dirty bits stay (the next activation resyncs them), the other node's mark stays."""
    await log.ctr(4096 * 8, "dmulog", "8", "nosync")
    await log.resume()
    other = log.other(node="node-b", luid=9)
    await other.ctr(4096 * 8, "dmulog", "8", "nosync")
    await other.resume()
    for start in range(0, MARKS, 1000):
        await log.mark(*range(start, start + 1000))
    await other.mark(7)
    await log.suspend()
    await log.dtr()
    state = await other.state()
    assert [(7, ["node-b"])] == [(m.region, list(m.nodes)) for m in state.marks]
    assert (list(range(MARKS)), []) == (dirty(state), out_of_sync(state))
    assert (4096, MARKS, False) == counts(r, log.log.uuid)


async def test_a_table_grown_to_the_largest_size(log: LogHandle, r: redis_sync.Redis) -> None:
    """A persistent table grown from 2^27 to 2^28 regions: the new ones dirty and out of sync, the rest as they were."""
    uuid, half = log.log.uuid, BIG // 2
    await log.ctr(half * 8, "dmulog", "8", "nosync")
    await log.resume()
    await log.mark(3, half - 1)
    await log.suspend()
    await log.dtr()
    grown = log.other(luid=2)
    await grown.ctr(BIG * 8, "dmulog", "8")
    await grown.resume()
    assert (2, half) == (bits(r, uuid, "dirty", 0, half), bits(r, uuid, "dirty", half, BIG))
    assert (half - 2, 0) == (bits(r, uuid, "sync", 0, half), bits(r, uuid, "sync", half, BIG))
    assert (0, 1) == (await grown.in_sync(3), await grown.in_sync(4))
    assert (half - 2, half + 2, False) == counts(r, uuid)


async def test_a_table_shrunk_from_the_largest_size(log: LogHandle, r: redis_sync.Redis) -> None:
    """A persistent table shrunk from 2^28 to 2^27 regions: the dropped regions leave the bits and the counts."""
    uuid, half = log.log.uuid, BIG // 2
    await log.ctr(BIG * 8, "dmulog", "8", "nosync")
    await log.resume()
    await log.mark(1, half + 5)
    await log.suspend()
    await log.dtr()
    shrunk = log.other(luid=2)
    await shrunk.ctr(half * 8, "dmulog", "8")
    await shrunk.resume()
    assert (1, 0) == (bits(r, uuid, "dirty", 0, half), bits(r, uuid, "dirty", half, BIG))
    assert half - 1 == bits(r, uuid, "sync", 0, half)
    assert (half - 1, 1, False) == counts(r, uuid)


async def test_a_request_meeting_pending_work_waits_for_it(redis: RedisProcess, log: LogHandle) -> None:
    """A read of a log with work pending is never answered from the middle of it: the store finishes it first."""
    await log.ctr(BIG * 8, "dmulog", "8", "nosync")  # a new log: its bitmaps are filled a pass per call
    store = Store.from_url(redis.url)
    caller = (log.node.name, log.node.boot_id, str(log.log.luid), 0)
    try:
        keys = log_keys(log.log.uuid)
        await store.redis.hset(keys.log, "jobs", json.dumps([{"kind": "fill", "key": "sync", "bits": BIG,
                                                              "one": True}]))  # fmt: skip
        with pytest.raises(PendingWork):
            await store._fcall("in_sync", log.log.uuid, [*caller, 0, 7], True)
        assert 1 == await store.call("in_sync", log.log.uuid, caller, [7], readonly=True)
        assert None is await store.redis.hget(keys.log, "jobs")
    finally:
        await store.close()


@pytest.fixture
async def old_then_new(tmp_path: Path) -> AsyncIterator[tuple[RedisProcess, redis_sync.Redis]]:
    """A Redis with the previous schema's library loaded (logsvc_server loads the new one when it starts)."""
    r = RedisProcess(tmp_path / "r").start()
    client = redis_sync.Redis(port=r.port)
    client.function_load(SCHEMA_1.read_text(), replace=True)
    try:
        yield r, client
    finally:
        client.close()
        r.kill()


def _old(client: redis_sync.Redis, fn: str, uuid: str, *args: object) -> object:
    keys = log_keys(uuid)[:6]  # the previous schema had six keys
    return client.execute_command("FCALL", f"dmulog_v1_{fn}", 6, *keys, "node-a", "boot-1", "1", *args)


async def test_a_log_stored_by_the_previous_schema_is_upgraded_on_first_touch(
    old_then_new: tuple[RedisProcess, redis_sync.Redis],
) -> None:
    """Its marks get indexed and counted before anything else, so a reap of its old boot still finds every one."""
    redis, client = old_then_new
    uuid = "schema-1"
    _old(client, "ctr", uuid, 1024 * 8, "dmulog", 8, 1024, "nosync", "dmulog 8 nosync", "", 1, uuid)
    _old(client, "resume", uuid)
    _old(client, "mark_region", uuid, 2, 900)
    async with logsvc_server(redis.url) as target, grpc.aio.insecure_channel(target) as ch:
        log = LogHandle(pb_grpc.DirtyLogStub(ch), uuid, luid=1)
        before = await log.state()
        assert ([2, 900], [1]) == ([m.region for m in before.marks], [i.luid for i in before.instances])
        rebooted = log.other(boot="boot-2", luid=2)
        await rebooted.ctr(1024 * 8, "dmulog", "8", "nosync")
        await rebooted.resume()
        after = await rebooted.state()
    assert ([2, 900], [2, 900], []) == (out_of_sync(after), dirty(after), list(after.marks))
    assert (b"2", 2) == (client.hget(log_keys(uuid).log, "schema"), int(client.hget(log_keys(uuid).log,
                                                                                  "dirty_count")))  # fmt: skip


async def test_services_that_predate_deadlines_still_drive_a_log(redis: RedisProcess, uuid: str) -> None:
    """The dmulog_v1_ names take the previous arguments (CTR's positional) and mean the same."""
    client = redis_sync.Redis(port=redis.port)
    try:
        client.function_load(library_code(), replace=True)
        assert b"" == _old(client, "ctr", uuid, 64 * 8, "dmulog", 8, 64, "nosync", "dmulog 8 nosync", "", 1, uuid)
        assert 0 == _old(client, "resume", uuid)
        assert 0 == _old(client, "mark_region", uuid, 5)
        assert [1, 0] == _old(client, "in_sync_latch", uuid, 5)
        assert 0 == _old(client, "is_clean", uuid, 5)
    finally:
        client.close()


async def test_services_that_predate_jobs_never_meet_one_half_done(redis: RedisProcess, uuid: str) -> None:
    """A v1 writer finishes the log's pending work in its own call; a v1 reader gets LOADING, which it retries."""
    client = redis_sync.Redis(port=redis.port)
    try:
        client.function_load(library_code(), replace=True)
        _old(client, "ctr", uuid, 4096 * 8, "dmulog", 8, 4096, "nosync", "dmulog 8 nosync", "", 1, uuid)
        _old(client, "resume", uuid)
        jobs = json.dumps([{"kind": "fill", "key": "sync", "bits": 4096, "one": False}])
        client.hset(log_keys(uuid).log, "jobs", jobs)
        with pytest.raises(redis_sync.BusyLoadingError, match="bulk work pending"):
            _old(client, "in_sync_latch", uuid, 5)
        assert 0 == _old(client, "mark_region", uuid, 5)
        assert (None, [0, 0]) == (client.hget(log_keys(uuid).log, "jobs"), _old(client, "in_sync_latch", uuid, 5))
    finally:
        client.close()
