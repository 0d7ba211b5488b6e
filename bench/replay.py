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
import json
import socket
import struct
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import wire
from bridge.netlink import Transport
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


class UnixKernelSocket(Transport):
    """The bridge's end of a socket pair, in place of the kernel socket."""

    owned = True
    port_id = 0

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

    def send_nowait(self, datagram: bytes) -> bool:
        """A reply to the replaying side if the socket takes it at once; whether it did."""
        try:
            self._sock.send(datagram)
        except BlockingIOError:
            return False
        return True

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
    #: Requests the bridge answered without a call, by type.
    here: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, seconds: float, error: int) -> None:
        """One request."""
        self.samples[name].append(seconds)
        self.requests += 1
        self.errors += error != 0


class Replayer:
    """The kernel side, in a process of its own: one request in flight per mirror (as kmirrord).

    The kernel hands a request to the bridge for the price of a netlink send
    and a wake-up; a replayer sharing the bridge's event loop would charge its
    own Python work (futures, tasks, timeouts) to every request it measures.
    So the replaying runs in a child process with a plain blocking loop
    (``python -m bench.replay``), and the bridge's process runs the bridge only.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock

    async def run(self, trace: Sequence[bytes], mirrors: int, recorder: Recorder) -> float:
        """Replay ``trace`` on ``mirrors`` mirrors at once; returns the wall time."""
        with tempfile.NamedTemporaryFile("w", prefix="dmulog-replay-", suffix=".trace") as f:
            f.write("".join(d.hex() + "\n" for d in trace))
            f.flush()
            fd = self._sock.fileno()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.replay", str(fd), f.name, str(mirrors), str(time.monotonic_ns()),
                pass_fds=(fd,), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"replayer exited with {proc.returncode}")
        result = json.loads(out)
        for name, values in result["samples"].items():
            for v in values:
                recorder.add(name, v, 0)
        recorder.errors += result["errors"]
        return float(result["wall"])


def replay_blocking(sock: socket.socket, trace: Sequence[bytes], mirrors: int, tag: str) -> dict[str, Any]:
    """The child's loop: every mirror's first request, then each mirror's next one as its reply arrives."""
    sock.setblocking(True)
    sock.settimeout(60)
    n = len(trace)
    # Every datagram is built before the clock starts: mirror m's i-th request has seq m*n + i + 1.
    plan = [[rewrite(raw, uuid=f"bench-{m}-{tag}", luid=0xFFFF888000000000 + m * 0x1000, seq=m * n + i + 1)
             for i, raw in enumerate(trace)] for m in range(mirrors)]  # fmt: skip
    names = [wire.RequestType(struct.unpack_from("=I", raw, 188)[0]).name for raw in trace]
    samples: dict[str, list[float]] = defaultdict(list)
    errors, sent_at = 0, [0.0] * mirrors
    clock = time.perf_counter
    start = clock()
    for m in range(mirrors):
        sent_at[m] = clock()
        sock.send(plan[m][0])
    left = mirrors * n
    while left:
        reply = wire.decode_reply(sock.recv(65536))
        now = clock()
        m, i = divmod(reply.seq - 1, n)
        samples[names[i]].append(now - sent_at[m])
        errors += reply.error != 0
        left -= 1
        if i + 1 < n:
            sent_at[m] = clock()
            sock.send(plan[m][i + 1])
    return {"wall": clock() - start, "samples": samples, "errors": errors}


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(kernel side, bridge side) of a Unix datagram socket pair."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return a, b


def main(argv: list[str]) -> int:
    """Child process: ``FD TRACE_FILE MIRRORS TAG``; prints the samples as JSON."""
    fd, trace_file, mirrors, tag = argv
    sock = socket.socket(fileno=int(fd))
    trace = [bytes.fromhex(line) for line in Path(trace_file).read_text().split()]
    json.dump(replay_blocking(sock, trace, int(mirrors), tag), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
