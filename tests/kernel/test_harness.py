"""The real-kernel harness itself: exit codes, logs and the trivial responder reach the host."""

from __future__ import annotations

import sys

import pytest

from tests.kernel.capture_fixtures import REPO
from tests.kernel.vm import kernel_log_problems, run_guest

MIRROR_SCRIPT = r"""
set -u
"$PY" -m tests.kernel.responder --ready-file /tmp/ready 2>/results/responder.log &
RESP=$!
for _ in $(seq 400); do [ -e /tmp/ready ] && break; sleep 0.05; done
[ -e /tmp/ready ] || { echo "responder not ready"; exit 1; }
truncate -s 8M /tmp/leg0 /tmp/leg1
L0=$(losetup -f --show /tmp/leg0); L1=$(losetup -f --show /tmp/leg1)
timeout 30 dmsetup create m --table "0 16384 mirror userspace 3 test-harness clustered-core 1024 2 $L0 0 $L1 0"
dmsetup mknodes m
timeout 30 dd if=/dev/urandom of=/dev/mapper/m bs=64k count=32 oflag=direct status=none || exit 2
timeout 30 dmsetup status m
timeout 30 dmsetup remove m || exit 3
for leg in "$L0" "$L1"; do timeout 30 dd if="$leg" iflag=direct bs=1M status=none | md5sum; done
kill "$RESP"; wait "$RESP"
"""


@pytest.mark.kernel
def test_exit_code_output_and_kernel_log_reach_the_host() -> None:
    """A failing script's exit code, its output and the dm modules' dmesg lines all come back."""
    run = run_guest("echo hello from $(uname -r); lsmod | grep -c '^dm_log_userspace'; exit 7", timeout=120)

    assert 7 == run.rc, run.describe()
    assert "hello from " in run.guest_log
    assert "1" == run.guest_log.splitlines()[1]
    assert "dm-log-userspace: version" in run.dmesg
    assert [] == run.problems


@pytest.mark.kernel
def test_trivial_responder_serves_a_two_leg_mirror() -> None:
    """With the trivial responder a mirror is created, written, queried and removed, legs identical."""
    run = run_guest(MIRROR_SCRIPT, timeout=180, env={"PY": sys.executable}, cwd=REPO)

    assert 0 == run.rc, run.describe()
    assert [] == run.problems
    status, sum0, sum1 = run.guest_log.splitlines()[-3:]
    assert status.startswith("0 16384 mirror 2 7:0 7:1 16/16 1 AA 1 clustered-core"), status
    assert sum0 == sum1


@pytest.mark.kernel
def test_hung_script_still_powers_off_with_dmesg() -> None:
    """The in-guest watchdog ends a hung script before the host timeout, and dmesg is still saved."""
    run = run_guest("echo started; sleep 1000", timeout=30)

    assert run.rc is None
    assert run.guest_timed_out and not run.timed_out, run.describe()
    assert "started\n" == run.guest_log
    assert "Linux version" in run.dmesg


def test_kernel_log_problems_picks_only_alarming_lines() -> None:
    """Protocol trouble and kernel bugs are flagged; ordinary lines, even with 'DEBUG' in them, are not."""
    dmesg = "\n".join(
        [
            "[    1.0] device-mapper: dm-log-userspace: version 1.3.0 loaded",
            "[    2.0] device-mapper: dm-log-userspace: [abcdefgh] Request timed out: [8/7] - retrying",
            "[    3.0] ACPI: DEBUG something",
            "[    4.0] BUG: kernel NULL pointer dereference",
            "[    5.0] dm-log-userspace: Insufficient space to receive package [8] (16 vs 8)",
        ]
    )

    assert [
        "[    2.0] device-mapper: dm-log-userspace: [abcdefgh] Request timed out: [8/7] - retrying",
        "[    4.0] BUG: kernel NULL pointer dereference",
        "[    5.0] dm-log-userspace: Insufficient space to receive package [8] (16 vs 8)",
    ] == kernel_log_problems(dmesg)
