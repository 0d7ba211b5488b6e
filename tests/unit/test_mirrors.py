"""Finding this node's mirrors of a log in ``dmsetup table`` output, and restarting their recovery."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from bridge.mirrors import Mirrors, active_devices, userspace_mirrors

# As the real kernel shows them (tests/kernel/test_mirror.py checks the same form on a guest).
TABLE = """\
m1: 0 65536 mirror userspace 3 LVM-abc dmulog 1024 2 7:0 0 7:1 0
m2: 0 8192 mirror userspace 4 LVM-abc integrated_flush clustered-core 16 2 7:2 0 7:3 0
other: 0 8192 mirror userspace 3 LVM-abcd dmulog 1024 2 7:4 0 7:5 0
core: 0 8192 mirror core 1 1024 2 7:6 0 7:7 0
lin: 0 2048 linear 7:8 0
"""


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
    mirrors.restart_recovery("LVM-abc")  # before the pass began: the same pass
    mirrors.restart_recovery("LVM-none")  # a log with no mirror here: the same dmsetup table, nothing else
    for _ in range(200):
        await asyncio.sleep(0.005)
        if calls.exists() and "suspend m1" in calls.read_text():
            break
    mirrors.restart_recovery("LVM-abc")  # during the pass: one more pass after it
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


def test_a_fence_finds_every_active_mirror_on_a_userspace_log() -> None:
    """Each mirror with its log's exact UUID, userspace logs only, and only what dmsetup info shows Active."""
    assert {"m1": "LVM-abc", "m2": "LVM-abc", "other": "LVM-abcd"} == userspace_mirrors(TABLE)
    assert {"m1", "core"} == active_devices("m1 Active\nm2 Suspended\ncore Active\ngarbage\n")
    assert {} == userspace_mirrors("No devices found\n")


async def test_a_restart_waits_while_a_fence_holds_the_mirrors(tmp_path: Path) -> None:
    """A recovery restart asked for during a fence runs only after the fence's resume: it never undoes a fence."""
    exe, calls = _fake_dmsetup(tmp_path)
    mirrors = Mirrors(str(exe))
    suspended, failed = await mirrors.hold()
    assert failed == []
    mirrors.restart_recovery("LVM-abcd")
    for _ in range(20):
        await asyncio.sleep(0.01)
    with calls.open("a") as f:
        f.write("released\n")
    await mirrors.release(suspended)
    await mirrors.wait()
    lines = [line for line in calls.read_text().splitlines() if not line.startswith(("table", "info"))]
    # The fake's info shows nothing Active, so the fence suspended nothing; the restart came after it.
    assert suspended == [] and lines == ["released", "suspend other", "resume other"]
