"""``make demo``: the whole stack on a real kernel, shown to a person.

Boots the test kernel under qemu, starts ``dmulog logsvc`` (with its own
redis-server) and ``dmulog bridge`` inside it, creates a 2-leg dm-mirror of
64 MiB whose dirty log is dmulog's native type, shows the initial resync in
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
SECTORS=131072 REGION=1024
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
say "dmsetup status demo   (initial resync in progress)"
dmsetup status demo
say "dmulog status demo-mirror"
dmulog status demo-mirror --logsvc "unix:$SOCK"
wait_sync demo 300
say "resync done: dmsetup status demo"
dmsetup status demo
say "writing: 8 MiB sequential, then 4 KiB writes scattered over the mirror"
write demo 1M 8 8
( for i in $(seq 0 9 120); do dd if=/dev/urandom of=/dev/mapper/demo bs=4k count=8 seek=$((i * 128)) \
    oflag=direct status=none; done ) &
WRITER=$!
sleep 3
say "dmulog status demo-mirror   (while writes are in flight: marked regions are dirty)"
dmulog status demo-mirror --logsvc "unix:$SOCK"
wait $WRITER
$T dmsetup remove demo || die remove
say "mirror removed; legs identical: $(legs_identical)"
say "dmulog status   (the native type keeps its state in Redis after removal)"
dmulog status --logsvc "unix:$SOCK"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
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
