"""A log's table instance driven through the real gRPC API, and the bitmaps it reads back.

Tests, the stall probe and the scale benchmark all talk to logsvc the way a
bridge does, one instance (uuid, luid) of one node at a time; this is that
client, with one method per request and the plain Python values the tests
compare.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

__all__ = ["LogHandle", "dirty", "out_of_sync"]


class LogHandle:
    """One table instance, driven through the real gRPC API."""

    def __init__(self, stub: pb_grpc.DirtyLogStub, uuid: str, luid: int = 0xFFFF8880_0000_1000,
                 node: str = "node-a", boot: str = "boot-1", epoch: int = 0):  # fmt: skip
        self.stub = stub
        self.log = pb.LogRef(uuid=uuid, luid=luid)
        self.node = pb.Node(name=node, boot_id=boot, epoch=epoch)

    def other(self, *, luid: int | None = None, node: str | None = None, boot: str | None = None,
              epoch: int | None = None) -> LogHandle:  # fmt: skip
        """Another instance of the same log (the same epoch unless given, or another node's: 0)."""
        if epoch is None:
            epoch = self.node.epoch if (node or self.node.name) == self.node.name else 0
        return LogHandle(self.stub, self.log.uuid, self.log.luid if luid is None else luid,
                         node or self.node.name, boot or self.node.boot_id, epoch)  # fmt: skip

    async def acquire_lease(self) -> int:
        """AcquireLease for this handle's node and boot; the handle takes the epoch, which is returned."""
        got = await self.stub.AcquireLease(pb.AcquireLeaseRequest(node=self.node))
        self.node.epoch = got.epoch
        return int(got.epoch)

    async def renew_lease(self) -> int:
        """RenewLease of this handle's incarnation; its time to live in ms."""
        return int((await self.stub.RenewLease(pb.RenewLeaseRequest(node=self.node))).ttl_ms)

    @contextlib.asynccontextmanager
    async def alive(self, period: float) -> AsyncIterator[None]:
        """The node renews its lease every ``period`` seconds during the block, then dies (renews no more).

        A renewal that fails because logsvc or Redis is away is tried again at
        the next period, as a bridge does; any other failure ends the block's
        renewals (and shows when the block ends).
        """
        stop = asyncio.Event()

        async def renew() -> None:
            while not stop.is_set():
                try:
                    await self.renew_lease()
                except grpc.aio.AioRpcError as e:  # Redis away: a bridge tries again at its next period
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), period)

        renewing = asyncio.ensure_future(renew())
        try:
            yield
        finally:
            stop.set()
            await renewing

    def _k(self) -> dict[str, Any]:
        return {"log": self.log, "node": self.node}

    async def ctr(self, sectors: int, log_type: str, *args: str,
                  block_devices: dict[str, str] | None = None) -> pb.CtrResponse:  # fmt: skip
        """CTR: construct this instance of a ``sectors``-long table of ``log_type``."""
        return await self.stub.Ctr(pb.CtrRequest(**self._k(), target_sectors=sectors, log_type=log_type, args=args,
                                                 block_devices=block_devices or {}))  # fmt: skip

    async def dtr(self) -> None:
        """DTR: the instance goes away."""
        await self.stub.Dtr(pb.DtrRequest(**self._k()))

    async def presuspend(self) -> None:
        """PRESUSPEND."""
        await self.stub.Presuspend(pb.PresuspendRequest(**self._k()))

    async def postsuspend(self) -> None:
        """POSTSUSPEND: ends the instance's in-sync latch."""
        await self.stub.Postsuspend(pb.PostsuspendRequest(**self._k()))

    async def suspend(self) -> None:
        """PRESUSPEND then POSTSUSPEND, as the kernel suspends a mirror."""
        await self.presuspend()
        await self.postsuspend()

    async def resume(self) -> None:
        """RESUME."""
        await self.stub.Resume(pb.ResumeRequest(**self._k()))

    async def region_size(self) -> int:
        """GET_REGION_SIZE, in sectors."""
        return (await self.stub.GetRegionSize(pb.GetRegionSizeRequest(**self._k()))).region_size

    async def is_clean(self, r: int) -> bool:
        """IS_CLEAN of region ``r``."""
        return (await self.stub.IsClean(pb.IsCleanRequest(**self._k(), region=r))).clean

    async def in_sync(self, r: int) -> bool:
        """IN_SYNC of region ``r``."""
        return (await self.stub.InSync(pb.InSyncRequest(**self._k(), region=r))).in_sync

    async def in_sync_latched(self, r: int) -> tuple[bool, bool]:
        """IN_SYNC's answer and whether it came from the in-sync latch."""
        resp = await self.stub.InSync(pb.InSyncRequest(**self._k(), region=r))
        return resp.in_sync, resp.latched

    async def flush(self, *marks: int) -> None:
        """FLUSH, carrying ``marks`` as an integrated flush does."""
        await self.stub.Flush(pb.FlushRequest(**self._k(), mark_regions=marks))

    async def mark(self, *regions: int) -> None:
        """MARK_REGION of ``regions``."""
        await self.stub.MarkRegion(pb.MarkRegionRequest(**self._k(), regions=regions))

    async def clear(self, *regions: int) -> None:
        """CLEAR_REGION of ``regions``."""
        await self.stub.ClearRegion(pb.ClearRegionRequest(**self._k(), regions=regions))

    async def resync_work(self) -> int | None:
        """GET_RESYNC_WORK: the region to recover next, None when there is none."""
        r = await self.stub.GetResyncWork(pb.GetResyncWorkRequest(**self._k()))
        return r.region if r.has_work else None

    async def set_sync(self, r: int, in_sync: bool = True) -> None:
        """SET_REGION_SYNC of region ``r``."""
        await self.stub.SetRegionSync(pb.SetRegionSyncRequest(**self._k(), region=r, in_sync=in_sync))

    async def sync_count(self) -> int:
        """GET_SYNC_COUNT."""
        return (await self.stub.GetSyncCount(pb.GetSyncCountRequest(**self._k()))).sync_count

    async def status_info(self) -> str:
        """STATUS_INFO's text."""
        return (await self.stub.StatusInfo(pb.StatusInfoRequest(**self._k()))).text

    async def status_table(self) -> str:
        """STATUS_TABLE's text."""
        return (await self.stub.StatusTable(pb.StatusTableRequest(**self._k()))).text

    async def remote_recovering(self, r: int) -> tuple[bool, int]:
        """IS_REMOTE_RECOVERING of region ``r``: whether another node recovers it, and the sync hint."""
        resp = await self.stub.IsRemoteRecovering(pb.IsRemoteRecoveringRequest(**self._k(), region=r))
        return resp.is_recovering, resp.in_sync_hint

    async def state(self) -> pb.GetLogStateResponse:
        """GetLogState: the whole log, bitmaps included."""
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
