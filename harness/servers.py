"""The servers tests, benchmarks and the crash topology run on the host: Redis and logsvc.

They live here, not in the tests, because the tests, the benchmarks and the crash
topology all start them, and tests and benchmarks must not import each other. Every
server binds a free loopback port or a Unix socket in a temporary directory; nothing
here talks to anything but this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmulog.tls import TlsFiles
from logsvc.access import Policy
from logsvc.health import HealthMonitor
from logsvc.leases import DEFAULT_TTL, Reaper
from logsvc.metrics import LogsvcMetrics
from logsvc.redis_connect import RedisSecurity
from logsvc.server import HEALTH_SERVICES, KEEPALIVE_OPTIONS, build_server
from logsvc.store import Store

__all__ = [
    "LogsvcProcess",
    "RedisProcess",
    "ServerError",
    "ServiceProcess",
    "free_port",
    "log_events",
    "logsvc_server",
    "redis_process",
    "start_bridge",
    "start_logsvc",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """A redis-server on 127.0.0.1 with AOF and appendfsync always: what it acknowledged survives a SIGKILL."""

    data_dir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    nice: int = 0
    """Scheduling niceness; below 0 (root only, else nice just warns) keeps timing measurements of Redis
    itself clear of other load on the machine."""

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        """Start it (again: the same port and data directory, so it replays its AOF); wait for PONG."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        niced = ["nice", "-n", str(self.nice)] if self.nice else []
        self.proc = subprocess.Popen(
            [*niced, exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.data_dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def redis_process(data_dir: Path) -> Iterator[RedisProcess]:
    """Run a redis-server for the duration of the block."""
    r = RedisProcess(data_dir).start()
    try:
        yield r
    finally:
        r.kill()


class ServerError(RuntimeError):
    """A server process did not come up, or ended while something waited for it."""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log_events(log: Path, name: str) -> list[dict[str, Any]]:
    """The events called ``name`` of a JSON log file, oldest first (lines that are not JSON, a traceback's, skipped)."""
    found = []
    for line in _read(log).splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == name:
                    found.append(entry)
    return found


@dataclass
class ServiceProcess:
    """A ``dmulog`` process writing its JSON log (one event a line) to a file.

    Its log is how it says where it is: a logsvc that listens logs
    ``logsvc_listening`` (with its port), a bridge ``bridge_listening``; a socket
    file would exist before the server accepts on it, a log line comes after.
    """

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def text(self) -> str:
        """Everything it logged so far."""
        return _read(self.log)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Its log events called ``name``, oldest first."""
        return log_events(self.log, name)

    def wait_for(self, name: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Its first ``count`` or more events called ``name``, once logged.

        Raises:
            ServerError: it ended first, or ``timeout`` seconds passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise ServerError(f"exited with {self.proc.returncode} before {count}x {name}; "
                                  f"{self.log}:\n{self.text()[-4000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise ServerError(f"no {count}x {name} in {timeout:g} s; {self.log}:\n{self.text()[-4000:]}")
            time.sleep(0.02)

    @property
    def metrics_address(self) -> str:
        """``HOST:PORT`` of its ``/metrics`` page (started with ``--metrics-listen``), once it logged it."""
        return str(self.wait_for("metrics_listening")[-1]["address"])

    def running(self) -> bool:
        """Whether the process has not ended."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing runs on the way out."""
        if self.running():
            self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if it has not ended ``timeout`` seconds later: a clean shutdown, if it takes one."""
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def _dmulog(log: Path, args: Sequence[str], *, new_session: bool = False) -> subprocess.Popen[bytes]:
    """``dmulog --log-format json ARGS`` of this interpreter, its output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "dmulog", "--log-format", "json", *args],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=new_session)  # fmt: skip


@dataclass
class LogsvcProcess(ServiceProcess):
    """A ``dmulog logsvc`` process."""

    listen: str = ""

    @property
    def target(self) -> str:
        """Its gRPC address: the Unix socket, or the loopback port it logged it listens on."""
        if self.listen.startswith("unix:"):
            return self.listen
        host, _, port = self.listen.rpartition(":")
        if port == "0":
            port = str(self.wait_for("logsvc_listening")[-1]["port"])
        return f"{host}:{port}"


