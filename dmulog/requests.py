"""What each kernel request type means, declared once for every part that handles one.

The kernel's dm-log-userspace sends 17 request types. For each, the bridge must
know how to read its payload, which RPC serves it, how to write the reply into
the room the kernel left for it, whether a failure must be retried rather than
reported, whether it ends an instance's in-sync latch, and whether it may be
answered without logsvc; logsvc must know which function of its Redis library
serves it and whether that function writes; the kernel tests must know which
arguments of a recorded function call are regions. Kept in step by hand, those
facts drifted apart; here each type is one row of :data:`REQUESTS` and every one
of those places reads it.

This module imports nothing but the standard library, so the bridge, logsvc
and test code alike can read it (see tests/unit/test_layers.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeVar

__all__ = [
    "BY_TYPE",
    "REQUESTS",
    "AnswerHere",
    "Lifecycle",
    "Payload",
    "Reply",
    "ReplyKind",
    "RequestSpec",
    "RequestType",
    "region_arguments",
]

_A = TypeVar("_A")


class RequestType(enum.IntEnum):
    """The kernel's DM_ULOG_* request types (the value is the wire number)."""

    CTR = 1
    DTR = 2
    PRESUSPEND = 3
    POSTSUSPEND = 4
    RESUME = 5
    GET_REGION_SIZE = 6
    IS_CLEAN = 7
    IN_SYNC = 8
    FLUSH = 9
    MARK_REGION = 10
    CLEAR_REGION = 11
    GET_RESYNC_WORK = 12
    SET_REGION_SYNC = 13
    GET_SYNC_COUNT = 14
    STATUS_INFO = 15
    STATUS_TABLE = 16
    IS_REMOTE_RECOVERING = 17


class Payload(enum.Enum):
    """What a request carries after its header (decoded by bridge/dispatch.py, one decoder per kind).

    The decoded values are also the Lua function's own arguments, in this
    order, which is how a recorded call's regions are found (:func:`region_arguments`).
    """

    NONE = "nothing"
    ANY = "anything, ignored"  # DTR: the header says the CTR string, the kernel sends nothing
    CTR = "the constructor string '<sectors> <type> <args...>'"
    REGION = "one u64 region"
    REGIONS = "a non-empty u64[] of regions"
    MARKS = "a u64[] of regions to mark, possibly empty"  # FLUSH of an integrated kernel
    REGION_SYNC = "{ u64 region; s64 in_sync; }"

    @property
    def region_slice(self) -> slice | None:
        """Which of the decoded values (and so of the Lua function's own arguments) are regions."""
        return _REGION_SLICES.get(self)


_REGION_SLICES: Final = {
    Payload.REGION: slice(0, 1),
    Payload.REGIONS: slice(0, None),
    Payload.MARKS: slice(0, None),
    Payload.REGION_SYNC: slice(0, 1),
}


class ReplyKind(enum.Enum):
    """How a response becomes the reply payload (encoded by bridge/dispatch.py, one encoder per kind)."""

    NONE = "nothing"
    U64 = "u64 of one field"
    FLAG = "s64 exactly 0 or 1 of one bool field"
    RESYNC_WORK = "{ s64 i; u64 r; } of (has work, region)"
    RECOVERING = "{ s64 is_recovering; u64 in_sync_hint; }"
    TEXT = "status text of one field, NUL included"
    DEVICE = "the log device's name, NUL included, or nothing"

    @property
    def exact(self) -> bool:
        """Whether the reply fills the kernel's room exactly (else it may be shorter)."""
        return self not in (ReplyKind.TEXT, ReplyKind.DEVICE)


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply kind and the response fields it is made of, in the kind's order."""

    kind: ReplyKind
    fields: tuple[str, ...] = ()


class Lifecycle(enum.Enum):
    """What a request does to the instance's in-sync latch (bridge/latch.py)."""

    NONE = "leaves it"
    ENDS_LATCH = "ends it while in flight"
    FORGETS = "ends it and forgets the instance"  # DTR

    @property
    def ends_latch(self) -> bool:
        """Whether a latch known for the instance must be forgotten while the request is in flight."""
        return self is not Lifecycle.NONE


