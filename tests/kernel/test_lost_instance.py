"""An instance that vanishes from the log under a running mirror: -ESRCH, the kernel's reconnect, no lost write.

The guest (``harness/guest/lost-instance.sh``) deletes the log's instances in its Redis
while the mirror runs, as a lease expiry does for a fenced node's instances, or a lost
Redis for all of them. The next write's IN_SYNC is answered -ESRCH; the kernel replays
CTR and RESUME and asks again. It asks with the reply room the -ESRCH reply left it, so
that reply carries the room in zeros (bridge/wire.py ``error_reply``): with a bare
data_size 0 the kernel refused the answer ("Insufficient space to receive package [8]
(8 vs 0)"), read the region as not in sync, and wrote it to the first leg only while
the log said in sync: the legs differed.
"""

from __future__ import annotations

import re

import pytest

from harness.guest import GuestRun, guest_script, run_guest

pytestmark = pytest.mark.kernel

# The reconnect loop's own lines are expected here; every other problem line is not.
_RECONNECT = re.compile(r"Userspace log server not found|Attempting to contact|Reconnected to userspace")


@pytest.fixture(scope="module")
def lost(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One boot of the script."""
    return run_guest(guest_script("lost-instance.sh"), timeout=600, results_dir=tmp_path_factory.mktemp("lost"))


def test_the_kernel_reconnects_and_the_write_lands_on_both_legs(lost: GuestRun) -> None:
    """The write and read after the loss succeed, the kernel reconnected, and both legs are identical."""
    out = lost.outcome()
    assert (0, "yes") == (lost.rc, out.get("done")), lost.describe()
    assert ("0", "0", "0") == (out.get("write_rc"), out.get("read_rc"), out.get("reconnected")), out
    assert "yes" == out.get("legs_identical"), lost.describe()


def test_no_reply_is_refused_for_its_size(lost: GuestRun) -> None:
    """The kernel logged its reconnect and nothing else: no "Insufficient space", no timeout."""
    kmsg = (lost.results_dir / "kmsg.txt").read_text()
    assert "Reconnected to userspace log server" in kmsg
    bad = [line for line in lost.problems if not _RECONNECT.search(line)]
    assert [] == bad, bad
