"""mTLS between the bridge and logsvc: a node acts only as itself, roles decide the rest, certificates rotate.

Real servers with real certificates made by harness/certs.py: a logsvc with
TLS on the session's redis-server, clients with node, admin, reader, foreign
and unmatched certificates. Each refusal also checks that nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from bridge.client import CallFailed, ClientConfig, LogsvcClient
from dmulog.cli import ExitStatus, main
from dmulog.tls import TlsFiles, channel_credentials
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.certs import CertAuthority, Issued
from harness.log_handle import LogHandle, dirty
from harness.servers import RedisProcess, free_port, logsvc_server
from logsvc.access import Policy

SECTORS, RS = 8192, 1024
DOMAIN = "example.org"


def _files(issued: Issued) -> TlsFiles:
    return TlsFiles(issued.cert, issued.key, issued.ca)


@dataclass
class Pki:
    """The CA, logsvc's server certificate, and one client certificate per kind of caller."""

    ca: CertAuthority
    server: Issued
    node_a: Issued
    node_b: Issued
    admin: Issued
    reader: Issued
    stranger: Issued
    """Signed by the CA, but its SAN matches no grant."""
    foreign: Issued
    """A node-a certificate from another CA."""


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates for every kind of caller, from a CA of the test's own."""
    ca = CertAuthority(tmp_path / "ca")
    other = CertAuthority(tmp_path / "other-ca", name="someone else's CA")
    spiffe = f"spiffe://{DOMAIN}/dmulog"
    return Pki(
        ca=ca,
        server=ca.issue("logsvc", ips=["127.0.0.1"], dns=["logsvc.dmulog"], server=True, client=False,
                        directory=tmp_path / "server"),
        node_a=ca.issue("node-a", uris=[f"{spiffe}/node/node-a"]),
        node_b=ca.issue("node-b", dns=["node-b.node.dmulog"]),
        admin=ca.issue("ops", uris=[f"{spiffe}/admin/ops"]),
        reader=ca.issue("dash", uris=[f"{spiffe}/reader/dash"]),
        stranger=ca.issue("stranger", uris=[f"spiffe://{DOMAIN}/something/else"], dns=["stranger.example"]),
        foreign=other.issue("node-a", uris=[f"{spiffe}/node/node-a"]),
    )  # fmt: skip


@pytest.fixture
async def tls_logsvc(redis: RedisProcess, pki: Pki) -> AsyncIterator[str]:
    """A logsvc with TLS and the default policy on the session's Redis."""
    async with logsvc_server(redis.url, tls=_files(pki.server)) as target:
        yield target


@contextlib.asynccontextmanager
async def _stub(target: str, who: Issued, server_ca: Path | None = None) -> AsyncIterator[pb_grpc.DirtyLogStub]:
    creds = channel_credentials((who.cert.read_bytes(), who.key.read_bytes(), (server_ca or who.ca).read_bytes()))
    async with grpc.aio.secure_channel(target, creds) as channel:
        yield pb_grpc.DirtyLogStub(channel)


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


async def test_a_node_acts_as_itself_and_not_as_another_node(tls_logsvc: str, pki: Pki, uuid: str) -> None:
    """Every mutating call in another node's name is refused PERMISSION_DENIED and changes nothing."""
    async with _stub(tls_logsvc, pki.node_a) as a, _stub(tls_logsvc, pki.admin) as admin:
        me = LogHandle(a, uuid, node="node-a")
        await me.ctr(SECTORS, "clustered-core", str(RS))
        await me.mark(1)
        before = await LogHandle(admin, uuid).state()
        assert dirty(before) == [1]

        impostor = me.other(node="node-b")
        for call in (impostor.mark(2), impostor.clear(1), impostor.set_sync(1), impostor.flush(3),
                     impostor.ctr(SECTORS, "clustered-core", str(RS)), impostor.dtr(), impostor.acquire_lease()):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "node node-a may not act as node 'node-b'" in (refused.value.details() or "")
        after = await LogHandle(admin, uuid).state()
        assert after == before, "a refused request changed the log"


