"""What a module pulls in when imported, checked in a fresh interpreter.

The ``--respawn`` keeper holds the kernel socket for the host and should have
little in it to fail (bridge/keeper.py: it imports nothing heavy); the wire
codec and the table of request types are read by test code that runs inside
the kernel test guests, where only the standard library is sure to be there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def modules_after(module: str) -> set[str]:
    """Every name in ``sys.modules`` after importing ``module`` into a new interpreter."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def beyond_stdlib(modules: set[str]) -> set[str]:
    """The top-level packages among ``modules`` that are not the standard library's."""
    tops = {m.split(".")[0] for m in modules}
    return {t for t in tops if t not in sys.stdlib_module_names and not t.startswith("_")}


@pytest.mark.parametrize("module", ["bridge.keeper", "bridge.startup"])
def test_the_keeper_and_start_up_import_no_grpc(module: str) -> None:
    """Holding the socket needs no gRPC, protobuf or Redis client: only the bridge's and the base's own modules."""
    assert {"bridge", "dmulog"} == beyond_stdlib(modules_after(module))


def test_the_check_sees_grpc_where_it_is() -> None:
    """The bridge's read loop does load gRPC, so the check above would see it in the keeper."""
    assert {"grpc", "google"} <= beyond_stdlib(modules_after("bridge.agent"))


@pytest.mark.parametrize("module", ["bridge.wire", "dmulog.requests"])
def test_the_codec_and_the_table_need_only_the_standard_library(module: str) -> None:
    """bridge.wire loads nothing but the table of request types; the table nothing but the standard library."""
    ours = {m for m in modules_after(module) if m.split(".")[0] in ("bridge", "dmulog")}
    assert {"dmulog", "dmulog.requests"} <= ours <= {"bridge", "bridge.wire", "dmulog", "dmulog.requests"}
    assert {"bridge", "dmulog"} >= beyond_stdlib(modules_after(module))
