"""``--crash-rounds N``: rounds of the node-crash scenario (the others run N // 3, at least 1).

The option exists when pytest is pointed at this directory (``pytest tests/kernel/crash``);
``DMULOG_CRASH_ROUNDS`` works from anywhere, and ``DMULOG_CRASH_SEED`` repeats a run's seed.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--crash-rounds``."""
    parser.addoption(
        "--crash-rounds", type=int, default=None, metavar="N",
        help="rounds of the node-crash scenario (default: $DMULOG_CRASH_ROUNDS or 3)",
    )  # fmt: skip
