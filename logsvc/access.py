"""Who may call what: identities from client certificates, roles from a policy, and the check of each call.

With TLS, logsvc requires a client certificate from its CA, and the peer's
identity is read from that certificate, never from the request: a node's
certificate names the node (as kubelet's client certificate names its node,
and Kubernetes' node authorizer lets it act only as that node). Every
request a ``node`` sends must carry that name in ``Node.name``; otherwise it
is refused PERMISSION_DENIED before it reaches Redis, and both names are
logged. Without TLS there is no identity and every call is allowed: that is
only for loopback and Unix sockets (logsvc/cli.py refuses anything else
without ``--insecure``).

A policy maps subjectAltNames to roles. Each grant is a pattern over one
SAN (a URI, such as a SPIFFE ID, or a DNS name) in which ``{node}`` and
``{name}`` stand for one name of ``[A-Za-z0-9._-]`` (a node name's
alphabet), and ``{tenant}`` for a trust domain or label; the rest is
literal. The first grant (in file order) that matches one of the
certificate's SANs (URIs first, then DNS names) decides. The default policy,
used when TLS is on and no policy file is given, is ``DEFAULT_POLICY``.
"""

from __future__ import annotations

import enum
import logging
import re
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

from dmulog.logs import event
from dmulog.quotas import Quota
from dmulog.requests import REQUESTS
from logsvc.errors import LogError, PermissionDenied, QuotaExceeded, clip
from logsvc.tenancy import TENANT, unprefixed

__all__ = ["DEFAULT_POLICY", "ROLES_OF", "Access", "Grant", "Policy", "PolicyError", "Principal", "Role"]

log = logging.getLogger("dmulog.logsvc.access")


class Role(enum.Enum):
    """What an identity may do."""

    NODE = "node"
    """Kernel requests, the Exchange stream and its own lease, all in its own name; the log events."""
    ADMIN = "admin"
    """Everything a reader may, and every administrative call (GetLogState: a whole log in one message)."""
    READER = "reader"
    """What ``dmulog status`` reads: the lists of logs and nodes, a log's state in pieces, the log events."""


_SERVICE: Final = "/dmulog.v1.DirtyLog/"
_HEALTH: Final = "/grpc.health.v1.Health/"
_NODE: Final = frozenset({Role.NODE})
_READ: Final = frozenset({Role.ADMIN, Role.READER})

ROLES_OF: Final[Mapping[str, frozenset[Role]]] = {
    **{_SERVICE + s.rpc: _NODE for s in REQUESTS},
    _SERVICE + "Exchange": _NODE,
    _SERVICE + "AcquireLease": _NODE,
    _SERVICE + "RenewLease": _NODE,
    _SERVICE + "WatchLogs": frozenset(Role),
    _SERVICE + "ListLogs": _READ,
    _SERVICE + "ListNodes": _READ,
    _SERVICE + "GetLogState": frozenset({Role.ADMIN}),
    _SERVICE + "ReadLogState": _READ,
    _HEALTH + "Check": frozenset(Role),
    _HEALTH + "Watch": frozenset(Role),
    # Server reflection describes the services (their .proto descriptors) and
    # reads or changes nothing of any log: every role may ask, so a tool such
    # as grpcurl works with whatever certificate it holds. grpcio-reflection
    # serves v1alpha only.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": frozenset(Role),
}
"""Each method → the roles that may call it. A method missing here (one added to the proto and not yet
to this table) is refused to everyone: a new call is closed until someone decides who may make it."""

_NAMED: Final = frozenset(_SERVICE + m for m in (*(s.rpc for s in REQUESTS), "AcquireLease", "RenewLease"))
"""Methods whose request carries ``node``: a node may make them only in its own name."""


class PolicyError(ValueError):
    """The policy file is unreadable or wrong; the message says where."""


_PLACEHOLDERS: Final = {"node": r"[A-Za-z0-9._-]{1,64}", "name": r"[A-Za-z0-9._-]{1,64}",
                        "tenant": r"[A-Za-z0-9._-]{1,255}"}  # fmt: skip


