"""Prints the fuzzers' seed and budget at the top of the run and beside every failure, to replay it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz.budget import replay_hint


def pytest_report_header() -> str:
    """Which inputs this run fuzzes with."""
    return f"fuzz: {replay_hint()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed fuzz test says how to run it again with the very same inputs."""
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        report.sections.append(("fuzz replay", f"{replay_hint()} .venv/bin/python -m pytest {item.nodeid}"))
