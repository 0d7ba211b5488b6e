"""The kernel's side of a bridge, without a kernel: exact request datagrams over a Unix socket pair.

The bridge reads the kernel through a Transport (bridge/netlink.py), and
KernelSocket is the NETLINK_CONNECTOR one. Here :class:`PairSocket`, one end
of a Unix datagram socket pair, takes its place, and whoever holds the other
end plays the kernel: it writes request datagrams exactly as the kernel sends
them and reads the replies. The bridge runs its production read loop on them
(``Bridge.serve``: peek, answer here, journal, consume, decode, one task per
request); nothing in it is called directly.

Netlink reports each datagram's sender beside it: a port id, 0 for the
kernel. A socket pair has no addresses, so the sending end writes the port id
in front of each datagram (:func:`frame`) and :class:`PairSocket` hands the
bridge ``(datagram, port id)`` just as KernelSocket does. A port other than 0
is a userspace process sending on the connector group, which the bridge must
ignore. Replies carry nothing extra: the bridge only ever answers the kernel.

The kernel's end comes in two kinds:

* :class:`KernelEnd`, blocking, for a process of its own: the benchmark's
  replayer (bench/replay.py), which must not charge its own Python work to
  the bridge it measures by sharing its event loop;
* :class:`AsyncKernelEnd`, in the event loop of a test: requests may overlap,
  each reply goes to whoever waits for its seq, the rest are queued.

:class:`KernelStandIn` is what the tests drive a bridge with: a Bridge on a
PairSocket, wired and started as bridge/agent.py:run wires and starts one on
the real socket, with an AsyncKernelEnd on the other side.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
import time
from collections.abc import AsyncIterator

from bridge import wire
from bridge.agent import KERNEL_TIMEOUT, Bridge
from bridge.client import ClientConfig, LogsvcClient
from bridge.fence import FENCE_FRACTION, SelfFence
from bridge.journal import Journal
from bridge.latch import InSyncLatches
from bridge.lease import LeaseKeeper, LogWatcher
from bridge.metrics import BridgeMetrics
from bridge.mirrors import Mirrors
from bridge.netlink import MAX_DATAGRAM, Transport
from dmulog.v1 import dmulog_pb2 as pb

__all__ = [
    "KERNEL_PORT",
    "LUID",
    "AsyncKernelEnd",
    "KernelEnd",
    "KernelStandIn",
    "PairSocket",
    "frame",
    "next_seq",
    "serving",
    "socket_pair",
    "u64",
]

#: The kernel's netlink port id: the only sender the bridge answers.
KERNEL_PORT = 0
#: The luid of the stand-in's requests unless told otherwise (a kernel address, as the kernel's are).
LUID = 0xFFFF888003A1B2C8
#: The sender's port id, in front of each datagram on the pair.
_SENDER = struct.Struct("=I")
#: Room for a burst of requests (64 mirrors at once) in either direction.
_BUFFER = 4 << 20
_U64 = struct.Struct("=Q")
_seqs = itertools.count(1000)


def next_seq() -> int:
    """A request seq no other request of this process had."""
    return next(_seqs)


def u64(*values: int) -> bytes:
    """A payload of native u64 values: regions, as MARK_REGION, CLEAR_REGION and IN_SYNC carry them."""
    return b"".join(_U64.pack(v) for v in values)


def frame(datagram: bytes, sender: int = KERNEL_PORT) -> bytes:
    """``datagram`` as the kernel's end writes it on the pair: from port ``sender``."""
    return _SENDER.pack(sender) + datagram


def socket_pair() -> tuple[socket.socket, PairSocket]:
    """(the kernel's end, the bridge's end) of a new Unix datagram socket pair."""
    kernel, bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (kernel, bridge):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
    return kernel, PairSocket(bridge)


