"""Door 2: the bridge's accept path, through its production read loop, against a real logsvc and redis-server.

Hostile datagrams go in through the kernel stand-in's socket
(harness/kernel_side.py: the bridge's real ``Bridge.serve`` on a socket
pair), in batches. After each batch every datagram the kernel could match a
reply to has exactly one reply, an error unless the datagram is shaped as
the kernel shapes one; nothing else is answered; nothing crashes. After all
of them a real CTR and GET_REGION_SIZE are still served right.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from bridge import wire
from harness.kernel_side import KernelStandIn, next_seq, u64
from tests.fuzz import budget
from tests.fuzz.datagrams import Hostile, addressable, fixture, hostile, kernel_shaped, reply_keys

BATCH = 256
"""Datagrams in flight at once: enough to overlap, few enough to tell every reply's owner apart."""

# What a reply may carry: success, or the errors of a request the log refuses (bridge/errors.py).
# -EIO would be a crash in the bridge or INTERNAL in logsvc; -EAGAIN/-EHOSTDOWN an outage nobody caused.
ALLOWED_ERRORS = frozenset({0, -errno.EINVAL, -errno.ESRCH, -errno.EEXIST, -errno.EBUSY})


class EventCounter(logging.Handler):
    """Counts the bridge's and logsvc's log events by name, keeping no record: a million would not fit."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: Counter[str] = Counter()
        self.crashes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Count it; keep the few with a traceback, which are what this door hunts for."""
        name = record.getMessage()
        data = getattr(record, "event_data", {})
        if name == "datagram_malformed":
            name += ":answered" if data.get("answered") else ":dropped"
        self.events[name] += 1
        if record.exc_info and len(self.crashes) < 5:
            self.crashes.append(f"{record.name} {name}: {record.exc_info[1]!r}")


@contextlib.contextmanager
def counted(logger_name: str = "dmulog") -> Iterator[EventCounter]:
    """Every event of ``logger_name`` and below counted here, and kept out of pytest's capture for the block."""
    logger = logging.getLogger(logger_name)
    counter, propagate = EventCounter(), logger.propagate
    logger.addHandler(counter)
    logger.propagate = False
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.propagate = propagate


@dataclass
class Batch:
    """Inputs sent together, and whose reply each reply key would be."""

    inputs: list[Hostile] = field(default_factory=list)
    owners: dict[tuple[bool, int], int] = field(default_factory=dict)

    def fits(self, h: Hostile) -> bool:
        """Whether ``h``'s replies could not be mistaken for another input's in this batch."""
        return len(self.inputs) < BATCH and not (answerable(h) and reply_keys(h.datagram) & self.owners.keys())

    def add(self, h: Hostile) -> None:
        """One more input."""
        if answerable(h):
            for key in reply_keys(h.datagram):
                self.owners[key] = len(self.inputs)
        self.inputs.append(h)


def answerable(h: Hostile) -> bool:
    """Whether the bridge owes ``h`` a reply: from the kernel, addressed so that the kernel can match one."""
    return h.sender == 0 and addressable(h.datagram)


def judge(batch: Batch, replies: list[wire.Reply]) -> list[str]:
    """What is wrong with ``replies`` as the answers to ``batch``: one per answerable input, errors where due."""
    problems: list[str] = []
    answered: Counter[int] = Counter()
    for r in replies:
        owner = batch.owners.get((r.bare_ack, r.seq))
        if owner is None:
            problems.append(f"reply {(r.bare_ack, r.seq, r.error)} matches no datagram the kernel waits on")
            continue
        answered[owner] += 1
        h = batch.inputs[owner]
        if r.error not in ALLOWED_ERRORS:
            problems.append(f"reply error {r.error} to {h.datagram.hex()}")
        elif r.error == 0 and not kernel_shaped(h.datagram):
            problems.append(f"malformed datagram answered 0: {h.datagram.hex()}")
    for i, h in enumerate(batch.inputs):
        if answerable(h) and answered[i] != 1:
            problems.append(f"{answered[i]} replies to {h.datagram.hex()}")
    return problems


async def run_batch(kernel: KernelStandIn, batch: Batch, seen: Counter[str]) -> list[str]:
    """Send ``batch``, wait until the bridge has answered all it will, judge the replies; ``seen`` tallies them."""
    for h in batch.inputs:
        kernel.send_datagram(h.datagram, h.sender)
    await kernel.taken(timeout=60)
    while kernel.bridge.tasks:
        await asyncio.wait(set(kernel.bridge.tasks))
    replies = [await kernel.reply(timeout=1) for _ in range(kernel.received())]
    seen.update("bare ACK" if r.bare_ack else f"error {r.error}" for r in replies)
    return judge(batch, replies)


@pytest.fixture
async def kernel(logsvc: str) -> AsyncIterator[KernelStandIn]:
    """A production bridge on a real logsvc on the session's redis-server, and the kernel's end of its socket."""
    async with KernelStandIn(logsvc) as k:
        yield k


