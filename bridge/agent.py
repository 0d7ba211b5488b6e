"""The bridge's read loop: datagram in, journal, one task per request, datagram out.

Each request runs as its own task, so a slow answer for one mirror never
holds up another. The bridge keeps no log state. Reading goes peek → answer
here (bridge/answer.py) → journal → consume → decode → task; what a request
gets is bridge/answer.py's business, what the host must allow before any of
this is bridge/startup.py's, and :func:`run` puts the three together.

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

A request answered here, without a call (bridge/answer.py says which and why), leaves before it leaves the socket
queue, so it needs no journal entry: killed at any point, the request is
still queued and answered again (the kernel ignores a second reply).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bridge import host, wire
from bridge.answer import Answerer
from bridge.client import ClientConfig, LogsvcClient
from bridge.fence import SelfFence
from bridge.health import BridgeHealth, channel_state
from bridge.journal import Journal, Replayed
from bridge.latch import InSyncLatches
from bridge.lease import LeaseKeeper, LogWatcher
from bridge.metrics import BridgeMetrics
from bridge.mirrors import Mirrors
from bridge.netlink import Transport
from bridge.privileges import BRIDGE, keep_only
from bridge.startup import StartupError, stop_on_signals, take_kernel_socket, wait_for_turn
from dmulog.logs import bind, event, unbind
from dmulog.metrics import MetricsEndpoint, serve_metrics
from dmulog.tls import TlsFiles
from dmulog.v1 import dmulog_pb2 as pb

__all__ = ["KERNEL_TIMEOUT", "Bridge", "BridgeConfig", "run"]

log = logging.getLogger("dmulog.bridge")

# NOTE: DM_ULOG_RETRY_TIMEOUT in dm-log-userspace-transfer.c (15 * HZ).
KERNEL_TIMEOUT = 15.0


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
    self_fence: bool = True
    tls: TlsFiles | None = None
    """This node's certificate, its key and logsvc's CA (their SAN names the node: logsvc checks it)."""
    tls_server_name: str | None = None
    health_socket: Path | None = None
    """Unix socket of the bridge's gRPC health service (bridge/health.py); None: none."""
    metrics_listen: str = ""
    """``HOST:PORT`` of the Prometheus ``/metrics`` page (docs/metrics.md); ``""``: none, and nothing counted."""


class Bridge:
    """Reads kernel requests off a Transport and answers each through an Answerer."""

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
        lease_ready: asyncio.Event | None = None,
        fenced: Callable[[], bool] | None = None,
        metrics: BridgeMetrics | None = None,
    ):
        self._kernel_timeout = kernel_timeout
        self._metrics = metrics
        self._send = send
        self._answerer = Answerer(client, node, latches if latches is not None else InSyncLatches(), send_nowait,
                                  lease_ready=lease_ready, fenced=fenced)  # fmt: skip
        self.journal = journal or Journal(None)
        self.tasks: set[asyncio.Task[None]] = set()
        self._replayed = Replayed(kernel_timeout)
        #: Kernel requests taken in, by type (see ``log_counts``).
        self.counts: Counter[str] = Counter()
        #: Of those, the ones answered here without a call to logsvc.
        self.answered_here: Counter[str] = Counter()

    def waiting(self, uuid: str) -> str | None:
        """A request of log ``uuid``'s mirror thread now waiting for logsvc, if one is (bridge/fence.py)."""
        return self._answerer.waiting(uuid)

    @property
    def latches(self) -> InSyncLatches:
        """What this bridge knows of its instances' in-sync latches."""
        return self._answerer.latches

    def log_counts(self) -> None:
        """Log ``request_counts``: the requests taken in so far, by type (``dmulog bridge`` does it on SIGUSR1).

        A counter is nearly free per request, unlike a debug line per request, so a
        benchmark can count requests without slowing down what it measures.
        """
        event(log, logging.INFO, "request_counts", counts=dict(self.counts), answered_here=dict(self.answered_here))

    def accept(self, datagram: bytes, sender: int, entry: int | None = None, received: float | None = None) -> None:
        """Take one datagram off the socket; decode now, answer in a task.

        ``entry`` is its journal slot, dropped once it is answered; ``received``
        (monotonic) defaults to now.
        """
        if sender != 0:
            # Only the kernel may ask; a userspace process sending on the
            # connector group is ignored, not answered.
            event(log, logging.WARNING, "datagram_not_from_kernel", sender_port=sender, size=len(datagram))
            if self._metrics is not None:
                self._metrics.refuse("not_from_kernel")
            self.journal.done(entry)
            return
        try:
            req = wire.decode_request(datagram)
        except wire.WireError as e:
            if self._metrics is not None:
                self._metrics.refuse("malformed")
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
            self._replayed.add(entry.datagram)
            self.accept(entry.datagram, 0, entry.slot, received=now - entry.age)
            replayed += 1
        if replayed:
            event(log, logging.INFO, "journal_replayed", requests=replayed)
            await asyncio.wait(set(self.tasks))
        return replayed

    def drain(self, sock: Transport, limit: int = 10000) -> int:
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
            if self._metrics is not None:
                self._metrics.went_stale(req.request_type)
            return
        await self._send(reply)
        if self._metrics is not None:
            # Timed to the reply's write, as the kernel's wait ends there.
            self._metrics.answered(req.request_type, wire.reply_errno(reply), time.monotonic() - received)
        event(log, logging.DEBUG, "request", ms=round(age * 1000, 3))

    async def _process(self, req: wire.Request, received: float, entry: int | None = None) -> None:
        token = bind(uuid=req.uuid, luid=req.luid, seq=req.seq, request=req.type_name)
        try:
            await self._reply(req, received, await self._answerer.answer(req, received))
        except Exception:
            # One bad request must not stop the bridge.
            log.exception("request_crashed")
            await self._reply(req, received, wire.error_reply(req, errno.EIO))
        finally:
            self.journal.done(entry)
            unbind(token)

    async def serve(self, sock: Transport, stop: asyncio.Event) -> None:
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

    def _take_queued(self, sock: Transport, limit: int = 64) -> None:
        metrics = self._metrics
        for _ in range(limit):
            try:
                got = sock.peek_nowait()
                if got is None:
                    return
                read = time.monotonic() if metrics is not None else 0.0
                data, sender = got
                if sender == 0 and (name := self._answerer.answer_here(data)) is not None:
                    # Answered before it left the queue: nothing to journal.
                    sock.consume()
                    self.counts[name] += 1
                    self.answered_here[name] += 1
                    if metrics is not None:
                        metrics.answered_here(name, time.monotonic() - read)
                    continue
                # Journal first, then take it off the queue: killed at any
                # point, this request is in the socket or in the journal.
                replayed = sender == 0 and self._replayed.seen(data)
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


