"""Tests of dmulog/retry.py: the bounded retry policy, on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from dmulog.retry import RetryPolicy


@dataclass
class FakeTime:
    """A clock that only moves when the policy sleeps (or a call takes time)."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)
    sleep_ends: list[float] = field(default_factory=list)

    def clock(self) -> float:
        """Current fake time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the pause and move the clock past it."""
        self.sleeps.append(seconds)
        self.now += seconds
        self.sleep_ends.append(self.now)


class FixedBackoff(RetryPolicy):
    """The policy with its jitter faked out: every pause is exactly ``base``."""

    def delay(self, attempt: int) -> float:
        """Constant backoff."""
        return self.base


class Flaky:
    """An operation that fails ``failures`` times with ``error`` before returning ``value``."""

    def __init__(self, failures: int, error: type[BaseException] = ConnectionError, value: object = "ok",
                 cost: float = 0.0, time: FakeTime | None = None):  # fmt: skip
        self.failures = failures
        self.error = error
        self.value = value
        self.calls = 0
        self.cost = cost
        self.time = time

    async def __call__(self) -> object:
        """One attempt."""
        self.calls += 1
        if self.time is not None:
            self.time.now += self.cost
        if self.calls <= self.failures:
            raise self.error(f"attempt {self.calls}")
        return self.value


def policy(time: FakeTime, **kw: object) -> RetryPolicy:
    """A FixedBackoff policy on the fake clock."""
    return FixedBackoff(sleep=time.sleep, clock=time.clock, **kw)  # type: ignore[arg-type]


async def test_returns_value_after_failures():
    """After N retryable failures the value of the first success is returned, with N pauses in between."""
    time = FakeTime()
    op = Flaky(3)
    actual = await policy(time, budget=10.0, base=0.5).run(op)
    assert "ok" == actual
    assert (4, [0.5, 0.5, 0.5]) == (op.calls, time.sleeps)


async def test_first_success_does_not_sleep():
    """A call that succeeds at once is made once and never sleeps."""
    time = FakeTime()
    op = Flaky(0, value=42)
    expected = (42, 1, [])
    assert expected == (await policy(time).run(op), op.calls, time.sleeps)


@pytest.mark.parametrize("error", [ConnectionError, TimeoutError, ConnectionResetError, BrokenPipeError])
async def test_retries_default_retryable_errors(error):
    """ConnectionError, TimeoutError and their subclasses are retried by default."""
    time = FakeTime()
    op = Flaky(2, error=error)
    await policy(time).run(op)
    expected = 3
    assert expected == op.calls


@pytest.mark.parametrize("error", [ValueError, KeyError, RuntimeError, OSError, Exception])
async def test_does_not_retry_other_errors(error):
    """A non-retryable error is raised from the first attempt without any pause."""
    time = FakeTime()
    op = Flaky(5, error=error)
    with pytest.raises(error):
        await policy(time).run(op)
    expected = (1, [])
    assert expected == (op.calls, time.sleeps)


async def test_retryable_tuple_is_honoured():
    """A policy built with retryable=(KeyError,) retries KeyError and not ConnectionError."""
    time = FakeTime()
    op = Flaky(2, error=KeyError)
    await policy(time, retryable=(KeyError,)).run(op)
    assert 3 == op.calls
    op = Flaky(2, error=ConnectionError)
    with pytest.raises(ConnectionError):
        await policy(time, retryable=(KeyError,)).run(op)
    assert 1 == op.calls


async def test_is_retryable_overrides_the_tuple():
    """The is_retryable predicate decides instead of the retryable tuple."""
    time = FakeTime()
    op = Flaky(2, error=ValueError)
    await policy(time).run(op, is_retryable=lambda e: isinstance(e, ValueError))
    assert 3 == op.calls
    op = Flaky(2, error=ConnectionError)
    with pytest.raises(ConnectionError):
        await policy(time).run(op, is_retryable=lambda e: False)
    assert 1 == op.calls


