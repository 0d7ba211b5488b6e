"""The benchmark's kernel: recorded kernel datagrams replayed at a bridge.

Nothing here is reachable from the ``dmulog`` command: the bridge in
production only ever reads its netlink socket. The benchmark instead runs the
same Bridge on the kernel stand-in's socket pair (harness/kernel_side.py),
writes recorded kernel datagrams into the kernel's end and reads the replies
from it, so the bridge runs exactly its production code (its read loop,
decode, dispatch, gRPC, encode, send) on the same bytes the kernel sends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import wire
from dmulog.v1 import dmulog_pb2 as pb
from harness.kernel_side import KernelEnd, frame

__all__ = ["NullClient", "Recorder", "Replayer", "load_trace", "pct", "replay_blocking", "rewrite"]

TRACES = Path(__file__).resolve().parent / "traces"


def load_trace(name: str) -> list[bytes]:
    """Datagrams of a recorded trace, in arrival order."""
    return [bytes.fromhex(line) for line in (TRACES / f"{name}.trace").read_text().split()]


def rewrite(datagram: bytes, *, uuid: str, luid: int, seq: int) -> bytes:
    """The same request for another mirror (uuid, luid) under a new seq."""
    req = wire.decode_request(datagram)
    return wire.encode_request(req.request_type, seq=seq, luid=luid, uuid=uuid, data=req.data, version=req.version)


class NullClient:
    """A LogsvcClient stand-in that answers every RPC with an empty response at once.

    With it, the bridge's cost is decode + dispatch + encode + socket: the
    floor of any bridge design.
    """

    #: Seconds a request may take, as LogsvcClient has it (this one never needs any).
    budget = 9.0

    def __init__(self) -> None:
        self._responses: dict[str, Any] = {}

    async def call(self, rpc: str, request: Any, *, critical: bool, budget: float | None = None) -> Any:
        """An empty response of the RPC's type."""
        response = self._responses.get(rpc)
        if response is None:
            response = self._responses[rpc] = getattr(pb, f"{rpc}Response")()
        return response

    async def close(self) -> None:
        """Nothing to close."""


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank: every table's p99 and p99.9."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
    """The kernel's end, in a process of its own: one request in flight per mirror (as kmirrord).

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


def replay_blocking(kernel: KernelEnd, trace: Sequence[bytes], mirrors: int, tag: str) -> dict[str, Any]:
    """The child's loop: every mirror's first request, then each mirror's next one as its reply arrives."""
    n = len(trace)
    # Every datagram is built before the clock starts: mirror m's i-th request has seq m*n + i + 1.
    plan = [[frame(rewrite(raw, uuid=f"bench-{m}-{tag}", luid=0xFFFF888000000000 + m * 0x1000, seq=m * n + i + 1))
             for i, raw in enumerate(trace)] for m in range(mirrors)]  # fmt: skip
    names = [wire.decode_request(raw).type_name for raw in trace]
    samples: dict[str, list[float]] = defaultdict(list)
    errors, sent_at = 0, [0.0] * mirrors
    clock = time.perf_counter
    start = clock()
    for m in range(mirrors):
        sent_at[m] = clock()
        kernel.send_framed(plan[m][0])
    left = mirrors * n
    while left:
        reply = kernel.reply()
        now = clock()
        m, i = divmod(reply.seq - 1, n)
        samples[names[i]].append(now - sent_at[m])
        errors += reply.error != 0
        left -= 1
        if i + 1 < n:
            sent_at[m] = clock()
            kernel.send_framed(plan[m][i + 1])
    return {"wall": clock() - start, "samples": samples, "errors": errors}


def main(argv: list[str]) -> int:
    """Child process: ``FD TRACE_FILE MIRRORS TAG``; prints the samples as JSON."""
    fd, trace_file, mirrors, tag = argv
    kernel = KernelEnd(socket.socket(fileno=int(fd)))
    trace = [bytes.fromhex(line) for line in Path(trace_file).read_text().split()]
    json.dump(replay_blocking(kernel, trace, int(mirrors), tag), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
