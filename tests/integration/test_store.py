"""Durability and availability of the store, against real redis-server processes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import pytest

from dmulog.requests import REQUESTS
from dmulog.retry import RetryPolicy
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, out_of_sync
from harness.servers import RedisProcess, logsvc_server, redis_process
from logsvc.errors import LogError, StoreUnavailable
from logsvc.logtypes import parse_log_args
from logsvc.service import ctr_fields
from logsvc.store import FUNCTION_PREFIX, LIBRARY_NAME, Store, library_code

ADMIN_FUNCTIONS = {"step": True, "expire_node": True, "announced": True, "lost": True, "state": False,
                   "summary": False, "version": False}  # fmt: skip
"""The library's functions that serve no kernel request, and whether each writes: bulk work
(``Store.finish_jobs``), an expired incarnation's hand-over, an announcement made, a log that lost
writes, the state and summary of the admin RPCs, the schema version."""
PREFIXES = ("dmulog_v1_", "dmulog_v2_", "dmulog_v3_", FUNCTION_PREFIX)
"""Every name prefix: the current one and those of older services (a rolling upgrade)."""


async def registered_functions(redis: RedisProcess) -> dict[str, list[bytes]]:
    """Every function of the library, loaded into ``redis``, with its flags (FUNCTION LIST)."""
    store = Store.from_url(redis.url)
    await store.load_library()
    libs = await store.redis.function_list(library=LIBRARY_NAME)
    lib = dict(zip(libs[0][::2], libs[0][1::2], strict=True))
    functions = {}
    for f in lib[b"functions"]:
        fields = dict(zip(f[::2], f[1::2], strict=True))
        functions[fields[b"name"].decode()] = fields[b"flags"]
    await store.close()
    return functions


async def test_library_loads_and_lists_its_functions(redis: RedisProcess) -> None:
    """The Lua library loads into a real Redis and registers read-only functions as no-writes."""
    functions = await registered_functions(redis)
    # 17 kernel-request functions and 7 admin ones, each as dmulog_v4_ and as v3, v2 and v1 for older services.
    assert len(functions) == 96
    for prefix in PREFIXES:
        assert functions[prefix + "in_sync"] == [b"no-writes"]
        assert functions[prefix + "in_sync_latch"] == [b"no-writes"]
        assert functions[prefix + "mark_region"] == []
        assert functions[prefix + "step"] == []


async def test_the_library_registers_exactly_the_functions_of_the_table(redis: RedisProcess) -> None:
    """Each row's function (and any older name it keeps) is there, no-writes exactly when FCALL_RO runs it.

    Besides them the library has its admin functions only, so a request type
    whose row names a function the library lacks, or a function left behind
    when its row changed, fails here rather than at the first such request.
    """
    writes = dict(ADMIN_FUNCTIONS)
    for spec in REQUESTS:
        writes |= dict.fromkeys((spec.function, *spec.older_functions), spec.writes)
    functions = await registered_functions(redis)
    for prefix in PREFIXES:
        expected = {prefix + name: [] if w else [b"no-writes"] for name, w in writes.items()}
        assert expected == {name: flags for name, flags in functions.items() if name.startswith(prefix)}


def fields_read_by_ctr(lua: str) -> tuple[set[str], set[str]]:
    """The CTR spec fields the library reads (``spec.<name>``), and those its v1 adapter builds from old arguments."""
    read = set(re.findall(r"\bspec\.(\w+)", lua))
    adapter = re.search(r"local function v1_ctr_arguments\(A\)\n(.*?)\nend\n", lua, re.S)
    assert adapter is not None, "the v1 CTR adapter is gone: update this test"
    spec_table = re.search(r"local spec = \{(.*?)\}\n", adapter.group(1), re.S)
    assert spec_table is not None
    return read, set(re.findall(r"(\w+) = ", spec_table.group(1)))


def test_the_ctr_json_carries_exactly_the_fields_the_library_reads() -> None:
    """ctr_fields (the servicer) and new_instance/ctr (the Lua) name the same fields, and so does the v1 adapter."""
    sent = set(ctr_fields(parse_log_args(2048, "clustered-core", ["1024"]), "", "ctr-fields"))
    read, adapted = fields_read_by_ctr(library_code())
    assert sent == read
    assert sent == adapted
    # The comparison sees a field one side renamed.
    misspelt, _ = fields_read_by_ctr(library_code().replace("spec.persistent", "spec.persistant"))
    assert {"persistent"} == sent - misspelt


async def test_the_plain_in_sync_function_still_answers_for_older_services(redis: RedisProcess) -> None:
    """in_sync (what a logsvc before in_sync_latch calls) answers what in_sync_latch does, errors included."""
    async with logsvc_server(redis.url) as target, grpc.aio.insecure_channel(target) as ch:
        log = LogHandle(pb_grpc.DirtyLogStub(ch), "plain-in-sync")
        await log.ctr(64, "clustered-core", "8")
        await log.resume()
        await log.set_sync(0)
    store = Store.from_url(redis.url)
    caller = (log.node.name, log.node.boot_id, str(log.log.luid), 0)
    try:
        for region, expected in ((0, 1), (1, 0)):
            plain = await store.call("in_sync", log.log.uuid, caller, [region], readonly=True)
            pair = await store.call("in_sync_latch", log.log.uuid, caller, [region], readonly=True)
            assert (expected, [expected, 0]) == (plain, pair)
        for fn in ("in_sync", "in_sync_latch"):
            with pytest.raises(LogError, match="out of range"):
                await store.call(fn, log.log.uuid, caller, [8], readonly=True)
    finally:
        await store.close()


async def test_marks_survive_a_redis_crash(tmp_path: Path) -> None:
    """With AOF and appendfsync always, an acknowledged mark is still there after SIGKILL of Redis."""
    with redis_process(tmp_path / "r") as r:
        async with logsvc_server(r.url) as target, grpc.aio.insecure_channel(target) as ch:
            log = LogHandle(pb_grpc.DirtyLogStub(ch), "crash-1")
            await log.ctr(64, "dmulog", "8", "nosync")
            await log.resume()
            await log.mark(3)
            await log.flush(5)
        r.kill()
        r.start()
        async with logsvc_server(r.url) as target, grpc.aio.insecure_channel(target) as ch:
            log = LogHandle(pb_grpc.DirtyLogStub(ch), "crash-1")
            assert [m.region for m in (await log.state()).marks] == [3, 5]
            rebooted = log.other(luid=2, boot="boot-2")
            await rebooted.ctr(64, "dmulog", "8", "nosync")
            await rebooted.resume()
            # nosync trusts the legs of a new log only: this one is not new.
            assert [3, 5] == out_of_sync(await rebooted.state())


async def test_dirty_regions_survive_a_redis_crash_and_resync(tmp_path: Path) -> None:
    """Marked regions of a persistent log come back out of sync after Redis and the node both crash."""
    with redis_process(tmp_path / "r") as r:
        async with logsvc_server(r.url) as target, grpc.aio.insecure_channel(target) as ch:
            log = LogHandle(pb_grpc.DirtyLogStub(ch), "crash-2")
            await log.ctr(64, "dmulog", "8")
            await log.resume()
            await log.resync_all()
            await log.mark(1, 4)
        r.kill()
        r.start()
        async with logsvc_server(r.url) as target, grpc.aio.insecure_channel(target) as ch:
            rebooted = LogHandle(pb_grpc.DirtyLogStub(ch), "crash-2", luid=2, boot="boot-2")
            await rebooted.ctr(64, "dmulog", "8")
            await rebooted.resume()
            assert out_of_sync(await rebooted.state()) == [1, 4]


async def test_unreachable_redis_is_a_bounded_unavailable(tmp_path: Path) -> None:
    """With Redis down, a request fails with UNAVAILABLE after the retry budget, not before and not never."""
    with redis_process(tmp_path / "r") as r:
        store = Store.from_url(r.url, retry=RetryPolicy(budget=1.0))
        await store.load_library()
        r.kill()
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.call("get_sync_count", "x", ("n", "b", "1", 0), readonly=True)
        elapsed = time.monotonic() - start
        await store.close()
    assert 0.3 < elapsed < 3.0


async def test_redis_coming_back_within_the_budget_is_invisible(tmp_path: Path) -> None:
    """A Redis restart shorter than the retry budget costs time, not an error."""
    import asyncio

    with redis_process(tmp_path / "r") as r:
        async with logsvc_server(r.url) as target, grpc.aio.insecure_channel(target) as ch:
            log = LogHandle(pb_grpc.DirtyLogStub(ch), "blip-1")
            await log.ctr(64, "dmulog", "8", "nosync")
            await log.resume()
            r.kill()
            call = asyncio.ensure_future(log.mark(2))
            await asyncio.sleep(0.5)
            r.start()
            await call
            assert [m.region for m in (await log.state()).marks] == [2]


async def test_lost_function_library_is_reloaded(redis: RedisProcess) -> None:
    """If Redis loses the functions (FUNCTION FLUSH, a new empty server), the next call reloads them."""
    store = Store.from_url(redis.url)
    await store.load_library()
    await store.redis.function_flush()
    assert await store.admin("version", "x") == b"2"
    await store.close()


async def test_a_write_to_a_demoted_primary_is_retried_not_refused(tmp_path: Path) -> None:
    """READONLY (a server turned replica by a failover) means "not now": retried, then UNAVAILABLE, never a final no."""
    import redis as redis_sync

    with redis_process(tmp_path / "p") as primary, redis_process(tmp_path / "r") as replica:
        store = Store.from_url(primary.url)
        await store.load_library()
        await store.close()
        client = redis_sync.Redis(port=replica.port)
        client.replicaof("127.0.0.1", primary.port)
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        client.close()
        store = Store.from_url(replica.url, retry=RetryPolicy(budget=0.5))
        try:
            with pytest.raises(StoreUnavailable, match="read only replica"):
                await store.call("mark_region", "x", ("n", "b", "1", 0), [1])
        finally:
            await store.close()
