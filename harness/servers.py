"""The servers tests, benchmarks and the crash topology run on the host: Redis and logsvc.

They live here, not in the tests, because the tests, the benchmarks and the crash
topology all start them, and tests and benchmarks must not import each other. Every
server binds a free loopback port or a Unix socket in a temporary directory; nothing
here talks to anything but this machine.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from logsvc.server import build_server
from logsvc.store import Store

__all__ = ["RedisProcess", "free_port", "logsvc_process", "logsvc_server", "redis_process"]


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
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
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


def logsvc_process(redis_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``dmulog logsvc`` process of its own on a Unix socket in ``workdir``; returns it and its target."""
    sock = workdir / f"logsvc-{time.monotonic_ns()}.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmulog", "--log-level", "warning", "logsvc", "--listen", f"unix:{sock}",
         "--redis", redis_url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"logsvc did not start (exit {proc.poll()})")
        time.sleep(0.05)
    return proc, f"unix:{sock}"


@contextlib.asynccontextmanager
async def logsvc_server(redis_url: str, listen: str = "127.0.0.1:0", prefix: str = "dmulog") -> AsyncIterator[str]:
    """A real logsvc gRPC server in this process on a free port; yields its target address."""
    store = Store.from_url(redis_url, prefix=prefix)
    await store.load_library()
    server, port, _health, _service = await build_server(store, listen)
    await server.start()
    try:
        yield listen if listen.startswith("unix:") else f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        await store.close()
