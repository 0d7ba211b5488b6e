"""The authorization policy (logsvc/access.py) and the command-line rules around TLS, without servers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from grpc_reflection.v1alpha import reflection_pb2

from dmulog.cli import ExitStatus, main
from dmulog.requests import REQUESTS
from dmulog.v1 import dmulog_pb2 as pb
from logsvc.access import DEFAULT_POLICY, ROLES_OF, Policy, PolicyError, Role
from logsvc.cli import loopback


def _run(*argv: str) -> tuple[ExitStatus, str]:
    err = io.StringIO()
    return main(list(argv), {}, stdout=io.StringIO(), stderr=err), err.getvalue()


@pytest.mark.parametrize(("uris", "dns", "role", "node", "tenant"), [
    (["spiffe://example.org/dmulog/node/node-a"], [], Role.NODE, "node-a", "example.org"),
    ([], ["node-b.node.dmulog"], Role.NODE, "node-b", None),
    (["spiffe://example.org/dmulog/admin/ops"], [], Role.ADMIN, None, "example.org"),
    ([], ["dash.reader.dmulog"], Role.READER, None, None),
    # URIs are tried before DNS names, grants in their order.
    (["spiffe://t/dmulog/node/n1"], ["n2.node.dmulog"], Role.NODE, "n1", "t"),
])  # fmt: skip
def test_the_default_policy(uris: list[str], dns: list[str], role: Role, node: str | None, tenant: str | None) -> None:
    """SPIFFE IDs and DNS names of the documented form name the role, the node and the tenant."""
    who = DEFAULT_POLICY.principal(uris, dns)
    assert who is not None and (who.role, who.node, who.tenant) == (role, node, tenant)


@pytest.mark.parametrize("san", [
    "spiffe://example.org/dmulog/node/node-a/extra",  # the name is one segment
    "spiffe://example.org/dmulog/node/",  # and not empty
    "spiffe://example.org/dmulog/node/a b",  # of the node-name alphabet
    "spiffe://example.org/dmulog/root/x",
    "node-a.node.dmulog.evil.example",  # the whole SAN matches, not a prefix
    "x.node-a.node.dmulog.",
])  # fmt: skip
def test_names_the_default_policy_does_not_grant(san: str) -> None:
    """Near misses are not granted: the whole SAN must match, the name is one segment of the alphabet."""
    assert DEFAULT_POLICY.principal([san] if "://" in san else [], [] if "://" in san else [san]) is None


@pytest.mark.parametrize(("data", "message"), [
    ({}, "no [[grant]] tables"),
    ({"grants": []}, "unknown key(s) grants"),
    ({"grant": [{"san": "x", "role": "root"}]}, "role 'root' is not one of"),
    ({"grant": [{"san": "x.example", "role": "node"}]}, "must say where the node name is"),
    ({"grant": [{"san": "{node}.example", "role": "admin"}]}, "an admin grant takes {name}"),
    ({"grant": [{"san": "{host}.example", "role": "reader"}]}, "{host} is not one of"),
    ({"grant": [{"san": "{node}.{node}", "role": "node"}]}, "each at most once"),
    ({"grant": [{"san": "x", "role": "reader", "tenant": "t"}]}, "exactly the strings san and role"),
])  # fmt: skip
def test_a_wrong_policy_is_refused_with_where(data: dict[str, object], message: str) -> None:
    """A typo in a policy is an error naming the grant, never a quietly different policy."""
    with pytest.raises(PolicyError) as e:
        Policy.parse(data)
    assert message in str(e.value)


def test_every_rpc_has_its_roles() -> None:
    """A method of the service missing from ROLES_OF would be refused to everyone: each must be decided."""
    methods = {f"/dmulog.v1.DirtyLog/{m.name}" for m in pb.DESCRIPTOR.services_by_name["DirtyLog"].methods}
    assert methods <= set(ROLES_OF), f"no roles for {sorted(methods - set(ROLES_OF))}"
    for spec in REQUESTS:
        assert ROLES_OF[f"/dmulog.v1.DirtyLog/{spec.rpc}"] == {Role.NODE}


def test_every_role_may_ask_reflection() -> None:
    """Every method the reflection service serves is open to every role: it describes the API, it reads no log."""
    service = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
    for m in service.methods:
        assert ROLES_OF[f"/{service.full_name}/{m.name}"] == set(Role)


@pytest.mark.parametrize(("listen", "local"), [
    ("127.0.0.1:7500", True), ("127.8.9.1:7500", True), ("[::1]:7500", True), ("localhost:7500", True),
    ("unix:/run/dmulog.sock", True), ("0.0.0.0:7500", False), ("[::]:7500", False), ("10.1.2.3:7500", False),
    ("logsvc.example:7500", False),
])  # fmt: skip
def test_loopback(listen: str, local: bool) -> None:
    """Which listen addresses plaintext may use without --insecure."""
    assert loopback(listen) is local


def test_logsvc_refuses_plaintext_beyond_loopback_unless_told() -> None:
    """Plaintext on a routable address is a usage error that names the way out."""
    code, err = _run("logsvc", "--listen", "0.0.0.0:7500", "--redis", "redis://127.0.0.1:1/0")
    assert code == ExitStatus.USAGE
    assert "refusing plaintext on 0.0.0.0:7500" in err and "--insecure" in err


def test_tls_options_come_as_three(tmp_path: Path) -> None:
    """Some of the TLS options without the others is a usage error naming what is missing."""
    code, err = _run("logsvc", "--tls-cert", str(tmp_path / "c.pem"))
    assert code == ExitStatus.USAGE and "missing --tls-key, --tls-ca" in err
    code, err = _run("bridge", "--logsvc", "127.0.0.1:1", "--tls-key", "k", "--tls-ca", "c")
    assert code == ExitStatus.USAGE and "missing --tls-cert" in err


def test_a_policy_needs_tls_and_must_parse(tmp_path: Path) -> None:
    """A policy without certificates would apply to nobody: refused."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[[grant]]\nsan = "x"\nrole = "reader"\n')
    code, err = _run("logsvc", "--auth-policy", str(policy))
    assert code == ExitStatus.USAGE and "--auth-policy needs TLS" in err
