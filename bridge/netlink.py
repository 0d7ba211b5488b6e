"""The NETLINK_CONNECTOR socket the kernel's dm-log-userspace talks to.

A plain ``socket`` in non-blocking mode driven by asyncio: pyroute2's
ConnectorSocket is built around its own synchronous marshal and message
parser, which this bridge does not need (wire.py already decodes the one
message format there is), so the socket is opened here directly.

The socket may also be inherited (the systemd ``LISTEN_FDS`` protocol), from
systemd's ``ListenNetlink=connector 64`` or from ``dmulog bridge --respawn``.
Then it outlives the bridge process: datagrams the kernel sends while the
bridge restarts wait in its queue instead of being lost with it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from collections.abc import MutableMapping
from typing import Protocol

from bridge.wire import CN_IDX_DM

__all__ = [
    "LISTEN_FDS_START",
    "STANDBY_FD_ENV",
    "KernelSocket",
    "Transport",
    "inherited_kernel_socket",
    "open_kernel_socket",
]

NETLINK_CONNECTOR = 11
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_DROP_MEMBERSHIP = 2
NETLINK_LIST_MEMBERSHIPS = 9
RECV_BUFFER = 4 * 1024 * 1024
MAX_DATAGRAM = 65536
#: First file descriptor passed under the LISTEN_FDS protocol (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3
#: Set by ``--respawn``'s keeper for a standby bridge: the descriptor to read one byte
#: from before serving (end of file: the keeper is gone).
STANDBY_FD_ENV = "DMULOG_STANDBY_FD"


class Transport(Protocol):
    """What the bridge's read loop needs of the socket the kernel's requests arrive on.

    :class:`KernelSocket` is the real one; a test or benchmark may put a
    socket pair in its place (harness/kernel_side.py:PairSocket) and run the
    bridge's production loop on exact kernel datagrams.
    """

    owned: bool
    """Whether this process owns the socket (else it was inherited and outlives us)."""

    @property
    def port_id(self) -> int:
        """Port id the socket is bound to (the kernel's replies come from 0)."""
        ...

    def fileno(self) -> int:
        """The descriptor to watch for reading."""
        ...

    def peek_nowait(self) -> tuple[bytes, int] | None:
        """The next datagram and its sender's port id (0 = the kernel), left in the queue; None if none."""
        ...

    def consume(self) -> None:
        """Drop the datagram :meth:`peek_nowait` returned."""
        ...

    def recv_nowait(self) -> tuple[bytes, int] | None:
        """A datagram already queued and its sender's port id, taken off the queue; None if none."""
        ...

    def send_nowait(self, datagram: bytes) -> bool:
        """One reply if the socket takes it at once; whether it did."""
        ...

    async def send(self, datagram: bytes) -> None:
        """One reply, waiting for room if need be."""
        ...

    def join_group(self) -> None:
        """Start receiving requests (the bridge does it once it can answer them at once)."""
        ...

    def leave_group(self) -> None:
        """Stop receiving requests."""
        ...

    def close(self) -> None:
        """Close this process's descriptor."""
        ...


class KernelSocket(Transport):
    """Receive requests from, and send replies to, the kernel.

    Reading is split in :meth:`peek` and :meth:`consume` so the bridge can
    record a request in its journal while the datagram is still queued: a
    bridge killed at any instant has either left the request in the socket
    or has it in the journal.
    """

    def __init__(self, sock: socket.socket, *, owned: bool = True):
        self._sock = sock
        self.owned = owned

    @property
    def port_id(self) -> int:
        """Netlink port id the kernel assigned."""
        return int(self._sock.getsockname()[0])

    def fileno(self) -> int:
        """The descriptor (to watch it for reading, or to pass the socket on to a child process)."""
        return self._sock.fileno()

    def peek_nowait(self) -> tuple[bytes, int] | None:
        """The next datagram and its sender's port id (0 = the kernel), left in the queue; None if none."""
        try:
            data, addr = self._sock.recvfrom(MAX_DATAGRAM, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        return data, int(addr[0])

    async def peek(self) -> tuple[bytes, int]:
        """The next datagram and its sender's port id, left in the queue; waits for one."""
        loop, fd = asyncio.get_running_loop(), self._sock.fileno()
        while True:
            if (got := self.peek_nowait()) is not None:
                return got
            ready = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    def consume(self) -> None:
        """Drop the datagram :meth:`peek` returned (this process is the socket's only reader)."""
        self._sock.recv(MAX_DATAGRAM)

    async def recv(self) -> tuple[bytes, int]:
        """Next datagram and its sender's port id, taken off the queue."""
        data, sender = await self.peek()
        self.consume()
        return data, sender

    def recv_nowait(self) -> tuple[bytes, int] | None:
        """A datagram already queued, or None."""
        try:
            data, addr = self._sock.recvfrom(MAX_DATAGRAM)
        except BlockingIOError:
            return None
        return data, int(addr[0])

    def send_nowait(self, datagram: bytes) -> bool:
        """One reply to the kernel if the socket takes it at once; whether it did."""
        try:
            self._sock.sendto(datagram, (0, 0))
        except BlockingIOError:
            return False
        return True

    async def send(self, datagram: bytes) -> None:
        """One reply, one datagram, to the kernel (port 0).

        The kernel takes a netlink message to itself synchronously, so the
        send is tried at once; only a full socket buffer makes it wait.
        """
        while True:
            try:
                self._sock.sendto(datagram, (0, 0))
                return
            except BlockingIOError:
                pass
            loop, fd = asyncio.get_running_loop(), self._sock.fileno()
            ready = loop.create_future()
            loop.add_writer(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)

    def join_group(self) -> None:
        """Start receiving requests: from now on the kernel queues them here.

        Joining is the last step of a bridge's start, not the first: while no
        socket is in the group the kernel's send fails at once and it retries
        its CTR every 2 s, whereas a request queued on a socket nobody reads
        yet waits out the kernel's 15 s and is logged as timed out. A fresh
        bridge spends seconds importing (under emulation, at times more than
        15), so the socket is opened, checked and held first and joined only
        once it is read. Joining twice (a standby taking over the keeper's
        socket, a systemd socket bound to group 7) changes nothing.

        Raises:
            PermissionError: no CAP_NET_ADMIN.
        """
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, CN_IDX_DM)
        except OSError as e:
            if e.errno == errno.EPERM:
                raise PermissionError("joining connector group CN_IDX_DM needs CAP_NET_ADMIN") from e
            raise

    def leave_group(self) -> None:
        """Stop receiving requests: from now on the kernel finds no listener here.

        With no listener left, the kernel's send fails at once and it enters its
        reconnect loop (replaying CTR and RESUME to the next server) instead of
        queueing requests that nobody would answer.
        """
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, CN_IDX_DM)
        except OSError:
            pass

    def in_group(self) -> bool:
        """Whether the socket is in group CN_IDX_DM now, whichever process joined it.

        The keeper asks, to learn when its first bridge serves without a
        channel of its own to that bridge: membership belongs to the socket,
        which both hold. The kernel answers with a bitmap of the groups joined
        (bit ``g - 1`` for group ``g``), empty before any join.
        """
        raw = self._sock.getsockopt(SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, 4)
        return bool(int.from_bytes(raw, sys.byteorder) >> (CN_IDX_DM - 1) & 1)

    def close(self) -> None:
        """Close this process's descriptor (an inherited socket lives on in its owner)."""
        self._sock.close()