async def test_the_exchange_stream_checks_every_call(tls_logsvc: str, pki: Pki, uuid: str) -> None:
    """On one stream, the call in the node's own name is answered and the other one refused."""
    async with _stub(tls_logsvc, pki.node_a) as a:
        await LogHandle(a, uuid, node="node-a").ctr(SECTORS, "clustered-core", str(RS))
        log = pb.LogRef(uuid=uuid, luid=0xFFFF8880_0000_1000)
        calls = [pb.ExchangeCall(id=1, mark_region=pb.MarkRegionRequest(log=log, node=pb.Node(name="node-a",
                                                                                             boot_id="boot-1"),
                                                                        regions=[4])),
                 pb.ExchangeCall(id=2, mark_region=pb.MarkRegionRequest(log=log, node=pb.Node(name="node-b",
                                                                                             boot_id="boot-1"),
                                                                        regions=[5]))]  # fmt: skip
        results: dict[int, pb.ExchangeResult] = {}
        async for response in a.Exchange(iter([pb.ExchangeRequest(calls=calls)])):
            results.update((r.id, r) for r in response.results)
            if len(results) == 2:
                break
        assert results[1].code == 0
        assert results[2].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert "may not act as node 'node-b'" in results[2].message


async def test_roles(tls_logsvc: str, pki: Pki, uuid: str) -> None:
    """node: its own kernel requests; reader: what `dmulog status` reads; admin: every read; nobody else's."""
    async with (_stub(tls_logsvc, pki.node_a) as node, _stub(tls_logsvc, pki.admin) as admin,
                _stub(tls_logsvc, pki.reader) as reader):  # fmt: skip
        await LogHandle(node, uuid, node="node-a").ctr(SECTORS, "clustered-core", str(RS))
        denied = grpc.StatusCode.PERMISSION_DENIED
        # A node: its own kernel requests and lease, not the admin calls.
        assert await _code(node.ListLogs(pb.ListLogsRequest())) == denied
        assert await _code(node.ListNodes(pb.ListNodesRequest())) == denied
        assert await _code(node.GetLogState(pb.GetLogStateRequest(uuid=uuid))) == denied
        assert await _code(LogHandle(node, uuid, node="node-a").acquire_lease()) == grpc.StatusCode.OK
        # A reader: what `dmulog status` reads, nothing else.
        assert uuid in [s.uuid for s in (await reader.ListLogs(pb.ListLogsRequest())).logs]
        assert await _code(reader.ListNodes(pb.ListNodesRequest())) == grpc.StatusCode.OK
        async for piece in reader.ReadLogState(pb.ReadLogStateRequest(uuid=uuid)):
            assert piece.head.summary.uuid == uuid
            break
        assert await _code(reader.GetLogState(pb.GetLogStateRequest(uuid=uuid))) == denied
        assert await _code(LogHandle(reader, uuid, node="dash").mark(1)) == denied
        # An admin: every read, but no kernel request in anyone's name.
        assert (await admin.GetLogState(pb.GetLogStateRequest(uuid=uuid))).summary.uuid == uuid
        assert await _code(LogHandle(admin, uuid, node="ops").mark(1)) == denied
        assert await _code(LogHandle(admin, uuid, node="node-a").mark(1)) == denied


