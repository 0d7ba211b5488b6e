"""Finding this node's mirrors of a log in ``dmsetup table`` output, and restarting their recovery."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bridge.mirrors import Mirrors, mirrors_of

# As the real kernel shows them (tests/kernel/test_mirror.py checks the same form on a guest).
TABLE = """\
m1: 0 65536 mirror userspace 3 LVM-abc dmulog 1024 2 7:0 0 7:1 0
m2: 0 8192 mirror userspace 4 LVM-abc integrated_flush clustered-core 16 2 7:2 0 7:3 0
other: 0 8192 mirror userspace 3 LVM-abcd dmulog 1024 2 7:4 0 7:5 0
core: 0 8192 mirror core 1 1024 2 7:6 0 7:7 0
lin: 0 2048 linear 7:8 0
"""


def test_mirrors_are_found_by_their_log_uuid_exactly() -> None:
    """Every mirror whose userspace log has the UUID, and no other (a longer UUID, a core log, a linear device)."""
    assert ["m1", "m2"] == mirrors_of(TABLE, "LVM-abc")
    assert ["other"] == mirrors_of(TABLE, "LVM-abcd")
    assert [] == mirrors_of(TABLE, "1024")
    assert [] == mirrors_of("No devices found\n", "LVM-abc")


def _fake_dmsetup(tmp_path: Path) -> tuple[Path, Path]:
    calls = tmp_path / "calls"
    exe = tmp_path / "dmsetup"
    exe.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = table ] && cat <<"T"\n{TABLE}T\nexit 0\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe, calls


async def test_a_restart_suspends_and_resumes_each_mirror_of_the_log(tmp_path: Path) -> None:
    """restart_recovery runs dmsetup table, then suspend and resume of each mirror on the log, in order."""
    exe, calls = _fake_dmsetup(tmp_path)
    mirrors = Mirrors(str(exe))
    mirrors.restart_recovery("LVM-abc")
    mirrors.restart_recovery("LVM-abc")  # while one runs: once more after it, not twice at once
    await mirrors.wait()
    lines = calls.read_text().splitlines()
    once = ["table", "suspend m1", "resume m1", "suspend m2", "resume m2"]
    assert lines == once + once
    assert mirrors.restarts == 4


async def test_without_dmsetup_nothing_runs(tmp_path: Path) -> None:
    """No dmsetup binary: a warning, and nothing else (the regions resync at the next resume)."""
    mirrors = Mirrors(os.devnull)
    mirrors._dmsetup = None
    mirrors.restart_recovery("LVM-abc")
    await mirrors.wait()
    assert mirrors.restarts == 0
