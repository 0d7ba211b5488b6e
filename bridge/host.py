"""Facts about the node the bridge runs on.

Who it is, what it may do, and whether another log server already listens.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

__all__ = [
    "CAP_NET_ADMIN",
    "CAP_SYS_ADMIN",
    "AlreadyRunning",
    "boot_id",
    "hold_instance_lock",
    "missing_capabilities",
    "node_name",
    "other_listeners",
]

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class AlreadyRunning(RuntimeError):
    """Another bridge (or log server) already serves this kernel."""


def node_name(explicit: str | None = None) -> str:
    """The node's name: given, else the host name cut to the API's alphabet."""
    name = explicit or socket.gethostname().split(".")[0] or "node"
    return _NAME_CHARS.sub("-", name)[:64]


def boot_id(path: Path = Path("/proc/sys/kernel/random/boot_id")) -> str:
    """Identity of this boot: a new kernel means the old instances are dead."""
    return path.read_text().strip()


def missing_capabilities(status: Path = Path("/proc/self/status")) -> list[str]:
    """Capabilities the bridge needs and lacks.

    CAP_NET_ADMIN to join the connector group; CAP_SYS_ADMIN because the
    kernel silently drops replies from a sender without it (a dropped reply
    looks like a lost one: a 15 s timeout).
    """
    eff = 0
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            eff = int(line.split()[1], 16)
    needed = {"CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_SYS_ADMIN": CAP_SYS_ADMIN}
    return [name for name, bit in needed.items() if not eff >> bit & 1]


def hold_instance_lock(name: str = "dmulog-bridge") -> socket.socket:
    """Bind an abstract Unix socket as a host-wide lock; keep the result open.

    The kernel multicasts every request to every listener, so two servers
    would race to answer. The lock dies with the process, so a crash never
    leaves a stale lock behind.
    """
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind("\0" + name)
    except OSError:
        lock.close()
        raise AlreadyRunning(f"another dmulog bridge holds the lock @{name} on this host") from None
    return lock


def other_listeners(group: int, own_port: int, table: Path = Path("/proc/net/netlink")) -> list[int]:
    """Port ids of other NETLINK_CONNECTOR sockets subscribed to ``group``.

    Catches a running cmirrord as well as a second bridge.
    """
    found = []
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return []
    for line in lines:
        cols = line.split()
        if len(cols) < 4 or cols[1] != str(socket.NETLINK_CONNECTOR if hasattr(socket, "NETLINK_CONNECTOR") else 11):
            continue
        port, groups = int(cols[2]), int(cols[3], 16)
        if port != own_port and groups >> (group - 1) & 1:
            found.append(port)
    return found


def pid_of_port(port: int) -> int | None:
    """The process a netlink port id most likely belongs to (port == pid for a first socket)."""
    return port if port > 0 and os.path.exists(f"/proc/{port}") else None
