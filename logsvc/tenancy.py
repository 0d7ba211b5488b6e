r"""Tenants: each one's logs and nodes in a namespace of its own, inside the same Redis and the same hash tags.

A hosted logsvc serves many customers from one Redis (or one Cluster). The
tenant of a call is the one its certificate's grant names (logsvc/access.py,
``{tenant}``: by default the SPIFFE trust domain); a call without one (no
TLS, or a grant without ``{tenant}``) is in no tenant. The service stores a
tenant's log ``U`` under the name ``T\0U`` and its node ``N`` as ``T:N``:

* ``\0`` appears in no log UUID (logsvc/validate.py refuses it, as the
  kernel does) and ``:`` in no node name or tenant (both are
  ``[A-Za-z0-9._-]``), so no name in one namespace is a name in another,
  and no request can spell one: nothing a caller sends reaches another
  tenant's log or node.
* The stored name is what the log's hash tag is made from (logsvc/keys.py),
  so a tenant's log still lives in one Cluster slot, and the Lua library,
  the leases and the reaper need not know tenants exist.

Only this module adds and removes the prefix: on the way in (``log_name``,
``node_name``) and on every name a response carries back (``shown``), so a
tenant never sees another's names, nor its own prefix.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any, Final, TypeVar

from google.protobuf.message import Message

__all__ = ["TENANT", "log_name", "node_name", "shown", "tenant_of_log", "unprefixed", "visible_log", "visible_node"]

E = TypeVar("E", bound=Exception)

TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("dmulog_tenant", default=None)
"""The tenant of the call being served (set by logsvc/access.py once the call is let through)."""

LOG_SEP: Final = "\0"
NODE_SEP: Final = ":"

_LOG_FIELDS: Final = frozenset({"uuid"})
_NODE_FIELDS: Final = frozenset({"node", "nodes", "recoverer_node"})
_NODE_NAME_OF: Final = frozenset({"dmulog.v1.NodeLease"})
"""Messages whose ``name`` field is a node's."""


def log_name(uuid: str, tenant: str | None = None) -> str:
    """The stored name of the caller's log ``uuid``."""
    t = TENANT.get() if tenant is None else tenant
    return f"{t}{LOG_SEP}{uuid}" if t else uuid


def node_name(node: str, tenant: str | None = None) -> str:
    """The stored name of the caller's node ``node``."""
    t = TENANT.get() if tenant is None else tenant
    return f"{t}{NODE_SEP}{node}" if t else node


def tenant_of_log(stored: str) -> str | None:
    """The tenant a stored log name belongs to (None: no tenant)."""
    t, sep, _ = stored.partition(LOG_SEP)
    return t if sep else None


def visible_log(stored: str) -> str | None:
    """The caller's name for a stored log, or None when the log is another namespace's."""
    t, sep, uuid = stored.partition(LOG_SEP)
    mine = TENANT.get()
    if not sep:
        return stored if not mine else None
    return uuid if t == mine else None


def visible_node(stored: str) -> str | None:
    """The caller's name for a stored node, or None when the node is another namespace's."""
    t, sep, node = stored.partition(NODE_SEP)
    mine = TENANT.get()
    if not sep:
        return stored if not mine else None
    return node if t == mine else None


def unprefixed(error: E) -> E:
    """``error`` with the caller's own stored names in its message turned back into its names.

    The Lua library's messages name logs and nodes as stored; only the
    caller's own can appear in an answer to it.
    """
    t = TENANT.get()
    if not t:
        return error
    text = str(error)
    shown_as = text.replace(f"{t}{NODE_SEP}", "").replace(f"{t}{LOG_SEP}", "")
    return error if shown_as == text else type(error)(shown_as)


def _strip(value: str, visible: Any) -> str:
    shown_as = visible(value)
    return shown_as if shown_as is not None else "?"


def shown(msg: Message) -> Message:
    """``msg`` with every log and node name it carries in the caller's terms (in place; returned for chaining).

    Responses are built from stored names; this is the one place they are
    turned back into what the caller sent. A name of another namespace, which
    a correct store never puts in a tenant's log, would show as ``?``.
    """
    if not TENANT.get():
        return msg
    for field, value in msg.ListFields():
        name = field.name
        if field.type == field.TYPE_MESSAGE:
            items: Iterable[Message] = value if field.is_repeated else (value,)
            if field.message_type.GetOptions().map_entry:
                continue
            for item in items:
                shown(item)
        elif field.type == field.TYPE_STRING:
            visible = (visible_log if name in _LOG_FIELDS else
                       visible_node if name in _NODE_FIELDS or (name == "name" and
                                                                msg.DESCRIPTOR.full_name in _NODE_NAME_OF)
                       else None)  # fmt: skip
            if visible is None:
                continue
            if field.is_repeated:
                value[:] = [_strip(v, visible) for v in value]
            else:
                setattr(msg, name, _strip(value, visible))
    return msg
