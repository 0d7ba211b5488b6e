"""The NETLINK_CONNECTOR socket the kernel's dm-log-userspace talks to.

A plain ``socket`` in non-blocking mode driven by asyncio: pyroute2's
ConnectorSocket is built around its own synchronous marshal and message
parser, which this bridge does not need (wire.py already decodes the one
message format there is), so the socket is opened here directly.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from bridge.wire import CN_IDX_DM

__all__ = ["KernelSocket", "open_kernel_socket"]

NETLINK_CONNECTOR = 11
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RECV_BUFFER = 4 * 1024 * 1024
MAX_DATAGRAM = 65536


class KernelSocket:
    """Receive requests from, and send replies to, the kernel."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    @property
    def port_id(self) -> int:
        """Netlink port id the kernel assigned."""
        return int(self._sock.getsockname()[0])

    async def recv(self) -> tuple[bytes, int]:
        """Next datagram and its sender's port id (0 = the kernel)."""
        loop = asyncio.get_running_loop()
        data, addr = await loop.sock_recvfrom(self._sock, MAX_DATAGRAM)
        return data, int(addr[0])

    async def send(self, datagram: bytes) -> None:
        """One reply, one datagram, to the kernel (port 0)."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(self._sock, datagram, (0, 0))

    def close(self) -> None:
        """Leave the group and close."""
        self._sock.close()


def open_kernel_socket() -> KernelSocket:
    """Open, bind and join group CN_IDX_DM.

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
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, CN_IDX_DM)
        except OSError as e:
            if e.errno == errno.EPERM:
                raise PermissionError("joining connector group CN_IDX_DM needs CAP_NET_ADMIN") from e
            raise
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return KernelSocket(sock)
