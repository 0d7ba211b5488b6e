"""``make demo``: the whole stack on a real kernel, shown to a person.

Boots the test kernel under qemu, starts ``dmulog logsvc`` (with its own
redis-server) and ``dmulog bridge`` inside it, creates a 2-leg dm-mirror of
128 MiB whose dirty log is dmulog's native type, shows the initial resync in
``dmulog status``, writes data, checks both legs hold the same bytes, and
prints what it saw.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.kernel.vm import run_guest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = r"""
SECTORS=262144 REGION=1024
. tests/kernel/sh/stack.sh
say() { echo; echo "### $*"; }
say "kernel $(uname -r): dm modules loaded: $(lsmod | awk '/^dm_/{print $1}' | xargs)"
start_logsvc
start_bridge
make_legs
say "dmulog logsvc and dmulog bridge are running"
grep -h -E 'logsvc_listening|bridge_listening' $R/logsvc.log $R/bridge.log
TABLE="0 $SECTORS mirror userspace 3 demo-mirror dmulog $REGION 2 $L0 0 $L1 0"
say "dmsetup create demo --table \"$TABLE\""
$T dmsetup create demo --table "$TABLE" || die create
dmsetup mknodes demo
sleep 1
say "dmsetup status demo   (resync in progress)"
dmsetup status demo
say "dmulog status demo-mirror"
dmulog status demo-mirror --logsvc "unix:$SOCK"
wait_sync demo 300
say "resync done: dmsetup status demo"
dmsetup status demo
say "writing 16 MiB of random data with O_DIRECT"
write demo 1M 16 32
write demo 4k 512 20000
say "dmulog status demo-mirror"
dmulog status demo-mirror --logsvc "unix:$SOCK"
$T dmsetup remove demo || die remove
say "legs identical after removal: $(legs_identical)"
say "dmulog status (the native type keeps its state in Redis after removal)"
dmulog status --logsvc "unix:$SOCK"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
dmesg | grep -E 'dm-log-userspace|device-mapper: raid1' | tail -5
"""


def main() -> int:
    """Run the demo and print the guest's output."""
    print("booting a Linux kernel under qemu (software emulation; about a minute)...", flush=True)
    results = Path(tempfile.mkdtemp(prefix="dmulog-demo-"))
    env = {"DMULOG_VENV": str(Path(sys.executable).parent.parent)}
    run = run_guest(SCRIPT, timeout=600, env=env, cwd=REPO, memory="1500M", results_dir=results)
    print(run.guest_log)
    if run.rc != 0 or run.problems:
        print(run.describe(), file=sys.stderr)
        return 1
    print(f"demo ok in {run.wall_time:.0f} s; logs of both daemons in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
