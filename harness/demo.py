"""``make demo``: the whole stack on a real kernel, shown to a person.

Boots the test kernel under qemu, starts ``dmulog logsvc`` (with its own
redis-server) and ``dmulog bridge`` inside it, creates a 2-leg dm-mirror of
64 MiB whose dirty log is dmulog's native type, shows the initial resync in
``dmulog status``, writes data, checks both legs hold the same bytes, and
prints what it saw. The guest script is ``harness/guest/demo.sh``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness.guest import guest_script, run_guest


def main() -> int:
    """Run the demo and print the guest's output."""
    print("booting a Linux kernel under qemu (software emulation; about a minute)...", flush=True)
    results = Path(tempfile.mkdtemp(prefix="dmulog-demo-"))
    run = run_guest(guest_script("demo.sh"), timeout=600, memory="1500M", results_dir=results)
    print(run.guest_log)
    if run.rc != 0 or run.problems:
        print(run.describe(), file=sys.stderr)
        return 1
    print(f"demo ok in {run.wall_time:.0f} s; logs of both daemons in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
