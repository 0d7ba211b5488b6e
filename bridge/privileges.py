"""Least privilege: once started, a bridge (and its ``--respawn`` keeper) keeps only what the kernel checks.

A root process starts with every capability, and the bridge needs two
(measured on the real kernel: README, "Least privilege"): CAP_NET_ADMIN, for
``setsockopt`` NETLINK_ADD_MEMBERSHIP and NETLINK_DROP_MEMBERSHIP of group 7
(and SO_RCVBUFFORCE when the socket is opened), and CAP_SYS_ADMIN, which
dm-log-userspace checks on every reply (``cn_ulog_callback``: a reply from a
sender without it is dropped without an error, the kernel waits out its 15 s)
and device-mapper on every ioctl (``ctl_ioctl``: ``-EACCES``), i.e. every
``dmsetup`` the bridge runs to fence itself or restart recovery. Opening and
binding the socket, the instance lock and everything else need none.

So both processes drop the rest, from every set, and set ``no_new_privs``:

* effective and permitted: what the process itself still calls with;
* inheritable and ambient: what the programs it starts need (``dmsetup`` for
  the bridge, the bridge itself for the keeper), so they get it also when the
  process does not run as uid 0;
* bounding: the same, so that a program started as uid 0 gets nothing more
  (for uid 0 the kernel hands an exec'd program its bounding set).

Capabilities belong to threads, not processes: ``capset`` changes the calling
thread only, and a thread keeps what it had when it was created. So the drop
must run while the process has one thread, before the gRPC client starts its
own (bridge/agent.py calls it right after taking the socket). That is also why
CAP_NET_ADMIN stays to the end: the join comes later (a standby joins when it
takes over) and so does the leave on SIGTERM.

``planned`` is pure (tests/unit/test_privileges.py); ``keep_only`` applies it
with ``prctl`` and ``capset`` through libc and logs one ``privileges_dropped``
event. A failure to drop is logged and the process goes on with what it had:
hardening that fails must not turn into an outage of the node's mirrors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from dmulog.logs import event

__all__ = [
    "BRIDGE",
    "CAP_NAMES",
    "KEEPER",
    "Calls",
    "CapSets",
    "Keep",
    "keep_only",
    "mask",
    "names",
    "planned",
]

log = logging.getLogger("dmulog.bridge")

#: linux/capability.h, by number.
CAP_NAMES: Final = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
_BIT: Final = {name: bit for bit, name in enumerate(CAP_NAMES)}
_SETPCAP: Final = _BIT["CAP_SETPCAP"]

NET_ADMIN: Final = "CAP_NET_ADMIN"
SYS_ADMIN: Final = "CAP_SYS_ADMIN"
#: What each kept capability is for, as the drop event says it.
WHY: Final = {
    NET_ADMIN: "join (at start, or a standby's takeover) and leave (SIGTERM) connector group 7",
    SYS_ADMIN: "the kernel drops replies from a sender without it; dmsetup suspend/resume (fencing, recovery)",
}


def mask(caps: Iterable[str]) -> int:
    """The bit mask of capability names (``CAP_...``), as the kernel and /proc/<pid>/status write it.

    Raises:
        KeyError: a name this table does not know.
    """
    bits = 0
    for name in caps:
        bits |= 1 << _BIT[name]
    return bits


def names(bits: int) -> list[str]:
    """The names of the capabilities in ``bits``, by number; a bit past the table as ``CAP_<n>``."""
    return [CAP_NAMES[b] if b < len(CAP_NAMES) else f"CAP_{b}" for b in range(bits.bit_length()) if bits >> b & 1]


@dataclass(frozen=True)
class Keep:
    """What a process keeps: for its own calls (``effective``) and for the programs it starts (``for_exec``)."""

    effective: frozenset[str]
    for_exec: frozenset[str]

    @property
    def permitted(self) -> frozenset[str]:
        """Everything kept: a capability handed on must be permitted here too."""
        return self.effective | self.for_exec


#: The serving bridge: it joins (and, owning the socket, leaves) the group and sends replies; dmsetup needs SYS_ADMIN.
BRIDGE: Final = Keep(effective=frozenset({NET_ADMIN, SYS_ADMIN}), for_exec=frozenset({SYS_ADMIN}))
#: The ``--respawn`` keeper: it leaves the group on SIGTERM; the bridges it starts need both.
KEEPER: Final = Keep(effective=frozenset({NET_ADMIN}), for_exec=frozenset({NET_ADMIN, SYS_ADMIN}))


@dataclass(frozen=True)
class CapSets:
    """A thread's capability sets (bit masks) and its ``no_new_privs`` flag."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int
    ambient: int
    no_new_privs: bool

    @classmethod
    def from_status(cls, text: str) -> CapSets:
        """Read from the text of ``/proc/<pid>/status`` (or ``/proc/<pid>/task/<tid>/status``).

        Raises:
            ValueError: a line is missing (CapAmb came with Linux 4.3, NoNewPrivs with 4.10).
        """
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        try:
            caps = {key: int(fields[key].strip(), 16) for key in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")}
            nnp = fields["NoNewPrivs"].strip() == "1"
        except KeyError as e:
            raise ValueError(f"no {e.args[0]} line in the status text") from None
        return cls(caps["CapEff"], caps["CapPrm"], caps["CapInh"], caps["CapBnd"], caps["CapAmb"], nnp)

    def described(self) -> dict[str, object]:
        """The sets by name, for a log event or an assertion message."""
        return {"effective": names(self.effective), "permitted": names(self.permitted),
                "inheritable": names(self.inheritable), "bounding": names(self.bounding),
                "ambient": names(self.ambient), "no_new_privs": self.no_new_privs}  # fmt: skip


def planned(now: CapSets, keep: Keep) -> CapSets:
    """The sets a thread holding ``now`` ends with when it keeps ``keep``: nothing is ever added.

    A capability is kept only where the thread has it. Inheritable and ambient
    hold what is handed on (an ambient capability must be permitted and
    inheritable; an inheritable one must be in the bounding set or already
    inheritable). The bounding set shrinks to what is handed on only with
    CAP_SETPCAP, which a process started with a bounding set already cut down
    (a container, a bridge the keeper started) does not have: then it stays,
    and ``no_new_privs`` keeps a program started from it from gaining what the
    bridge no longer permits.
    """
    permitted = mask(keep.permitted) & now.permitted
    handed = mask(keep.for_exec) & permitted & (now.bounding | now.inheritable)
    bounding = now.bounding & handed if now.effective >> _SETPCAP & 1 else now.bounding
    return CapSets(effective=mask(keep.effective) & permitted, permitted=permitted, inheritable=handed,
                   bounding=bounding, ambient=handed, no_new_privs=True)  # fmt: skip


# ------------------------------------------------------------------ the system calls

_PR_CAPBSET_DROP: Final = 24
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_RAISE: Final = 2
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class Calls(Protocol):
    """The two system calls a drop makes (a test passes a recorder)."""

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> None:
        """The prctl system call with up to two arguments; raises OSError."""
        ...

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        """The capset system call, for this thread; raises OSError."""
        ...


class _Libc:
    """prctl and capset, by ctypes: the standard library has neither, and a dependency for two calls is too much."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> None:
        self._check(self._libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                                     ctypes.c_ulong(0)), f"prctl({option}, {arg2}, {arg3})")  # fmt: skip

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_Data * 2)(*(_Data(effective >> s & 0xFFFFFFFF, permitted >> s & 0xFFFFFFFF,
                                   inheritable >> s & 0xFFFFFFFF) for s in (0, 32)))  # fmt: skip
        self._check(self._libc.capset(ctypes.byref(header), data), "capset")


def _own_status() -> CapSets:
    """This thread's sets (the main thread's in /proc/self/status need not be the caller's)."""
    return CapSets.from_status(Path(f"/proc/self/task/{_gettid()}/status").read_text())


def _gettid() -> int:
    return int(getattr(os, "gettid", os.getpid)())


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _apply(now: CapSets, want: CapSets, calls: Calls) -> None:
    """From ``now`` to ``want``, in the one order the kernel allows.

    Inheritable first, while the bounding set still allows it; the ambient set
    from it; the bounding set while CAP_SETPCAP is still effective; and the
    effective and permitted sets last, which drops CAP_SETPCAP too.
    """
    calls.prctl(_PR_SET_NO_NEW_PRIVS, 1)
    calls.capset(now.effective, now.permitted, want.inheritable)
    calls.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    for bit in range(want.ambient.bit_length()):
        if want.ambient >> bit & 1:
            calls.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, bit)
    for bit in range(now.bounding.bit_length()):
        if now.bounding >> bit & 1 and not want.bounding >> bit & 1:
            calls.prctl(_PR_CAPBSET_DROP, bit)
    calls.capset(want.effective, want.permitted, want.inheritable)


