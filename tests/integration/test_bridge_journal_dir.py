"""A bridge whose journal directory holds things that are not its own, end to end without the kernel."""

from __future__ import annotations

from pathlib import Path

from bridge import wire
from bridge.journal import Journal
from bridge.wire import RequestType as T
from harness.kernel_side import LUID, KernelStandIn, next_seq, u64


async def test_a_bridge_starts_and_serves_beside_strangers_in_its_journal_dir(
    logsvc: str, uuid: str, tmp_path: Path
) -> None:
    """A directory and a stray file in --journal-dir neither stop the start nor get removed; entries are replayed."""
    async with KernelStandIn(logsvc) as first:
        assert 0 == (await first.ask(T.CTR, b"120 clustered-core 16", uuid=uuid)).error
        assert 0 == (await first.ask(T.RESUME, uuid=uuid)).error
    inflight = tmp_path / "inflight"
    dead = Journal(inflight)  # a bridge journalled a request and died before answering
    seq = next_seq()
    dead.record(wire.encode_request(T.GET_REGION_SIZE, seq=seq, luid=LUID, uuid=uuid))
    dead.close()
    (inflight / "lost+found").mkdir()
    (inflight / "ring-1").mkdir()
    (inflight / "README").write_text("left by an operator\n")

    async with KernelStandIn(logsvc, journal=Journal(inflight)) as restarted:
        assert 1 == restarted.replayed
        reply = await restarted.reply()
        assert (seq, 0, u64(16)) == (reply.seq, reply.error, reply.data)
        assert 0 == (await restarted.ask(T.MARK_REGION, u64(2), uuid=uuid)).error
        names = {p.name for p in inflight.iterdir()}
        assert {"lost+found", "ring-1", "README", restarted.bridge.journal.path.name} == names
        assert "left by an operator\n" == (inflight / "README").read_text()
