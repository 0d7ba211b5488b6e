"""The DirtyLog servicer: validate, make one store call, build the reply.

Each method is deliberately thin. What a request means lives in the Lua
library (lua/dmulog.lua); which of its functions serves each kernel request
RPC, and whether that function writes, in the table of request types
(dmulog/requests.py); what arguments a log type takes in logtypes.py; errors
become gRPC statuses in interceptor.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias, cast

import grpc

from dmulog.requests import REQUESTS
from dmulog.v1 import dmulog_pb2 as pb
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc
from logsvc import tenancy, validate
from logsvc.access import Access
from logsvc.capacity import Capacity
from logsvc.events import EventFeed
from logsvc.exchange import Exchanges
from logsvc.leases import LeaseRecord, Leases
from logsvc.logtypes import LogSpec, log_device, parse_log_args, status_info, status_table
from logsvc.snapshot import log_state, log_summary, region_marks
from logsvc.store import Store

__all__ = ["DirtyLogService", "ctr_fields", "node_lease"]

Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

_FUNCTION_OF: Final[dict[type, tuple[str, bool]]] = {
    getattr(pb, f"{s.rpc}Request"): (s.function, not s.writes) for s in REQUESTS
}
"""A kernel request RPC's request message → (its library function, whether FCALL_RO may run it)."""

_GENERATION: contextvars.ContextVar[int] = contextvars.ContextVar("dmulog_answered_generation", default=0)
"""The log's generation for the caller's node after the current request's last store call."""


