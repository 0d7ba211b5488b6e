"""Record a real request stream from the kernel for the benchmark to replay.

Boots the test kernel, serves dm-log-userspace with the trivial in-memory
responder (harness/responder.py, which answers "in sync" for every
region, so writes go through the steady-state path: IN_SYNC, MARK, FLUSH,
CLEAR, FLUSH), runs a mixed fio workload on a 2-leg mirror, and stores every
request datagram in arrival order in ``bench/traces/<name>.trace`` (one hex
datagram per line); the guest side is ``harness/guest/record-trace.sh``. Run:
``.venv/bin/python -m bench.record_trace``.

``--resync`` records a new mirror's life instead: the log starts out of sync,
the kernel resyncs every region (the responder tracks the bits), and the same
workload runs once the mirror reports it is in sync. Replayed into dmulog,
that resync completes the log, so the workload meets the in-sync latch as
it does on every mirror after its first resync.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.guest import guest_script, run_guest

TRACES = Path(__file__).resolve().parent / "traces"


def main(argv: list[str] | None = None) -> int:
    """Record the trace; print its request mix."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="mixed")
    parser.add_argument("--integrated-flush", action="store_true", help="record with integrated_flush")
    parser.add_argument("--resync", action="store_true", help="a new mirror: resync every region, then the workload")
    args = parser.parse_args(argv)
    flags = "integrated_flush " if args.integrated_flush else ""
    sync = "" if args.resync else " nosync"
    results = Path(tempfile.mkdtemp(prefix="dmulog-trace-"))
    env = {"LOG_WORDS": f"bench-trace {flags}clustered-core 1024{sync}",
           "RESPONDER_ARGS": "--resync" if args.resync else ""}  # fmt: skip
    run = run_guest(guest_script("record-trace.sh"), timeout=600, env=env, results_dir=results)
    if run.rc != 0:
        print(run.describe(), file=sys.stderr)
        return 1
    files = sorted((results / "capture").glob("*-req.hex"), key=lambda p: int(p.name.split("-")[0]))
    TRACES.mkdir(exist_ok=True)
    out = TRACES / f"{args.name}.trace"
    out.write_text("".join(bytes.fromhex(p.read_text()).hex() + "\n" for p in files))
    mix: dict[str, int] = {}
    for p in files:
        name = p.name.split("-", 1)[1].removesuffix("-req.hex")
        mix[name] = mix.get(name, 0) + 1
    print(f"{out}: {len(files)} requests: " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
