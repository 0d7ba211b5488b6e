"""What a bridge process checks and takes before it may serve this host's kernel.

The capabilities the kernel checks, the host's one instance lock, the netlink
socket (opened here, or inherited under LISTEN_FDS), the refusal to serve
beside another listener, a standby's wait for its turn, and the signals that
stop it. The ``--respawn`` keeper (bridge/keeper.py) does the same checks and
holds the same socket without ever serving a request, so this module imports
no gRPC and nothing else a keeper does not need: the less a keeper loads, the
less there is in it to fail.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

from bridge import host, wire
from bridge.netlink import STANDBY_FD_ENV, KernelSocket, inherited_kernel_socket, open_kernel_socket
from dmulog.logs import event

__all__ = [
    "Claimed",
    "MissingCapabilities",
    "StartupError",
    "check_capabilities",
    "claim_kernel_socket",
    "refuse_other_listeners",
    "stop_on_signals",
    "take_kernel_socket",
    "wait_for_turn",
]

log = logging.getLogger("dmulog.bridge")


class StartupError(RuntimeError):
    """The bridge cannot serve this host; the message says why."""


class MissingCapabilities(StartupError):
    """The bridge lacks a capability the kernel checks (run it as root or grant it)."""


def check_capabilities() -> None:
    """Refuse to start without the capabilities the kernel checks.

    Raises:
        MissingCapabilities: one is missing.
    """
    missing = host.missing_capabilities()
    if missing:
        raise MissingCapabilities(f"dmulog bridge needs {' and '.join(missing)} (run it as root or grant the "
                                  "capabilities)")  # fmt: skip


def claim_kernel_socket() -> tuple[KernelSocket, socket.socket]:
    """Open the netlink socket as this host's only log server; returns it and the instance lock.

    Raises:
        StartupError: another bridge or another log server (cmirrord) is running,
            or the kernel has no connector.
    """
    check_capabilities()
    try:
        lock = host.hold_instance_lock()
    except host.AlreadyRunning as e:
        raise StartupError(str(e)) from None
    try:
        sock = open_kernel_socket()
    except FileNotFoundError:
        lock.close()
        raise StartupError("this kernel has no NETLINK_CONNECTOR (CONFIG_CONNECTOR)") from None
    try:
        refuse_other_listeners(sock)
    except StartupError:
        sock.close()
        lock.close()
        raise
    return sock, lock


def refuse_other_listeners(sock: KernelSocket) -> None:
    """Refuse to serve beside another listener of group 7: the kernel multicasts to both.

    Raises:
        StartupError: there is one.
    """
    others = host.other_listeners(wire.CN_IDX_DM, sock.port_id)
    if others:
        raise StartupError(
            f"another userspace log server (netlink port {', '.join(map(str, others))}, e.g. cmirrord) "
            "already listens to dm-log-userspace; two servers would race to answer"
        )


@dataclass(frozen=True)
class Claimed:
    """The kernel socket a bridge serves, and the instance lock it holds for it (None when inherited)."""

    sock: KernelSocket
    lock: socket.socket | None
    inherited: bool

    def release(self) -> None:
        """Close the socket (an inherited one lives on in its owner) and drop the lock."""
        self.sock.close()
        if self.lock is not None:
            self.lock.close()


def take_kernel_socket() -> Claimed:
    """The socket passed under LISTEN_FDS, else one opened here as the host's only log server.

    An inherited socket belongs to whoever passed it, which also guarantees
    there is one bridge per host; so no lock is taken for it.

    Raises:
        StartupError: this host cannot run a bridge (see ``claim_kernel_socket``),
            or what was passed is not a NETLINK_CONNECTOR socket.
    """
    try:
        inherited = inherited_kernel_socket()
    except ValueError as e:
        raise StartupError(str(e)) from None
    if inherited is None:
        sock, lock = claim_kernel_socket()
        return Claimed(sock, lock, inherited=False)
    check_capabilities()
    refuse_other_listeners(inherited)
    return Claimed(inherited, None, inherited=True)


async def wait_for_turn() -> bool:
    """Whether to serve: at once, unless the keeper started this bridge as its standby.

    A standby waits, fully started, until the keeper says to serve (True) or
    goes away (False). Taking over then costs nothing but a journal replay:
    the seconds a fresh process spends importing were spent in advance.
    """
    standby = os.environ.pop(STANDBY_FD_ENV, None)
    if standby is None:
        return True
    fd = int(standby)
    loop = asyncio.get_running_loop()
    event(log, logging.INFO, "standby_ready")
    try:
        called = await loop.run_in_executor(None, os.read, fd, 1)
    finally:
        os.close(fd)
    if not called:
        event(log, logging.INFO, "standby_released")
    return bool(called)


def stop_on_signals(stop: asyncio.Event, counts: Callable[[], None]) -> None:
    """SIGTERM and SIGINT set ``stop``; SIGUSR1 calls ``counts`` (the bridge logs its request counts)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, counts)