class DirtyLogService(pb_grpc.DirtyLogServicer):
    """gRPC face of the Store; holds no state of its own."""

    def __init__(self, store: Store, leases: Leases | None = None, feed: EventFeed | None = None,
                 access: Access | None = None):  # fmt: skip
        self._store = store
        self.access = access or Access(None)
        """Who may call what; the interceptor and the Exchange stream both check with it."""
        self._leases = leases or Leases(store)
        self._feed = feed or EventFeed(store)
        self._exchanges = Exchanges(self, metrics=store.metrics)
        self._capacity = Capacity(store)

    @property
    def leases(self) -> Leases:
        """The lease table (the server's reaper shares it)."""
        return self._leases

    @property
    def feed(self) -> EventFeed:
        """The event feed WatchLogs serves."""
        return self._feed

    @property
    def open_streams(self) -> int:
        """Exchange streams being served now (for health and metrics)."""
        return self._exchanges.open_streams

    def drain(self) -> None:
        """Shutting down: end every Exchange stream once what it has read is answered."""
        self._exchanges.drain()

    async def _op(self, request: Any, *extra: str | int) -> Any:
        """Call the library function of the RPC whose ``request`` this is (the table names it) with ``extra``."""
        function, readonly = _FUNCTION_OF[type(request)]
        node, boot, luid, epoch = validate.caller(request)
        caller = (tenancy.node_name(node), boot, luid, epoch)
        reply, generation = await self._store.answer(function, tenancy.log_name(request.log.uuid), caller, extra,
                                                     readonly=readonly, seen=request.log.generation)  # fmt: skip
        _GENERATION.set(generation)
        return reply

    async def _spec(self, request: pb.StatusInfoRequest | pb.StatusTableRequest) -> tuple[LogSpec, str]:
        """The instance's arguments and its log device as resolved at CTR."""
        inst = json.loads(await self._op(request))
        log_type, *args = inst["args"].split(" ")
        return parse_log_args(int(inst["target_sectors"]), log_type, args), inst.get("device", "")

    async def Ctr(self, request: pb.CtrRequest, context: Ctx) -> pb.CtrResponse:
        node, boot, _, epoch = validate.caller(request)
        uuid, node = tenancy.log_name(request.log.uuid), tenancy.node_name(node)
        s = parse_log_args(request.target_sectors, request.log_type, list(request.args))
        spec = ctr_fields(s, log_device(s, request.block_devices), uuid)
        quota = self.access.quota()
        if quota is not None:  # before the join: a refused CTR leaves no trace
            await self._capacity.admit(tenancy.TENANT.get() or "", quota, uuid, s.region_count)
        # Joined before constructed: the reaper of this incarnation then finds the log (logsvc/leases.py).
        await self._leases.join(node, boot, epoch, uuid)
        device, announce = await self._op(request, json.dumps(spec))
        await self._announce(uuid, node, announce)
        return pb.CtrResponse(device=device.decode() if isinstance(device, bytes) else "")

    async def _announce(self, uuid: str, node: str, announce: int) -> None:
        """A CTR or RESUME replaced an older incarnation of ``node``: tell every watcher, as after an expiry."""
        if announce:
            await self._leases.announce(uuid, node, 0)
            await self._store.announced(uuid, announce)

    async def Dtr(self, request: pb.DtrRequest, context: Ctx) -> pb.DtrResponse:
        await self._op(request)
        return pb.DtrResponse()

    async def Presuspend(self, request: pb.PresuspendRequest, context: Ctx) -> pb.PresuspendResponse:
        await self._op(request)
        return pb.PresuspendResponse()

    async def Postsuspend(self, request: pb.PostsuspendRequest, context: Ctx) -> pb.PostsuspendResponse:
        await self._op(request)
        return pb.PostsuspendResponse()

    async def Resume(self, request: pb.ResumeRequest, context: Ctx) -> pb.ResumeResponse:
        announce = int(await self._op(request))
        await self._announce(tenancy.log_name(request.log.uuid), tenancy.node_name(request.node.name), announce)
        return pb.ResumeResponse()

    async def GetRegionSize(self, request: pb.GetRegionSizeRequest, context: Ctx) -> pb.GetRegionSizeResponse:
        return pb.GetRegionSizeResponse(region_size=int(await self._op(request)))

    async def IsClean(self, request: pb.IsCleanRequest, context: Ctx) -> pb.IsCleanResponse:
        return pb.IsCleanResponse(clean=await self._op(request, request.region) == 1)

    async def InSync(self, request: pb.InSyncRequest, context: Ctx) -> pb.InSyncResponse:
        answer, latched = await self._op(request, request.region)
        return pb.InSyncResponse(in_sync=answer == 1, latched=latched == 1)

    async def Flush(self, request: pb.FlushRequest, context: Ctx) -> pb.FlushResponse:
        await self._op(request, *validate.regions(request.mark_regions, allow_empty=True))
        return pb.FlushResponse()

    async def MarkRegion(self, request: pb.MarkRegionRequest, context: Ctx) -> pb.MarkRegionResponse:
        await self._op(request, *validate.regions(request.regions))
        return pb.MarkRegionResponse()

    async def ClearRegion(self, request: pb.ClearRegionRequest, context: Ctx) -> pb.ClearRegionResponse:
        await self._op(request, *validate.regions(request.regions))
        return pb.ClearRegionResponse()

    async def GetResyncWork(self, request: pb.GetResyncWorkRequest, context: Ctx) -> pb.GetResyncWorkResponse:
        has_work, region = await self._op(request)
        return pb.GetResyncWorkResponse(has_work=has_work == 1, region=region)

    async def SetRegionSync(self, request: pb.SetRegionSyncRequest, context: Ctx) -> pb.SetRegionSyncResponse:
        await self._op(request, request.region, int(request.in_sync))
        return pb.SetRegionSyncResponse()

    async def GetSyncCount(self, request: pb.GetSyncCountRequest, context: Ctx) -> pb.GetSyncCountResponse:
        return pb.GetSyncCountResponse(sync_count=int(await self._op(request)))

    async def StatusInfo(self, request: pb.StatusInfoRequest, context: Ctx) -> pb.StatusInfoResponse:
        return pb.StatusInfoResponse(text=status_info(*await self._spec(request)))

    async def StatusTable(self, request: pb.StatusTableRequest, context: Ctx) -> pb.StatusTableResponse:
        return pb.StatusTableResponse(text=status_table(*await self._spec(request)))

    async def IsRemoteRecovering(
        self, request: pb.IsRemoteRecoveringRequest, context: Ctx
    ) -> pb.IsRemoteRecoveringResponse:
        recovering, hint = await self._op(request, request.region)
        return pb.IsRemoteRecoveringResponse(is_recovering=recovering == 1, in_sync_hint=hint)

    async def Exchange(
        self, request_iterator: AsyncIterator[pb.ExchangeRequest], context: Ctx
    ) -> AsyncIterator[pb.ExchangeResponse]:
        async for response in self._exchanges.serve(request_iterator, context):
            yield response

    async def ListLogs(self, request: pb.ListLogsRequest, context: Ctx) -> pb.ListLogsResponse:
        uuids = [u for u in await self._store.log_uuids() if tenancy.visible_log(u) is not None]
        raws = await asyncio.gather(*(self._store.admin("summary", u) for u in uuids))
        logs = [log_summary(u, r) for u, r in zip(uuids, raws, strict=True) if r]
        return cast(pb.ListLogsResponse, tenancy.shown(pb.ListLogsResponse(logs=logs)))

    async def GetLogState(self, request: pb.GetLogStateRequest, context: Ctx) -> pb.GetLogStateResponse:
        stored = tenancy.log_name(validate.uuid(request.uuid))
        return cast(pb.GetLogStateResponse, tenancy.shown(log_state(stored, await self._store.state(stored))))

    async def AcquireLease(self, request: pb.AcquireLeaseRequest, context: Ctx) -> pb.AcquireLeaseResponse:
        node = validate.node(request.node)
        lease = await self._leases.acquire(tenancy.node_name(node.name), node.boot_id)
        return pb.AcquireLeaseResponse(epoch=lease.epoch, ttl_ms=lease.ttl_ms)

    async def RenewLease(self, request: pb.RenewLeaseRequest, context: Ctx) -> pb.RenewLeaseResponse:
        node = validate.node(request.node, with_epoch=self._leases.enabled)
        lease = await self._leases.renew(tenancy.node_name(node.name), node.boot_id, node.epoch)
        return pb.RenewLeaseResponse(epoch=lease.epoch, ttl_ms=lease.ttl_ms)

    async def WatchLogs(self, request: pb.WatchLogsRequest, context: Ctx) -> AsyncIterator[pb.WatchLogsResponse]:
        async for item in self._feed.watch():
            if not item.uuid or tenancy.visible_log(item.uuid) is not None:  # READY has none: every watcher's
                yield tenancy.shown(item)

    async def ListNodes(self, request: pb.ListNodesRequest, context: Ctx) -> pb.ListNodesResponse:
        mine = [node_lease(r) for r in await self._leases.records() if tenancy.visible_node(r.name) is not None]
        return cast(pb.ListNodesResponse, tenancy.shown(pb.ListNodesResponse(nodes=mine)))

    async def ReadLogState(
        self, request: pb.ReadLogStateRequest, context: Ctx
    ) -> AsyncIterator[pb.ReadLogStateResponse]:
        # One bounded piece per message, read when it is sent: neither Redis nor
        # this process holds a large log's state for long, or whole.
        uuid = tenancy.log_name(validate.uuid(request.uuid))
        head = log_state(uuid, await self._store.state_head(uuid))
        yield pb.ReadLogStateResponse(head=cast(pb.GetLogStateResponse, tenancy.shown(head)))
        size = (head.summary.region_count + 7) // 8
        async for offset, data in self._store.bitmap(uuid, "sync", size):
            yield pb.ReadLogStateResponse(in_sync_bitmap=pb.BitmapChunk(offset=offset, data=data))
        async for offset, data in self._store.bitmap(uuid, "dirty", size):
            yield pb.ReadLogStateResponse(dirty_bitmap=pb.BitmapChunk(offset=offset, data=data))
        async for page in self._store.marks(uuid):
            marks = pb.RegionMarksPage(marks=region_marks(page))
            yield pb.ReadLogStateResponse(marks=cast(pb.RegionMarksPage, tenancy.shown(marks)))


