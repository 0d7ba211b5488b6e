"""A private redis-server for ``dmulog logsvc`` run without ``--redis``.

It listens only on a Unix socket in the state directory (no TCP port), keeps
its data there with AOF and ``appendfsync always`` so every acknowledged mark
is on disk, and is restarted if it dies: AOF replay brings the state back.

Never two redis-servers on one state directory: each would answer for the
marks written through it alone, and IsClean through one would call clean a
region marked through the other. Three things keep it at one:

* logsvc holds an ``flock`` on ``logsvc.lock`` in the state dir for as long
  as it runs (close-on-exec, so redis-server never holds it). A second logsvc
  on the same dir refuses to start, naming the pid written in that file.
* redis-server starts with ``PR_SET_PDEATHSIG`` = SIGTERM, so it shuts down
  when logsvc dies, SIGKILL included. The signal follows the *thread* that
  forked: asyncio forks from the event loop's thread, which lives as long as
  ``serve`` does.
* Before each start, a leftover redis-server on the dir (started before this
  was in place, or one that outlived its logsvc anyway, e.g. hung on disk) is
  found, by its ``redis.pid`` and by ``/proc`` (a process with our
  executable's name whose working directory is the state dir: redis-server
  changes into ``--dir``; a reused pid fails that test and is left alone), and
  stopped: SIGTERM, which lets it finish its AOF, then SIGKILL after 10 s. It
  is stopped rather than adopted because an adopted server is not our child:
  we could not wait for it, restart it or take it down with us, and its
  settings (durability among them) are whatever its starter chose. Its data
  is in the AOF, which the new one replays. A leftover we cannot inspect or
  stop makes start fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from dmulog.logs import event

__all__ = ["EmbeddedRedis", "RedisNotInstalled", "StateDirInUse"]

log = logging.getLogger("dmulog.logsvc.redis")

_PR_SET_PDEATHSIG = 1
_TERM_GRACE = 10.0  # seconds a leftover gets to finish its AOF before SIGKILL
_KILL_WAIT = 5.0


class RedisNotInstalled(RuntimeError):
    """No redis-server on PATH."""


class StateDirInUse(RuntimeError):
    """Another logsvc, or a redis-server we cannot stop, has the state directory."""


def _die_with_parent() -> Callable[[], None]:
    """A preexec function: the child gets SIGTERM when this thread dies, or exits if it already has."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM), *[ctypes.c_ulong(0)] * 3) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(1)

    return preexec


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie holds no files and counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class EmbeddedRedis:
    """Start, supervise and stop one redis-server process."""

    def __init__(self, state_dir: Path, executable: str = "redis-server"):
        self.state_dir = state_dir
        self.socket = state_dir / "redis.sock"
        self.pidfile = state_dir / "redis.pid"
        self.lockfile = state_dir / "logsvc.lock"
        self._executable = executable
        self._comm = Path(executable).name[:15]  # what /proc/<pid>/comm says (the kernel keeps 15 bytes)
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock_fd = -1

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
            "--pidfile", str(self.pidfile),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.state_dir / "redis.log"),
        ]  # fmt: skip

    def _lock(self) -> None:
        """Hold the state dir for this process, or say who holds it."""
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StateDirInUse(
                f"state dir {self.state_dir} is in use by another logsvc "
                f"(pid {holder if holder.isdigit() else 'unknown'}); one logsvc per state dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _ours(self, pid: int) -> bool | None:
        """Whether ``pid`` is a live redis-server on this state dir; None if it may be but we cannot look."""
        proc = Path(f"/proc/{pid}")
        try:
            if (proc / "comm").read_text().strip() != self._comm or not _alive(pid):
                return False
            cwd = os.readlink(proc / "cwd")
        except PermissionError:
            return None
        except OSError:
            return False
        return cwd == str(self.state_dir.resolve())

    def _leftovers(self) -> set[int]:
        """Pids of redis-servers on this state dir: the pidfile's, and any /proc shows."""
        found = set()
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
            ours = self._ours(pid)
            if ours is None:
                raise StateDirInUse(
                    f"{self.pidfile} names pid {pid}, a {self._comm} this process may not inspect; "
                    f"stop it, or remove {self.pidfile} if it serves another directory"
                )
            if ours:
                found.add(pid)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._ours(int(entry.name)):
                found.add(int(entry.name))
        return found

    async def _stop_leftovers(self) -> None:
        """SIGTERM every leftover, SIGKILL what is still there after the grace; fail if any survives."""
        pids = self._leftovers()
        for sig, wait in ((signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, _KILL_WAIT)):
            if not pids:
                return
            for pid in pids:
                event(log, logging.WARNING, "redis_leftover_stopped", pid=pid, signal=sig.name,
                      state_dir=str(self.state_dir))  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while (pids := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if pids:
            raise StateDirInUse(f"{self._comm} {sorted(pids)} on state dir {self.state_dir} survived SIGKILL")

    def _socket_answers(self) -> bool:
        """Whether something still accepts connections on the socket (a server we did not find)."""
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket))
            except OSError:
                return False
        return True

    async def _spawn(self) -> None:
        argv = self._argv()
        await self._stop_leftovers()
        if self.socket.exists():
            if self._socket_answers():
                raise StateDirInUse(f"a server this process did not find still listens on {self.socket}")
            self.socket.unlink()
        self._proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),
        )  # fmt: skip
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
        """Take the state dir, then start redis-server and keep it running until ``stop``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        self._lock()
        try:
            await self._spawn()
        except BaseException:
            self._unlock()
            raise
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
        """Stop redis-server (SIGTERM: it finishes the AOF first), then let go of the state dir."""
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
        try:
            if self._proc and self._proc.returncode is None:
                self._proc.terminate()
                try:
                    await asyncio.wait_for(self._proc.wait(), 10)
                except TimeoutError:
                    self._proc.kill()
                    await self._proc.wait()
        finally:
            self._unlock()