@dataclass(frozen=True)
class Grant:
    """One line of the policy: SANs matching ``san`` get ``role``."""

    san: str
    role: Role
    pattern: re.Pattern[str]

    @classmethod
    def parse(cls, san: str, role: str) -> Grant:
        """A grant from its two strings; a role that is not one, or a node grant without ``{node}``, is wrong."""
        try:
            r = Role(role)
        except ValueError:
            raise PolicyError(f"role {role!r} is not one of {', '.join(x.value for x in Role)}") from None
        parts: list[str] = []
        seen: set[str] = set()
        for literal, name in re.findall(r"([^{]*)(?:\{([^}]*)\}|$)", san):
            parts.append(re.escape(literal))
            if name:
                if name not in _PLACEHOLDERS or name in seen:
                    raise PolicyError(f"san {san!r}: {{{name}}} is not one of {{node}}, {{name}}, {{tenant}} "
                                      "(each at most once)")  # fmt: skip
                seen.add(name)
                parts.append(f"(?P<{name}>{_PLACEHOLDERS[name]})")
        if r is Role.NODE and "node" not in seen:
            raise PolicyError(f"san {san!r}: a node grant must say where the node name is, with {{node}}")
        if r is not Role.NODE and "node" in seen:
            raise PolicyError(f"san {san!r}: {{node}} names a node; an {r.value} grant takes {{name}}")
        return cls(san, r, re.compile("".join(parts)))


@dataclass(frozen=True)
class Principal:
    """An authenticated peer: the SAN it was known by, its role, and the names the grant captured."""

    san: str
    role: Role
    node: str | None = None
    tenant: str | None = None


@dataclass(frozen=True)
class Policy:
    """Grants in the order they are tried, and the tenants' quotas."""

    grants: tuple[Grant, ...]
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    """Tenant → its quota; ``*``: every tenant without one of its own."""

    def quota_of(self, tenant: str) -> Quota | None:
        """The quota of ``tenant``, if any applies."""
        return self.quotas.get(tenant) or self.quotas.get("*")

    @classmethod
    def load(cls, path: Path) -> Policy:
        """Read a policy file (TOML: a list of ``[[grant]]`` tables with ``san`` and ``role``)."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise PolicyError(f"{path}: {e}") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str = "policy") -> Policy:
        """A policy from parsed TOML; unknown keys are errors (a typo must not widen or narrow access quietly)."""
        unknown = set(data) - {"grant", "quota"}
        if unknown:
            raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected [[grant]] and "
                              "[[quota]] tables")  # fmt: skip
        grants = data.get("grant", [])
        if not isinstance(grants, list) or not grants:
            raise PolicyError(f"{where}: no [[grant]] tables: nobody could call anything")
        out = []
        for i, g in enumerate(grants):
            if not isinstance(g, dict) or set(g) != {"san", "role"} or not all(isinstance(v, str) for v in g.values()):
                raise PolicyError(f"{where}: grant {i + 1} must have exactly the strings san and role")
            try:
                out.append(Grant.parse(g["san"], g["role"]))
            except PolicyError as e:
                raise PolicyError(f"{where}: grant {i + 1}: {e}") from None
        return cls(tuple(out), _quotas(data.get("quota", []), where))

    def principal(self, uris: Sequence[str], dns: Sequence[str]) -> Principal | None:
        """The peer a certificate with these SANs is, or None when no grant matches."""
        for grant in self.grants:
            for san in (*uris, *dns):
                m = grant.pattern.fullmatch(san)
                if m:
                    found = m.groupdict()
                    return Principal(san, grant.role, found.get("node"), found.get("tenant"))
        return None


def _quotas(tables: Any, where: str) -> dict[str, Quota]:
    if not isinstance(tables, list):
        raise PolicyError(f"{where}: quota must be [[quota]] tables")
    out: dict[str, Quota] = {}
    for i, q in enumerate(tables):
        here = f"{where}: quota {i + 1}"
        if not isinstance(q, dict) or not isinstance(q.get("tenant"), str):
            raise PolicyError(f"{here} must name its tenant (a string; \"*\" for every other tenant)")
        unknown = set(q) - {"tenant", "logs", "regions", "rate"}
        if unknown:
            raise PolicyError(f"{here}: unknown key(s) {', '.join(sorted(unknown))}; expected logs, regions, rate")
        for key in ("logs", "regions", "rate"):
            value = q.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0
                                      or (key != "rate" and not isinstance(value, int))):  # fmt: skip
                raise PolicyError(f"{here}: {key} must be a number of 0 or more" + ("" if key == "rate" else
                                                                                     ", whole"))  # fmt: skip
        if q["tenant"] in out:
            raise PolicyError(f"{here}: tenant {q['tenant']!r} has a quota already")
        out[q["tenant"]] = Quota(logs=q.get("logs"), regions=q.get("regions"), rate=q.get("rate"))
    return out


DEFAULT_POLICY: Final = Policy.parse({"grant": [
    {"san": "spiffe://{tenant}/dmulog/node/{node}", "role": "node"},
    {"san": "spiffe://{tenant}/dmulog/admin/{name}", "role": "admin"},
    {"san": "spiffe://{tenant}/dmulog/reader/{name}", "role": "reader"},
    {"san": "{node}.node.dmulog", "role": "node"},
    {"san": "{name}.admin.dmulog", "role": "admin"},
    {"san": "{name}.reader.dmulog", "role": "reader"},
]}, "the default policy")  # fmt: skip
"""SPIFFE IDs ``spiffe://TRUST-DOMAIN/dmulog/ROLE/NAME``, or DNS names ``NAME.ROLE.dmulog``."""


