"""Imports run one way: base, then the parts, then the tools that drive them.

``dmulog`` is the base every part shares (the API, logging, retry, the router
that finds each part's command by entry point); ``bridge`` and ``logsvc`` use it
and never each other; ``harness`` (servers, the kernel's stand-in, guests) uses
them all; ``tests`` and ``bench`` use the harness and never each other. Every
import counts, also one inside a function: a lazy import hides a cycle from
Python but not from this test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# package -> the top-level packages of this repository it may import (itself always).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "dmulog": frozenset(),
    "bridge": frozenset({"dmulog"}),
    "logsvc": frozenset({"dmulog"}),
    "scripts": frozenset({"dmulog"}),
    "harness": frozenset({"dmulog", "bridge", "logsvc"}),
    "tests": frozenset({"dmulog", "bridge", "logsvc", "harness"}),
    "bench": frozenset({"dmulog", "bridge", "logsvc", "harness"}),
}
OURS = frozenset({"dmulog", "bridge", "logsvc", "harness", "tests", "bench", "scripts"})


def imported_packages(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every import in ``source``, wherever it is."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(package: str, root: Path = REPO) -> list[str]:
    """``path:line imports X`` for every import of ``package`` its layer forbids."""
    allowed = MAY_IMPORT[package] | {package}
    found = []
    for path in sorted((root / package).rglob("*.py")):
        for line, imported in imported_packages(path.read_text()):
            if imported in OURS and imported not in allowed:
                found.append(f"{path.relative_to(root)}:{line} imports {imported}")
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_what_is_below_it(package: str) -> None:
    """No module of the package imports a package of this repository above it or beside it."""
    assert [] == violations(package)


def test_the_check_sees_a_lazy_import_above(tmp_path: Path) -> None:
    """An import inside a function counts: the check fails on the kind of cycle it exists for."""
    (tmp_path / "dmulog").mkdir()
    (tmp_path / "dmulog" / "cli.py").write_text("def run():\n    from bridge.agent import run\n    return run\n")
    assert ["dmulog/cli.py:2 imports bridge"] == violations("dmulog", tmp_path)


def test_the_check_sees_tests_and_bench_reach_for_each_other(tmp_path: Path) -> None:
    """A test importing the benchmark, or the benchmark a test's helper, fails: what both need lives in harness/."""
    for package in ("tests", "bench"):
        (tmp_path / package).mkdir()
    (tmp_path / "tests" / "test_speed.py").write_text("from harness.servers import RedisProcess\nimport bench.guest\n")
    (tmp_path / "bench" / "scale.py").write_text("from harness import stall\nfrom tests.conftest import redis\n")
    assert (["tests/test_speed.py:2 imports bench"], ["bench/scale.py:2 imports tests"]) == (
        violations("tests", tmp_path),
        violations("bench", tmp_path),
    )


def test_every_part_registers_its_command() -> None:
    """The router finds logsvc, bridge and status by entry point, in that order."""
    from dmulog.cli import installed_commands

    assert ["logsvc", "bridge", "status", "health"] == [c.name for c in installed_commands()]
