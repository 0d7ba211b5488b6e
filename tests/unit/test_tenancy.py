"""Tenants' names as stored and as shown (logsvc/tenancy.py), and what the bridge makes of a quota refusal."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import grpc
import pytest

from bridge.errors import errno_of, retryable
from dmulog.quotas import CAPACITY_REFUSED
from dmulog.v1 import dmulog_pb2 as pb
from logsvc import tenancy


@pytest.fixture
def tenant_a() -> Iterator[None]:
    """Serve as tenant ``a.example`` for the test."""
    token = tenancy.TENANT.set("a.example")
    yield
    tenancy.TENANT.reset(token)


def test_no_tenant_names_are_stored_as_given() -> None:
    """Plaintext and tenantless grants keep the names they always had: existing logs stay where they are."""
    assert tenancy.log_name("LVM-1") == "LVM-1" and tenancy.node_name("n1") == "n1"
    assert tenancy.visible_log("LVM-1") == "LVM-1"
    assert tenancy.visible_log("a.example\0LVM-1") is None
    assert tenancy.visible_node("a.example:n1") is None


@pytest.mark.usefixtures("tenant_a")
def test_a_tenants_names() -> None:
    """Stored with the tenant's prefix; shown without; another namespace's are invisible."""
    assert tenancy.log_name("LVM-1") == "a.example\0LVM-1"
    assert tenancy.node_name("n1") == "a.example:n1"
    assert tenancy.visible_log("a.example\0LVM-1") == "LVM-1"
    assert tenancy.visible_log("b.example\0LVM-1") is None
    assert tenancy.visible_log("LVM-1") is None
    assert tenancy.visible_node("a.example:n1") == "n1"
    assert tenancy.visible_node("n1") is None


@pytest.mark.usefixtures("tenant_a")
def test_shown_rewrites_every_name_a_response_carries() -> None:
    """Log UUIDs, instances' and marks' nodes, the recoverer, fences and leases: all in the caller's terms."""
    state = pb.GetLogStateResponse(
        summary=pb.LogSummary(uuid="a.example\0LVM-1"),
        instances=[pb.Instance(node="a.example:n1")],
        marks=[pb.RegionMarks(region=1, nodes=["a.example:n1", "a.example:n2"])],
        recoverer_node="a.example:n2",
        fences=[pb.NodeFence(node="a.example:n3", epoch=4)],
    )
    tenancy.shown(state)
    assert state.summary.uuid == "LVM-1"
    assert [i.node for i in state.instances] == ["n1"]
    assert list(state.marks[0].nodes) == ["n1", "n2"]
    assert state.recoverer_node == "n2" and state.fences[0].node == "n3"
    leases = tenancy.shown(pb.ListNodesResponse(nodes=[pb.NodeLease(name="a.example:n1")]))
    assert [n.name for n in leases.nodes] == ["n1"]  # type: ignore[attr-defined]
    # A name of another namespace, which the store never puts in a tenant's answer, shows as "?".
    assert tenancy.shown(pb.WatchLogsResponse(uuid="b.example\0x", node="b.example:n")).uuid == "?"  # type: ignore[attr-defined]


def test_the_shown_rewrite_can_fail() -> None:
    """The check above means something: without a tenant, shown changes nothing."""
    state = tenancy.shown(pb.GetLogStateResponse(recoverer_node="a.example:n2"))
    assert state.recoverer_node == "a.example:n2"  # type: ignore[attr-defined]


def test_what_the_bridge_makes_of_a_quota() -> None:
    """A capacity refusal is final (EDQUOT); a rate refusal and a too-large answer are retried or EIO as before."""
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert not retryable(exhausted, CAPACITY_REFUSED + "tenant t has 1 of its 1 logs")
    assert errno_of(exhausted, CAPACITY_REFUSED + "tenant t has 1 of its 1 logs") == errno.EDQUOT
    assert retryable(exhausted, "tenant t is over its request rate (5 a second): slow down and send again")
    assert errno_of(grpc.StatusCode.PERMISSION_DENIED) == errno.EACCES
