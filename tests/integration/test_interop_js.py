"""A client in another language: grpc-js, from proto/ alone, against a real ``dmulog logsvc`` and redis-server.

tests/interop/client.js drives one log's whole life (unary calls, an Exchange
stream batching several calls, health, reflection), then keeps an Exchange
stream idle under a 10 s client keepalive: with gRPC's default ping policy a
server cut such a client off after about 40 s (GOAWAY ENHANCE_YOUR_CALM), so
the long run (marker ``load``: in ``make test``, not in ``make check``) idles
for three minutes, eighteen client pings (``DMULOG_INTEROP_IDLE_S``). What
logsvc logged meanwhile must show the real code of every call and no traceback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers import LogsvcProcess, RedisProcess, logsvc_server, start_logsvc

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "tests" / "interop" / "client.js"
MODULES = REPO / ".cache" / "interop" / "node_modules"
IDLE_S = float(os.environ.get("DMULOG_INTEROP_IDLE_S", "180"))
"""Seconds the long run's Exchange stream idles: several minutes, where the default ping policy cut it at ~40 s."""
STEPS = ("health", "health-unknown-service", "reflection", "Ctr", "Resume", "GetRegionSize", "MarkRegion",
         "Flush", "IsClean", "InSync", "GetResyncWork", "SetRegionSync", "ClearRegion", "unknown-method",
         "Exchange", "idle-Exchange", "Exchange-cancelled", "Presuspend", "Postsuspend", "Dtr", "gone")  # fmt: skip

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: no grpc-js client to run")


@pytest.fixture(params=["tcp", "unix"])
def logsvc_process(request: pytest.FixtureRequest, redis: RedisProcess, tmp_path: Path) -> Iterator[LogsvcProcess]:
    """A ``dmulog logsvc`` process on the session Redis, on a loopback port or a Unix socket."""
    listen = "127.0.0.1:0" if request.param == "tcp" else None
    svc = start_logsvc(tmp_path / "logsvc.log", listen=listen, redis_url=redis.url)
    try:
        yield svc
    finally:
        svc.stop()


def run_client(svc: LogsvcProcess, idle_s: float) -> subprocess.CompletedProcess[str]:
    """Run client.js against ``svc`` with its stream idle ``idle_s`` seconds."""
    assert (MODULES / "@grpc" / "grpc-js").is_dir(), (
        f"{MODULES} has no @grpc/grpc-js: scripts/install-deps.sh installs it (npm ci of tests/interop/'s lock)")
    assert NODE is not None
    env = {**os.environ, "DMULOG_INTEROP_IDLE_S": str(idle_s)}
    return subprocess.run([NODE, str(CLIENT), svc.target], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=idle_s + 60)  # fmt: skip


def check_run(svc: LogsvcProcess, done: subprocess.CompletedProcess[str]) -> None:
    """Every step passed, and logsvc logged each call's real code and no traceback."""
    said = f"client.js exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert (done.returncode, done.stdout.splitlines()[-1:]) == (0, ["interop: ok"]), said
    passed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert passed == list(STEPS), said
    assert svc.running(), f"logsvc ended during the run:\n{svc.text()[-4000:]}"
    text = svc.text()
    assert "Traceback" not in text, text[-6000:]
    codes = {(e.get("method"), e["code"]) for e in svc.events("request")}
    assert ("Check", "NOT_FOUND") in codes, codes  # the health check of an unknown service, as answered
    assert not {c for _, c in codes} & {"INTERNAL", "UNKNOWN"}, codes


def test_a_grpc_js_client_drives_a_log_through_its_life(logsvc_process: LogsvcProcess) -> None:
    """Every kernel request type, an Exchange batch, health and reflection, as a Node client built from proto/."""
    check_run(logsvc_process, run_client(logsvc_process, idle_s=1))


@pytest.mark.load
@pytest.mark.parametrize("logsvc_process", ["tcp"], indirect=True)  # one transport: the ping policy is the same
def test_an_idle_exchange_stream_under_a_10_s_client_keepalive_stays_open(logsvc_process: LogsvcProcess) -> None:
    """An Exchange stream idle past 40 s, its client pinging every 10 s, still answers (no "too many pings")."""
    check_run(logsvc_process, run_client(logsvc_process, idle_s=IDLE_S))


@pytest.mark.load
async def test_the_check_fails_on_grpcs_default_ping_policy(redis: RedisProcess) -> None:
    """The idle stream's check on a broken server: logsvc with gRPC's default ping policy cuts the client off.

    The same client, the same 10 s keepalive, a logsvc built with no ping
    options: the idle Exchange stream must fail (GOAWAY "too_many_pings" after
    about 40 s), so the test above can fail, and the policy is what passes it.
    """
    assert NODE is not None
    async with logsvc_server(redis.url, keepalive=()) as target:
        client = await asyncio.create_subprocess_exec(
            NODE, str(CLIENT), target, cwd=REPO, env={**os.environ, "DMULOG_INTEROP_IDLE_S": "60"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
        out, err = await asyncio.wait_for(client.communicate(), 120)
    said = f"client.js exited {client.returncode}\nstdout:\n{out.decode()}\nstderr:\n{err.decode()[-4000:]}"
    assert client.returncode == 1, said
    assert "ok Exchange" in out.decode() and "ok idle-Exchange" not in out.decode(), said
    assert "idle Exchange stream failed" in out.decode(), said
