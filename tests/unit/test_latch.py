"""The bridge's knowledge of in-sync latches: every interleaving of an IN_SYNC with a lifecycle request."""

from __future__ import annotations

import pytest

from bridge.latch import InSyncLatches
from dmulog.requests import BY_TYPE, REQUESTS, Lifecycle, RequestType
from dmulog.v1 import dmulog_pb2 as pb

K = ("log-1", 0xFFFF888003A1B2C8)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand."""
    return Clock()


@pytest.fixture
def latches(clock: Clock) -> InSyncLatches:
    """Latches known for one second."""
    return InSyncLatches(ttl=1.0, clock=clock)


def test_nothing_is_known_latched_at_first(latches: InSyncLatches) -> None:
    """Only logsvc can say an instance is latched."""
    assert not latches.latched(K)


def test_a_latched_answer_is_known_for_ttl_then_asked_again(latches: InSyncLatches, clock: Clock) -> None:
    """The ttl bounds what a cache could get wrong if the log changed in a way no rule foresees."""
    latches.answered(K, latches.asking(K), latched=True)
    assert latches.latched(K)
    clock.now += 0.999
    assert latches.latched(K)
    clock.now += 0.002
    assert not latches.latched(K)


def test_an_answer_that_is_not_latched_forgets_the_latch(latches: InSyncLatches) -> None:
    """A fresher answer without the latch wins: logsvc knows best."""
    latches.answered(K, latches.asking(K), latched=True)
    latches.answered(K, latches.asking(K), latched=False)
    assert not latches.latched(K)


def test_instances_are_apart(latches: InSyncLatches) -> None:
    """A latch belongs to one instance (uuid, luid): a reload's new luid starts unlatched."""
    latches.answered(K, latches.asking(K), latched=True)
    assert not latches.latched(("log-1", 1))
    assert not latches.latched(("log-2", K[1]))


def test_a_lifecycle_request_forgets_the_latch_when_it_starts(latches: InSyncLatches) -> None:
    """From the moment a RESUME (or suspend, CTR, DTR) is forwarded, IN_SYNC goes to logsvc."""
    latches.answered(K, latches.asking(K), latched=True)
    latches.begin(K)
    assert not latches.latched(K)


def test_an_answer_asked_before_a_lifecycle_request_teaches_nothing(latches: InSyncLatches) -> None:
    """Asked before a RESUME, answered by Redis before the RESUME ran, arriving after it began or ended."""
    ticket = latches.asking(K)
    latches.begin(K)
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)
    latches.end(K)
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)


def test_an_answer_asked_before_a_whole_lifecycle_request_teaches_nothing(latches: InSyncLatches) -> None:
    """A slow answer overtaken by a whole RESUME must not bring back the latch it ended."""
    ticket = latches.asking(K)
    latches.begin(K)
    latches.end(K)
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)


def test_an_answer_asked_during_a_lifecycle_request_teaches_nothing(latches: InSyncLatches) -> None:
    """Redis may run the IN_SYNC before the RESUME that is already on its way on another stream."""
    latches.begin(K)
    ticket = latches.asking(K)
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)
    latches.end(K)
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)


def test_overlapping_lifecycle_requests_keep_it_unknown_until_both_end(latches: InSyncLatches) -> None:
    """Two lifecycle requests in flight (e.g. a replayed CTR and RESUME): the first to end is not enough."""
    latches.begin(K)
    latches.begin(K)
    latches.end(K)
    latches.answered(K, latches.asking(K), latched=True)
    assert not latches.latched(K)
    latches.end(K)
    latches.answered(K, latches.asking(K), latched=True)
    assert latches.latched(K)


def test_an_answer_asked_after_the_lifecycle_request_ended_counts(latches: InSyncLatches) -> None:
    """Asked after the RESUME was answered, Redis ran it after the RESUME: it may set the latch."""
    latches.begin(K)
    latches.end(K)
    latches.answered(K, latches.asking(K), latched=True)
    assert latches.latched(K)