async def test_certificates_that_do_not_authenticate(tls_logsvc: str, pki: Pki, uuid: str) -> None:
    """A certificate no grant matches is refused; another CA's, none, or plaintext never reach a handler."""
    async with _stub(tls_logsvc, pki.stranger) as stranger:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stranger.ListLogs(pb.ListLogsRequest())
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "matches no grant" in (refused.value.details() or "")
    # Another CA's certificate, or none at all, does not get through the handshake.
    async with _stub(tls_logsvc, pki.foreign, server_ca=pki.ca.cert) as foreign:
        assert await _code(foreign.ListLogs(pb.ListLogsRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert.read_bytes())
    async with grpc.aio.secure_channel(tls_logsvc, creds) as channel:
        anonymous = pb_grpc.DirtyLogStub(channel)
        assert await _code(anonymous.ListLogs(pb.ListLogsRequest(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
    # And plaintext to a TLS port never reaches a handler.
    async with grpc.aio.insecure_channel(tls_logsvc) as channel:
        assert await _code(pb_grpc.DirtyLogStub(channel).ListLogs(pb.ListLogsRequest(), timeout=5)) in (
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)  # fmt: skip


async def test_a_policy_file_maps_other_names(redis: RedisProcess, pki: Pki, tmp_path: Path, uuid: str) -> None:
    """A policy file grants the names it lists, and only those."""
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[[grant]]\nsan = "stranger.example"\nrole = "reader"\n')
    async with (logsvc_server(redis.url, tls=_files(pki.server), policy=Policy.load(policy_file)) as target,
                _stub(target, pki.stranger) as stranger, _stub(target, pki.node_a) as node):  # fmt: skip
        assert await _code(stranger.ListLogs(pb.ListLogsRequest())) == grpc.StatusCode.OK
        # The file replaces the default policy: node-a's SPIFFE ID is no longer granted anything.
        assert await _code(LogHandle(node, uuid, node="node-a").ctr(SECTORS, "clustered-core", str(RS))) == (
            grpc.StatusCode.PERMISSION_DENIED)  # fmt: skip


async def test_logsvc_rotates_its_certificate_without_dropping_open_streams(
    redis: RedisProcess, pki: Pki, tmp_path: Path, uuid: str
) -> None:
    """A certificate replaced in place serves new connections; a stream opened before keeps being answered."""
    async with logsvc_server(redis.url, tls=_files(pki.server)) as target:
        client = LogsvcClient(target, ClientConfig(tls=_files(pki.node_a)))
        try:
            me = pb.Node(name="node-a", boot_id="boot-1")
            log = pb.LogRef(uuid=uuid, luid=1)
            await client.call("Ctr", pb.CtrRequest(log=log, node=me, target_sectors=SECTORS, log_type="clustered-core",
                                                   args=[str(RS)]), critical=True)  # fmt: skip
            renamed = "rotated.dmulog"
            pinned = [("grpc.ssl_target_name_override", renamed)]
            creds = channel_credentials((pki.node_a.cert.read_bytes(), pki.node_a.key.read_bytes(),
                                         pki.ca.cert.read_bytes()))  # fmt: skip
            async with grpc.aio.secure_channel(target, creds, options=pinned) as ch:
                code = await _code(pb_grpc.DirtyLogStub(ch).ListNodes(pb.ListNodesRequest(), timeout=5))
                assert code == grpc.StatusCode.UNAVAILABLE, "the old certificate does not carry the new name"
            pki.ca.issue("logsvc", ips=["127.0.0.1"], dns=[renamed], server=True, client=False,
                         directory=pki.server.cert.parent)  # fmt: skip
            async with grpc.aio.secure_channel(target, creds, options=pinned) as ch:
                # A new connection: the node's own request in its name, under the new certificate.
                handle = LogHandle(pb_grpc.DirtyLogStub(ch), uuid, luid=1, node="node-a")
                assert await handle.region_size() == RS
            # The bridge's stream was opened under the old certificate and is still answered.
            answered = await client.call("MarkRegion", pb.MarkRegionRequest(log=log, node=me, regions=[2]),
                                         critical=True)  # fmt: skip
            assert isinstance(answered, pb.MarkRegionResponse)
        finally:
            await client.close()


async def test_the_bridge_follows_its_own_certificate_rotation(
    redis: RedisProcess, pki: Pki, tmp_path: Path, uuid: str
) -> None:
    """A node certificate re-issued by a new CA: after logsvc restarts, only the new one gets the bridge back in."""
    trusted = tmp_path / "server" / "clients-ca.crt"
    shutil.copy(pki.ca.cert, trusted)
    server = TlsFiles(pki.server.cert, pki.server.key, trusted)
    node_dir = tmp_path / "node"
    node = pki.ca.issue("node-a", uris=[f"spiffe://{DOMAIN}/dmulog/node/node-a"], directory=node_dir)
    listen = f"127.0.0.1:{free_port()}"
    me = pb.Node(name="node-a", boot_id="boot-1")
    log = pb.LogRef(uuid=uuid, luid=1)
    client = LogsvcClient(listen, ClientConfig(tls=TlsFiles(node.cert, node.key, pki.ca.cert)))
    try:
        async with logsvc_server(redis.url, listen, tls=server):
            ctr = pb.CtrRequest(log=log, node=me, target_sectors=SECTORS, log_type="clustered-core", args=[str(RS)])
            await client.call("Ctr", ctr, critical=True)
            # The fleet moves to a new client CA: logsvc trusts only it, the node gets a certificate from it.
            new_ca = CertAuthority(tmp_path / "new-ca", name="next year's CA")
            new_ca.issue("node-a", uris=[f"spiffe://{DOMAIN}/dmulog/node/node-a"], directory=node_dir)
            shutil.copy(new_ca.cert, trusted.with_name("next.tmp"))
            trusted.with_name("next.tmp").replace(trusted)
            await asyncio.sleep(1.1)  # the client looks at its files at most once a second (dmulog/tls.py RECHECK)
            got = await client.call("GetRegionSize", pb.GetRegionSizeRequest(log=log, node=me), critical=True)
            assert got.region_size == RS
        # logsvc restarts: every connection is new, and only the new certificate is let in.
        async with logsvc_server(redis.url, listen, tls=server):
            got = await client.call("GetRegionSize", pb.GetRegionSizeRequest(log=log, node=me), critical=True)
            assert got.region_size == RS
            old = pki.ca.issue("node-a-old", uris=[f"spiffe://{DOMAIN}/dmulog/node/node-a"])
            async with _stub(listen, old) as stale:
                assert await _code(LogHandle(stale, uuid, luid=1, node="node-a").region_size()) == (
                    grpc.StatusCode.UNAVAILABLE)  # fmt: skip
    finally:
        await client.close()


async def test_a_refused_call_reaches_the_kernel_as_eacces(tls_logsvc: str, pki: Pki, uuid: str) -> None:
    """The bridge does not retry a refusal: the kernel gets EACCES (bridge/errors.py), at once."""
    client = LogsvcClient(tls_logsvc, ClientConfig(tls=_files(pki.node_a)))
    try:
        with pytest.raises(CallFailed) as failed:
            await client.call("GetRegionSize", pb.GetRegionSizeRequest(log=pb.LogRef(uuid=uuid, luid=1),
                                                                       node=pb.Node(name="node-b", boot_id="b")),
                              critical=True)  # fmt: skip
        assert failed.value.errno == 13  # EACCES
    finally:
        await client.close()


async def test_dmulog_status_reads_with_a_reader_certificate(tls_logsvc: str, pki: Pki, uuid: str) -> None:
    """`dmulog status` with a reader's certificate lists and draws the log; with a node's it is refused."""
    async with _stub(tls_logsvc, pki.node_a) as node:
        await LogHandle(node, uuid, node="node-a").ctr(SECTORS, "clustered-core", str(RS))

    def status(who: Issued, *args: str) -> tuple[ExitStatus, str, str]:
        out, err = io.StringIO(), io.StringIO()
        tls = ["--tls-cert", str(who.cert), "--tls-key", str(who.key), "--tls-ca", str(who.ca)]
        argv = ["status", *args, "--logsvc", tls_logsvc, *tls, "--tls-server-name", "logsvc.dmulog"]
        code = main(argv, {}, stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    code, out, err = await asyncio.to_thread(status, pki.reader)
    assert code == ExitStatus.OK and uuid in out, err
    code, out, err = await asyncio.to_thread(status, pki.reader, uuid)
    assert code == ExitStatus.OK and uuid in out, err
    code, _, err = await asyncio.to_thread(status, pki.node_a)
    assert code == ExitStatus.ERROR and "PERMISSION_DENIED" in err, err
