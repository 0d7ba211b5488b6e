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
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge import host, wire
from bridge.client import CallFailed, ClientConfig, LogsvcClient
from bridge.dispatch import ROUTES
from bridge.netlink import KernelSocket, open_kernel_socket
from dmulog.logs import bind, event, unbind
from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["Bridge", "BridgeConfig", "StartupError", "run"]

log = logging.getLogger("dmulog.bridge")

# NOTE: DM_ULOG_RETRY_TIMEOUT in dm-log-userspace-transfer.c (15 * HZ).
KERNEL_TIMEOUT = 15.0


class StartupError(RuntimeError):
    """The bridge cannot serve this host; the message says why."""


@dataclass(frozen=True)
class BridgeConfig:
    """Everything ``dmulog bridge`` can be told."""

    logsvc: str
    node: str | None = None
    attempt_timeout: float = 3.0
    budget: float = 9.0
    grace: float = 5.0


class Bridge:
    """Answers kernel requests through a LogsvcClient."""

    def __init__(
        self,
        client: LogsvcClient,
        node: pb.Node,
        send: Callable[[bytes], Awaitable[None]],
        kernel_timeout: float = KERNEL_TIMEOUT,
    ):
        self._client = client
        self._kernel_timeout = kernel_timeout
        self._node = node
        self._send = send
        self.tasks: set[asyncio.Task[None]] = set()

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
        try:
            response = await self._client.call(route.rpc, message, critical=route.critical)
            return wire.encode_reply(req, 0, route.reply(req, response))
        except CallFailed as e:
            level = logging.DEBUG if e.errno == errno.ESRCH else logging.INFO
            event(log, level, "request_failed", errno=errno.errorcode.get(e.errno, e.errno), detail=str(e))
            return wire.error_reply(req, e.errno)
        except wire.WireError as e:
            event(log, logging.ERROR, "reply_unencodable", detail=str(e))
            return wire.error_reply(req, e.errno)

    def accept(self, datagram: bytes, sender: int) -> None:
        """Take one datagram off the socket; decode now, answer in a task."""
        if sender != 0:
            # Only the kernel may ask; a userspace process sending on the
            # connector group is ignored, not answered.
            event(log, logging.WARNING, "datagram_not_from_kernel", sender_port=sender, size=len(datagram))
            return
        try:
            req = wire.decode_request(datagram)
        except wire.WireError as e:
            event(log, logging.ERROR, "datagram_malformed", detail=str(e), size=len(datagram),
                  head=datagram[:64].hex(), answered=e.reply is not None)  # fmt: skip
            if e.reply is not None:
                self._spawn(self._send(e.reply))
            return
        self._spawn(self._process(req, time.monotonic()))

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

    async def _process(self, req: wire.Request, received: float) -> None:
        token = bind(uuid=req.uuid, luid=req.luid, seq=req.seq, request=req.type_name)
        try:
            await self._reply(req, received, await self.answer(req))
        except Exception:
            # One bad request must not stop the bridge.
            log.exception("request_crashed")
            await self._reply(req, received, wire.error_reply(req, errno.EIO))
        finally:
            unbind(token)

    async def serve(self, sock: KernelSocket, stop: asyncio.Event) -> None:
        """Read datagrams until ``stop`` is set."""
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                recv = asyncio.ensure_future(sock.recv())
                done, _ = await asyncio.wait({recv, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if recv not in done:
                    recv.cancel()
                    break
                try:
                    data, sender = recv.result()
                except OSError as e:
                    # ENOBUFS: the receive queue overflowed and the kernel
                    # dropped requests; it will time out and re-send them.
                    event(log, logging.ERROR, "netlink_recv_error", errno=errno.errorcode.get(e.errno or 0, e.errno))
                    continue
                self.accept(data, sender)
        finally:
            stopper.cancel()


async def run(config: BridgeConfig) -> None:
    """Check the host, open the socket, serve until SIGTERM/SIGINT."""
    missing = host.missing_capabilities()
    if missing:
        raise StartupError(f"dmulog bridge needs {' and '.join(missing)} (run it as root or grant the capabilities)")
    try:
        lock = host.hold_instance_lock()
    except host.AlreadyRunning as e:
        raise StartupError(str(e)) from None
    try:
        sock = open_kernel_socket()
    except FileNotFoundError:
        raise StartupError("this kernel has no NETLINK_CONNECTOR (CONFIG_CONNECTOR)") from None
    others = host.other_listeners(wire.CN_IDX_DM, sock.port_id)
    if others:
        sock.close()
        raise StartupError(
            f"another userspace log server (netlink port {', '.join(map(str, others))}, e.g. cmirrord) "
            "already listens to dm-log-userspace; two servers would race to answer"
        )
    node = pb.Node(name=host.node_name(config.node), boot_id=host.boot_id())
    client = LogsvcClient(config.logsvc, ClientConfig(config.attempt_timeout, config.budget))
    bridge = Bridge(client, node, sock.send)
    event(log, logging.INFO, "bridge_listening", netlink="NETLINK_CONNECTOR", group=wire.CN_IDX_DM,
          connector=f"{wire.CN_IDX_DM}:{wire.CN_VAL_DM_USERSPACE_LOG}", port_id=sock.port_id,
          logsvc=config.logsvc, node=node.name, boot_id=node.boot_id)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bridge.serve(sock, stop)
        event(log, logging.INFO, "bridge_stopping", inflight=len(bridge.tasks))
        if bridge.tasks:
            await asyncio.wait(bridge.tasks, timeout=config.grace)
    finally:
        sock.close()
        await client.close()
        lock.close()
