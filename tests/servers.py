"""Real servers for the tests: redis-server processes and logsvc gRPC servers.

Every server binds a free loopback port or a Unix socket in a temporary
directory; nothing here talks to anything but this machine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import redis.asyncio as aioredis

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

# The redis-server process lives in the harness, where the kernel topology finds it too.
from harness.servers import RedisProcess as RedisProcess
from harness.servers import free_port as free_port
from logsvc.keys import log_keys
from logsvc.server import build_server
from logsvc.store import Store


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
    """A real logsvc gRPC server on a free port; yields its target address."""
    store = Store.from_url(redis_url, prefix=prefix)
    await store.load_library()
    server, port, _health, _service = await build_server(store, listen)
    await server.start()
    try:
        yield listen if listen.startswith("unix:") else f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        await store.close()


async def keys_left(redis_url: str, uuid: str) -> list[str]:
    """Which of the log's keys exist in Redis: a refused CTR must leave none."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [key for key in log_keys(uuid) if await client.exists(key)]
    finally:
        await client.aclose()


async def set_log_field(redis_url: str, uuid: str, field: str, value: bytes) -> None:
    """Overwrite one field of the log's hash directly, as another version might have stored it."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.hset(log_keys(uuid).log, field, value)
    finally:
        await client.aclose()


class LogHandle:
    """One table instance, driven through the real gRPC API."""

    def __init__(self, stub: pb_grpc.DirtyLogStub, uuid: str, luid: int = 0xFFFF8880_0000_1000,
                 node: str = "node-a", boot: str = "boot-1"):  # fmt: skip
        self.stub = stub
        self.log = pb.LogRef(uuid=uuid, luid=luid)
        self.node = pb.Node(name=node, boot_id=boot)

    def other(self, *, luid: int | None = None, node: str | None = None, boot: str | None = None) -> LogHandle:
        """Another instance of the same log."""
        return LogHandle(self.stub, self.log.uuid, self.log.luid if luid is None else luid,
                         node or self.node.name, boot or self.node.boot_id)  # fmt: skip

    def _k(self) -> dict[str, object]:
        return {"log": self.log, "node": self.node}

    async def ctr(self, sectors: int, log_type: str, *args: str,
                  block_devices: dict[str, str] | None = None) -> pb.CtrResponse:  # fmt: skip
        return await self.stub.Ctr(pb.CtrRequest(**self._k(), target_sectors=sectors, log_type=log_type, args=args,
                                                 block_devices=block_devices or {}))  # fmt: skip

    async def dtr(self) -> None:
        await self.stub.Dtr(pb.DtrRequest(**self._k()))

    async def presuspend(self) -> None:
        await self.stub.Presuspend(pb.PresuspendRequest(**self._k()))

    async def postsuspend(self) -> None:
        await self.stub.Postsuspend(pb.PostsuspendRequest(**self._k()))

    async def suspend(self) -> None:
        await self.presuspend()
        await self.postsuspend()

    async def resume(self) -> None:
        await self.stub.Resume(pb.ResumeRequest(**self._k()))

    async def region_size(self) -> int:
        return (await self.stub.GetRegionSize(pb.GetRegionSizeRequest(**self._k()))).region_size

    async def is_clean(self, r: int) -> bool:
        return (await self.stub.IsClean(pb.IsCleanRequest(**self._k(), region=r))).clean

    async def in_sync(self, r: int) -> bool:
        return (await self.stub.InSync(pb.InSyncRequest(**self._k(), region=r))).in_sync

    async def in_sync_latched(self, r: int) -> tuple[bool, bool]:
        """IN_SYNC's answer and whether it came from the in-sync latch."""
        resp = await self.stub.InSync(pb.InSyncRequest(**self._k(), region=r))
        return resp.in_sync, resp.latched

    async def flush(self, *marks: int) -> None:
        await self.stub.Flush(pb.FlushRequest(**self._k(), mark_regions=marks))

    async def mark(self, *regions: int) -> None:
        await self.stub.MarkRegion(pb.MarkRegionRequest(**self._k(), regions=regions))

    async def clear(self, *regions: int) -> None:
        await self.stub.ClearRegion(pb.ClearRegionRequest(**self._k(), regions=regions))

    async def resync_work(self) -> int | None:
        r = await self.stub.GetResyncWork(pb.GetResyncWorkRequest(**self._k()))
        return r.region if r.has_work else None

    async def set_sync(self, r: int, in_sync: bool = True) -> None:
        await self.stub.SetRegionSync(pb.SetRegionSyncRequest(**self._k(), region=r, in_sync=in_sync))

    async def sync_count(self) -> int:
        return (await self.stub.GetSyncCount(pb.GetSyncCountRequest(**self._k()))).sync_count

    async def status_info(self) -> str:
        return (await self.stub.StatusInfo(pb.StatusInfoRequest(**self._k()))).text

    async def status_table(self) -> str:
        return (await self.stub.StatusTable(pb.StatusTableRequest(**self._k()))).text

    async def remote_recovering(self, r: int) -> tuple[bool, int]:
        resp = await self.stub.IsRemoteRecovering(pb.IsRemoteRecoveringRequest(**self._k(), region=r))
        return resp.is_recovering, resp.in_sync_hint

    async def state(self) -> pb.GetLogStateResponse:
        return await self.stub.GetLogState(pb.GetLogStateRequest(uuid=self.log.uuid))

    async def resync_all(self) -> list[int]:
        """Do what the kernel does until no work is left; returns the order."""
        done = []
        while (r := await self.resync_work()) is not None:
            await self.set_sync(r, True)
            await self.clear(r)
            done.append(r)
        return done


def out_of_sync(state: pb.GetLogStateResponse) -> list[int]:
    """Regions whose in-sync bit is 0."""
    bits = state.in_sync_bitmap
    return [r for r in range(state.summary.region_count) if not bits[r // 8] >> (7 - r % 8) & 1]


def dirty(state: pb.GetLogStateResponse) -> list[int]:
    """Regions whose dirty bit is 1."""
    bits = state.dirty_bitmap
    return [r for r in range(state.summary.region_count) if bits[r // 8] >> (7 - r % 8) & 1]


def env_without(*names: str) -> dict[str, str]:
    """os.environ without some variables."""
    return {k: v for k, v in os.environ.items() if k not in names}
