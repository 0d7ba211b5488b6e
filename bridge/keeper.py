"""``dmulog bridge --respawn``: hold the netlink socket, run the bridge as a child.

A bridge that dies takes its socket with it, and with the socket every
request queued in it: the kernel waits 15 s for each, logs "Request timed
out" and re-sends. This small parent process owns the socket (and the
host's instance lock) instead and passes it to the bridge by the systemd
LISTEN_FDS protocol. Requests sent while no bridge reads wait in the queue;
the ones the dead bridge had read are in its journal.

A fresh bridge needs seconds to start (imports; under emulation more than
the kernel's 15 s), so the keeper always has a second bridge started and
waiting on a pipe: when the active one dies, the standby is told to take
over at once (it answers the journal, then the queue) and a new standby is
started behind it. The first standby starts only once the first bridge
serves, so that the two do not share the CPUs while the node's mirrors wait
(``_wait_until_serving``). Under systemd a socket unit
(``ListenNetlink=connector 64``) with ``Restart=always`` keeps the socket
the same way, without the standby.

The keeper does no I/O on the socket and imports nothing heavy, so there is
little in it to fail. Nor does it join the connector group: the first bridge
does, once it reads (bridge/netlink.py, ``join_group``), so while that bridge
still imports the kernel finds no listener and retries its CTR every 2 s
instead of queueing a request that would time out; from then on the socket
stays in the group across bridge deaths. On SIGTERM the keeper leaves the
connector group first (the kernel stops queueing here and goes into its
reconnect loop), then stops the active bridge, which answers what is queued
and in flight, and exits.

Once the socket is held, the keeper keeps only what it and its bridges need
(bridge/privileges.py, ``KEEPER``): CAP_NET_ADMIN effective, for that leave;
CAP_NET_ADMIN and CAP_SYS_ADMIN permitted, inheritable, ambient and in the
bounding set, so that every bridge it starts gets both after its exec (the
start-up check, the join at takeover, the replies), also when not uid 0.
Everything else goes, and no_new_privs is set. Each bridge then drops to its
own set; the bounding set it keeps is the keeper's, as it has no CAP_SETPCAP
left to shrink it, and no_new_privs keeps what it starts from gaining more.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bridge.netlink import LISTEN_FDS_START, STANDBY_FD_ENV, KernelSocket
from bridge.privileges import KEEPER, keep_only
from bridge.startup import claim_kernel_socket
from dmulog.logs import event

__all__ = ["keep"]

log = logging.getLogger("dmulog.bridge")

#: A bridge that exits sooner than this after taking over is failing: back off.
QUICK_EXIT = 2.0
MAX_BACKOFF = 2.0
#: Exit status of a bridge given bad options: starting it again cannot help.
USAGE = 2
#: Longest wait for the first bridge to join before the standby is started all the same.
STANDBY_WAIT = 120.0
#: Where a standby bridge finds the read end of its go-pipe.
STANDBY_FD = LISTEN_FDS_START + 1


@dataclass
class _Child:
    pid: int
    go: int  # write end of the go-pipe
    since: float

    def activate(self) -> None:
        """Tell the standby to serve (one byte on its pipe)."""
        with contextlib.suppress(OSError):
            os.write(self.go, b"1")
        self.since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.go)


def _spawn(argv: Sequence[str], sock_fd: int) -> _Child:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: socket on 3, go-pipe on 4, LISTEN_* for itself, then the bridge
        try:
            high_sock = fcntl.fcntl(sock_fd, fcntl.F_DUPFD, 10)
            high_pipe = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10)
            os.dup2(high_sock, LISTEN_FDS_START)
            os.dup2(high_pipe, STANDBY_FD)
            os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), **{STANDBY_FD_ENV: str(STANDBY_FD)})
            os.execv(sys.executable, [sys.executable, *argv])
        finally:
            os._exit(127)
    os.close(read_end)
    return _Child(pid, write_end, time.monotonic())


def _wait_until_serving(sock: KernelSocket, active: _Child, stopping: Callable[[], bool]) -> None:
    """Return once the first bridge joined the connector group, exited, or took too long.

    The standby is started only then. Two Python processes importing at once
    share the node's CPUs, and the first bridge's start is what the node's
    mirrors wait for on every start of the keeper, a pod update among them:
    started together under emulation on 2 vCPUs, the first bridge listened
    after 25-32 s instead of 8-11 s (docs/restarts.md, "Rolling upgrades").
    A bridge that dies meanwhile is left for the main loop to reap
    (``WNOWAIT``), which then starts the next one without a standby.
    """
    deadline = time.monotonic() + STANDBY_WAIT
    while not stopping() and time.monotonic() < deadline and not sock.in_group():
        with contextlib.suppress(ChildProcessError):
            if os.waitid(os.P_PID, active.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        time.sleep(0.1)


def keep(bridge_argv: Sequence[str]) -> int:
    """Run ``python <bridge_argv>`` (a ``dmulog bridge`` without ``--respawn``) until SIGTERM/SIGINT.

    Returns 0 after a requested stop, else the status of the bridge that made it give up.

    Raises:
        StartupError: this host cannot run a bridge (see ``claim_kernel_socket``).
    """
    sock, lock = claim_kernel_socket()
    keep_only(KEEPER, "keeper")
    stopping = False
    active: _Child | None = None
    standby: _Child | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        sock.leave_group()
        for child, sig in ((active, signal.SIGTERM), (standby, signal.SIGKILL)):
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    event(log, logging.INFO, "keeper_holding_socket", port_id=sock.port_id)
    backoff, status = 0.1, 0
    try:
        active = _spawn(bridge_argv, sock.fileno())
        active.activate()
        event(log, logging.INFO, "keeper_started_bridge", pid=active.pid)
        if stopping:  # the signal came before the assignment
            os.kill(active.pid, signal.SIGTERM)
        _wait_until_serving(sock, active, lambda: stopping)
        while not stopping:
            if standby is None:
                standby = _spawn(bridge_argv, sock.fileno())
                event(log, logging.INFO, "keeper_started_standby", pid=standby.pid, joined=sock.in_group())
                if stopping:  # the signal came before the assignment
                    os.kill(standby.pid, signal.SIGKILL)
            pid, wait_status = os.wait()
            code = os.waitstatus_to_exitcode(wait_status)
            if standby is not None and pid == standby.pid:
                standby.close()
                standby = None
                if not stopping:
                    event(log, logging.WARNING, "keeper_standby_exited", status=code)
                    time.sleep(backoff)
                    backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            if active is None or pid != active.pid:
                continue
            status = code
            lived = time.monotonic() - active.since
            active.close()
            active = None
            if stopping or code == USAGE:
                break
            event(log, logging.WARNING, "keeper_bridge_exited", status=code, lived_s=round(lived, 3),
                  standby=standby.pid if standby else None)  # fmt: skip
            if lived < QUICK_EXIT:
                time.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            else:
                backoff = 0.1
            if standby is None:
                active = _spawn(bridge_argv, sock.fileno())
            else:
                active, standby = standby, None
            active.activate()
            event(log, logging.INFO, "keeper_started_bridge", pid=active.pid)
        if active is not None:  # stopping: let the active bridge drain
            with contextlib.suppress(ChildProcessError):
                _, wait_status = os.waitpid(active.pid, 0)
                status = os.waitstatus_to_exitcode(wait_status)
    finally:
        for child in (active, standby):
            if child is not None:
                child.close()
        if standby is not None:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(standby.pid, signal.SIGKILL)
                os.waitpid(standby.pid, 0)
        sock.close()
        lock.close()
    if stopping:
        return 0
    return status or 1
