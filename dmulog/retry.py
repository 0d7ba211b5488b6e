"""A bounded retry policy.

Shared by the bridge (towards logsvc) and logsvc (towards Redis).

Both sides wait for a dependency that may come back: a restarted logsvc, a
Redis failing over. Waiting forever would hang the kernel's mirror thread
without telling anyone, and not waiting would turn every blip into an error
the kernel acts on. So the wait is exponential, jittered, and bounded by a
deadline that stays below the kernel's 15 s request timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["RetryPolicy"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retry ``retryable`` errors with capped exponential backoff until ``budget`` seconds."""

    budget: float = 10.0
    base: float = 0.05
    cap: float = 1.0
    retryable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    on_retry: Callable[[BaseException], None] | None = field(default=None, repr=False, compare=False)
    """Told of each error about to be retried, before the pause: where the metrics count retries."""

    def delay(self, attempt: int) -> float:
        """Backoff before retry number ``attempt`` (1-based): full jitter under a cap."""
        return random.uniform(0, min(self.cap, self.base * (2 ** (attempt - 1))))

    async def run(
        self, fn: Callable[[], Awaitable[T]], *, is_retryable: Callable[[BaseException], bool] | None = None
    ) -> T:
        """Call ``fn`` until it succeeds, fails for good, or the budget is spent.

        The last error is re-raised when the budget runs out, so the caller
        reports what actually went wrong.
        """
        check = is_retryable or (lambda e: isinstance(e, self.retryable))
        deadline = self.clock() + self.budget
        attempt = 0
        while True:
            attempt += 1
            try:
                return await fn()
            except BaseException as e:
                if isinstance(e, asyncio.CancelledError) or not check(e):
                    raise
                remaining = deadline - self.clock()
                if remaining <= 0:
                    raise
                if self.on_retry is not None:
                    self.on_retry(e)
                # The last pause is cut short so one attempt lands at the deadline.
                await self.sleep(min(self.delay(attempt), remaining))
