"""Tenants: each sees and touches only its own logs and nodes; quotas refuse with RESOURCE_EXHAUSTED.

Two tenants (SPIFFE trust domains) and the tenantless namespace share one
logsvc and one Redis, with the same log UUID and the same node name in each:
three logs, three nodes, no crossing. Real servers, real certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis as redis_py

from bridge.client import CallFailed, ClientConfig, LogsvcClient
from dmulog.quotas import Quota
from dmulog.tls import TlsFiles, channel_credentials
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.certs import CertAuthority, Issued
from harness.log_handle import LogHandle, dirty
from harness.servers import RedisProcess, logsvc_server
from logsvc.access import DEFAULT_POLICY, Policy
from logsvc.keys import log_keys

SECTORS, RS = 8192, 1024  # 8 regions


@contextlib.asynccontextmanager
async def _stub(target: str, who: Issued) -> AsyncIterator[pb_grpc.DirtyLogStub]:
    creds = channel_credentials((who.cert.read_bytes(), who.key.read_bytes(), who.ca.read_bytes()))
    async with grpc.aio.secure_channel(target, creds) as channel:
        yield pb_grpc.DirtyLogStub(channel)


class Certs:
    """A CA, logsvc's certificate, and a node and an admin certificate per namespace."""

    def __init__(self, where: Path):
        self.ca = CertAuthority(where)
        self.server = self.ca.issue("logsvc", ips=["127.0.0.1"], server=True, client=False)

    def node(self, tenant: str | None, name: str = "n1") -> Issued:
        """A node certificate of ``tenant`` (None: a DNS name, which names no tenant)."""
        if tenant is None:
            return self.ca.issue(f"{name}-none", dns=[f"{name}.node.dmulog"])
        return self.ca.issue(f"{name}-{tenant}", uris=[f"spiffe://{tenant}/dmulog/node/{name}"])

    def admin(self, tenant: str | None) -> Issued:
        """An admin certificate of ``tenant``."""
        if tenant is None:
            return self.ca.issue("ops-none", dns=["ops.admin.dmulog"])
        return self.ca.issue(f"ops-{tenant}", uris=[f"spiffe://{tenant}/dmulog/admin/ops"])


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    """Certificates of the test's own CA."""
    return Certs(tmp_path / "pki")


def _policy(**quotas: Quota) -> Policy:
    return Policy(DEFAULT_POLICY.grants, {t.replace("_", "."): q for t, q in quotas.items()})


async def test_each_tenant_has_its_own_log_of_the_same_uuid(redis: RedisProcess, certs: Certs, uuid: str) -> None:
    """The same UUID and node name in two tenants and in none: three logs, each seeing only its own."""
    async with logsvc_server(redis.url, tls=TlsFiles(certs.server.cert, certs.server.key, certs.ca.cert)) as target:
        marked = {"a.example": 1, "b.example": 2, None: 3}
        for tenant, region in marked.items():
            async with _stub(target, certs.node(tenant)) as stub:
                me = LogHandle(stub, uuid, node="n1")
                await me.acquire_lease()
                await me.ctr(SECTORS, "clustered-core", str(RS))
                await me.mark(region)
        for tenant, region in marked.items():
            async with _stub(target, certs.admin(tenant)) as admin:
                listing = [s.uuid for s in (await admin.ListLogs(pb.ListLogsRequest())).logs]
                assert listing.count(uuid) == 1, listing
                assert all("\0" not in u for u in listing), "a tenant saw a stored name"
                state = await admin.GetLogState(pb.GetLogStateRequest(uuid=uuid))
                assert state.summary.uuid == uuid
                assert dirty(state) == [region], f"tenant {tenant} sees another's marks"
                assert [i.node for i in state.instances] == ["n1"]
                nodes = (await admin.ListNodes(pb.ListNodesRequest())).nodes
                assert [n.name for n in nodes if n.name == "n1"] == ["n1"]
                assert all(":" not in n.name for n in nodes)
                async for piece in admin.ReadLogState(pb.ReadLogStateRequest(uuid=uuid)):
                    if piece.HasField("marks"):
                        assert [list(m.nodes) for m in piece.marks.marks] == [["n1"]]
        # In Redis: three logs, each in a hash tag of its own namespace.
        with redis_py.Redis(port=redis.port) as r:
            for stored in (f"a.example\0{uuid}", f"b.example\0{uuid}", uuid):
                assert r.exists(log_keys(stored).log), stored


async def test_a_tenant_cannot_reach_another_tenants_log(redis: RedisProcess, certs: Certs, uuid: str) -> None:
    """What tenant A made is not found by B, whatever B spells; a UUID with NUL is refused."""
    async with logsvc_server(redis.url, tls=TlsFiles(certs.server.cert, certs.server.key, certs.ca.cert)) as target:
        async with _stub(target, certs.node("a.example")) as a:
            await LogHandle(a, uuid, node="n1").ctr(SECTORS, "clustered-core", str(RS))
        async with _stub(target, certs.admin("b.example")) as b_admin, _stub(target, certs.node("b.example")) as b:
            for spelled in (uuid, f"a.example\0{uuid}", f"a.example:{uuid}"):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await b_admin.GetLogState(pb.GetLogStateRequest(uuid=spelled))
                assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await LogHandle(b, spelled, node="n1").mark(1)
                assert e.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
            assert uuid not in [s.uuid for s in (await b_admin.ListLogs(pb.ListLogsRequest())).logs]


