"""logsvc/decoding.py: naming the field of a request protobuf refuses, with the lenient copies of its types."""

from __future__ import annotations

import pytest

from dmulog.v1 import dmulog_pb2 as pb
from logsvc.decoding import Undecodable, explain, lenient, method_input, tolerant
from logsvc.errors import InvalidArgument


def spoiled(message: pb.ExchangeRequest | pb.CtrRequest) -> bytes:
    """The message with its one "bad-X" string made invalid UTF-8."""
    data = message.SerializeToString()
    assert 1 == data.count(b"bad-X")
    return data.replace(b"bad-X", b"bad-\xff")


NODE = pb.Node(name="node-a", boot_id="boot-1")


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (pb.CtrRequest(log=pb.LogRef(uuid="bad-X")), "log.uuid"),
        (pb.CtrRequest(node=NODE, args=["16", "sync", "bad-X"]), "args[2]"),
        (pb.CtrRequest(block_devices={"/a": "1:1", "/b": "bad-X"}), "block_devices.value"),
        (pb.CtrRequest(block_devices={"/a": "1:1", "/bad-X": "1:2"}), "block_devices.key"),
        (pb.ExchangeRequest(calls=[pb.ExchangeCall(id=1, dtr=pb.DtrRequest(node=NODE)),
                                   pb.ExchangeCall(id=2, resume=pb.ResumeRequest(node=pb.Node(boot_id="bad-X")))]),
         "calls[1].resume.node.boot_id"),
    ],
)  # fmt: skip
def test_explain_names_the_field_that_is_not_utf8(message: pb.CtrRequest, path: str) -> None:
    """The path goes through nested messages, repeated fields and map entries, as a client would spell it."""
    data = spoiled(message)
    with pytest.raises(Exception, match="bad UTF-8"):
        type(message).FromString(data)
    assert f"{path} is not valid UTF-8" == explain(message.DESCRIPTOR, data)


def test_lenient_reads_what_the_strict_type_refuses() -> None:
    """Strings come back as their bytes; bytes that are not protobuf at all are None."""
    message: object = lenient(pb.Node.DESCRIPTOR, pb.Node(name="bad-X").SerializeToString().replace(b"X", b"\xff"))
    assert b"bad-\xff" == message.name  # type: ignore[attr-defined]
    assert lenient(pb.Node.DESCRIPTOR, b"\xff\xff\xff") is None
    assert "request is not a valid Node message" == explain(pb.Node.DESCRIPTOR, b"\xff\xff\xff")


async def test_tolerant_passes_good_requests_and_turns_bad_ones_into_a_refusal() -> None:
    """A good request parses as before; a bad one becomes an Undecodable that fails as INVALID_ARGUMENT."""
    parse = tolerant(pb.CtrRequest.FromString, pb.CtrRequest.DESCRIPTOR)
    good = pb.CtrRequest(node=NODE, log_type="dmulog")
    assert good == parse(good.SerializeToString())
    bad = parse(spoiled(pb.CtrRequest(log_type="bad-X")))
    assert isinstance(bad, Undecodable)
    with pytest.raises(InvalidArgument, match=r"^log_type is not valid UTF-8$"):
        await bad.refuse()


def test_method_input_finds_the_request_type_of_a_path() -> None:
    """The interceptor knows each method's request type from its path; an unknown path has none."""
    assert pb.ExchangeRequest.DESCRIPTOR is method_input("/dmulog.v1.DirtyLog/Exchange")
    assert method_input("/dmulog.v1.DirtyLog/NoSuchMethod") is None
    assert method_input("/no.such.Service/Ctr") is None