class _Bucket:
    """A token bucket: ``rate`` a second, holding at most one second's worth (the burst a tenant may send)."""

    def __init__(self, rate: float):
        self._rate = rate
        self._cap = max(rate, 1.0) if rate else 0.0
        self._tokens = self._cap
        self._at = time.monotonic()

    def take(self) -> bool:
        """Whether a request may pass now (it then spends its token)."""
        now = time.monotonic()
        self._tokens = min(self._cap, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _sans(context: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    auth = context.auth_context()
    uris = tuple(v.decode("utf-8", "replace") for v in auth.get("peer_uri", ()))
    dns = tuple(v.decode("utf-8", "replace") for v in auth.get("peer_dns", ()))
    return uris, dns


class Access:
    """The check every call passes first (logsvc/interceptor.py and the Exchange stream call it)."""

    def __init__(self, policy: Policy | None):
        self._policy = policy
        self._buckets: dict[str, _Bucket] = {}
        # The same certificate makes every call of a stream and of a connection: match it once.
        self._known: dict[tuple[tuple[str, ...], tuple[str, ...]], Principal | None] = {}

    def quota(self) -> Quota | None:
        """The quota of the tenant of the call being served, if it has one."""
        tenant = TENANT.get()
        return self._policy.quota_of(tenant) if self._policy is not None and tenant else None

    def admit(self, tenant: str) -> None:
        """Spend one of the tenant's requests; refuse (RESOURCE_EXHAUSTED, retried by the bridge) when none is left."""
        quota = self._policy.quota_of(tenant) if self._policy is not None else None
        if quota is None or quota.rate is None:
            return
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(quota.rate)
        if not bucket.take():
            raise QuotaExceeded(f"tenant {tenant} is over its request rate ({quota.rate:g} a second): "
                                "slow down and send again")  # fmt: skip

    def principal(self, context: Any) -> Principal | None:
        """The peer of ``context`` under the policy; None without TLS, or for a certificate no grant matches."""
        if self._policy is None:
            return None
        sans = _sans(context)
        if sans not in self._known:
            if len(self._known) > 4096:
                self._known.clear()
            self._known[sans] = self._policy.principal(*sans)
        return self._known[sans]

    def check(self, method: str, request: Any, context: Any) -> Principal | None:
        """Refuse (PermissionDenied) a call the peer of ``context`` may not make; ``method`` is the full name.

        Returns who is calling (None without TLS).
        """
        if self._policy is None:
            return None
        who = self.principal(context)
        if who is None:
            uris, dns = _sans(context)
            self._refuse(method, "certificate matches no grant of the policy", uris=list(uris), dns=list(dns))
        if who.role not in ROLES_OF.get(method, ()):
            self._refuse(method, f"role {who.role.value} may not call {method.rsplit('/', 1)[-1]}", san=who.san)
        if method in _NAMED and who.role is Role.NODE:
            named = getattr(getattr(request, "node", None), "name", "")
            if named != who.node:
                self._refuse(method, f"node {who.node} may not act as node {clip(named, 80)!r}",
                             san=who.san, certificate_node=who.node, request_node=clip(named, 160))  # fmt: skip
        return who

    async def checked(self, method: str, request: Any, context: Any,
                      call: Callable[[Any, Any], Awaitable[Any]]) -> Any:  # fmt: skip
        """``call(request, context)`` once ``check`` let it through, in the caller's tenant (logsvc/tenancy.py).

        This is the awaitable ``serve_one`` answers and logs.
        """
        who = self.check(method, request, context)
        if who is not None and who.tenant:
            self.admit(who.tenant)
        token = TENANT.set(who.tenant if who is not None else None)
        try:
            return await call(request, context)
        except LogError as e:
            raise unprefixed(e) from None
        finally:
            TENANT.reset(token)

    @staticmethod
    def _refuse(method: str, why: str, **fields: Any) -> NoReturn:
        event(log, logging.WARNING, "permission_denied", method=method, reason=why, **fields)
        raise PermissionDenied(why)
