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
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Final

from dmulog.logs import event

__all__ = ["DMSETUP_TIMEOUT", "Mirrors", "mirrors_of"]

log = logging.getLogger("dmulog.bridge.mirrors")

DMSETUP_TIMEOUT: Final = 60.0
"""Seconds one dmsetup command may take (a suspend waits for in-flight writes)."""


def mirrors_of(table: str, uuid: str) -> list[str]:
    """Names of the devices in ``dmsetup table`` output whose mirror target has the userspace log ``uuid``."""
    names = []
    for line in table.splitlines():
        name, _, rest = line.partition(": ")
        words = rest.split()
        # <start> <length> mirror userspace <argc> <uuid> ...
        if len(words) >= 6 and words[2] == "mirror" and words[3] == "userspace" and words[5] == uuid:
            names.append(name)
    return names


class Mirrors:
    """Restarts recovery of this node's mirrors on a log, one restart at a time per log."""

    def __init__(self, dmsetup: str | None = None):
        self._dmsetup = dmsetup or shutil.which("dmsetup")
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self.restarts = 0  # mirrors suspended and resumed, for tests and metrics

    def restart_recovery(self, uuid: str) -> None:
        """Suspend and resume every mirror of this node on log ``uuid``, soon (one run at a time per log)."""
        if self._dmsetup is None:
            event(log, logging.WARNING, "recovery_not_restarted", uuid=uuid, reason="dmsetup not found",
                  consequence="the regions a dead node had marked resync at this mirror's next resume")  # fmt: skip
            return
        if uuid in self._running:
            self._again.add(uuid)
            return
        self._running[uuid] = asyncio.ensure_future(self._restart(uuid))

    async def wait(self) -> None:
        """Until no restart is running (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _restart(self, uuid: str) -> None:
        try:
            while True:
                ok, table = await self._run("table")
                for name in mirrors_of(table, uuid) if ok else []:
                    suspended, detail = await self._run("suspend", name)
                    resumed, more = await self._run("resume", name)
                    self.restarts += int(resumed)
                    event(log, logging.INFO if suspended and resumed else logging.ERROR, "recovery_restarted",
                          uuid=uuid, device=name, suspended=suspended, resumed=resumed,
                          detail=(detail + more).strip()[-500:])  # fmt: skip
                if uuid not in self._again:
                    return
                self._again.discard(uuid)
        finally:
            del self._running[uuid]

    async def _run(self, *args: str) -> tuple[bool, str]:
        assert self._dmsetup is not None
        try:
            proc = await asyncio.create_subprocess_exec(self._dmsetup, *args, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)  # fmt: skip
        except OSError as e:
            return False, str(e)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), DMSETUP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"dmsetup {' '.join(args)} took more than {DMSETUP_TIMEOUT:g} s"
        return proc.returncode == 0, out.decode(errors="replace")