class PairSocket(Transport):
    """The bridge's end of the pair, in place of the kernel socket.

    Like KernelSocket it peeks (the datagram stays queued until
    :meth:`consume`), so a bridge's journal-before-consume order is the one
    it has in production.
    """

    owned = True

    def __init__(self, sock: socket.socket, port_id: int | None = None):
        self._sock = sock
        sock.setblocking(False)
        # Netlink gives a process's first socket its pid as port id.
        self._port_id = os.getpid() if port_id is None else port_id

    @property
    def port_id(self) -> int:
        """This end's port id; never the kernel's."""
        return self._port_id

    def fileno(self) -> int:
        """The descriptor, watched for reading."""
        return self._sock.fileno()

    def _split(self, raw: bytes) -> tuple[bytes, int]:
        return raw[_SENDER.size :], _SENDER.unpack_from(raw)[0]

    def peek_nowait(self) -> tuple[bytes, int] | None:
        """The next datagram and its sender's port id, left in the queue; None if none."""
        try:
            return self._split(self._sock.recv(MAX_DATAGRAM + _SENDER.size, socket.MSG_PEEK))
        except BlockingIOError:
            return None

    def consume(self) -> None:
        """Drop the datagram :meth:`peek_nowait` returned (the bridge is this end's only reader)."""
        self._sock.recv(MAX_DATAGRAM + _SENDER.size)

    def recv_nowait(self) -> tuple[bytes, int] | None:
        """A datagram already queued and its sender's port id, taken off the queue; None if none."""
        try:
            return self._split(self._sock.recv(MAX_DATAGRAM + _SENDER.size))
        except BlockingIOError:
            return None

    def send_nowait(self, datagram: bytes) -> bool:
        """A reply to the kernel's end if the socket takes it at once; whether it did."""
        try:
            self._sock.send(datagram)
        except BlockingIOError:
            return False
        return True

    async def send(self, datagram: bytes) -> None:
        """A reply to the kernel's end, waiting for room if need be."""
        await asyncio.get_running_loop().sock_sendall(self._sock, datagram)

    def join_group(self) -> None:
        """Nothing to join: there is no connector group here."""

    def leave_group(self) -> None:
        """Nothing to leave: there is no connector group here."""

    def close(self) -> None:
        """Close this end."""
        self._sock.close()


class KernelEnd:
    """The kernel's end for a blocking loop in a process of its own."""

    def __init__(self, sock: socket.socket, timeout: float = 60.0):
        sock.setblocking(True)
        sock.settimeout(timeout)
        self._sock = sock

    def send_framed(self, framed: bytes) -> None:
        """A datagram :func:`frame` made (so that a loop can build every one before it starts timing)."""
        self._sock.send(framed)

    def send_datagram(self, datagram: bytes, sender: int = KERNEL_PORT) -> None:
        """A datagram from port ``sender``."""
        self._sock.send(frame(datagram, sender))

    def reply(self) -> wire.Reply:
        """The next reply; raises TimeoutError when none comes within the timeout."""
        return wire.decode_reply(self._sock.recv(MAX_DATAGRAM))


class AsyncKernelEnd:
    """The kernel's end in a test's event loop: overlapping requests, replies matched by seq.

    A reply someone waits for (:meth:`ask`) goes to that waiter; any other
    reply is queued for :meth:`reply`, in arrival order.
    """

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self._sock = sock
        self._waiters: dict[int, asyncio.Future[wire.Reply]] = {}
        self._unclaimed: asyncio.Queue[wire.Reply] = asyncio.Queue()
        self._watching = False

    def start(self) -> None:
        """Read replies as they arrive (from now on, in the running loop)."""
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._take)
        self._watching = True

    def close(self) -> None:
        """Stop reading; close this end."""
        if self._watching:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._watching = False
        self._sock.close()

    def _take(self) -> None:
        """Every reply already on the socket, to its waiter or the queue."""
        while True:
            try:
                reply = wire.decode_reply(self._sock.recv(MAX_DATAGRAM))
            except BlockingIOError:
                return
            waiter = self._waiters.pop(reply.seq, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply)
            else:
                self._unclaimed.put_nowait(reply)

    def send_datagram(self, datagram: bytes, sender: int = KERNEL_PORT) -> None:
        """Any datagram, from port ``sender``: a garbled one, or one from a process that is not the kernel."""
        self._sock.send(frame(datagram, sender))

    def send(self, rtype: int, data: bytes = b"", *, uuid: str, luid: int = LUID, seq: int | None = None,
             sender: int = KERNEL_PORT) -> int:  # fmt: skip
        """One request as the kernel encodes it; its seq."""
        seq = next_seq() if seq is None else seq
        self.send_datagram(wire.encode_request(rtype, seq=seq, luid=luid, uuid=uuid, data=data), sender)
        return seq

    async def ask(self, rtype: int, data: bytes = b"", *, uuid: str, luid: int = LUID, seq: int | None = None,
                  timeout: float = 15.0) -> wire.Reply:  # fmt: skip
        """One request and the reply with its seq, whatever other replies arrive meanwhile."""
        seq = next_seq() if seq is None else seq
        waiter = self._waiters[seq] = asyncio.get_running_loop().create_future()
        try:
            self.send(rtype, data, uuid=uuid, luid=luid, seq=seq)
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(seq, None)

    async def reply(self, timeout: float = 15.0) -> wire.Reply:
        """The next reply nobody asked for by seq; raises TimeoutError when none comes within ``timeout``."""
        return await asyncio.wait_for(self._unclaimed.get(), timeout)

    def received(self) -> int:
        """How many replies nobody asked for by seq have arrived and wait for :meth:`reply`, counted now."""
        self._take()
        return self._unclaimed.qsize()


