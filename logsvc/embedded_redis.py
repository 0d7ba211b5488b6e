"""A private redis-server for ``dmulog logsvc`` run without ``--redis``.

It listens only on a Unix socket in the state directory (no TCP port), keeps
its data there with AOF and ``appendfsync always`` so every acknowledged mark
is on disk, and is restarted if it dies: AOF replay brings the state back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from dmulog.logs import event

__all__ = ["EmbeddedRedis", "RedisNotInstalled"]

log = logging.getLogger("dmulog.logsvc.redis")


class RedisNotInstalled(RuntimeError):
    """No redis-server on PATH."""


class EmbeddedRedis:
    """Start, supervise and stop one redis-server process."""

    def __init__(self, state_dir: Path, executable: str = "redis-server"):
        self.state_dir = state_dir
        self.socket = state_dir / "redis.sock"
        self._executable = executable
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        """redis-py URL of the socket."""
        return f"unix://{self.socket}"

    def _argv(self) -> list[str]:
        path = shutil.which(self._executable)
        if path is None:
            raise RedisNotInstalled(
                f"{self._executable} not found on PATH: install Redis 7 or later "
                "(Debian: apt-get install redis-server) or pass --redis URL"
            )
        return [
            path,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.state_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.state_dir / "redis.log"),
        ]  # fmt: skip

    async def _spawn(self) -> None:
        if self.socket.exists():
            self.socket.unlink()
        self._proc = await asyncio.create_subprocess_exec(
            *self._argv(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
        )
        for _ in range(200):
            if self.socket.exists():
                break
            if self._proc.returncode is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}; see {self.state_dir}/redis.log")
            await asyncio.sleep(0.025)
        else:
            raise RuntimeError(f"redis-server did not create {self.socket} within 5 s")
        event(log, logging.INFO, "redis_started", pid=self._proc.pid, socket=str(self.socket))

    async def start(self) -> None:
        """Start redis-server and keep it running until ``stop``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self._proc is not None
            rc = await self._proc.wait()
            if self._stopping:
                return
            event(log, logging.ERROR, "redis_exited", returncode=rc)
            await asyncio.sleep(0.5)
            try:
                await self._spawn()
            except Exception:
                log.exception("redis_restart_failed")
                await asyncio.sleep(2)

    async def stop(self) -> None:
        """Stop redis-server (SIGTERM: it finishes the AOF first)."""
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
        if self._proc and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