def test_a_destroyed_instance_is_forgotten_and_a_stale_answer_does_not_revive_it(latches: InSyncLatches) -> None:
    """DTR drops the entry; generations are global, so a ticket never matches a re-created entry."""
    ticket = latches.asking(K)
    latches.begin(K)
    latches.end(K, gone=True)
    assert len(latches) == 0
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)
    # The same key constructed again: a ticket from before is still stale.
    latches.begin(K)
    latches.end(K)
    latches.answered(K, ticket, latched=True)
    assert not latches.latched(K)


def test_ttl_zero_never_knows_a_latch(clock: Clock) -> None:
    """--latch-ttl 0 turns the cache off: every IN_SYNC goes to logsvc."""
    latches = InSyncLatches(ttl=0, clock=clock)
    latches.answered(K, latches.asking(K), latched=True)
    assert not latches.latched(K)


def test_too_many_instances_drop_idle_ones_never_busy_ones(
    latches: InSyncLatches, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded; forgetting is always safe, but a busy entry guards an answer in flight."""
    monkeypatch.setattr("bridge.latch._MAX_INSTANCES", 4)
    latches.begin(("busy", 1))
    for i in range(3):
        latches.answered(("idle", i), latches.asking(("idle", i)), latched=True)
    latches.answered(("new", 0), latches.asking(("new", 0)), latched=True)
    assert latches.latched(("new", 0))
    assert not any(latches.latched(("idle", i)) for i in range(3))
    latches.answered(("busy", 1), latches.asking(("busy", 1)), latched=True)
    assert not latches.latched(("busy", 1))  # still in its lifecycle request
    latches.end(("busy", 1))
    latches.answered(("busy", 1), latches.asking(("busy", 1)), latched=True)
    assert latches.latched(("busy", 1))


# Forwarding: what each row of the table of request types does to its instance's latch.

IN_SYNC = BY_TYPE[RequestType.IN_SYNC]
LATCHED = pb.InSyncResponse(in_sync=True, latched=True)


def learn(latches: InSyncLatches) -> None:
    """An IN_SYNC forwarded and answered "latched", as the bridge forwards one."""
    with latches.forwarding(K, IN_SYNC) as forwarded:
        forwarded.answered(LATCHED)


@pytest.mark.parametrize("spec", REQUESTS, ids=lambda s: s.name)
def test_a_forwarded_request_forgets_the_latch_exactly_when_its_row_says(latches: InSyncLatches, spec) -> None:
    """While a lifecycle request is forwarded the latch is unknown; any other request leaves it as it was."""
    learn(latches)
    with latches.forwarding(K, spec) as forwarded:
        assert latches.latched(K) is not spec.lifecycle.ends_latch
        forwarded.answered(pb.InSyncResponse(latched=False) if spec is not IN_SYNC else LATCHED)
    assert latches.latched(K) is not spec.lifecycle.ends_latch
    assert len(latches) == (0 if spec.lifecycle is Lifecycle.FORGETS else 1)


def test_only_the_request_answered_here_when_latched_learns_the_latch(latches: InSyncLatches) -> None:
    """A response of another request, even one that says ``latched``, teaches nothing."""
    for spec in REQUESTS:
        if spec is not IN_SYNC:
            with latches.forwarding(K, spec) as forwarded:
                forwarded.answered(LATCHED)
    assert not latches.latched(K)
    learn(latches)
    assert latches.latched(K)


def test_a_lifecycle_request_that_fails_still_ends(latches: InSyncLatches) -> None:
    """However the call ends (an outage, a bug), the instance is no longer busy afterwards."""
    resume = BY_TYPE[RequestType.RESUME]
    with pytest.raises(RuntimeError), latches.forwarding(K, resume):
        raise RuntimeError("the call failed")
    learn(latches)
    assert latches.latched(K)