def start_logsvc(log: Path, *, listen: str | None = None, redis_url: str | None = None,
                 state_dir: Path | None = None, wait: bool = True, timeout: float = 30.0,
                 extra: Sequence[str] = (), redis_cluster: str | None = None) -> LogsvcProcess:  # fmt: skip
    """Start ``dmulog logsvc`` on ``redis_url``, ``redis_cluster`` or a redis-server of its own in ``state_dir``.

    ``redis_cluster`` is a Cluster's ``HOST:PORT,...``; ``extra`` are more flags.

    ``listen`` is ``unix:PATH`` (by default the log's path with ``.sock`` for
    ``.log``) or ``127.0.0.1:PORT``, where port 0 is a free one. With ``wait``
    it returns once logsvc logged that it listens; the log may hold earlier
    runs' lines (a restart appends), so that is one more ``logsvc_listening``
    than before.

    Raises:
        ServerError: it exited or did not listen within ``timeout`` seconds (it is killed).
    """
    if sum(x is not None for x in (redis_url, redis_cluster, state_dir)) != 1:
        raise ValueError("start_logsvc needs one of redis_url, redis_cluster and state_dir")
    listen = listen or f"unix:{log.with_suffix('.sock')}"
    if redis_url is not None:
        store = ["--redis", redis_url]
    elif redis_cluster is not None:
        store = ["--redis-cluster", redis_cluster]
    else:
        store = ["--state-dir", str(state_dir)]
    before = len(log_events(log, "logsvc_listening"))
    svc = LogsvcProcess(_dmulog(log, ["logsvc", "--listen", listen, *store, *extra]), log, listen)
    if wait:
        try:
            svc.wait_for("logsvc_listening", before + 1, timeout)
        except ServerError:
            svc.kill()
            raise
    return svc


def start_bridge(log: Path, logsvc: str, *args: str, new_session: bool = False) -> ServiceProcess:
    """Start ``dmulog bridge --logsvc LOGSVC ARGS`` on this host; returns at once (wait with ``wait_for``).

    A bridge needs root here (it joins the connector group); ``new_session``
    puts it in a process group of its own, so that a test can kill it with
    every bridge it started (``--respawn``).
    """
    return ServiceProcess(_dmulog(log, ["bridge", "--logsvc", logsvc, *args], new_session=new_session), log)


@contextlib.asynccontextmanager
async def logsvc_server(redis_url: str, listen: str = "127.0.0.1:0", prefix: str = "dmulog", *,
                        lease_ttl: float = DEFAULT_TTL, reaper_interval: float | None = None,
                        durable_replicas: int = 0, cluster: bool = False,
                        stores: list[Store] | None = None, tls: TlsFiles | None = None,
                        policy: Policy | None = None,
                        security: RedisSecurity | None = None,
                        keepalive: Sequence[tuple[str, int]] = KEEPALIVE_OPTIONS,
                        metrics: LogsvcMetrics | None = None) -> AsyncIterator[str]:  # fmt: skip
    """A real logsvc gRPC server in this process on a free port, with its reaper; yields its target address.

    With ``cluster``, ``redis_url`` is a Redis Cluster's ``HOST:PORT,...`` (``--redis-cluster``). The
    server's store is appended to ``stores``, for a test that reads its counters. With ``tls`` (files
    from harness/certs.py), clients need a certificate and ``policy`` (default: the default one) applies.
    ``security`` is how the store reaches Redis: what the ``--redis-tls-*``, ``--redis-username`` and
    password options make. ``keepalive``: the server's ping policy (logsvc/server.py). ``metrics``: what
    it counts into (serve its registry with dmulog/metrics.py to scrape it).
    """
    if cluster:
        store = Store.from_cluster(redis_url, prefix=prefix, durable_replicas=durable_replicas, security=security)
    else:
        store = Store.from_url(redis_url, prefix=prefix, durable_replicas=durable_replicas, security=security)
    if stores is not None:
        stores.append(store)
    await store.load_library()
    server, port, health, service = await build_server(store, listen, lease_ttl=lease_ttl, tls=tls, policy=policy,
                                                      keepalive=keepalive, metrics=metrics)
    await server.start()
    stop = asyncio.Event()
    reaper = asyncio.ensure_future(Reaper(service.leases, interval=reaper_interval).run(stop))
    monitor = asyncio.ensure_future(HealthMonitor(store, health, HEALTH_SERVICES).run(stop))
    try:
        yield listen if listen.startswith("unix:") else f"127.0.0.1:{port}"
    finally:
        stop.set()
        await reaper
        await monitor
        await service.feed.close()
        await server.stop(0)
        await store.close()
