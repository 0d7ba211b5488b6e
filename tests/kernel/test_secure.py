"""mTLS, a tenant's quota and a node's identity on the real kernel (harness/guest/secure.sh).

The bridge and logsvc in the guest speak mTLS with certificates made here;
the bridge is node ``guest`` of tenant ``kernel.example``, whose quota is
one log. A mirror on that log works; the table load of a second one fails at
once; a bridge that calls itself another node gets nothing constructed. (About
three minutes under emulation: one boot.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.certs import CertAuthority
from harness.guest import GuestRun, guest_script, run_guest
from logsvc.access import DEFAULT_POLICY

pytestmark = pytest.mark.kernel


def _pki(results: Path) -> None:
    pki = results / "pki"
    ca = CertAuthority(pki)
    ca.issue("logsvc", dns=["logsvc.dmulog"], server=True, client=False)
    ca.issue("guest", uris=["spiffe://kernel.example/dmulog/node/guest"])
    grants = [f'[[grant]]\nsan = "{g.san}"\nrole = "{g.role.value}"\n' for g in DEFAULT_POLICY.grants]
    (pki / "policy.toml").write_text("\n".join([*grants, '[[quota]]\ntenant = "kernel.example"\nlogs = 1\n']))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One boot of the script."""
    results = tmp_path_factory.mktemp("secure")
    _pki(results)
    return run_guest(guest_script("secure.sh"), timeout=600, results_dir=results)


def _events(run: GuestRun, name: str, event: str) -> list[dict[str, object]]:
    lines = (run.results_dir / name).read_text().splitlines()
    found = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in found if e.get("event") == event]


def test_a_mirror_works_over_mtls_in_its_tenant(secure: GuestRun) -> None:
    """The tenant's first log: resynced, written, both legs identical, removed."""
    out = secure.outcome()
    assert (0, "yes") == (secure.rc, out.get("done")), secure.describe()
    assert "yes" == out.get("legs_identical"), secure.describe()
    assert "0" == out.get("remove_rc"), out


def test_the_tenants_second_log_is_refused_at_once(secure: GuestRun) -> None:
    """Over the quota of one log: the table load fails, without the bridge's 9-second retry."""
    out = secure.outcome()
    assert out.get("m2_rc") not in (None, "0"), out
    assert int(out.get("m2_seconds", "99")) < 5, out
    refused = [e for e in _events(secure, "logsvc.log", "request")
               if e.get("code") == "RESOURCE_EXHAUSTED" and "quota exceeded" in str(e.get("detail"))]  # fmt: skip
    assert refused, "logsvc logged no quota refusal"
    # The kernel makes every failed CTR one outcome: EINVAL for the table load, whatever the errno.
    kmsg = (secure.results_dir / "kmsg.txt").read_text()
    assert kmsg.count("Userspace log server failed to create log") == 2, kmsg
    assert "Error creating mirror dirty log (-EINVAL)" in kmsg, kmsg
    assert "Invalid argument" in out.get("m2_error", ""), out


def test_a_bridge_cannot_act_as_another_node(secure: GuestRun) -> None:
    """The same certificate under --node impostor: PERMISSION_DENIED in logsvc, the table load fails."""
    out = secure.outcome()
    assert out.get("m3_rc") not in (None, "0"), out
    denied = _events(secure, "logsvc.log", "permission_denied")
    assert any(e.get("request_node") == "impostor" and e.get("certificate_node") == "guest" for e in denied), denied
