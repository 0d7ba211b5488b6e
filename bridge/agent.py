"""The bridge's request loop: datagram in, one gRPC call, datagram out.

Each request runs as its own task, so a slow answer for one mirror never
holds up another. The bridge keeps no log state.

Stale requests: the kernel gives up on a request after 15 s and re-sends it
under a new seq. Identical requests in flight at the same time are *not*
evidence of that: the kernel's mirror thread and a ``dmsetup status`` ioctl
routinely send the same GET_SYNC_COUNT concurrently, and each waits for its
own answer. So the bridge judges staleness by age alone: a reply that is
ready 15 s or more after its request arrived goes unsent (its waiter is gone
and its seq would at best match nothing).

Restarts: every request is journalled before it leaves the socket queue
(bridge/journal.py), and a starting bridge first answers what the previous
one left unanswered. On SIGTERM the bridge leaves the connector group (the
kernel then queues nothing more here and goes into its reconnect loop),
answers what is already queued and in flight, and exits.

Two requests are answered here, without a call, as soon as they are read:
an IN_SYNC of an instance whose in-sync latch is known (bridge/latch.py),
and a FLUSH without marks. The kernel sends a FLUSH only after the MARK and
CLEAR batches it commits were answered (docs/protocol.md §4.2), and every
change logsvc acknowledged is already as durable as Redis makes it, so such
a FLUSH has nothing to commit (the Flush RPC in the proto says any client may
skip it); the one thing it used to check, that the instance still exists,
the next MARK or CLEAR checks as well. A FLUSH that carries marks (integrated
flush) goes to logsvc. Such a reply leaves before its request leaves the
socket queue, so it needs no journal entry: killed at any point, the request
is still queued and answered again (the kernel ignores a second reply).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bridge import host, wire
from bridge.client import CallFailed, ClientConfig, LogsvcClient
from bridge.dispatch import ROUTES
from bridge.journal import Journal
from bridge.latch import LIFECYCLE, InSyncLatches
from bridge.netlink import STANDBY_FD_ENV, KernelSocket, inherited_kernel_socket, open_kernel_socket
from dmulog.logs import bind, event, unbind
from dmulog.v1 import dmulog_pb2 as pb

__all__ = [
    "Bridge",
    "BridgeConfig",
    "MissingCapabilities",
    "StartupError",
    "check_capabilities",
    "claim_kernel_socket",
    "refuse_other_listeners",
    "run",
]

log = logging.getLogger("dmulog.bridge")

# NOTE: DM_ULOG_RETRY_TIMEOUT in dm-log-userspace-transfer.c (15 * HZ).
KERNEL_TIMEOUT = 15.0

# A look at dm_ulog_request's request_type and data_size before decoding, so
# that only IN_SYNC and FLUSH pay for a decode on the way in (the full decode
# that follows checks everything).
_TYPE_AND_SIZE = struct.Struct("=II")
_TYPE_OFFSET = wire.HEADER_SIZE - _TYPE_AND_SIZE.size
_IN_SYNC, _FLUSH = wire.RequestType.IN_SYNC, wire.RequestType.FLUSH
_ONE = wire.encode_s64(True)


class StartupError(RuntimeError):
    """The bridge cannot serve this host; the message says why."""


class MissingCapabilities(StartupError):
    """The bridge lacks a capability the kernel checks (run it as root or grant it)."""


@dataclass(frozen=True)
class BridgeConfig:
    """Everything ``dmulog bridge`` can be told."""

    logsvc: str
    node: str | None = None
    attempt_timeout: float = 3.0
    budget: float = 9.0
    grace: float = 5.0
    journal_dir: Path | None = Path("/run/dmulog/inflight")
    latch_ttl: float = 1.0


class Bridge:
    """Answers kernel requests through a LogsvcClient."""

    def __init__(
        self,
        client: LogsvcClient,
        node: pb.Node,
        send: Callable[[bytes], Awaitable[None]],
        kernel_timeout: float = KERNEL_TIMEOUT,
        journal: Journal | None = None,
        *,
        send_nowait: Callable[[bytes], bool] | None = None,
        latches: InSyncLatches | None = None,
    ):
        self._client = client
        self._kernel_timeout = kernel_timeout
        self._node = node
        self._send = send
        self._send_nowait = send_nowait
        self.latches = latches if latches is not None else InSyncLatches()
        self.journal = journal or Journal(None)
        self.tasks: set[asyncio.Task[None]] = set()
        # Datagrams answered from the journal, with when they stop mattering: the
        # same bytes may still wait in an inherited socket's queue (the previous
        # bridge died between journalling and consuming them).
        self._replayed: dict[bytes, float] = {}
        #: Kernel requests taken in, by type (see ``log_counts``).
        self.counts: Counter[str] = Counter()
        #: Of those, the ones answered here without a call to logsvc.
        self.answered_here: Counter[str] = Counter()

    def log_counts(self) -> None:
        """Log ``request_counts``: the requests taken in so far, by type (``dmulog bridge`` does it on SIGUSR1).

        A counter is nearly free per request, unlike a debug line per request, so a
        benchmark can count requests without slowing down what it measures.
        """
        event(log, logging.INFO, "request_counts", counts=dict(self.counts), answered_here=dict(self.answered_here))

    def answer_here(self, datagram: bytes) -> bool:
        """Answer ``datagram`` without logsvc if it is a request that needs none; whether it did.

        Only a FLUSH without marks and an IN_SYNC of a latched instance qualify
        (see the module docstring). Anything else, including a datagram that
        does not decode, is left to :meth:`accept`; so is a reply the socket
        cannot take at once.
        """
        if self._send_nowait is None or len(datagram) < wire.HEADER_SIZE:
            return False
        rtype, size = _TYPE_AND_SIZE.unpack_from(datagram, _TYPE_OFFSET)
        rtype &= wire.DM_ULOG_REQUEST_MASK
        if not (rtype == _IN_SYNC or (rtype == _FLUSH and size == 0)):
            return False
        try:
            req = wire.decode_request(datagram)
            if req.request_type == _FLUSH:
                reply = wire.encode_reply(req, 0)
            elif req.request_type == _IN_SYNC and self.latches.latched((req.uuid, req.luid)):
                wire.decode_single_region(req.data, "IN_SYNC")
                reply = wire.encode_reply(req, 0, _ONE)
            else:
                return False
        except wire.WireError:
            return False
        try:
            if not self._send_nowait(reply):
                return False
        except OSError:
            return False  # the ordinary path sends it again, and logs what fails
        self.counts[req.type_name] += 1
        self.answered_here[req.type_name] += 1
        return True

    async def answer(self, req: wire.Request) -> bytes:
        """The reply datagram for a decoded request. Never raises for bad input."""
        route = ROUTES.get(req.request_type)
        if route is None:
            event(log, logging.WARNING, "request_unknown_type", request_type=req.request_type)
            return wire.error_reply(req, errno.EINVAL)
        try:
            message = route.build(req, pb.LogRef(uuid=req.uuid, luid=req.luid), self._node)
        except wire.WireError as e:
            event(log, logging.WARNING, "request_malformed", detail=str(e))
            return wire.error_reply(req, e.errno)
        key = (req.uuid, req.luid)
        lifecycle = req.request_type in LIFECYCLE
        if lifecycle:
            self.latches.begin(key)
        ticket = self.latches.asking(key) if req.request_type == _IN_SYNC else 0
        try:
            response = await self._client.call(route.rpc, message, critical=route.critical)
            if ticket:
                self.latches.answered(key, ticket, response.latched)
            return wire.encode_reply(req, 0, route.reply(req, response))
        except CallFailed as e:
            level = logging.DEBUG if e.errno == errno.ESRCH else logging.INFO
            event(log, level, "request_failed", errno=errno.errorcode.get(e.errno, e.errno), detail=str(e))
            return wire.error_reply(req, e.errno)
        except wire.WireError as e:
            event(log, logging.ERROR, "reply_unencodable", detail=str(e))
            return wire.error_reply(req, e.errno)
        finally:
            if lifecycle:
                self.latches.end(key, gone=req.request_type == wire.RequestType.DTR)

    def accept(self, datagram: bytes, sender: int, entry: int | None = None, received: float | None = None) -> None:
        """Take one datagram off the socket; decode now, answer in a task.

        ``entry`` is its journal slot, dropped once it is answered; ``received``
        (monotonic) defaults to now.
        """
        if sender != 0:
            # Only the kernel may ask; a userspace process sending on the
            # connector group is ignored, not answered.
            event(log, logging.WARNING, "datagram_not_from_kernel", sender_port=sender, size=len(datagram))
            self.journal.done(entry)
            return
        try:
            req = wire.decode_request(datagram)
        except wire.WireError as e:
            event(log, logging.ERROR, "datagram_malformed", detail=str(e), size=len(datagram),
                  head=datagram[:64].hex(), answered=e.reply is not None)  # fmt: skip
            if e.reply is not None:
                self._spawn(self._send_then_forget(e.reply, entry))
            else:
                self.journal.done(entry)
            return
        self.counts[req.type_name] += 1
        self._spawn(self._process(req, time.monotonic() if received is None else received, entry))

    async def _send_then_forget(self, reply: bytes, entry: int | None) -> None:
        try:
            await self._send(reply)
        finally:
            self.journal.done(entry)

    async def replay_journal(self) -> int:
        """Answer the requests an earlier bridge journalled and left unanswered; how many.

        Entries the kernel has already given up on (15 s or older) are dropped:
        it re-sent them under a new seq, which is queued or on its way.

        Returns only once every replayed request is answered, before anything
        newer is read: a journalled CLEAR whose reply went out just before the
        old bridge died may be followed in the queue by a MARK of the same
        region, and running the two at once could let the CLEAR land last and
        drop a mark that protects a write in flight.
        """
        replayed, now = 0, time.monotonic()
        for entry in self.journal.pending():
            if entry.age >= self._kernel_timeout:
                event(log, logging.INFO, "journal_entry_expired", age_s=round(entry.age, 3))
                self.journal.done(entry.slot)
                continue
            self._replayed[entry.datagram] = now + self._kernel_timeout
            self.accept(entry.datagram, 0, entry.slot, received=now - entry.age)
            replayed += 1
        if replayed:
            event(log, logging.INFO, "journal_replayed", requests=replayed)
            await asyncio.wait(set(self.tasks))
        return replayed

    def _already_replayed(self, datagram: bytes) -> bool:
        if not self._replayed:
            return False
        now = time.monotonic()
        for key in [k for k, until in self._replayed.items() if until <= now]:
            del self._replayed[key]
        return self._replayed.pop(datagram, None) is not None

    def drain(self, sock: KernelSocket, limit: int = 10000) -> int:
        """Accept the datagrams already queued on ``sock`` (at shutdown); how many."""
        taken = 0
        while taken < limit:
            got = sock.recv_nowait()
            if got is None:
                break
            data, sender = got
            self.accept(data, sender, self.journal.record(data) if sender == 0 else None)
            taken += 1
        return taken

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _reply(self, req: wire.Request, received: float, reply: bytes) -> None:
        age = time.monotonic() - received
        if age >= self._kernel_timeout:
            event(log, logging.WARNING, "reply_stale", age_s=round(age, 3))
            return
        await self._send(reply)
        event(log, logging.DEBUG, "request", ms=round(age * 1000, 3))

    async def _process(self, req: wire.Request, received: float, entry: int | None = None) -> None:
        token = bind(uuid=req.uuid, luid=req.luid, seq=req.seq, request=req.type_name)
        try:
            await self._reply(req, received, await self.answer(req))
        except Exception:
            # One bad request must not stop the bridge.
            log.exception("request_crashed")
            await self._reply(req, received, wire.error_reply(req, errno.EIO))
        finally:
            self.journal.done(entry)
            unbind(token)

    async def serve(self, sock: KernelSocket, stop: asyncio.Event) -> None:
        """Read datagrams until ``stop`` is set.

        Reading is a callback on the socket becoming readable that takes every
        datagram already queued (up to a bound, so replies and gRPC get their
        turn): no future, task or reader registration per request.
        """
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        loop.add_reader(fd, self._take_queued, sock)
        try:
            self._take_queued(sock)  # anything queued before we watched
            await stop.wait()
        finally:
            loop.remove_reader(fd)

    def _take_queued(self, sock: KernelSocket, limit: int = 64) -> None:
        for _ in range(limit):
            try:
                got = sock.peek_nowait()
                if got is None:
                    return
                data, sender = got
                if sender == 0 and self.answer_here(data):
                    # Answered before it left the queue: nothing to journal.
                    sock.consume()
                    continue
                # Journal first, then take it off the queue: killed at any
                # point, this request is in the socket or in the journal.
                replayed = sender == 0 and self._already_replayed(data)
                entry = self.journal.record(data) if sender == 0 and not replayed else None
                sock.consume()
            except OSError as e:
                # ENOBUFS: the receive queue overflowed and the kernel
                # dropped requests; it will time out and re-send them.
                event(log, logging.ERROR, "netlink_recv_error", errno=errno.errorcode.get(e.errno or 0, e.errno))
                return
            if replayed:
                event(log, logging.DEBUG, "request_already_replayed", size=len(data))
                continue
            self.accept(data, sender, entry)


def check_capabilities() -> None:
    """Refuse to start without the capabilities the kernel checks.

    Raises:
        MissingCapabilities: one is missing.
    """
    missing = host.missing_capabilities()
    if missing:
        raise MissingCapabilities(f"dmulog bridge needs {' and '.join(missing)} (run it as root or grant the "
                                  "capabilities)")  # fmt: skip


def claim_kernel_socket() -> tuple[KernelSocket, socket.socket]:
    """Open the netlink socket as this host's only log server; returns it and the instance lock.

    Raises:
        StartupError: another bridge or another log server (cmirrord) is running,
            or the kernel has no connector.
    """
    check_capabilities()
    try:
        lock = host.hold_instance_lock()
    except host.AlreadyRunning as e:
        raise StartupError(str(e)) from None
    try:
        sock = open_kernel_socket()
    except FileNotFoundError:
        lock.close()
        raise StartupError("this kernel has no NETLINK_CONNECTOR (CONFIG_CONNECTOR)") from None
    try:
        refuse_other_listeners(sock)
    except StartupError:
        sock.close()
        lock.close()
        raise
    return sock, lock


def refuse_other_listeners(sock: KernelSocket) -> None:
    """Refuse to serve beside another listener of group 7: the kernel multicasts to both.

    Raises:
        StartupError: there is one.
    """
    others = host.other_listeners(wire.CN_IDX_DM, sock.port_id)
    if others:
        raise StartupError(
            f"another userspace log server (netlink port {', '.join(map(str, others))}, e.g. cmirrord) "
            "already listens to dm-log-userspace; two servers would race to answer"
        )


def _journal(directory: Path | None) -> Journal:
    try:
        return Journal(directory)
    except OSError as e:
        event(log, logging.ERROR, "journal_unavailable", path=str(directory), detail=str(e))
        return Journal(None)


async def _standby_until_called(fd: int) -> bool:
    """Wait, fully started, until the keeper says to serve (True) or goes away (False).

    Taking over then costs nothing but a journal replay: the seconds a fresh
    process spends importing were spent in advance.
    """
    loop = asyncio.get_running_loop()
    try:
        called = await loop.run_in_executor(None, os.read, fd, 1)
    finally:
        os.close(fd)
    if not called:
        event(log, logging.INFO, "standby_released")
    return bool(called)


async def run(config: BridgeConfig) -> None:
    """Check the host, open (or inherit) the socket, serve until SIGTERM/SIGINT.

    An inherited socket (LISTEN_FDS) belongs to whoever passed it, which also
    guarantees there is one bridge per host; so no lock is taken for it.
    """
    try:
        inherited = inherited_kernel_socket()
    except ValueError as e:
        raise StartupError(str(e)) from None
    lock: socket.socket | None = None
    if inherited is None:
        sock, lock = claim_kernel_socket()
    else:
        check_capabilities()
        sock = inherited
        refuse_other_listeners(sock)
    node = pb.Node(name=host.node_name(config.node), boot_id=host.boot_id())
    client = LogsvcClient(config.logsvc, ClientConfig(config.attempt_timeout, config.budget))
    bridge = Bridge(client, node, sock.send, journal=_journal(config.journal_dir), send_nowait=sock.send_nowait,
                    latches=InSyncLatches(config.latch_ttl))  # fmt: skip
    client.warm()
    standby = os.environ.pop(STANDBY_FD_ENV, None)
    if standby is not None and not await _standby_until_called(int(standby)):
        sock.close()
        await client.close()
        bridge.journal.close()
        return
    event(log, logging.INFO, "bridge_listening", netlink="NETLINK_CONNECTOR", group=wire.CN_IDX_DM,
          connector=f"{wire.CN_IDX_DM}:{wire.CN_VAL_DM_USERSPACE_LOG}", port_id=sock.port_id,
          inherited=inherited is not None, journal=str(config.journal_dir or ""),
          logsvc=config.logsvc, transport=client.transport,
          node=node.name, boot_id=node.boot_id)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, bridge.log_counts)
    try:
        await bridge.replay_journal()
        await bridge.serve(sock, stop)
        if sock.owned:
            sock.leave_group()
        drained = bridge.drain(sock)
        event(log, logging.INFO, "bridge_stopping", inflight=len(bridge.tasks), drained=drained)
        if bridge.tasks:
            await asyncio.wait(bridge.tasks, timeout=config.grace)
    finally:
        sock.close()
        await client.close()
        bridge.journal.close()
        if lock is not None:
            lock.close()
