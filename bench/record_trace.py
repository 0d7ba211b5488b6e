"""Record a real request stream from the kernel for the benchmark to replay.

Boots the test kernel, serves dm-log-userspace with the trivial in-memory
responder (tests/kernel/responder.py, which answers "in sync" for every
region, so writes go through the steady-state path: IN_SYNC, MARK, FLUSH,
CLEAR, FLUSH), runs a mixed fio workload on a 2-leg mirror, and stores every
request datagram in arrival order in ``bench/traces/<name>.trace`` (one hex
datagram per line). Run: ``.venv/bin/python -m bench.record_trace``.

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

from tests.kernel.vm import run_guest

REPO = Path(__file__).resolve().parents[1]
TRACES = Path(__file__).resolve().parent / "traces"

SCRIPT = r"""
set -u
PY="$DMULOG_VENV/bin/python"
"$PY" -m tests.kernel.responder $RESPONDER_ARGS --capture /results/capture --ready-file /tmp/ready \
  > /results/responder.log 2>&1 &
RESP=$!
for _ in $(seq 600); do [ -e /tmp/ready ] && break; sleep 0.1; done
truncate -s 64M /tmp/leg0 /tmp/leg1
L0=$(losetup -f --show /tmp/leg0); L1=$(losetup -f --show /tmp/leg1)
timeout 60 dmsetup create m --table "0 131072 mirror userspace $LOGARGS 2 $L0 0 $L1 0" || exit 2
dmsetup mknodes m
for _ in $(seq 1500); do
  s=$(dmsetup status m | awk '{print $7}'); [ "${s%/*}" = "${s#*/}" ] && break; sleep 0.2
done
[ "${s%/*}" = "${s#*/}" ] || exit 6
timeout 300 fio --name=mixed --filename=/dev/mapper/m --direct=1 --ioengine=psync --rw=randrw --rwmixwrite=70 \
  --bs=4k --size=64M --number_ios=600 --randseed=42 --output=/results/fio-rand.txt || exit 3
timeout 300 fio --name=seq --filename=/dev/mapper/m --direct=1 --ioengine=psync --rw=write --bs=1M \
  --size=16M --offset=32M --output=/results/fio-seq.txt || exit 4
sleep 4
timeout 60 dmsetup remove m || exit 5
kill $RESP; wait $RESP
"""


def main(argv: list[str] | None = None) -> int:
    """Record the trace; print its request mix."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="mixed")
    parser.add_argument("--integrated-flush", action="store_true", help="record with integrated_flush")
    parser.add_argument("--resync", action="store_true", help="a new mirror: resync every region, then the workload")
    args = parser.parse_args(argv)
    flags = "integrated_flush " if args.integrated_flush else ""
    sync = "" if args.resync else " nosync"
    logargs = f"{3 + bool(flags) + bool(sync)} bench-trace {flags}clustered-core 1024{sync}"
    results = Path(tempfile.mkdtemp(prefix="dmulog-trace-"))
    env = {"DMULOG_VENV": str(Path(sys.prefix)), "LOGARGS": logargs,
           "RESPONDER_ARGS": "--resync" if args.resync else ""}  # fmt: skip
    run = run_guest(SCRIPT, timeout=600, env=env, cwd=REPO, results_dir=results)
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
