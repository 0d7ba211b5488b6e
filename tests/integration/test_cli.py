"""The ``dmulog`` command, run in-process against real servers."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmulog.cli import ExitStatus, main
from harness.log_handle import LogHandle
from harness.redis_keys import set_log_field
from harness.servers import RedisProcess, free_port


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[ExitStatus, str, str]:
    """main() with captured stdout/stderr (blocking calls run in a thread: main() owns its event loop)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), env if env is not None else {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_status_lists_logs_and_draws_one(log: LogHandle, logsvc: str) -> None:
    """`dmulog status` lists the log, and `dmulog status UUID` draws its bitmap with the recovering region."""
    import asyncio

    await log.ctr(1 << 21, "dmulog", "2")  # 1,048,576 regions
    await log.resume()
    assert await log.resync_work() == 0
    code, out, _ = await asyncio.to_thread(run, "status", "--logsvc", logsvc)
    assert code == ExitStatus.OK
    assert log.log.uuid in out and "1048576" in out
    code, out, _ = await asyncio.to_thread(run, "status", log.log.uuid, "--logsvc", logsvc)
    assert code == ExitStatus.OK
    assert "in sync 0/1048576" in out
    assert "|R" + "X" * 63 + "|" in out


async def test_status_lists_every_log_when_one_cannot_be_read(log: LogHandle, logsvc: str, redis: RedisProcess) -> None:
    """One log stored in a form this version cannot parse shows as unreadable with its reason; the others still list."""
    import asyncio

    await log.ctr(1024, "dmulog", "16", "nosync")
    bad = LogHandle(log.stub, log.log.uuid + "-poisoned")
    await bad.ctr(1024, "dmulog", "16")
    await set_log_field(redis.url, bad.log.uuid, "region_size", b"9.2233720368547758e+18")
    code, out, err = await asyncio.to_thread(run, "status", "--logsvc", logsvc)
    assert ExitStatus.OK == code, err
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert ["dmulog", "64", "8", "KiB", "64", "100%", "0", "0/1"] == rows[log.log.uuid].split()[1:]
    assert rows[bad.log.uuid].endswith(" unreadable: region_size is '9.2233720368547758e+18', not an integer")
    code, _, err = await asyncio.to_thread(run, "status", bad.log.uuid, "--logsvc", logsvc)
    assert ExitStatus.ERROR == code
    assert "DATA_LOSS: log state unreadable: region_size is '9.2233720368547758e+18'" in err
    await bad.dtr()


async def test_status_of_an_unknown_log_is_not_found(logsvc: str) -> None:
    """An unknown UUID exits NOT_FOUND with a message."""
    import asyncio

    code, _, err = await asyncio.to_thread(run, "status", "no-such-log", "--logsvc", logsvc)
    assert (code, err.split(":")[1].strip()) == (ExitStatus.NOT_FOUND, "NOT_FOUND")


def test_options_come_from_the_environment() -> None:
    """DMULOG_LOGSVC fills --logsvc: status against a closed port says UNAVAILABLE rather than a usage error."""
    code, _, err = run("status", env={"DMULOG_LOGSVC": "unix:/nonexistent/dmulog.sock"})
    assert code == ExitStatus.UNAVAILABLE
    assert "UNAVAILABLE" in err


def test_logsvc_with_unreachable_redis_says_so() -> None:
    """A logsvc pointed at a Redis that is not there exits UNAVAILABLE after its retry budget, naming Redis."""
    code, _, err = run("logsvc", "--listen", "127.0.0.1:0", "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert ExitStatus.UNAVAILABLE == code
    assert "redis unreachable" in err


def test_bridge_without_logsvc_is_a_usage_error() -> None:
    """`dmulog bridge` with no logsvc address says which option is missing."""
    code, _, err = run("bridge")
    assert code == ExitStatus.USAGE
    assert "--logsvc" in err


def test_logsvc_without_redis_server_says_so(tmp_path: Path) -> None:
    """With no --redis and no redis-server on PATH, logsvc explains how to fix it."""
    env = {**os.environ, "PATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "dmulog", "logsvc", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "s")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == ExitStatus.MISSING_DEPENDENCY
    assert "redis-server not found" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping capabilities with setpriv needs root")
def test_bridge_without_capabilities_says_so() -> None:
    """A bridge started without CAP_NET_ADMIN and CAP_SYS_ADMIN names both and exits PERMISSION."""
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "dmulog", "bridge",
         "--logsvc", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == ExitStatus.PERMISSION
    assert "CAP_NET_ADMIN and CAP_SYS_ADMIN" in proc.stderr


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and names the three commands and the environment variables."""
    code, _, _ = run("--help")
    assert code == ExitStatus.OK
    out = capsys.readouterr().out
    assert all(word in out for word in ("logsvc", "bridge", "status", "DMULOG_LOG_LEVEL"))
