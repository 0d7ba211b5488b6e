"""The one table from kernel request type to gRPC call and back.

For each of the 17 request types: how its payload becomes an API request,
which RPC serves it, how the response becomes the reply payload (exactly the
size the kernel has room for), and whether it is *critical*: a request whose
failure the kernel would treat as permission to go on without the log (an
IN_SYNC error reads as "not in sync", so writes skip the secondary leg; a
FLUSH error without ``handle_errors`` lets unlogged writes through). A
critical request is never answered with a failure it did not earn: when
logsvc stays unreachable it gets -EAGAIN and the kernel asks again.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge import wire
from bridge.wire import Request, RequestType
from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["ROUTES", "SYS_DEV_BLOCK", "Route", "block_devices"]

#: Where the kernel lists its block devices by number ("<major>:<minor>" entries).
SYS_DEV_BLOCK = "/sys/dev/block"
_PAIR = re.compile(r"([0-9]+):([0-9]+)")

Build = Callable[[Request, pb.LogRef, pb.Node], Any]
Reply = Callable[[Request, Any], bytes]


@dataclass(frozen=True, slots=True)
class Route:
    """How one request type travels."""

    rpc: str
    build: Build
    reply: Reply
    critical: bool


def _plain(message: type[Any], name: str) -> Build:
    def build(req: Request, log: pb.LogRef, node: pb.Node) -> Any:
        wire.expect_empty(req.data, name)
        return message(log=log, node=node)

    return build


def _region(message: type[Any], name: str) -> Build:
    def build(req: Request, log: pb.LogRef, node: pb.Node) -> Any:
        return message(log=log, node=node, region=wire.decode_single_region(req.data, name))

    return build


def _regions(message: type[Any], name: str) -> Build:
    def build(req: Request, log: pb.LogRef, node: pb.Node) -> Any:
        return message(log=log, node=node, regions=wire.decode_regions(req.data, name))

    return build


def _ctr(req: Request, log: pb.LogRef, node: pb.Node) -> pb.CtrRequest:
    ctr = wire.decode_ctr(req.data)
    return pb.CtrRequest(log=log, node=node, target_sectors=ctr.target_sectors, log_type=ctr.log_type, args=ctr.args,
                         block_devices=block_devices(ctr))  # fmt: skip


def block_devices(ctr: wire.CtrArgs) -> dict[str, str]:
    """What each device argument of the CTR names on this node.

    logsvc may run on another machine, so only the node can tell which block
    device a table's path means (cmirrord showed the log device's numbers
    from fstat) and whether it exists at all: the kernel opens the log device
    only after a successful CTR, and when that fails it drops the table
    without a DTR, leaving the log behind. So an absolute path the node
    cannot resolve to a block device (missing, not a block device, a loop, a
    name too long) is reported as "", and so is a bare ``major:minor`` with
    no block device behind it in SYS_DEV_BLOCK (a node without that sysfs
    directory reports no pair, taking them as given). Only a path the node
    may not look at (permissions: the kernel, looking as root, may still
    open it) gets no entry and is taken as given. A replayed CTR reports
    only devices it found: its table is already loaded, so refusing it now
    would only trap the kernel in its reconnect loop.
    """
    found: dict[str, str] = {}
    for arg in ctr.args:
        if arg in found:
            continue
        if arg.startswith("/"):
            number = _device_at(arg)
        elif (pair := _PAIR.fullmatch(arg)) and os.path.isdir(SYS_DEV_BLOCK):
            number = _device_numbered(*pair.groups())
        else:
            continue
        if number is not None and (number or not ctr.replay):
            found[arg] = number
    return found


def _device_numbered(major: str, minor: str) -> str:
    """``major:minor`` as the kernel reads it (decimal, leading zeros dropped) if that block device exists, else ""."""
    number = f"{major.lstrip('0') or '0'}:{minor.lstrip('0') or '0'}"
    return number if os.path.exists(os.path.join(SYS_DEV_BLOCK, number)) else ""


def _device_at(path: str) -> str | None:
    """``major:minor`` of the block device at ``path``, "" if there is none, None if it may not be looked at."""
    try:
        st = os.stat(path)
    except PermissionError:
        return None
    except OSError:  # ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, ...: nothing the kernel could open either
        return ""
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if stat.S_ISBLK(st.st_mode) else ""


def _dtr(req: Request, log: pb.LogRef, node: pb.Node) -> pb.DtrRequest:
    # NOTE: the header says DTR carries the constructor string; the kernel
    # sends nothing. Either is accepted: the payload means nothing here.
    return pb.DtrRequest(log=log, node=node)


def _flush(req: Request, log: pb.LogRef, node: pb.Node) -> pb.FlushRequest:
    regions = wire.decode_regions(req.data, "FLUSH", allow_empty=True)
    return pb.FlushRequest(log=log, node=node, mark_regions=regions)


def _set_region_sync(req: Request, log: pb.LogRef, node: pb.Node) -> pb.SetRegionSyncRequest:
    region, in_sync = wire.decode_set_region_sync(req.data)
    return pb.SetRegionSyncRequest(log=log, node=node, region=region, in_sync=in_sync)


def _none(req: Request, resp: Any) -> bytes:
    return b""


def _ctr_reply(req: Request, resp: pb.CtrResponse) -> bytes:
    return wire.encode_ctr_reply(resp.device, wire.decode_ctr(req.data), req.version)


R = RequestType
ROUTES: dict[int, Route] = {
    R.CTR: Route("Ctr", _ctr, _ctr_reply, critical=False),
    R.DTR: Route("Dtr", _dtr, _none, critical=False),
    R.PRESUSPEND: Route("Presuspend", _plain(pb.PresuspendRequest, "PRESUSPEND"), _none, critical=True),
    R.POSTSUSPEND: Route("Postsuspend", _plain(pb.PostsuspendRequest, "POSTSUSPEND"), _none, critical=True),
    R.RESUME: Route("Resume", _plain(pb.ResumeRequest, "RESUME"), _none, critical=True),
    R.GET_REGION_SIZE: Route(
        "GetRegionSize", _plain(pb.GetRegionSizeRequest, "GET_REGION_SIZE"),
        lambda req, resp: wire.encode_u64(resp.region_size), critical=False,
    ),
    R.IS_CLEAN: Route(
        "IsClean", _region(pb.IsCleanRequest, "IS_CLEAN"),
        lambda req, resp: wire.encode_s64(resp.clean), critical=False,
    ),
    R.IN_SYNC: Route(
        "InSync", _region(pb.InSyncRequest, "IN_SYNC"),
        lambda req, resp: wire.encode_s64(resp.in_sync), critical=True,
    ),
    R.FLUSH: Route("Flush", _flush, _none, critical=True),
    R.MARK_REGION: Route("MarkRegion", _regions(pb.MarkRegionRequest, "MARK_REGION"), _none, critical=True),
    R.CLEAR_REGION: Route("ClearRegion", _regions(pb.ClearRegionRequest, "CLEAR_REGION"), _none, critical=True),
    R.GET_RESYNC_WORK: Route(
        "GetResyncWork", _plain(pb.GetResyncWorkRequest, "GET_RESYNC_WORK"),
        lambda req, resp: wire.encode_resync_work(resp.has_work, resp.region), critical=False,
    ),
    R.SET_REGION_SYNC: Route("SetRegionSync", _set_region_sync, _none, critical=True),
    R.GET_SYNC_COUNT: Route(
        "GetSyncCount", _plain(pb.GetSyncCountRequest, "GET_SYNC_COUNT"),
        lambda req, resp: wire.encode_u64(resp.sync_count), critical=False,
    ),
    R.STATUS_INFO: Route(
        "StatusInfo", _plain(pb.StatusInfoRequest, "STATUS_INFO"),
        lambda req, resp: wire.encode_text(resp.text), critical=False,
    ),
    R.STATUS_TABLE: Route(
        "StatusTable", _plain(pb.StatusTableRequest, "STATUS_TABLE"),
        lambda req, resp: wire.encode_text(resp.text), critical=False,
    ),
    R.IS_REMOTE_RECOVERING: Route(
        "IsRemoteRecovering", _region(pb.IsRemoteRecoveringRequest, "IS_REMOTE_RECOVERING"),
        lambda req, resp: wire.encode_remote_recovering(resp.is_recovering, resp.in_sync_hint), critical=False,
    ),
}  # fmt: skip
