"""Door 1: the kernel datagram codec (bridge/wire.py and the payload decoders of bridge/dispatch.py).

Random bytes and mutations of the real kernel's datagrams. Whatever comes
in, decoding either succeeds or raises WireError, the codec's one documented
error; an error carries a reply exactly when the kernel could match one; a
reply is framed so the kernel reads it; and what decodes re-encodes byte
for byte, as the kernel's own datagrams do.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass

import pytest

from bridge import wire
from bridge.dispatch import ROUTES
from dmulog.v1 import dmulog_pb2 as pb
from tests.fuzz import budget
from tests.fuzz.datagrams import FIXTURES, addressable, canonical, hostile, kernel_shaped, reply_keys, u32_at

_REF, _NODE = pb.LogRef(uuid="u"), pb.Node(name="n", boot_id="b")


@dataclass
class Finding:
    """What one input broke, with the bytes that broke it."""

    index: int
    problem: str
    datagram: bytes

    def __str__(self) -> str:
        return f"input {self.index}: {self.problem}\n  datagram {self.datagram.hex()}"


def check_reply_to(buf: bytes, reply: bytes) -> str | None:
    """What is wrong with ``reply`` as the codec's error reply to ``buf``, or None.

    The kernel reads it with its connector callback: it must frame, carry a
    negative errno and match the waiter of ``buf``.
    """
    try:
        got = wire.decode_reply(reply)
    except wire.WireError as e:
        return f"error reply does not frame: {e}"
    if len(reply) % 4:
        return f"error reply of {len(reply)} bytes is not 4-aligned"
    if got.error >= 0:
        return f"error reply carries {got.error}, not a negative errno"
    if (got.bare_ack, got.seq) not in reply_keys(buf):
        return f"error reply {(got.bare_ack, got.seq)} matches no waiter of the datagram"
    return None


def check_decoded(buf: bytes, req: wire.Request) -> str | None:
    """What is wrong with ``req`` as the decoding of ``buf``, or None."""
    again = wire.encode_request(req.request_type, seq=req.seq, luid=req.luid, uuid=req.uuid, data=req.data,
                                version=req.version)  # fmt: skip
    expected = canonical(buf, req.seq, req.request_type)
    if again != expected:
        return f"re-encodes to {again.hex()}, expected {expected.hex()}"
    if wire.decode_request(again) != wire.Request(req.request_type, req.seq, req.luid, req.uuid, req.version,
                                                  req.data, req.seq, req.seq):  # fmt: skip
        return "decode(encode(request)) is another request"
    if req.cn_seq != u32_at(buf, 24) or req.seq != u32_at(buf, 184):
        return "seqs not read from their fields"
    route = ROUTES.get(req.request_type)
    if route is not None:
        try:
            message = route.build(req, _REF, _NODE)
        except wire.WireError as e:
            if kernel_shaped(buf):
                return f"payload of the kernel's shape refused: {e}"
        else:
            if not kernel_shaped(buf):
                return f"payload of a shape the kernel never sends accepted as {type(message).__name__}"
    return None


def check(index: int, buf: bytes) -> Finding | None:
    """Every property of one input; the first it breaks."""
    peeked = wire.peek_type_and_size(buf)
    if (peeked is None) != (len(buf) < wire.HEADER_SIZE):
        return Finding(index, f"peek_type_and_size gave {peeked} for {len(buf)} bytes", buf)
    try:
        req = wire.decode_request(buf)
    except wire.WireError as e:
        if (e.reply is None) == addressable(buf):
            return Finding(index, f"reply {'missing' if e.reply is None else 'present'} ({e})", buf)
        if e.errno <= 0:
            return Finding(index, f"WireError with errno {e.errno}", buf)
        if e.reply is not None and (problem := check_reply_to(buf, e.reply)):
            return Finding(index, problem, buf)
        return None
    except Exception as e:  # noqa: BLE001 - the property under test: nothing else may come out
        return Finding(index, f"raised {type(e).__name__}: {e}", buf)
    try:
        problem = check_decoded(buf, req)
    except Exception as e:  # noqa: BLE001 - encoding back, or a payload decoder, failed otherwise
        problem = f"raised {type(e).__name__} after decoding: {e}"
    return Finding(index, problem, buf) if problem else None


def check_replies(index: int, buf: bytes) -> Finding | None:
    """decode_reply, the kernel's side: Reply or WireError, nothing else."""
    try:
        wire.decode_reply(buf)
    except wire.WireError:
        pass
    except Exception as e:  # noqa: BLE001 - the property under test
        return Finding(index, f"decode_reply raised {type(e).__name__}: {e}", buf)
    return None


