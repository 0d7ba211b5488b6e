"""Shared fixtures: one real redis-server per session, a real logsvc per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from harness.log_handle import LogHandle
from harness.servers import RedisProcess, logsvc_server, redis_process

_uuids = itertools.count()


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A redis-server on a free loopback port, AOF on, for the whole session."""
    with redis_process(Path(tmp_path_factory.mktemp("redis"))) as r:
        yield r


@pytest.fixture
async def logsvc(redis: RedisProcess) -> AsyncIterator[str]:
    """Target address of a real logsvc gRPC server backed by the session Redis."""
    async with logsvc_server(redis.url) as target:
        yield target


@pytest.fixture
async def stub(logsvc: str) -> AsyncIterator[pb_grpc.DirtyLogStub]:
    """A DirtyLog stub on a fresh channel."""
    async with grpc.aio.insecure_channel(logsvc) as channel:
        yield pb_grpc.DirtyLogStub(channel)


@pytest.fixture
def uuid(request: pytest.FixtureRequest) -> str:
    """A log UUID no other test uses."""
    return f"LVM-{request.node.name[:60]}-{next(_uuids)}"


@pytest.fixture
def log(stub: pb_grpc.DirtyLogStub, uuid: str) -> LogHandle:
    """A handle on a table instance of a fresh log."""
    return LogHandle(stub, uuid)