def _wake(ready: asyncio.Future[None]) -> None:
    """A descriptor is ready; the loop may say so again before the waiter runs."""
    if not ready.done():
        ready.set_result(None)


def open_kernel_socket() -> KernelSocket:
    """Open and bind, without joining group CN_IDX_DM yet (:meth:`KernelSocket.join_group` says why).

    Binding with ``nl_groups = 0`` and joining by setsockopt subscribes to
    group 7 only (a bind mask of 7 would also subscribe groups 1-3, among
    them the process-events connector).
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    try:
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, RECV_BUFFER)
                break
            except PermissionError:
                continue
        sock.bind((0, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return KernelSocket(sock)


def inherited_kernel_socket(env: MutableMapping[str, str] | None = None) -> KernelSocket | None:
    """The socket passed by the LISTEN_FDS protocol, or None when none was passed.

    The variables are removed from ``env`` (like ``sd_listen_fds(1)``) so that
    no child of the bridge mistakes the descriptor for its own. The bridge
    joins it to CN_IDX_DM when it starts reading (harmless when systemd
    already bound it to mask 64, group 7, or an earlier bridge joined it).

    Raises:
        ValueError: the descriptor is not a NETLINK_CONNECTOR socket.
    """
    env = os.environ if env is None else env
    pid, count = env.pop("LISTEN_PID", None), env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None or pid != str(os.getpid()) or int(count) < 1:
        return None
    sock = socket.socket(fileno=LISTEN_FDS_START)
    if sock.family != socket.AF_NETLINK or sock.proto != NETLINK_CONNECTOR:
        sock.detach()
        raise ValueError(f"descriptor {LISTEN_FDS_START} (LISTEN_FDS) is not a NETLINK_CONNECTOR socket")
    os.set_inheritable(LISTEN_FDS_START, False)
    sock.setblocking(False)
    return KernelSocket(sock, owned=False)
