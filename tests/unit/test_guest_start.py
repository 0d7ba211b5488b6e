"""How the harness waits for a guest: a boot that never starts its script is told from a slow one.

The stand-in for qemu is a real process writing (or not) init's line to its console
file; what a real hung boot looks like is in harness/guest.py (``START_LIMIT``).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.guest import _SCRIPT_STARTED, _await_qemu


def _qemu(console: Path, script: str) -> subprocess.Popen[bytes]:
    with console.open("wb") as out:
        return subprocess.Popen(["bash", "-c", script], stdout=out)


def test_a_guest_that_never_starts_its_script_is_hung(tmp_path: Path) -> None:
    """No line from init within the limit: ``hung``, long before the boot's own timeout."""
    console = tmp_path / "console.log"
    proc = _qemu(console, "echo 'rcu: INFO: rcu_preempt detected stalls'; sleep 30")
    try:
        assert "hung" == _await_qemu(proc, console, timeout=20, start_limit=0.5)
    finally:
        proc.kill()
        proc.wait()


def test_a_guest_that_started_its_script_runs_to_its_end(tmp_path: Path) -> None:
    """Once init said it runs the script, the start limit no longer applies."""
    console = tmp_path / "console.log"
    proc = _qemu(console, f"echo '{_SCRIPT_STARTED} /results/run.sh'; sleep 2; exit 0")

    assert "exited" == _await_qemu(proc, console, timeout=20, start_limit=0.5)


def test_the_boot_timeout_still_holds(tmp_path: Path) -> None:
    """A started guest that outlives the boot's timeout is ``timeout``, as without a start limit."""
    console = tmp_path / "console.log"
    proc = _qemu(console, f"echo '{_SCRIPT_STARTED}'; sleep 30")
    try:
        assert "timeout" == _await_qemu(proc, console, timeout=1.5, start_limit=0.5)
        assert "timeout" == _await_qemu(proc, console, timeout=0.5, start_limit=None)
    finally:
        proc.kill()
        proc.wait()
