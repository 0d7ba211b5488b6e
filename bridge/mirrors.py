"""The node's device-mapper mirrors on dmulog logs, and restarting their recovery.

When another node's incarnation expires, the regions it had marked turn out
of sync in the log (logsvc/leases.py), and they must be resynced by a node
that is still alive. A kernel that once saw its mirror fully in sync has
cached ``in_sync_hint = region_count``: it asks for resync work no more
until its mirror is resumed (docs/protocol.md §4.4). So when the bridge hears
of such an expiry (bridge/lease.py), it suspends and resumes each of this
node's mirrors on that log: no table reload, a pause of the mirror's I/O for
as long as its in-flight writes take to finish, after which the kernel asks
for resync work again and is handed the dead node's regions. logsvc hands
those out only once every active survivor has resumed so (lua/dmulog.lua,
``survivors_not_resumed``).

The mirrors are found with ``dmsetup table``: the kernel shows a mirror's
userspace log as ``userspace <argc> <uuid> ...`` (dm-log-userspace-base.c,
STATUSTYPE_TABLE), and ``dmsetup`` (from the device-mapper tools) does the
suspend and resume. The suspend and the resume send PRESUSPEND, POSTSUSPEND
and RESUME to the log, that is to this bridge, which answers them as ever:
so they run in child processes, never waiting in the bridge's event loop.

The same commands fence the node (bridge/fence.py): :meth:`Mirrors.hold`
suspends every active mirror on a userspace log and keeps the others' hands
off them (no recovery restart runs meanwhile) until :meth:`Mirrors.release`
resumes the ones it suspended. A mirror someone else had suspended is left
as it was: it is not ours to resume.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Final

from dmulog.logs import event

__all__ = ["DMSETUP_TIMEOUT", "Mirrors", "active_devices", "userspace_mirrors"]

log = logging.getLogger("dmulog.bridge.mirrors")

DMSETUP_TIMEOUT: Final = 60.0
"""Seconds one dmsetup command may take (a suspend waits for in-flight writes)."""


def userspace_mirrors(table: str) -> dict[str, str]:
    """Devices in ``dmsetup table`` output with a mirror target on a userspace log (any UUID): name → log UUID."""
    found: dict[str, str] = {}
    for line in table.splitlines():
        name, _, rest = line.partition(": ")
        words = rest.split()
        if len(words) >= 6 and words[2] == "mirror" and words[3] == "userspace":
            found.setdefault(name, words[5])
    return found


def active_devices(info: str) -> set[str]:
    """Names that ``dmsetup info -c --noheadings -o name,suspended --separator ' '`` shows as not suspended."""
    return {words[0] for line in info.splitlines() if len(words := line.split()) == 2 and words[1] == "Active"}


class Mirrors:
    """Restarts recovery of this node's mirrors on a log, one pass at a time; holds them all for a fence."""

    def __init__(self, dmsetup: str | None = None):
        self._dmsetup = dmsetup or shutil.which("dmsetup")
        self._pending: set[str] = set()  # logs whose mirrors the next pass restarts
        self._restarting: asyncio.Future[None] | None = None
        # Taken by a restart for its suspend and resume, and by a fence from its
        # suspend to its resume: a restart's resume must never undo a fence.
        self._lock = asyncio.Lock()
        self.restarts = 0  # mirrors suspended and resumed, for tests and metrics

    @property
    def available(self) -> bool:
        """Whether dmsetup was found."""
        return self._dmsetup is not None

    async def active_mirrors(self) -> dict[str, str]:
        """The active (not suspended) mirrors on a userspace log, name → log UUID: ``dmsetup table`` and ``info``."""
        if self._dmsetup is None:
            return {}
        (ok, table), (listed, info) = await asyncio.gather(
            self._run("table"), self._run("info", "-c", "--noheadings", "-o", "name,suspended", "--separator", " "))
        if not (ok and listed):
            return {}
        active = active_devices(info)
        return {name: uuid for name, uuid in userspace_mirrors(table).items() if name in active}

    async def hold(self, names: list[str] | None = None) -> tuple[list[str], list[str]]:
        """Suspend ``names`` (default: :meth:`active_mirrors`), all at once; (suspended, failed) names.

        Keeps the lock until :meth:`release`. Each suspend returns once the
        mirror has no write in flight and takes no new one; one may wait as long
        as a request of that mirror waits for logsvc (docs/multi-node.md).
        """
        await self._lock.acquire()
        try:
            return await self._suspend(list(await self.active_mirrors()) if names is None else names)
        except BaseException:
            self._lock.release()
            raise

    async def _suspend(self, names: list[str]) -> tuple[list[str], list[str]]:
        if self._dmsetup is None:
            return [], []
        # No time limit: killing dmsetup in the middle of a suspend could leave
        # the mirror half suspended, and a suspend that waits is waiting for a
        # request of that mirror, so its I/O is stopped meanwhile anyway.
        results = await asyncio.gather(*(self._run("suspend", name, timeout=None) for name in names))
        suspended = [name for name, (done, _) in zip(names, results, strict=True) if done]
        for name, (done, detail) in zip(names, results, strict=True):
            if not done:
                event(log, logging.ERROR, "mirror_not_suspended", device=name, detail=detail.strip()[-500:])
        return suspended, [name for name in names if name not in suspended]

    async def release(self, names: list[str]) -> list[str]:
        """Resume ``names`` (what :meth:`hold` suspended) and give the lock back; the names that failed."""
        try:
            failed = []
            for name in names:
                done, detail = await self._run("resume", name)
                if not done:
                    failed.append(name)
                    event(log, logging.ERROR, "mirror_not_resumed", device=name, detail=detail.strip()[-500:])
            return failed
        finally:
            self._lock.release()

    def restart_recovery(self, uuid: str) -> None:
        """Suspend and resume every mirror of this node on log ``uuid``, soon.

        Every node hears of every expiry in every log, most of them in logs it
        has no mirror of: the requests gathered while one pass runs share the
        next pass, one ``dmsetup table`` for all of them, and a log asked for
        during a pass gets a pass of its own after it.
        """
        if self._dmsetup is None:
            event(log, logging.WARNING, "recovery_not_restarted", uuid=uuid, reason="dmsetup not found",
                  consequence="the regions a dead node had marked resync at this mirror's next resume")  # fmt: skip
            return
        self._pending.add(uuid)
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.ensure_future(self._restart())

    async def wait(self) -> None:
        """Until no restart is running (tests, shutdown)."""
        while self._restarting is not None and not self._restarting.done():
            await asyncio.gather(self._restarting, return_exceptions=True)

    async def _restart(self) -> None:
        while self._pending:
            uuids, self._pending = self._pending, set()
            ok, table = await self._run("table")
            for name, uuid in userspace_mirrors(table).items() if ok else []:
                if uuid not in uuids:
                    continue
                async with self._lock:
                    suspended, detail = await self._run("suspend", name)
                    resumed, more = await self._run("resume", name)
                self.restarts += int(resumed)
                event(log, logging.INFO if suspended and resumed else logging.ERROR, "recovery_restarted",
                      uuid=uuid, device=name, suspended=suspended, resumed=resumed,
                      detail=(detail + more).strip()[-500:])  # fmt: skip

    async def _run(self, *args: str, timeout: float | None = DMSETUP_TIMEOUT) -> tuple[bool, str]:
        assert self._dmsetup is not None
        try:
            proc = await asyncio.create_subprocess_exec(self._dmsetup, *args, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        except OSError as e:
            return False, str(e)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"dmsetup {' '.join(args)} took more than {timeout:g} s"
        return proc.returncode == 0, out.decode(errors="replace")
