"""The least-privilege Redis ACL of logsvc: the one list of every command it sends, and the line that grants them.

A Redis that logsvc shares with other applications should let logsvc's user
reach only logsvc's keys and only the commands logsvc sends. Lua Functions do
not widen that: every command a Function calls, and every key it touches, is
checked against the ACL of the user who sent FCALL (Redis 7 and Valkey alike),
so the user needs the commands of every library in ``lua/`` too
(tests/unit/test_redis_acl.py reads them, and logsvc's Python, and holds
these lists to them).

What each group is for:

* :data:`CLIENT_COMMANDS`: sent by logsvc itself (logsvc/store.py,
  logsvc/leases.py, logsvc/events.py) and by redis-py on every new
  connection (CLIENT SETINFO: redis-py ignores a refusal, but the server
  logs each one in ACL LOG, so it is granted to keep that log meaningful;
  AUTH and HELLO need no grant).
* :data:`FUNCTION_COMMANDS`: what the Function libraries call.
* :data:`CLUSTER_COMMANDS`: what redis-py's cluster client and
  logsvc/cluster.py send with ``--redis-cluster`` (the slot table, the
  command table that tells redis-py a command's keys, ASKING during a slot
  migration); harmless elsewhere, and one line is easier to get right than two.

Left out on purpose: ``CONFIG GET``. Its only use is the start-up check that
warns when ``appendfsync`` cannot keep an acknowledged mark; it already takes
a refusal (it logs ``durability_unknown``), and CONFIG GET reads every
setting, secrets such as ``masterauth`` among them, with no way in the ACL to
narrow it to ``append*``. ``+config|get`` may be added by whoever prefers the
warning to the secret.

``FUNCTION LOAD`` is granted: logsvc loads (``REPLACE``) its libraries at
start and whenever a Redis lost them. Functions are server-wide, not per
user, so this user can replace any library of that name space, and another
user with ``FUNCTION LOAD`` can replace logsvc's; FUNCTION DELETE, FLUSH and
RESTORE stay refused.
"""

from __future__ import annotations

from typing import Final

from logsvc.keys import DEFAULT_PREFIX

__all__ = ["ACL_COMMANDS", "CLIENT_COMMANDS", "CLUSTER_COMMANDS", "DEFAULT_USER", "FUNCTION_COMMANDS", "SINCE_7_2",
           "key_pattern", "setuser_line"]  # fmt: skip

DEFAULT_USER: Final = "dmulog"

CLIENT_COMMANDS: Final = (
    "fcall", "fcall_ro",  # every kernel request and admin read: one Function call
    "function|load",  # the libraries, at start and when a Redis lost them
    "time",  # Redis's clock, to turn request deadlines into it
    "wait", "waitaof", "info",  # --redis-durable-replicas: the waits, and the start-up check of WAITAOF
    "scan", "getrange", "hscan",  # ListLogs; ReadLogState of a log too large for one call
    "smembers", "xadd", "xrevrange", "xread",  # the reaper's log index, the event stream
    "client|setinfo",  # redis-py, on every connection
)  # fmt: skip
"""What logsvc and redis-py send outside Functions."""

FUNCTION_COMMANDS: Final = (
    "bitcount", "bitfield", "bitop", "bitpos", "getbit", "setbit",
    "del", "exists", "unlink", "get", "set", "incr",
    "hdel", "hexists", "hget", "hgetall", "hincrby", "hkeys", "hlen", "hmget", "hscan", "hset", "hvals",
    "lpop", "lpush", "lrange", "lrem", "ltrim",
    "sadd",
    "zadd", "zrange", "zrangebylex", "zrangebyscore", "zrem",
    "getrange", "time",
)  # fmt: skip
"""What the Function libraries of lua/ call (``redis.call``)."""

CLUSTER_COMMANDS: Final = ("cluster|slots", "command", "asking")
"""What a Cluster client sends besides the above."""

ACL_COMMANDS: Final = tuple(dict.fromkeys((*CLIENT_COMMANDS, *FUNCTION_COMMANDS, *CLUSTER_COMMANDS)))
"""Every command the ACL grants, each once, in the order above."""

SINCE_7_2: Final = ("waitaof", "client|setinfo")
"""Commands Redis 7.0 does not have, and so refuses to grant (the whole ACL SETUSER fails). Without
them logsvc works on 7.0 as it does there anyway: no --redis-durable-replicas (it needs WAITAOF), and
redis-py's CLIENT SETINFO refused as unknown, which it ignores. Valkey has both from its first version."""


def key_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """The ACL key pattern of every key under ``prefix`` (logsvc/keys.py: ``PREFIX:...``), glob characters escaped.

    A prefix with ``*`` or ``[`` would otherwise widen the pattern past logsvc's own keys.
    """
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return f"~{escaped}:*"


def setuser_line(prefix: str = DEFAULT_PREFIX, *, user: str = DEFAULT_USER, password: str = "PASSWORD",
                 redis_7_0: bool = False, commands: tuple[str, ...] = ACL_COMMANDS) -> str:  # fmt: skip
    """The ``ACL SETUSER`` command that creates (or resets) logsvc's user for keys under ``prefix``.

    ``reset`` first, so running it again (say, with a new password) leaves
    nothing of an earlier grant behind. ``redis_7_0``: the line for Redis 7.0,
    without :data:`SINCE_7_2`. ``commands`` is for tests that take one out.
    """
    grants = " ".join("+" + c for c in commands if not (redis_7_0 and c in SINCE_7_2))
    return f"ACL SETUSER {user} reset on >{password} {key_pattern(prefix)} resetchannels -@all {grants}"