def fuzz(inputs: int) -> tuple[list[Finding], int]:
    """Run ``inputs`` inputs; the findings (at most 20) and how many inputs decoded."""
    rng = budget.rng("codec")
    findings: list[Finding] = []
    decoded = 0
    for i in range(inputs):
        buf = hostile(rng).datagram
        if (found := check(i, buf)) is not None:
            findings.append(found)
            if len(findings) >= 20:
                break
        elif kernel_shaped(buf):
            decoded += 1
        if i % 8 == 0 and (found := check_replies(i, buf)) is not None:
            findings.append(found)
    return findings, decoded


def test_fuzzed_datagrams_decode_or_raise_wire_error() -> None:
    """The budget's inputs through every property; a fair share of them must get past the framing."""
    findings, decoded = fuzz(budget.INPUTS)
    assert not findings, "\n".join(map(str, findings)) + f"\nreplay: {budget.replay_hint()}"
    assert decoded >= budget.INPUTS // 20, f"only {decoded} inputs were kernel-shaped: the mutations miss the payloads"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_fixture_passes_the_checks_unchanged(name: str) -> None:
    """The kernel's own datagrams are kernel-shaped and pass every check: the oracle agrees with the kernel."""
    buf = FIXTURES[name]
    assert kernel_shaped(buf)
    assert check(0, buf) is None


# --- The checkers fail on broken input ---------------------------------------------------------------------


def test_checker_reports_a_reply_that_matches_no_waiter() -> None:
    """An error reply under a seq the datagram never carried is a finding."""
    buf = FIXTURES["GET_REGION_SIZE"]
    req = wire.decode_request(buf)
    wrong = wire.encode_reply(wire.Request(req.request_type, req.seq + 1, req.luid, req.uuid, 3, b""), -errno.EINVAL)
    assert "matches no waiter" in (check_reply_to(buf, wrong) or "")
    assert "not a negative errno" in (check_reply_to(buf, wire.encode_reply(req, 0)) or "")
    assert check_reply_to(buf, wire.error_reply(req, errno.EINVAL)) is None


def test_checker_reports_a_decoding_that_does_not_re_encode() -> None:
    """A Request that is not what the bytes say (another luid) fails the byte-exact check."""
    buf = FIXTURES["MARK_REGION"]
    req = wire.decode_request(buf)
    wrong = wire.Request(req.request_type, req.seq, req.luid + 1, req.uuid, req.version, req.data, req.cn_seq,
                         req.nlmsg_seq)  # fmt: skip
    assert "re-encodes to" in (check_decoded(buf, wrong) or "")
    assert check_decoded(buf, req) is None


def test_checker_reports_an_error_other_than_wire_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder that lets struct.error out, as an unchecked unpack would, is a finding."""

    def leaky(buf: bytes) -> wire.Request:
        struct.unpack_from("=I", buf, 10_000)
        raise AssertionError("unreachable")

    monkeypatch.setattr(wire, "decode_request", leaky)
    found = check(7, FIXTURES["DTR"])
    assert found is not None and "raised error" in found.problem and "input 7" in str(found)


def test_checker_reports_a_missing_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal without a reply for a datagram the kernel waits on (it would time out after 15 s) is a finding."""

    def silent(buf: bytes) -> wire.Request:
        raise wire.WireError("no")

    monkeypatch.setattr(wire, "decode_request", silent)
    found = check(0, FIXTURES["DTR"])
    assert found is not None and "reply missing" in found.problem


def test_oracle_says_a_bent_payload_is_not_kernel_shaped() -> None:
    """The oracle itself: a MARK of 7 bytes, a CTR with two spaces, an unknown type are not what the kernel sends."""
    mark = bytearray(FIXTURES["MARK_REGION"])
    mark[192:196] = (7).to_bytes(4, "little")
    assert not kernel_shaped(bytes(mark))
    ctr = wire.encode_request(wire.RequestType.CTR, seq=1, luid=1, uuid="u", data=b"16  core 8")
    assert not kernel_shaped(ctr)
    assert not kernel_shaped(wire.encode_request(99, seq=1, luid=1, uuid="u"))