def _journal(directory: Path | None) -> Journal:
    try:
        return Journal(directory)
    except OSError as e:
        event(log, logging.ERROR, "journal_unavailable", path=str(directory), detail=str(e))
        return Journal(None)


def _metrics_endpoint(listen: str, metrics: BridgeMetrics) -> MetricsEndpoint | None:
    """The metrics page, or None (logged) when its port cannot be bound.

    A bridge without its metrics still answers the kernel; one that exited
    for them would leave every mirror of the node waiting.
    """
    try:
        endpoint = serve_metrics(listen, metrics.registry)
    except OSError as e:
        event(log, logging.ERROR, "metrics_unavailable", listen=listen, detail=str(e),
              consequence="the bridge runs without its /metrics page")  # fmt: skip
        return None
    event(log, logging.INFO, "metrics_listening", address=endpoint.address, port=endpoint.port)
    return endpoint


async def run(config: BridgeConfig) -> None:
    """Check the host, open (or inherit) the socket, serve until SIGTERM/SIGINT.

    Raises:
        StartupError: this host cannot run a bridge (bridge/startup.py says why).
    """
    claimed = take_kernel_socket()
    keep_only(BRIDGE, "bridge")  # now: one thread yet (the gRPC client starts more), bridge/privileges.py
    sock = claimed.sock
    node = pb.Node(name=host.node_name(config.node), boot_id=host.boot_id())
    metrics = BridgeMetrics() if config.metrics_listen else None
    client = LogsvcClient(config.logsvc, ClientConfig(config.attempt_timeout, config.budget, tls=config.tls,
                                                      server_name=config.tls_server_name), metrics=metrics)  # fmt: skip
    keeper = LeaseKeeper(client.stub, node)
    latches, mirrors = InSyncLatches(config.latch_ttl), Mirrors()
    fence = SelfFence(keeper, mirrors, latches) if config.self_fence else None
    bridge = Bridge(client, node, sock.send, journal=_journal(config.journal_dir), send_nowait=sock.send_nowait,
                    latches=latches, lease_ready=keeper.ready,
                    fenced=(lambda: fence.active) if fence is not None else None, metrics=metrics)  # fmt: skip
    if fence is not None:
        fence.waiting = bridge.waiting
    if metrics is not None:
        metrics.watch(bridge.tasks, keeper)
    client.warm()
    health = BridgeHealth(keeper, lambda: channel_state(client))
    helpers: list[asyncio.Future[None]] = []
    stop = asyncio.Event()
    endpoint: MetricsEndpoint | None = None
    try:
        if not await wait_for_turn():
            return
        if metrics is not None:  # only now: a standby must leave the port to the bridge that serves
            endpoint = _metrics_endpoint(config.metrics_listen, metrics)
        stop_on_signals(stop, bridge.log_counts)
        watcher = LogWatcher(client.stub, latches, mirrors, node.name)
        helpers.append(asyncio.ensure_future(keeper.keep(stop, watcher)))
        if fence is not None:
            helpers.append(asyncio.ensure_future(fence.run(stop)))
        if config.health_socket is not None and await health.start(config.health_socket):
            helpers.append(asyncio.ensure_future(health.run(stop)))
        try:
            sock.join_group()  # last: the kernel queues nothing here before we read (netlink.py says why)
        except PermissionError as e:
            raise StartupError(str(e)) from None
        health.joined = True
        event(log, logging.INFO, "bridge_listening", netlink="NETLINK_CONNECTOR", group=wire.CN_IDX_DM,
              connector=f"{wire.CN_IDX_DM}:{wire.CN_VAL_DM_USERSPACE_LOG}", port_id=sock.port_id,
              inherited=claimed.inherited, journal=str(config.journal_dir or ""),
              logsvc=config.logsvc, transport=client.transport,
              node=node.name, boot_id=node.boot_id, epoch=node.epoch, lease_ttl=keeper.ttl)  # fmt: skip
        await bridge.replay_journal()
        await bridge.serve(sock, stop)
        health.joined = False
        await health.check()
        if sock.owned:
            sock.leave_group()
        drained = bridge.drain(sock)
        event(log, logging.INFO, "bridge_stopping", inflight=len(bridge.tasks), drained=drained)
        if bridge.tasks:
            await asyncio.wait(bridge.tasks, timeout=config.grace)
    finally:
        stop.set()
        await asyncio.gather(*helpers, return_exceptions=True)
        if endpoint is not None:
            endpoint.close()
        await health.close()
        claimed.release()
        await client.close()
        bridge.journal.close()
