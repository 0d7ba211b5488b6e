"""WatchLogs: the log events every bridge must learn from others, fanned out from one Redis stream.

The reaper (logsvc/leases.py) appends an event to one stream after each log
it handed over from an expired incarnation. Each logsvc process reads that
stream with one blocking XREAD at a time, whoever watches, and hands each
event to every WatchLogs stream it serves: so a thousand bridges cost Redis
one reader per replica, not a thousand.

READY is the promise a bridge builds on (bridge/latch.py): every event
appended after it is sent to that watcher. A watcher is registered between
two reads, and a read that completed before it could only have returned
events appended before it; the next read starts after the last id seen, so
it returns every event appended since. A watcher too slow to keep up (its
queue full) is ended, so that it reconnects and, meanwhile, trusts no latch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

from redis import exceptions as rexc

from dmulog.logs import event
from dmulog.v1 import dmulog_pb2 as pb
from logsvc.errors import LogError, Overtaken
from logsvc.keys import events_key
from logsvc.store import Store, text

__all__ = ["EventFeed"]

QUEUE: Final = 4096
"""Events one watcher may have waiting before it is ended."""
BLOCK_MS: Final = 1000

log = logging.getLogger("dmulog.logsvc.events")

_KINDS: Final = {"node_expired": pb.LOG_EVENT_KIND_NODE_EXPIRED}



def _event(fields: dict[Any, Any]) -> pb.WatchLogsResponse:
    f = {text(k): text(v) for k, v in fields.items()}
    kind = _KINDS.get(f.get("kind", ""), pb.LOG_EVENT_KIND_UNSPECIFIED)
    return pb.WatchLogsResponse(kind=kind, uuid=f.get("uuid", ""), node=f.get("node", ""),
                                epoch=int(f.get("epoch", "0") or 0))  # fmt: skip


class EventFeed:
    """One reader of the event stream per process, and the watchers it feeds."""

    def __init__(self, store: Store):
        self._store = store
        self._key = events_key(store.prefix)
        self._watchers: set[asyncio.Queue[pb.WatchLogsResponse | None]] = set()
        self._last: str | None = None  # id of the last event read; None until the position is known
        self._started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def watchers(self) -> int:
        """WatchLogs streams served now."""
        return len(self._watchers)

    def start(self) -> None:
        """Start the reader (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        """Stop the reader and end every watcher."""
        if self._task is not None:
            self._task.cancel()
        for queue in list(self._watchers):
            queue.put_nowait(None)

    async def watch(self) -> AsyncIterator[pb.WatchLogsResponse]:
        """READY, then every event appended from then on; raises Overtaken when it fell behind or Redis was lost."""
        self.start()
        await self._started.wait()
        queue: asyncio.Queue[pb.WatchLogsResponse | None] = asyncio.Queue(QUEUE)
        self._watchers.add(queue)
        try:
            yield pb.WatchLogsResponse(kind=pb.LOG_EVENT_KIND_READY)
            while (item := await queue.get()) is not None:
                yield item
            raise Overtaken("this watcher fell behind the event stream, or its reader lost Redis: watch again")
        finally:
            self._watchers.discard(queue)

    async def _position(self) -> str:
        last = await self._store.plain(lambda: self._store.redis.xrevrange(self._key, count=1))
        return text(last[0][0]) if last else "0-0"

    async def _read(self) -> None:
        while True:
            try:
                if self._last is None:
                    self._last = await self._position()
                    self._started.set()
                got: Any = await self._store.redis.xread({self._key: self._last}, block=BLOCK_MS, count=256)
            except asyncio.CancelledError:
                raise
            except (rexc.RedisError, OSError, LogError) as e:
                # Events may be missed while Redis is away: end every watcher
                # so that each trusts no latch until it watches again.
                event(log, logging.WARNING, "event_stream_unreadable", detail=repr(e))
                self._drop_all()
                self._last = None
                self._started.clear()
                await asyncio.sleep(0.5)
                continue
            for _, entries in got or []:
                for entry_id, fields in entries:
                    self._last = text(entry_id)
                    try:
                        item = _event(fields)
                    except ValueError as e:  # not ours: someone else wrote to the stream
                        event(log, logging.WARNING, "event_unreadable", id=self._last, detail=str(e))
                        continue
                    self._fan_out(item)

    def _fan_out(self, item: pb.WatchLogsResponse) -> None:
        for queue in list(self._watchers):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self._watchers.discard(queue)
                self._end(queue)

    def _drop_all(self) -> None:
        for queue in list(self._watchers):
            self._watchers.discard(queue)
            self._end(queue)

    @staticmethod
    def _end(queue: asyncio.Queue[pb.WatchLogsResponse | None]) -> None:
        # Make room for the end marker: what was queued is worthless now.
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)
