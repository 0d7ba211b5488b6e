"""``dmulog bridge --respawn``: hold the netlink socket, run the bridge as a child.

A bridge that dies takes its socket with it, and with the socket every
request queued in it: the kernel waits 15 s for each, logs "Request timed
out" and re-sends. This small parent process owns the socket (and the
host's instance lock) instead, passes it to the bridge by the systemd
LISTEN_FDS protocol, and starts a new bridge at once when one dies. Requests
sent meanwhile wait in the queue; the ones the dead bridge had read are in
its journal. Either way the next bridge answers them within the kernel's
timeout. Under systemd the same is had with a socket unit
(``ListenNetlink=connector 64``) and ``Restart=always``.

The keeper does no I/O on the socket and imports nothing heavy, so there is
little in it to fail. On SIGTERM it leaves the connector group first (the
kernel stops queueing here and goes into its reconnect loop), then stops
the bridge, which answers what is queued and in flight, and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from bridge.agent import claim_kernel_socket
from bridge.netlink import LISTEN_FDS_START
from dmulog.logs import event

__all__ = ["keep"]

log = logging.getLogger("dmulog.bridge")

#: A bridge that lived less than this is "failing to start": back off before the next.
QUICK_EXIT = 2.0
MAX_BACKOFF = 2.0
#: Exit status of a bridge given bad options: starting it again cannot help.
USAGE = 2


def _spawn(argv: Sequence[str], fd: int) -> int:
    pid = os.fork()
    if pid == 0:  # the child: descriptor 3, LISTEN_* for itself, then the bridge
        try:
            if fd != LISTEN_FDS_START:
                os.dup2(fd, LISTEN_FDS_START)
            os.set_inheritable(LISTEN_FDS_START, True)
            os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
            os.execv(sys.executable, [sys.executable, *argv])
        finally:
            os._exit(127)
    return pid


def keep(bridge_argv: Sequence[str]) -> int:
    """Run ``python <bridge_argv>`` (a ``dmulog bridge`` without ``--respawn``) until SIGTERM/SIGINT.

    Returns the exit status of the last bridge after a requested stop.

    Raises:
        StartupError: this host cannot run a bridge (see ``claim_kernel_socket``).
    """
    sock, lock = claim_kernel_socket()
    stopping = False
    child = 0

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        sock.leave_group()
        if child:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    event(log, logging.INFO, "keeper_holding_socket", port_id=sock.port_id)
    backoff, status = 0.1, 0
    try:
        while not stopping:
            started = time.monotonic()
            child = _spawn(bridge_argv, sock.fileno())
            if stopping:  # the signal came between fork and the assignment
                os.kill(child, signal.SIGTERM)
            event(log, logging.INFO, "keeper_started_bridge", pid=child)
            _, wait_status = os.waitpid(child, 0)
            child = 0
            status = os.waitstatus_to_exitcode(wait_status)
            if stopping or status == USAGE:
                break
            lived = time.monotonic() - started
            backoff = min(MAX_BACKOFF, backoff * 2) if lived < QUICK_EXIT else 0.1
            event(log, logging.WARNING, "keeper_bridge_exited", status=status, lived_s=round(lived, 3),
                  restart_in_s=backoff)  # fmt: skip
            time.sleep(backoff if lived < QUICK_EXIT else 0)
    finally:
        sock.close()
        lock.close()
    return 0 if status in (0, -signal.SIGTERM) else 1
