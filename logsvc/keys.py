"""Redis key names of a log.

Every key of one log carries the same hash tag, ``{<uuid>}``, so Redis
Cluster puts the whole log in one slot: each request's Function call can then
touch all of the log's keys atomically, on whichever shard owns it. Keys are
built here and nowhere else.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["LeaseKeys", "LogKeys", "events_key", "hash_tag", "lease_keys", "lease_logs_key", "log_key_pattern",
           "log_keys", "tenant_logs_key", "uuid_from_log_key"]

DEFAULT_PREFIX = "dmulog"


class LogKeys(NamedTuple):
    """The keys of a log, in the order the Lua library expects them (its header says what each holds)."""

    log: str
    inst: str
    sync: str
    dirty: str
    marks: str
    prio: str
    nodemarks: str
    scratch: str


class LeaseKeys(NamedTuple):
    """The keys of the lease table, in the order lua/leases.lua expects them (its header says what each holds)."""

    nodes: str
    expiry: str
    pending: str
    counter: str
    reaped: str


LEASES_TAG = "{leases}"
"""The one hash tag of the lease table and the event stream, so they live in one Cluster slot. A log
named ``leases`` shares that slot, not a key: a log's keys end in its LogKeys names."""


def lease_keys(prefix: str = DEFAULT_PREFIX) -> LeaseKeys:
    """The keys of the lease table."""
    base = f"{prefix}:{LEASES_TAG}:lease:"
    return LeaseKeys(*(base + name for name in LeaseKeys._fields))


def lease_logs_key(node: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The set of logs the node has joined (node names are [A-Za-z0-9._-]: no escaping needed)."""
    return f"{prefix}:{LEASES_TAG}:lease:logs:{node}"


def events_key(prefix: str = DEFAULT_PREFIX) -> str:
    """The stream of log events WatchLogs serves."""
    return f"{prefix}:{LEASES_TAG}:events"


def tenant_logs_key(tenant: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The hash of a tenant's logs (stored name → regions) its quota counts (lua/tenants.lua).

    Its own hash tag: a tenant's logs are spread over the Cluster, its count is
    in one slot. A log named ``tenant:T`` shares that slot, not a key: a log's
    keys end in its LogKeys names, never ``logs``.
    """
    return f"{prefix}:{{tenant:{tenant}}}:logs"


def hash_tag(uuid: str) -> str:
    """The UUID with ``%``, ``{`` and ``}`` percent-encoded.

    A brace inside the tag would end it early (Redis hashes up to the first
    ``}``), splitting one log across slots; the encoding is injective, so two
    UUIDs never share a tag.
    """
    return uuid.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _unhash_tag(tag: str) -> str:
    return tag.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def log_keys(uuid: str, prefix: str = DEFAULT_PREFIX) -> LogKeys:
    """All keys of the log ``uuid``."""
    base = f"{prefix}:{{{hash_tag(uuid)}}}:"
    return LogKeys(*(base + name for name in LogKeys._fields))


def log_key_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """SCAN pattern matching the ``log`` key of every log."""
    return f"{prefix}:{{*}}:log"


def uuid_from_log_key(key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Inverse of ``log_keys(uuid).log``."""
    head, tail = f"{prefix}:{{", "}:log"
    if not (key.startswith(head) and key.endswith(tail)):
        raise ValueError(f"{key!r} is not a dmulog log key")
    return _unhash_tag(key[len(head) : -len(tail)])
