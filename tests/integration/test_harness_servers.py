"""The one way tests and benchmarks start logsvc (harness/servers.py) says where it listens, or why it does not."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle
from harness.servers import RedisProcess, ServerError, start_logsvc


async def _serves(target: str, uuid: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        log = LogHandle(pb_grpc.DirtyLogStub(channel), uuid)
        await log.ctr(120, "dmulog", "16", "nosync")
        await log.resume()
        return await log.in_sync(3)


async def test_a_logsvc_on_a_free_port_is_found_by_its_log_line_also_after_a_restart(
    redis: RedisProcess, uuid: str, tmp_path: Path
) -> None:
    """Port 0: the target is the port logsvc logged; restarted on the same log, start waits for the new line."""
    log = tmp_path / "logsvc.log"
    first = start_logsvc(log, listen="127.0.0.1:0", redis_url=redis.url)
    try:
        host, port = first.target.rsplit(":", 1)
        assert ("127.0.0.1", True) == (host, int(port) > 0)
        assert await _serves(first.target, uuid)
    finally:
        first.stop()
    assert 1 == len(first.events("logsvc_stopping"))
    second = start_logsvc(log, listen="127.0.0.1:0", redis_url=redis.url)
    try:
        assert 2 == len(second.events("logsvc_listening"))
        assert second.target == f"127.0.0.1:{second.events('logsvc_listening')[-1]['port']}"
        assert await _serves(second.target, f"{uuid}-again")
    finally:
        second.kill()


def test_a_logsvc_that_cannot_listen_is_an_error_naming_its_log(redis: RedisProcess, tmp_path: Path) -> None:
    """A port already taken: logsvc exits, and start_logsvc raises with the exit status and the log's end."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=r"exited with \d+ before 1x logsvc_listening; .*logsvc\.log"):
            start_logsvc(tmp_path / "logsvc.log", listen=f"127.0.0.1:{port}", redis_url=redis.url)


def test_start_logsvc_needs_one_store(tmp_path: Path) -> None:
    """None, or two, of a Redis URL, a Cluster and a state dir is refused before anything starts."""
    wanted = "one of redis_url, redis_cluster and state_dir"
    with pytest.raises(ValueError, match=wanted):
        start_logsvc(tmp_path / "logsvc.log")
    with pytest.raises(ValueError, match=wanted):
        start_logsvc(tmp_path / "logsvc.log", redis_url="redis://127.0.0.1:1/0", state_dir=tmp_path / "s")
    with pytest.raises(ValueError, match=wanted):
        start_logsvc(tmp_path / "logsvc.log", redis_url="redis://127.0.0.1:1/0", redis_cluster="127.0.0.1:1")
    assert not (tmp_path / "logsvc.log").exists()
