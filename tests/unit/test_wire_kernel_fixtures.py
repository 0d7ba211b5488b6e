"""The codec against datagrams captured from the real kernel (fixtures/kernel/README.md says how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import wire
from bridge.dispatch import ROUTES
from dmulog.v1 import dmulog_pb2 as pb

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "kernel").glob("*.hex"))


def load(path: Path) -> bytes:
    """A fixture's bytes."""
    return bytes.fromhex(path.read_text())


def test_the_kernel_sent_fifteen_request_types() -> None:
    """Every type the kernel sends has a fixture (IS_CLEAN and STATUS_TABLE are never sent)."""
    names = {p.stem.split("_replay")[0].removesuffix("_integrated_max").removesuffix("_integrated")
             .removesuffix("_max") for p in FIXTURES}  # fmt: skip
    expected = {t.name for t in wire.RequestType} - {"IS_CLEAN", "STATUS_TABLE"}
    assert expected == names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_kernel_datagram_decodes_and_re_encodes_byte_for_byte(path: Path) -> None:
    """Decoding a captured datagram and encoding the same request again gives the kernel's exact bytes."""
    raw = load(path)
    req = wire.decode_request(raw)
    assert path.stem.startswith(wire.RequestType(req.request_type).name)
    assert (3, req.seq, req.seq) == (req.version, req.cn_seq, req.nlmsg_seq)
    again = wire.encode_request(req.request_type, seq=req.seq, luid=req.luid, uuid=req.uuid, data=req.data)
    assert raw == again


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_kernel_datagram_goes_through_the_dispatch_table(path: Path) -> None:
    """Every captured request builds its gRPC message without a decoding error."""
    req = wire.decode_request(load(path))
    message = ROUTES[req.request_type].build(req, pb.LogRef(uuid=req.uuid, luid=req.luid), pb.Node(name="n"))
    assert req.uuid == message.log.uuid


def test_replayed_ctr_is_recognised() -> None:
    """The reconnect loop's CTR carries its NUL; the table-load CTR does not."""
    load_ctr = wire.decode_ctr(wire.decode_request(load(FIXTURES[0].parent / "CTR.hex")).data)
    replay = wire.decode_ctr(wire.decode_request(load(FIXTURES[0].parent / "CTR_replay.hex")).data)
    assert (False, True) == (load_ctr.replay, replay.replay)
    assert (16384, "clustered-core", ("1024",)) == (replay.target_sectors, replay.log_type, replay.args)


def test_full_batches_hold_32_regions_in_descending_order() -> None:
    """A 64-region write sends MARK batches of 32, newest first."""
    regions = wire.decode_regions(wire.decode_request(load(FIXTURES[0].parent / "MARK_REGION_max.hex")).data, "MARK")
    assert list(range(63, 31, -1)) == regions