def keep_only(keep: Keep, who: str, *, status: Callable[[], CapSets] = _own_status,
              libc: Callable[[], Calls] = _Libc) -> CapSets | None:  # fmt: skip
    """Drop every capability but ``keep`` from this thread, and set no_new_privs; the sets it ends with.

    Call it while the process has one thread (the module docstring says why);
    logs ``privileges_dropped`` (what was kept and dropped), or
    ``privileges_not_dropped`` and returns None when the kernel refused (the
    process then keeps what it had).
    """
    threads = _threads()
    now: CapSets | None = None
    try:
        now = status()
        want = planned(now, keep)
        _apply(now, want, libc())
        after = status()
    except (OSError, ValueError) as e:
        event(log, logging.ERROR, "privileges_not_dropped", who=who, detail=str(e),
              held=now.described() if now is not None else None,
              consequence="this process runs on with capabilities it does not need")  # fmt: skip
        return None
    kept: Mapping[str, str] = {name: WHY.get(name, "") for name in names(after.permitted)}
    event(log, logging.WARNING if after != want or threads > 1 else logging.INFO, "privileges_dropped", who=who,
          kept=kept, dropped=names(now.permitted & ~after.permitted), held=after.described(),
          bounding_dropped=len(names(now.bounding & ~after.bounding)), as_planned=after == want,
          threads=threads)  # fmt: skip
    return after