class AnswerHere(enum.Enum):
    """When the bridge may answer a request itself, without a call (bridge/answer.py)."""

    NEVER = "never"
    IF_LATCHED = "when the instance is known latched: every region is in sync"  # IN_SYNC
    IF_EMPTY = "when the payload is empty: nothing to commit"  # FLUSH without marks


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request type: everything the bridge, logsvc and the tests need to know of it."""

    type: RequestType
    rpc: str
    """The DirtyLog RPC (and ExchangeCall field, in snake_case) that serves it."""
    function: str
    """The Lua library function logsvc calls for it (without the store's prefix)."""
    writes: bool
    """Whether that function writes (FCALL) or only reads (FCALL_RO, flag ``no-writes``)."""
    payload: Payload
    reply: Reply
    capacity: int | None
    """Reply bytes the kernel has room for (dm-log-userspace-base.c); None: the rest of the status buffer.
    A larger reply makes the kernel fail the request with -ENOSPC."""
    critical: bool = False
    """A failure the kernel would read as permission to go on without the log (an IN_SYNC
    error reads as "not in sync", a FLUSH error lets unlogged writes through): never
    reported for an outage, which gets -EAGAIN so that the kernel asks again."""
    lifecycle: Lifecycle = Lifecycle.NONE
    here: AnswerHere = AnswerHere.NEVER
    mirror_thread: bool = False
    """Sent only by the mirror's own thread (kmirrord, dm-raid1.c do_mirror), which issues every read and
    write of a mirror on a userspace log and waits inside the request: while one is unanswered, that
    mirror issues no I/O (bridge/fence.py counts on it)."""
    older_functions: tuple[str, ...] = ()
    """Functions the library still registers for this type for logsvc versions that called them."""

    @property
    def name(self) -> str:
        """The kernel's name without DM_ULOG_ (``MARK_REGION``)."""
        return self.type.name


T, P, R = RequestType, Payload, ReplyKind
WRITES, READS = True, False
NOTHING: Final = Reply(R.NONE)

# NOTE: CTR has room for 128 bytes at table load but 0 in the kernel's reconnect
# loop, which sends its string with the NUL (bridge/wire.py:CtrArgs.replay); the
# DEVICE reply is then empty. PRESUSPEND does not end a latch in logsvc; it is
# treated as if it did: that costs nothing, as I/O is stopping.
REQUESTS: Final[tuple[RequestSpec, ...]] = (
    # type  RPC  Lua function  FCALL(_RO)  payload  reply  kernel's reply room  ...
    RequestSpec(T.CTR, "Ctr", "ctr", WRITES, P.CTR, Reply(R.DEVICE, ("device",)), 128,
                lifecycle=Lifecycle.ENDS_LATCH),
    RequestSpec(T.DTR, "Dtr", "dtr", WRITES, P.ANY, NOTHING, 0, lifecycle=Lifecycle.FORGETS),
    RequestSpec(T.PRESUSPEND, "Presuspend", "presuspend", WRITES, P.NONE, NOTHING, 0, critical=True,
                lifecycle=Lifecycle.ENDS_LATCH),
    RequestSpec(T.POSTSUSPEND, "Postsuspend", "postsuspend", WRITES, P.NONE, NOTHING, 0, critical=True,
                lifecycle=Lifecycle.ENDS_LATCH),
    RequestSpec(T.RESUME, "Resume", "resume", WRITES, P.NONE, NOTHING, 0, critical=True,
                lifecycle=Lifecycle.ENDS_LATCH),
    RequestSpec(T.GET_REGION_SIZE, "GetRegionSize", "get_region_size", READS, P.NONE,
                Reply(R.U64, ("region_size",)), 8),
    RequestSpec(T.IS_CLEAN, "IsClean", "is_clean", READS, P.REGION, Reply(R.FLAG, ("clean",)), 8),
    RequestSpec(T.IN_SYNC, "InSync", "in_sync_latch", READS, P.REGION, Reply(R.FLAG, ("in_sync",)), 8,
                critical=True, here=AnswerHere.IF_LATCHED, older_functions=("in_sync",), mirror_thread=True),
    RequestSpec(T.FLUSH, "Flush", "flush", WRITES, P.MARKS, NOTHING, 0, critical=True, here=AnswerHere.IF_EMPTY,
                mirror_thread=True),
    RequestSpec(T.MARK_REGION, "MarkRegion", "mark_region", WRITES, P.REGIONS, NOTHING, 0, critical=True,
                mirror_thread=True),
    RequestSpec(T.CLEAR_REGION, "ClearRegion", "clear_region", WRITES, P.REGIONS, NOTHING, 0, critical=True,
                mirror_thread=True),
    RequestSpec(T.GET_RESYNC_WORK, "GetResyncWork", "get_resync_work", WRITES, P.NONE,
                Reply(R.RESYNC_WORK, ("has_work", "region")), 16),
    RequestSpec(T.SET_REGION_SYNC, "SetRegionSync", "set_region_sync", WRITES, P.REGION_SYNC, NOTHING, 0,
                critical=True, mirror_thread=True),
    RequestSpec(T.GET_SYNC_COUNT, "GetSyncCount", "get_sync_count", READS, P.NONE,
                Reply(R.U64, ("sync_count",)), 8),
    RequestSpec(T.STATUS_INFO, "StatusInfo", "describe", READS, P.NONE, Reply(R.TEXT, ("text",)), None),
    RequestSpec(T.STATUS_TABLE, "StatusTable", "describe", READS, P.NONE, Reply(R.TEXT, ("text",)), None),
    RequestSpec(T.IS_REMOTE_RECOVERING, "IsRemoteRecovering", "is_remote_recovering", WRITES, P.REGION,
                Reply(R.RECOVERING, ("is_recovering", "in_sync_hint")), 16),
)  # fmt: skip
"""One row per kernel request type, in the kernel's order."""

BY_TYPE: Final[Mapping[int, RequestSpec]] = MappingProxyType({int(s.type): s for s in REQUESTS})
"""The row of a wire number; an unknown number has none."""


def region_arguments(function: str, arguments: Sequence[_A]) -> Sequence[_A]:
    """Those of a library function's own ``arguments`` (after the caller's) that are regions; none if it takes none."""
    cut = _REGION_ARGUMENTS.get(function)
    return arguments[cut] if cut is not None else ()


def _check(rows: Sequence[RequestSpec]) -> None:
    """Refuse a table that breaks a rule its readers rely on (at import: a table is code)."""
    if [s.type for s in rows] != list(RequestType):
        raise ValueError("REQUESTS must have exactly one row per RequestType, in the kernel's order")
    for s in rows:
        if s.capacity is None and s.reply.kind is not ReplyKind.TEXT:
            raise ValueError(f"{s.name}: only a status text may have no fixed reply room")
        if s.here is AnswerHere.IF_LATCHED and s.reply.kind is not ReplyKind.FLAG:
            raise ValueError(f"{s.name}: only a flag reply can be answered 1 for a latched instance")
        if s.here is AnswerHere.IF_EMPTY and (s.reply.kind is not ReplyKind.NONE or s.payload is not Payload.MARKS):
            raise ValueError(f"{s.name}: only a request whose payload may be empty and that has no reply can be "
                             "answered here when empty")  # fmt: skip
        if s.mirror_thread and not s.critical:
            raise ValueError(f"{s.name}: a request of the mirror's thread keeps it waiting only if an outage never "
                             "fails it (critical)")  # fmt: skip
    seen: dict[str, RequestSpec] = {}
    for s in rows:
        for function in (s.function, *s.older_functions):
            other = seen.setdefault(function, s)
            if other.payload.region_slice != s.payload.region_slice:
                raise ValueError(f"function {function} serves requests whose regions are in different arguments")
            if other.writes != s.writes:
                raise ValueError(f"function {function} serves requests that disagree on whether it writes")


_check(REQUESTS)
_REGION_ARGUMENTS: Final = {
    function: s.payload.region_slice
    for s in REQUESTS
    for function in (s.function, *s.older_functions)
    if s.payload.region_slice is not None
}