async def test_a_watcher_hears_only_its_tenants_events(redis: RedisProcess, certs: Certs, uuid: str) -> None:
    """A node of tenant A dies: A's watchers hear of it; B's, with a node of the same name, do not."""
    files = TlsFiles(certs.server.cert, certs.server.key, certs.ca.cert)
    async with (logsvc_server(redis.url, tls=files, lease_ttl=1.0, reaper_interval=0.1) as target,
                _stub(target, certs.node("a.example")) as a, _stub(target, certs.node("a.example", "n2")) as a2,
                _stub(target, certs.node("b.example", "n2")) as b2):  # fmt: skip
        watchers = {}
        for name, stub in (("a", a2), ("b", b2)):
            stream = stub.WatchLogs(pb.WatchLogsRequest())
            first = await stream.read()
            assert first.kind == pb.LOG_EVENT_KIND_READY
            watchers[name] = stream
        dying = LogHandle(a, uuid, node="n1")
        await dying.acquire_lease()
        await dying.ctr(SECTORS, "clustered-core", str(RS))
        heard = await watchers["a"].read()
        assert (heard.kind, heard.uuid, heard.node) == (pb.LOG_EVENT_KIND_NODE_EXPIRED, uuid, "n1")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await watchers["b"].read()
        for stream in watchers.values():
            stream.cancel()


async def test_quotas_of_logs_and_regions(redis: RedisProcess, certs: Certs, uuid: str) -> None:
    """Past its logs or regions, a tenant's CTR is RESOURCE_EXHAUSTED; a log gone frees its place."""
    files = TlsFiles(certs.server.cert, certs.server.key, certs.ca.cert)
    policy = _policy(a_example=Quota(logs=1), b_example=Quota(regions=12))
    async with (logsvc_server(redis.url, tls=files, policy=policy) as target,
                _stub(target, certs.node("a.example")) as a, _stub(target, certs.node("b.example")) as b):  # fmt: skip
        first = LogHandle(a, uuid, node="n1")
        await first.ctr(SECTORS, "clustered-core", str(RS))
        await first.ctr(SECTORS, "clustered-core", str(RS))  # the same log again: no new one
        second = LogHandle(a, uuid + "-2", node="n1")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await second.ctr(SECTORS, "clustered-core", str(RS))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (e.value.details() or "").startswith("quota exceeded: tenant a.example has 1 of its 1 logs")
        await first.dtr()  # the last instance of a core log: the log goes
        await second.ctr(SECTORS, "clustered-core", str(RS))
        # Regions: 8 fit in 12, 8 more do not.
        await LogHandle(b, uuid, node="n1").ctr(SECTORS, "clustered-core", str(RS))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await LogHandle(b, uuid + "-2", node="n1").ctr(SECTORS, "clustered-core", str(RS))
        assert "has 8 of its 12 regions, and this log needs 8" in (e.value.details() or "")
        # Tenant b's other calls are untouched by its quota.
        assert await LogHandle(b, uuid, node="n1").region_size() == RS


async def test_what_the_kernel_gets_for_a_quota(redis: RedisProcess, certs: Certs, uuid: str) -> None:
    """A capacity refusal is answered at once with EDQUOT; a rate refusal is retried, then EAGAIN or EHOSTDOWN."""
    files = TlsFiles(certs.server.cert, certs.server.key, certs.ca.cert)
    policy = _policy(a_example=Quota(logs=0), b_example=Quota(rate=0))
    async with logsvc_server(redis.url, tls=files, policy=policy) as target:
        for tenant, expected in (("a.example", errno.EDQUOT), ("b.example", errno.EHOSTDOWN)):
            node = certs.node(tenant)
            client = LogsvcClient(target, ClientConfig(attempt_timeout=0.5, budget=0.6,
                                                       tls=TlsFiles(node.cert, node.key, node.ca)))  # fmt: skip
            try:
                ctr = pb.CtrRequest(log=pb.LogRef(uuid=uuid, luid=1), node=pb.Node(name="n1", boot_id="b"),
                                    target_sectors=SECTORS, log_type="clustered-core", args=[str(RS)])
                start = time.monotonic()
                with pytest.raises(CallFailed) as failed:
                    await client.call("Ctr", ctr, critical=False)
                took = time.monotonic() - start
                assert failed.value.errno == expected, (tenant, failed.value)
                if expected == errno.EDQUOT:
                    assert took < 0.5, "a capacity refusal was retried"
                else:
                    assert took >= 0.5, "a rate refusal was not retried"
                    mark = pb.MarkRegionRequest(log=ctr.log, node=ctr.node, regions=[1])
                    with pytest.raises(CallFailed) as failed:
                        await client.call("MarkRegion", mark, critical=True)
                    assert failed.value.errno == errno.EAGAIN
            finally:
                await client.close()


async def test_a_tenants_rate(redis: RedisProcess, certs: Certs, uuid: str) -> None:
    """A burst of one second's worth passes; past it, RESOURCE_EXHAUSTED, and other tenants are not slowed."""
    files = TlsFiles(certs.server.cert, certs.server.key, certs.ca.cert)
    async with (logsvc_server(redis.url, tls=files, policy=_policy(a_example=Quota(rate=20))) as target,
                _stub(target, certs.node("a.example")) as a, _stub(target, certs.node("b.example")) as b):  # fmt: skip
        await LogHandle(a, uuid, node="n1").ctr(SECTORS, "clustered-core", str(RS))
        await LogHandle(b, uuid, node="n1").ctr(SECTORS, "clustered-core", str(RS))
        codes = []
        for _ in range(40):
            try:
                await LogHandle(a, uuid, node="n1").region_size()
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as e:
                codes.append(e.code())
                assert "over its request rate (20 a second)" in (e.details() or "")
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 10, codes
        assert codes[:15] == [grpc.StatusCode.OK] * 15
        for _ in range(40):
            await LogHandle(b, uuid, node="n1").region_size()
