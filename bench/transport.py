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
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

from dmulog import eventloop

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
    proc = subprocess.Popen([sys.executable, "-m", "bench.transport", str(workdir)])
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


if __name__ == "__main__":
    eventloop.run(serve(Path(sys.argv[1])))