async def served_right(kernel: KernelStandIn, uuid: str) -> None:
    """The captured CTR and GET_REGION_SIZE, under a log of their own, get the answers the kernel expects."""
    ctr = wire.decode_request(fixture("CTR"))
    reply = await kernel.ask(ctr.request_type, ctr.data, uuid=uuid, luid=ctr.luid)
    assert (reply.error, reply.data) == (0, b""), reply
    size = await kernel.ask(wire.RequestType.GET_REGION_SIZE, uuid=uuid, luid=ctr.luid)
    assert (size.error, size.data) == (0, u64(1024)), size


async def test_fuzzed_datagrams_are_answered_or_dropped_as_documented(kernel: KernelStandIn, uuid: str) -> None:
    """The budget's inputs: every reply owed and no other, errors where due, no crash; then real requests work."""
    rng, seqs = budget.rng("accept"), itertools.count(1 << 30)
    problems: list[str] = []
    expect: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    batch = Batch()
    with counted() as log:
        for _ in range(budget.INPUTS):
            h = hostile(rng, lambda: next(seqs))
            if h.sender:
                expect["datagram_not_from_kernel"] += 1
            elif not addressable(h.datagram):
                expect["datagram_malformed:dropped"] += 1
            if not batch.fits(h):
                problems += await run_batch(kernel, batch, seen)
                batch = Batch()
            batch.add(h)
            if len(problems) >= 20:
                break
        problems += await run_batch(kernel, batch, seen)
    hint = f"\nreplay: {budget.replay_hint()}"
    assert not problems, "\n".join(problems[:20]) + hint
    assert not log.crashes, "\n".join(log.crashes) + hint
    for name, count in expect.items():
        assert log.events[name] == count, f"{name}: {log.events[name]} logged, {count} sent{hint}"
    # The inputs reached every stage: the framing (bare ACKs), the payload decoders and logsvc's checks
    # (-EINVAL), logsvc's lookup (-ESRCH: a uuid or luid bent) and its answers (0).
    for kind in ("bare ACK", f"error {-errno.EINVAL}", f"error {-errno.ESRCH}", "error 0"):
        assert seen[kind] > 0, f"no reply was {kind}: {seen}"
    await served_right(kernel, uuid)


async def test_datagrams_too_short_for_a_header_are_logged_and_dropped(
    kernel: KernelStandIn, uuid: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Shorter than nlmsghdr + cn_msg, or for another connector: no waiter to answer, one log line each, no reply."""
    foreign = bytearray(fixture("DTR"))
    foreign[16] = 9  # connector 9:1
    short = [b"", b"\x01\x02", fixture("DTR")[:35], bytes(foreign)]
    with caplog.at_level(logging.ERROR, logger="dmulog.bridge"):
        for datagram in short:
            kernel.send_datagram(datagram)
        await kernel.taken()
    dropped = [r for r in caplog.records if r.getMessage() == "datagram_malformed"]
    assert [(r.event_data["size"], r.event_data["answered"]) for r in dropped] == [  # type: ignore[attr-defined]
        (len(d), False) for d in short
    ]
    await served_right(kernel, uuid)
    assert 0 == kernel.received()


# --- The checker fails on broken answers ---------------------------------------------------------------------


def _batch_of(*datagrams: bytes) -> Batch:
    batch = Batch()
    for d in datagrams:
        batch.add(Hostile(d))
    return batch


def test_judge_reports_missing_duplicate_stray_and_successful_replies() -> None:
    """Each way a bridge could answer wrong is reported, and the right answers are not."""
    good = wire.encode_request(wire.RequestType.DTR, seq=next_seq(), luid=1, uuid="u")
    bad = wire.encode_request(wire.RequestType.IN_SYNC, seq=next_seq(), luid=1, uuid="u", data=b"\0" * 7)
    batch = _batch_of(good, bad, b"\x01")
    ok, refused = wire.decode_request(good), wire.decode_request(bad)
    right = [wire.decode_reply(wire.encode_reply(ok, 0)), wire.decode_reply(wire.error_reply(refused, errno.EINVAL))]
    assert judge(batch, right) == []
    assert any("0 replies" in p for p in judge(batch, right[:1]))
    assert any("2 replies" in p for p in judge(batch, [*right, right[0]]))
    stray = wire.decode_reply(wire.encode_reply(wire.Request(8, 77, 1, "u", 3, b""), -errno.EINVAL))
    assert any("matches no datagram" in p for p in judge(batch, [*right, stray]))
    accepted = wire.decode_reply(wire.encode_reply(refused, 0))
    assert any("answered 0" in p for p in judge(batch, [right[0], accepted]))
    crashed = wire.decode_reply(wire.error_reply(refused, errno.EIO))
    assert any("reply error -5" in p for p in judge(batch, [right[0], crashed]))


def test_event_counter_keeps_what_crashed() -> None:
    """A logged traceback is what the fuzz test fails on; the counter must see it."""
    with counted("dmulog.fuzz-check") as log:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("dmulog.fuzz-check.x").exception("request_crashed")
    assert log.events["request_crashed"] == 1
    assert log.crashes and "boom" in log.crashes[0]
