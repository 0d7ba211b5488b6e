"""Test-only plumbing for the benchmark: replay recorded kernel datagrams.

Nothing here is reachable from the ``dmulog`` command: the bridge in
production only ever reads its netlink socket. The benchmark instead hands
the same Bridge object a Unix datagram socket pair, writes recorded kernel
datagrams into one end and reads the replies from the other, so the bridge
runs exactly its production code (decode, dispatch, gRPC, encode, send) on
the same bytes the kernel sends.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import wire
from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["NullClient", "Recorder", "UnixKernelSocket", "load_trace", "rewrite"]

TRACES = Path(__file__).resolve().parent / "traces"


def load_trace(name: str) -> list[bytes]:
    """Datagrams of a recorded trace, in arrival order."""
    return [bytes.fromhex(line) for line in (TRACES / f"{name}.trace").read_text().split()]


def rewrite(datagram: bytes, *, uuid: str, luid: int, seq: int) -> bytes:
    """The same request for another mirror (uuid, luid) under a new seq."""
    req = wire.decode_request(datagram)
    return wire.encode_request(req.request_type, seq=seq, luid=luid, uuid=uuid, data=req.data, version=req.version)


class UnixKernelSocket:
    """The bridge's end of a socket pair, with KernelSocket's interface."""

    owned = True

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._next: bytes | None = None
        sock.setblocking(False)

    def fileno(self) -> int:
        """The descriptor, watched for reading."""
        return self._sock.fileno()

    def peek_nowait(self) -> tuple[bytes, int] | None:
        """Next datagram if one is queued, kept until :meth:`consume`; the sender is the kernel (port 0)."""
        if self._next is None:
            try:
                self._next = self._sock.recv(65536)
            except BlockingIOError:
                return None
        return self._next, 0

    async def peek(self) -> tuple[bytes, int]:
        """Next datagram, kept until :meth:`consume`; the sender is reported as the kernel (port 0)."""
        if self._next is None:
            self._next = await asyncio.get_running_loop().sock_recv(self._sock, 65536)
        return self._next, 0

    def consume(self) -> None:
        """Drop the datagram :meth:`peek` returned."""
        self._next = None

    async def recv(self) -> tuple[bytes, int]:
        """Next datagram, taken off the queue."""
        data, sender = await self.peek()
        self.consume()
        return data, sender

    def recv_nowait(self) -> tuple[bytes, int] | None:
        """A datagram already queued, or None."""
        if self._next is not None:
            data, self._next = self._next, None
            return data, 0
        try:
            return self._sock.recv(65536), 0
        except BlockingIOError:
            return None

    def leave_group(self) -> None:
        """Nothing to leave: there is no netlink group here."""

    async def send(self, datagram: bytes) -> None:
        """A reply to the replaying side."""
        await asyncio.get_running_loop().sock_sendall(self._sock, datagram)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class NullClient:
    """A LogsvcClient stand-in that answers every RPC with an empty response at once.

    With it, the bridge's cost is decode + dispatch + encode + socket: the
    floor of any bridge design.
    """

    def __init__(self) -> None:
        self._responses: dict[str, Any] = {}

    async def call(self, rpc: str, request: Any, *, critical: bool) -> Any:
        """An empty response of the RPC's type."""
        response = self._responses.get(rpc)
        if response is None:
            response = self._responses[rpc] = getattr(pb, f"{rpc}Response")()
        return response

    async def close(self) -> None:
        """Nothing to close."""


@dataclass
class Recorder:
    """Latencies per request type, in seconds."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    requests: int = 0
    errors: int = 0

    def add(self, name: str, seconds: float, error: int) -> None:
        """One request."""
        self.samples[name].append(seconds)
        self.requests += 1
        self.errors += error != 0


class Replayer:
    """The kernel side: one task per mirror, one request in flight per mirror (as kmirrord)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        sock.setblocking(False)
        self._waiters: dict[int, asyncio.Future[bytes]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._seq = 1

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 65536)
            reply = wire.decode_reply(data)
            fut = self._waiters.pop(reply.seq, None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def run(self, trace: Sequence[bytes], mirrors: int, recorder: Recorder) -> float:
        """Replay ``trace`` on ``mirrors`` mirrors at once; returns the wall time."""
        self._reader = asyncio.ensure_future(self._read())
        start = time.perf_counter()
        try:
            await asyncio.gather(*(self._mirror(trace, m, recorder) for m in range(mirrors)))
        finally:
            self._reader.cancel()
        return time.perf_counter() - start

    async def _mirror(self, trace: Sequence[bytes], index: int, recorder: Recorder) -> None:
        loop = asyncio.get_running_loop()
        uuid, luid = f"bench-{index}-{id(self)}", 0xFFFF888000000000 + index * 0x1000
        for raw in trace:
            seq = self._seq
            self._seq += 1
            datagram = rewrite(raw, uuid=uuid, luid=luid, seq=seq)
            fut: asyncio.Future[bytes] = loop.create_future()
            self._waiters[seq] = fut
            t0 = time.perf_counter()
            await loop.sock_sendall(self._sock, datagram)
            reply = wire.decode_reply(await asyncio.wait_for(fut, 30))
            recorder.add(wire.RequestType(struct.unpack_from("=I", datagram, 188)[0]).name,
                         time.perf_counter() - t0, reply.error)  # fmt: skip


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(kernel side, bridge side) of a Unix datagram socket pair."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return a, b