def _stamped(method: Callable[[Any, Any, Ctx], Awaitable[Any]]) -> Callable[[Any, Any, Ctx], Awaitable[Any]]:
    """A kernel request RPC whose response carries the generation its store call answered (proto: LogRef)."""

    @functools.wraps(method)
    async def rpc(self: Any, request: Any, context: Ctx) -> Any:
        token = _GENERATION.set(0)
        try:
            response = await method(self, request, context)
            response.generation = _GENERATION.get()
            return response
        finally:
            _GENERATION.reset(token)

    return rpc


for _spec in REQUESTS:  # every kernel request RPC, from the one table
    setattr(DirtyLogService, _spec.rpc, _stamped(getattr(DirtyLogService, _spec.rpc)))
del _spec


_LEASE_STATES: Final = {"live": pb.LEASE_STATE_LIVE, "expiring": pb.LEASE_STATE_EXPIRING,
                        "dead": pb.LEASE_STATE_DEAD}  # fmt: skip


def node_lease(r: LeaseRecord) -> pb.NodeLease:
    """The API's view of a stored lease."""
    return pb.NodeLease(name=r.name, boot_id=r.boot, epoch=r.epoch,
                        state=_LEASE_STATES.get(r.state, pb.LEASE_STATE_UNSPECIFIED),
                        renewed_ms_ago=max(0, r.now_ms - r.renewed_ms), expires_in_ms=max(0, r.expires_ms - r.now_ms),
                        expiring_incarnations=r.expiring)  # fmt: skip


def ctr_fields(spec: LogSpec, device: str, uuid: str) -> dict[str, object]:
    """The JSON object the ctr Function reads (lua/dmulog.lua new_instance names the same fields)."""
    return {
        "target_sectors": str(spec.target_sectors), "log_type": spec.log_type, "region_size": spec.region_size,
        "region_count": spec.region_count, "sync": spec.sync, "args": spec.canonical_args, "device": device,
        "persistent": spec.persistent, "uuid": uuid,
    }  # fmt: skip
