"""Tests of dmulog/requests.py: the one table of kernel request types, against the API it names."""

from __future__ import annotations

import dataclasses

import pytest

from bridge import wire
from dmulog import requests
from dmulog.requests import BY_TYPE, REQUESTS, AnswerHere, Lifecycle, Payload, ReplyKind, RequestType
from dmulog.v1 import dmulog_pb2 as pb
from logsvc.exchange import methods_by_field

T = RequestType
SERVICE = pb.DESCRIPTOR.services_by_name["DirtyLog"]


def test_one_row_per_kernel_type_in_order():
    """Each of the 17 types has exactly one row, and the wire codec's RequestType is the table's."""
    assert list(range(1, 18)) == [int(s.type) for s in REQUESTS]
    assert wire.RequestType is RequestType
    assert {int(t): s for t, s in zip(RequestType, REQUESTS, strict=True)} == dict(BY_TYPE)
    assert None is BY_TYPE.get(0)
    assert None is BY_TYPE.get(18)


@pytest.mark.parametrize("spec", REQUESTS, ids=lambda s: s.name)
def test_every_rpc_is_a_dirtylog_method_of_its_own_messages(spec):
    """The RPC exists, takes <Rpc>Request and answers <Rpc>Response."""
    method = SERVICE.methods_by_name[spec.rpc]
    assert (f"{spec.rpc}Request", f"{spec.rpc}Response") == (method.input_type.name, method.output_type.name)
    assert not method.client_streaming and not method.server_streaming


def test_every_rpc_is_an_exchange_call_field():
    """Every table RPC can travel on an Exchange stream, and the stream carries no other kernel request."""
    exchanged = set(methods_by_field().values())
    assert {s.rpc for s in REQUESTS} == exchanged


@pytest.mark.parametrize("spec", REQUESTS, ids=lambda s: s.name)
def test_reply_fields_are_fields_of_the_response(spec):
    """The fields a reply is made of are there in the RPC's response, as many as the reply kind takes."""
    response = SERVICE.methods_by_name[spec.rpc].output_type
    assert all(f in response.fields_by_name for f in spec.reply.fields)
    arity = {ReplyKind.NONE: 0, ReplyKind.RESYNC_WORK: 2, ReplyKind.RECOVERING: 2}.get(spec.reply.kind, 1)
    assert arity == len(spec.reply.fields)


def test_lifecycle_and_answered_here():
    """The requests that end a latch, the one that forgets the instance, and the two answered in the bridge."""
    ends = {s.type for s in REQUESTS if s.lifecycle.ends_latch}
    assert {T.CTR, T.DTR, T.PRESUSPEND, T.POSTSUSPEND, T.RESUME} == ends
    assert [T.DTR] == [s.type for s in REQUESTS if s.lifecycle is Lifecycle.FORGETS]
    here = {s.type: s.here for s in REQUESTS if s.here is not AnswerHere.NEVER}
    assert {T.IN_SYNC: AnswerHere.IF_LATCHED, T.FLUSH: AnswerHere.IF_EMPTY} == here


def test_read_only_functions():
    """The functions run by FCALL_RO: the reads that change nothing."""
    reads = {s.type: s.function for s in REQUESTS if not s.writes}
    assert {
        T.GET_REGION_SIZE: "get_region_size", T.IS_CLEAN: "is_clean", T.IN_SYNC: "in_sync_latch",
        T.GET_SYNC_COUNT: "get_sync_count", T.STATUS_INFO: "describe", T.STATUS_TABLE: "describe",
    } == reads  # fmt: skip


@pytest.mark.parametrize(
    ("function", "arguments", "expected"),
    [
        pytest.param("mark_region", ["3", "4"], ["3", "4"], id="regions"),
        pytest.param("flush", [], [], id="flush-without-marks"),
        pytest.param("flush", ["7"], ["7"], id="flush-with-marks"),
        pytest.param("set_region_sync", ["9", "1"], ["9"], id="region-then-flag"),
        pytest.param("in_sync_latch", ["5"], ["5"], id="one-region"),
        pytest.param("in_sync", ["5"], ["5"], id="older-function"),
        pytest.param("ctr", ['{"region_size": 8}'], (), id="ctr"),
        pytest.param("get_resync_work", [], (), id="none"),
        pytest.param("step", [], (), id="not-a-kernel-request"),
    ],
)
def test_region_arguments(function, arguments, expected):
    """Which of a library call's own arguments are regions follows from the payload of the request it serves."""
    assert list(expected) == list(requests.region_arguments(function, arguments))


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        pytest.param(lambda rows: rows[1:], "one row per RequestType", id="missing-row"),
        pytest.param(lambda rows: (rows[1], rows[0], *rows[2:]), "one row per RequestType", id="out-of-order"),
        pytest.param(lambda rows: _replace(rows, T.GET_SYNC_COUNT, capacity=None), "no fixed reply room",
                     id="unbounded-number"),
        pytest.param(lambda rows: _replace(rows, T.IS_CLEAN, here=AnswerHere.IF_LATCHED), None, id="latched-flag"),
        pytest.param(lambda rows: _replace(rows, T.GET_SYNC_COUNT, here=AnswerHere.IF_LATCHED), "flag reply",
                     id="latched-number"),
        pytest.param(lambda rows: _replace(rows, T.MARK_REGION, here=AnswerHere.IF_EMPTY), "may be empty",
                     id="empty-non-empty"),
        pytest.param(lambda rows: _replace(rows, T.IS_CLEAN, function="mark_region"), "different arguments",
                     id="one-function-two-payloads"),
        pytest.param(lambda rows: _replace(rows, T.STATUS_TABLE, writes=True), "whether it writes",
                     id="one-function-read-and-written"),
    ],
)  # fmt: skip
def test_the_table_refuses_rows_its_readers_could_not_serve(change, complaint):
    """The import-time check fails on a table that breaks a rule the bridge relies on (and passes a sound one)."""
    rows = change(REQUESTS)
    if complaint is None:
        requests._check(rows)
        return
    with pytest.raises(ValueError, match=complaint):
        requests._check(rows)


def _replace(rows, rtype, **changes):
    return tuple(dataclasses.replace(s, **changes) if s.type == rtype else s for s in rows)


def test_payload_kinds_name_their_regions():
    """Only the kinds that carry regions have region arguments."""
    with_regions = {p for p in Payload if p.region_slice is not None}
    assert {Payload.REGION, Payload.REGIONS, Payload.MARKS, Payload.REGION_SYNC} == with_regions