@contextlib.asynccontextmanager
async def serving(bridge: Bridge, sock: Transport) -> AsyncIterator[int]:
    """The bridge's read loop on ``sock`` for the block, started as bridge/agent.py:run starts it.

    First what its journal holds, answered before anything newer is read, then
    the socket until the block ends; yields how many journalled requests it
    answered.
    """
    replayed = await bridge.replay_journal()
    stop = asyncio.Event()
    task = asyncio.ensure_future(bridge.serve(sock, stop))
    try:
        yield replayed
    finally:
        stop.set()
        await task


class KernelStandIn(AsyncKernelEnd):
    """A production Bridge on a socket pair and the kernel's end of it, for the length of an ``async with``.

    The bridge answers through a real LogsvcClient to ``logsvc``; entering
    the block answers its journal (:attr:`replayed` says how many) and starts
    its read loop, so datagrams sent before are read after that, as they
    would be from a socket a bridge inherited.
    """

    def __init__(self, logsvc: str, *, budget: float = 9.0, attempt_timeout: float = 3.0,
                 kernel_timeout: float = KERNEL_TIMEOUT, journal: Journal | None = None,
                 latches: InSyncLatches | None = None, node: pb.Node | None = None, leased: bool = False,
                 watcher: type[LogWatcher] = LogWatcher, dmsetup: str | None = None,
                 fence_fraction: float = FENCE_FRACTION, metrics: BridgeMetrics | None = None):  # fmt: skip
        kernel, self.socket = socket_pair()
        super().__init__(kernel)
        self.client = LogsvcClient(logsvc, ClientConfig(attempt_timeout=attempt_timeout, budget=budget),
                                   metrics=metrics)  # fmt: skip
        node = node or pb.Node(name="node-a", boot_id="boot-1")
        #: With ``leased``, the bridge holds a lease and watches log events, as ``dmulog bridge`` does.
        self.keeper = LeaseKeeper(self.client.stub, node) if leased else None
        latches = latches if latches is not None else InSyncLatches()
        #: With ``leased`` and ``dmsetup`` (a program standing in for dmsetup), the bridge fences itself.
        self.mirrors = Mirrors(dmsetup) if dmsetup else None
        self.fence = (SelfFence(self.keeper, self.mirrors, latches, fraction=fence_fraction)
                      if self.keeper is not None and self.mirrors is not None else None)  # fmt: skip
        fence = self.fence
        self.bridge = Bridge(self.client, node, self.socket.send, kernel_timeout, journal,
                             send_nowait=self.socket.send_nowait, latches=latches,
                             lease_ready=self.keeper.ready if self.keeper else None,
                             fenced=(lambda: fence.active) if fence is not None else None,
                             metrics=metrics)  # fmt: skip
        #: With ``metrics``, the bridge counts into them as ``dmulog bridge --metrics-listen`` does.
        self.metrics = metrics
        if metrics is not None:
            metrics.watch(self.bridge.tasks, self.keeper)
        if self.fence is not None:
            self.fence.waiting = self.bridge.waiting
        self.watcher = None
        if leased:
            self.watcher = (watcher(self.client.stub, self.bridge.latches) if self.mirrors is None
                            else watcher(self.client.stub, self.bridge.latches, self.mirrors, node.name))  # fmt: skip
        self.replayed = 0
        self._serving: contextlib.AbstractAsyncContextManager[int] | None = None
        self._stop = asyncio.Event()
        self._keeping: asyncio.Future[None] | None = None
        self._fencing: asyncio.Future[None] | None = None

    async def __aenter__(self) -> KernelStandIn:
        if self.keeper is not None:
            self._keeping = asyncio.ensure_future(self.keeper.keep(self._stop, self.watcher))
        if self.fence is not None:
            self._fencing = asyncio.ensure_future(self.fence.run(self._stop))
        self.start()
        self._serving = serving(self.bridge, self.socket)
        try:
            self.replayed = await self._serving.__aenter__()
        except BaseException:
            self._serving = None
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._serving is not None:
                await self._serving.__aexit__(None, None, None)
        finally:
            self._stop.set()
            if self._keeping is not None:
                await self._keeping
            if self._fencing is not None:
                await self._fencing
            await self.client.close()
            self.bridge.journal.close()
            self.close()
            self.socket.close()

    async def taken(self, timeout: float = 15.0) -> None:
        """Return once the bridge has taken every datagram sent so far off its socket (and so accepted it)."""
        deadline = time.monotonic() + timeout
        while self.socket.peek_nowait() is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge left a datagram on its socket for {timeout:g} s")
            await asyncio.sleep(0.001)
