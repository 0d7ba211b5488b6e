"""A tenant's capacity quota (logs, regions), admitted before the CTR that would create a log.

The count lives in a hash of the tenant's own (lua/tenants.lua), apart from
the logs it counts: a log is in its own Cluster slot, so admitting it and
constructing it are two calls, and a log deleted by its last DTR does not
tell the count. The count therefore errs one way only: it may include a log
that is gone, never miss one that exists. When it refuses, the names in it
are checked against the logs that exist, the gone ones forgotten, and the
admission tried once more: a tenant at its quota pays for that check, no one
else does.
"""

from __future__ import annotations

import logging

from dmulog.logs import event
from dmulog.quotas import Quota
from logsvc.errors import QuotaExceeded
from logsvc.keys import tenant_logs_key
from logsvc.store import Store, text

__all__ = ["Capacity"]

log = logging.getLogger("dmulog.logsvc.capacity")


class Capacity:
    """Admission of new logs against their tenant's quota."""

    def __init__(self, store: Store):
        self._store = store

    async def admit(self, tenant: str, quota: Quota, name: str, regions: int) -> None:
        """Let the log ``name`` (stored name) of ``regions`` regions exist, or raise QuotaExceeded."""
        if quota.logs is None and quota.regions is None:
            return
        try:
            await self._admit(tenant, quota, name, regions)
        except QuotaExceeded:
            if not await self._forget_gone(tenant):
                raise
            await self._admit(tenant, quota, name, regions)

    async def _admit(self, tenant: str, quota: Quota, name: str, regions: int) -> None:
        key = tenant_logs_key(tenant, self._store.prefix)
        argv = (tenant, name, regions, -1 if quota.logs is None else quota.logs,
                -1 if quota.regions is None else quota.regions)  # fmt: skip
        await self._store.fcall("dmulog_tenants_admit", [key], argv)

    async def _forget_gone(self, tenant: str) -> int:
        """Forget the tenant's logs that no longer exist; how many."""
        key = tenant_logs_key(tenant, self._store.prefix)
        names = [text(n) for n in await self._store.fcall("dmulog_tenants_names", [key], [], readonly=True)]
        gone = [n for n in names if not await self._store.admin("summary", n)]
        if gone:
            await self._store.fcall("dmulog_tenants_forget", [key], gone)
            event(log, logging.INFO, "tenant_logs_forgotten", tenant=tenant, logs=len(gone))
        return len(gone)