async def test_does_not_retry_cancelled_error():
    """CancelledError propagates at once even when the predicate would call everything retryable."""
    time = FakeTime()
    op = Flaky(5, error=asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        await policy(time).run(op, is_retryable=lambda e: True)
    expected = (1, [])
    assert expected == (op.calls, time.sleeps)


async def test_does_not_retry_cancelled_error_listed_as_retryable():
    """CancelledError propagates at once even when it is listed in the retryable tuple."""
    time = FakeTime()
    op = Flaky(5, error=asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        await policy(time, retryable=(BaseException,)).run(op)
    expected = 1
    assert expected == op.calls


async def test_reraises_last_error_when_budget_runs_out():
    """When the budget is spent the error of the last attempt is re-raised, the last pause cut to the deadline."""
    time = FakeTime()
    op = Flaky(1000)
    with pytest.raises(ConnectionError) as info:
        await policy(time, budget=1.0, base=0.375).run(op)
    # Pauses end at +0.375 and +0.75; the third is cut to 0.25 so the fourth
    # attempt runs exactly at the deadline, and its error is the one raised.
    expected = (4, "attempt 4", [0.375, 0.375, 0.25])
    assert expected == (op.calls, str(info.value), time.sleeps)


async def test_zero_budget_means_one_attempt():
    """With a zero budget the first retryable failure is raised without a pause."""
    time = FakeTime()
    op = Flaky(3)
    with pytest.raises(ConnectionError, match="attempt 1"):
        await policy(time, budget=0.0).run(op)
    expected = (1, [])
    assert expected == (op.calls, time.sleeps)


async def test_slow_attempts_count_against_the_budget():
    """Time spent inside the attempts counts against the budget, not only the pauses."""
    time = FakeTime()
    op = Flaky(1000, cost=2.0, time=time)
    with pytest.raises(ConnectionError):
        await policy(time, budget=5.0, base=0.125).run(op)
    # Attempts end at +2, +4.125, +6.25: the third is already past the 5 s deadline.
    expected = 3
    assert expected == op.calls


@pytest.mark.parametrize("budget", [0.5, 1.0, 3.0, 9.0, 14.9])
async def test_never_sleeps_past_the_deadline_with_real_jitter(budget):
    """With the real jittered backoff no pause ends at or after start + budget."""
    time = FakeTime()
    start = time.now
    op = Flaky(10_000)
    with pytest.raises(ConnectionError):
        await RetryPolicy(budget=budget, base=0.05, cap=1.0, sleep=time.sleep, clock=time.clock).run(op)
    assert time.sleeps
    assert all(end <= start + budget for end in time.sleep_ends)
    assert len(time.sleeps) + 1 == op.calls


async def test_last_attempt_lands_at_the_deadline():
    """The final pause ends exactly at start + budget, so the budget is used but never exceeded."""
    time = FakeTime()
    op = Flaky(10_000)
    with pytest.raises(ConnectionError):
        await RetryPolicy(budget=2.0, sleep=time.sleep, clock=time.clock).run(op)
    expected = 1002.0
    assert expected == time.sleep_ends[-1]


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 6, 10, 50])
def test_delay_is_full_jitter_under_the_cap(attempt):
    """delay(n) lies in [0, min(cap, base * 2**(n-1))]."""
    p = RetryPolicy(base=0.05, cap=1.0)
    bound = min(1.0, 0.05 * 2 ** (attempt - 1))
    samples = [p.delay(attempt) for _ in range(200)]
    assert all(0 <= d <= bound for d in samples)


def test_defaults_stay_below_the_kernel_timeout():
    """The default budget is under the kernel's 15 s request timeout and retries connection and timeout errors."""
    p = RetryPolicy()
    assert p.budget < 15.0
    expected = (ConnectionError, TimeoutError)
    assert expected == p.retryable
