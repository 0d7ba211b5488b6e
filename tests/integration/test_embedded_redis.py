"""One redis-server per state directory: real ``dmulog logsvc`` processes, real redis-servers.

Each test runs ``dmulog logsvc`` (harness/servers.py) without ``--redis`` on a temporary
``--state-dir`` and kills it the hard way. Which redis-servers serve a state
dir is read from ``/proc`` here, independently of the code under test: a live
process named ``redis-server`` whose working directory is the state dir
(redis-server changes into its ``--dir``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from dmulog.cli import ExitStatus
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle, dirty
from harness.servers import LogsvcProcess, start_logsvc

SECTORS = 120  # 8 regions of 16 sectors


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie holds no files and serves nothing: it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _redis_servers(under: Path) -> dict[int, Path]:
    """Live redis-server processes whose working directory is ``under`` or below it, with that directory."""
    found = {}
    base = under.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "redis-server":
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if (cwd == base or base in cwd.parents) and _alive(int(entry.name)):
            found[int(entry.name)] = cwd
    return found


def serving(state_dir: Path) -> list[int]:
    """Pids of the redis-servers on ``state_dir``'s data."""
    return sorted(pid for pid, cwd in _redis_servers(state_dir).items() if cwd == state_dir.resolve())


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    kids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout} s: {what}")
        time.sleep(0.02)


def redis_of(svc: LogsvcProcess) -> int:
    """The redis-server this logsvc started."""
    kids = [p for p in children(svc.pid) if p in _redis_servers(Path("/"))]
    assert len(kids) == 1, f"logsvc {svc.pid} has redis-server children {kids}"
    return kids[0]


@pytest.fixture
def run_logsvc(tmp_path: Path) -> Iterator[object]:
    """Start ``dmulog logsvc`` on a state dir; everything started under ``tmp_path`` is killed afterwards."""
    started: list[LogsvcProcess] = []

    def start(state_dir: Path, name: str = "logsvc", wait: bool = True) -> LogsvcProcess:
        svc = start_logsvc(tmp_path / f"{name}.log", state_dir=state_dir, wait=wait)
        started.append(svc)
        return svc

    try:
        yield start
    finally:
        for svc in started:
            svc.kill()
        for pid in _redis_servers(tmp_path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def handle(target: str, uuid: str) -> object:
    """A LogHandle on a fresh channel to ``target``."""
    async with grpc.aio.insecure_channel(target) as channel:
        yield LogHandle(pb_grpc.DirtyLogStub(channel), uuid)


def _orphan_argv(state_dir: Path) -> list[str]:
    """A redis-server started by hand on the socket, pidfile and data of the embedded one."""
    exe = shutil.which("redis-server")
    assert exe is not None
    return [exe, "--port", "0", "--unixsocket", str(state_dir / "redis.sock"), "--unixsocketperm", "700",
            "--dir", str(state_dir), "--pidfile", str(state_dir / "redis.pid"), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--daemonize", "no",
            "--logfile", str(state_dir / "orphan.log")]  # fmt: skip


def test_sigkilled_logsvc_takes_its_redis_with_it(tmp_path: Path, run_logsvc: object) -> None:
    """SIGKILL of logsvc: its redis-server is gone within a few seconds, nothing serves the state dir."""
    state = tmp_path / "state"
    svc = run_logsvc(state)  # type: ignore[operator]
    pid = redis_of(svc)
    svc.kill()
    wait_until(lambda: not _alive(pid), 5, f"redis-server {pid} outlived its logsvc")
    assert serving(state) == []


async def test_restart_after_sigkill_keeps_the_marks(tmp_path: Path, run_logsvc: object) -> None:
    """A mark acknowledged before SIGKILL is there after restart, and one redis-server serves the data."""
    state = tmp_path / "state"
    first = run_logsvc(state)  # type: ignore[operator]
    async with handle(first.target, "LVM-restart") as log:
        await log.ctr(SECTORS, "dmulog", "16", "nosync")
        await log.resume()
        await log.mark(5)
        await log.flush()
    first.kill()
    second = run_logsvc(state, "second")  # type: ignore[operator]
    async with handle(second.target, "LVM-restart") as log:
        assert (False, True) == (await log.is_clean(5), await log.is_clean(4))
        assert [5] == dirty(await log.state())
    assert serving(state) == [redis_of(second)]


async def test_second_logsvc_on_the_same_state_dir_refuses(tmp_path: Path, run_logsvc: object) -> None:
    """A second logsvc on a state dir in use names it and the holder's pid, exits non-zero; the first serves on."""
    state = tmp_path / "state"
    first = run_logsvc(state)  # type: ignore[operator]
    redis_pid = redis_of(first)
    second = run_logsvc(state, "second", wait=False)  # type: ignore[operator]
    try:
        rc = await asyncio.to_thread(second.proc.wait, 20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the second logsvc is still running after 20 s: {second.text()[-2000:]}")
    assert ExitStatus.UNAVAILABLE == rc
    err = second.text()
    assert f"state dir {state} is in use by another logsvc (pid {first.proc.pid})" in err
    assert first.proc.poll() is None
    assert serving(state) == [redis_pid]
    async with handle(first.target, "LVM-first") as log:
        await log.ctr(SECTORS, "dmulog", "16")
        await log.resume()
        await log.mark(2)
        assert not await log.is_clean(2)


def test_leftover_redis_is_stopped_before_the_new_one_starts(tmp_path: Path, run_logsvc: object) -> None:
    """A redis-server already on the state dir is shut down (its writes kept) before logsvc starts its own."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    orphan = subprocess.Popen(_orphan_argv(state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (state / "redis.sock").exists(), 10, "the leftover redis-server did not start")
        with redis.Redis(unix_socket_path=str(state / "redis.sock")) as r:
            r.set("written-to-the-leftover", "kept")
        svc = run_logsvc(state)  # type: ignore[operator]
        assert orphan.poll() is not None, "the leftover redis-server still runs"
        assert serving(state) == [redis_of(svc)]
        with redis.Redis(unix_socket_path=str(state / "redis.sock")) as r:
            assert r.get("written-to-the-leftover") == b"kept"
        assert '"redis_leftover_stopped"' in svc.text()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


def test_a_stale_pidfile_never_kills_another_process(tmp_path: Path, run_logsvc: object) -> None:
    """A pidfile naming a redis-server on another directory (a reused pid) leaves that server alone."""
    state, other = tmp_path / "state", tmp_path / "other"
    state.mkdir(mode=0o700)
    other.mkdir(mode=0o700)
    bystander = subprocess.Popen(_orphan_argv(other), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: serving(other) == [bystander.pid], 10, "the other redis-server did not start")
        (state / "redis.pid").write_text(f"{bystander.pid}\n")
        svc = run_logsvc(state)  # type: ignore[operator]
        assert bystander.poll() is None
        assert serving(state) == [redis_of(svc)]
    finally:
        bystander.kill()
        bystander.wait()
