"""What one round trip costs on each transport, with nothing behind it.

The full stack pays two hops (bridge → logsvc, logsvc → Redis) besides its
codec; this measures the first hop's floor per transport so that the gap
between the full stack and the Redis floor can be read off the same run:
an echo server in its own process on a Unix socket, answering 60-byte
messages (about an ExchangeCall's size) as

* ``socket``: length-prefixed frames on a plain asyncio Unix stream socket,
  the least any Python transport can cost;
* ``grpc unary``: one unary call per message;
* ``grpc stream``: one message each way on a long-lived bidirectional stream.

``python -m bench.transport [N]`` prints the table alone (harness/guest/bench.sh runs
it in the guest, where gRPC suffers from emulation far more than a socket).
"""

from __future__ import annotations

import asyncio
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

SERVICE = "dmulog.bench.Echo"
PAYLOAD = b"x" * 60
_LEN = struct.Struct("!I")


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
    return request


async def _stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:  # type: ignore[type-arg]
    async for request in requests:
        yield request


async def _echo_frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readexactly(_LEN.size)
            writer.write(head + await reader.readexactly(_LEN.unpack(head)[0]))
    except asyncio.IncompleteReadError:
        writer.close()


async def serve(workdir: Path) -> None:
    """The echo servers (run in a child process): gRPC on ``grpc.sock``, frames on ``frames.sock``."""
    server = grpc.aio.server()
    handlers = {"Unary": grpc.unary_unary_rpc_method_handler(_unary),
                "Stream": grpc.stream_stream_rpc_method_handler(_stream)}  # fmt: skip
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"unix:{workdir / 'grpc.sock'}")
    await server.start()
    frames = await asyncio.start_unix_server(_echo_frames, path=str(workdir / "frames.sock"))
    (workdir / "ready").touch()
    async with frames:
        await server.wait_for_termination()


async def measure(workdir: Path, n: int) -> dict[str, list[float]]:
    """``n`` sequential round trips per transport, in seconds, after a warm-up."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.transport", "--serve", str(workdir)])
    try:
        for _ in range(200):
            if (workdir / "ready").exists():
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("echo server did not start")
        out: dict[str, list[float]] = {}
        reader, writer = await asyncio.open_unix_connection(str(workdir / "frames.sock"))

        async def frame() -> None:
            writer.write(_LEN.pack(len(PAYLOAD)) + PAYLOAD)
            await reader.readexactly(_LEN.size + len(PAYLOAD))

        out["socket"] = await _timed(frame, n)
        writer.close()
        async with grpc.aio.insecure_channel(f"unix:{workdir / 'grpc.sock'}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary")

            async def call() -> None:
                await unary(PAYLOAD)

            out["grpc unary"] = await _timed(call, n)
            stream = channel.stream_stream(f"/{SERVICE}/Stream")()

            async def message() -> None:
                await stream.write(PAYLOAD)
                await stream.read()

            out["grpc stream"] = await _timed(message, n)
            stream.cancel()
        return out
    finally:
        proc.terminate()
        proc.wait(10)


async def _timed(once: Callable[[], Awaitable[None]], n: int) -> list[float]:
    for _ in range(min(200, n)):
        await once()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - t0)
    return samples


def table(hops: dict[str, list[float]]) -> str:
    """The hop table: p50, p99, p99.9 in µs and p50 against the plain socket's."""
    lines = [f"{'transport':<12} {'n':>6} {'p50':>8} {'p99':>8} {'p99.9':>8} {'x socket':>9}"]
    base = statistics.median(hops["socket"])
    for name, samples in hops.items():
        ordered = sorted(samples)
        p99, p999 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.99, 0.999))
        p50 = statistics.median(samples)
        lines.append(f"{name:<12} {len(samples):>6} {p50 * 1e6:>8.0f} {p99 * 1e6:>8.0f} {p999 * 1e6:>8.0f} "
                     f"{p50 / base:>9.2f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``--serve DIR``: the echo servers (child process); else measure N round trips each and print."""
    if argv[:1] == ["--serve"]:
        asyncio.run(serve(Path(argv[1])))
        return 0
    n = int(argv[0]) if argv else 2000
    with tempfile.TemporaryDirectory(prefix="dmulog-hop-") as workdir:
        hops = asyncio.run(measure(Path(workdir), n))
    print("one hop, nothing behind it: echo round trip to another process over a Unix socket (µs)")
    print(table(hops))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
