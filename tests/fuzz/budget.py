"""The one place the fuzzers read how much to do and from which seed.

Every door runs the same tests in the normal run and in a long one: only
``DMULOG_FUZZ_INPUTS`` differs. The seed is fixed unless
``DMULOG_FUZZ_SEED`` says otherwise, so a failure found once is found again
by the same two variables (the conftest prints them beside every failure).
"""

from __future__ import annotations

import os
import random
import zlib

__all__ = ["DEFAULT_INPUTS", "DEFAULT_SEED", "INPUTS", "SEED", "replay_hint", "rng", "scaled"]

DEFAULT_INPUTS = 4000
"""Inputs per door in the normal run: small enough for all three doors in about 20 s on two cores."""
DEFAULT_SEED = 20261204

INPUTS = int(os.environ.get("DMULOG_FUZZ_INPUTS", DEFAULT_INPUTS))
SEED = int(os.environ.get("DMULOG_FUZZ_SEED", DEFAULT_SEED))


def rng(door: str) -> random.Random:
    """A generator of its own per door, so that adding inputs to one door never shifts another's."""
    return random.Random(SEED ^ zlib.crc32(door.encode()))


def scaled(fraction: float, *, minimum: int = 1, cap: int | None = None) -> int:
    """``fraction`` of the budget, for a door whose inputs cost far more than a datagram's decode."""
    n = max(minimum, int(INPUTS * fraction))
    return n if cap is None else min(n, cap)


def replay_hint() -> str:
    """The environment that repeats this run exactly."""
    return f"DMULOG_FUZZ_SEED={SEED} DMULOG_FUZZ_INPUTS={INPUTS}"
