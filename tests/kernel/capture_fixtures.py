"""Capture golden dm-log-userspace datagrams from the real kernel into tests/unit/fixtures/kernel/.

Why: the wire codec's unit tests must be checked against what the kernel really sends,
not against our reading of the headers. This boots the test VM (harness/guest.py),
runs the trivial responder (harness/responder.py) with ``--capture``, and drives
dm-mirror through every request type it can produce: create/write/read/status/table/
suspend/resume/remove of a plain mirror, a responder kill and restart while the mirror
exists (to get the replayed CTR), ``nosync`` and ``integrated_flush`` variants, a leg
failure (SET_REGION_SYNC) and small regions (full 32-region MARK and FLUSH batches).

It then keeps one representative request per type, plus ``CTR_replay``,
``FLUSH_integrated`` and the largest MARK/FLUSH batches, and writes a README that says
how they were made. Run from the repository root::

    .venv/bin/python -m tests.kernel.capture_fixtures [--out DIR] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.guest import GuestRun, guest_script, run_guest
from harness.kernel import ensure_kernel
from harness.responder import HEADER_SIZE, REQUEST_TYPES, Request, parse_request, to_hex

_EXPECTED_WHILE_KILLED = re.compile(
    r"Unable to send log request \[\d+\] to userspace: -3$|Userspace log server not found"
)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "unit" / "fixtures" / "kernel"
LEG_SECTORS = 16384  # 8 MiB legs
REGION_SIZE = 1024  # 512 KiB regions: 16 regions
SMALL_REGION_SIZE = 8  # 4 KiB regions: 2048 regions, so one 256 KiB write dirties 64


@dataclass(frozen=True)
class Captured:
    """One captured request, with the reply the responder sent and the step it came in."""

    index: int
    request: Request
    reply: bytes
    step: str


def load_capture(results_dir: Path) -> list[Captured]:
    """Read ``<results>/capture`` and attribute each request to its step."""
    bounds: list[tuple[int, str]] = []
    for line in (results_dir / "steps.txt").read_text().splitlines():
        count, name = line.split(" ", 1)
        bounds.append((int(count), name))
    captured = []
    for path in sorted((results_dir / "capture").glob("*-req.hex")):
        index = int(path.name.split("-", 1)[0])
        raw = bytes.fromhex(path.read_text())
        request = parse_request(raw)
        if request is None:
            raise ValueError(f"{path.name} is not a dm-log-userspace request")
        reply_path = path.with_name(path.name.replace("-req.hex", "-rep.hex"))
        reply = bytes.fromhex(reply_path.read_text()) if reply_path.exists() else b""
        step = next((name for count, name in bounds if index < count), "after-last-step")
        captured.append(Captured(index, request, reply, step))
    return captured


def choose_fixtures(captured: Sequence[Captured]) -> dict[str, Captured]:
    """Pick one request per fixture name.

    Per type: the first one from the plain mirror (``integrated_flush`` off, CTR from
    table load), else the first one anywhere. Extras: ``CTR_replay`` (the CTR resent
    after the server came back; its string carries the NUL), ``FLUSH_integrated`` (first
    FLUSH with marks as payload) and the largest MARK_REGION / integrated FLUSH.
    """

    def integrated(c: Captured) -> bool:
        return "integrated" in c.step

    chosen: dict[str, Captured] = {}
    for c in captured:
        name = c.request.type_name
        if name == "CTR" and c.request.data.endswith(b"\0"):
            chosen.setdefault("CTR_replay", c)
            continue
        if name == "FLUSH" and c.request.data:
            chosen.setdefault("FLUSH_integrated", c)
            best = chosen.get("FLUSH_integrated_max")
            if best is None or len(c.request.data) > len(best.request.data):
                chosen["FLUSH_integrated_max"] = c
            continue
        if name == "MARK_REGION":
            best = chosen.get("MARK_REGION_max")
            if best is None or len(c.request.data) > len(best.request.data):
                chosen["MARK_REGION_max"] = c
        current = chosen.get(name)
        if current is None or (integrated(current) and not integrated(c)):
            chosen[name] = c
    return chosen


def step_sequences(captured: Sequence[Captured]) -> list[tuple[str, str]]:
    """``(step, "TYPE xN, ...")`` in capture order: what the kernel sent for each step."""
    rows = []
    for step, group in itertools.groupby(captured, key=lambda c: c.step):
        names = [c.request.type_name + _payload_note(c.request) for c in group]
        parts = []
        for name, same in itertools.groupby(names):
            count = len(list(same))
            parts.append(f"{name} x{count}" if count > 1 else name)
        rows.append((step, ", ".join(parts)))
    return rows


def _payload_note(req: Request) -> str:
    if req.type_name in ("MARK_REGION", "CLEAR_REGION") or (req.type_name == "FLUSH" and req.data):
        return f"[{len(req.data) // 8}]"
    return ""


def describe(c: Captured) -> str:
    """One line about a fixture: sizes, seq, step, decoded payload."""
    req = c.request
    payload = req.data
    if req.type_name == "CTR":
        shown = repr(payload.decode("ascii", "replace"))
    elif req.type_name in ("MARK_REGION", "CLEAR_REGION", "FLUSH", "IN_SYNC", "IS_REMOTE_RECOVERING", "IS_CLEAN"):
        regions = [int.from_bytes(payload[i : i + 8], "little") for i in range(0, len(payload), 8)]
        shown = f"regions {regions}" if regions else "no payload"
    elif req.type_name == "SET_REGION_SYNC" and len(payload) == 16:
        shown = f"region {int.from_bytes(payload[:8], 'little')}, in_sync {int.from_bytes(payload[8:], 'little')}"
    else:
        shown = payload.hex() or "no payload"
    return f"{len(req.raw)} bytes, data_size {len(payload)}, seq {req.seq}, step `{c.step}`: {shown}"


def write_fixtures(out: Path, chosen: dict[str, Captured], run: GuestRun, captured: Sequence[Captured]) -> None:
    """Write ``<name>.hex`` for each chosen request and a README saying how they were made."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.hex"):
        old.unlink()
    for name, c in sorted(chosen.items()):
        (out / f"{name}.hex").write_text(to_hex(c.request.raw))
    (out / "README.md").write_text(_readme(chosen, run, captured))


def _readme(chosen: dict[str, Captured], run: GuestRun, captured: Sequence[Captured]) -> str:
    kernel = ensure_kernel()
    uname = (run.results_dir / "uname.txt").read_text().strip()
    qemu = subprocess.run(
        ["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    seen = {c.request.type_name for c in captured}
    missing = [n for n in REQUEST_TYPES.values() if n not in seen]
    lines = [
        "# Golden kernel datagrams for dm-log-userspace",
        "",
        "Each `*.hex` file is one datagram exactly as a userspace log server's `recv()` on the",
        "NETLINK_CONNECTOR socket returned it (nlmsghdr + cn_msg + dm_ulog_request + payload), written as",
        "hex text, 16 bytes a line: read it with `bytes.fromhex(path.read_text())`. Integers are little-endian",
        f"(x86-64). The fixed header is {HEADER_SIZE} bytes; `luid` is a kernel pointer and `seq` a global counter,",
        "so both differ from run to run. Generated files: do not edit by hand, re-run the capture.",
        "",
        "## How they were captured",
        "",
        f"- Kernel: Debian package `{kernel.package}` version `{kernel.package_version}`, `uname -r` = `{uname}`,",
        "  booted under qemu TCG by `harness/guest.py` (x86-64, q35, 2 vCPUs).",
        f"- {qemu}.",
        f"- Date: {datetime.date.today().isoformat()}.",
        "- Command, from the repository root: `.venv/bin/python -m tests.kernel.capture_fixtures`.",
        "- Server: `harness/responder.py --capture DIR` (every region in sync and clean), which",
        "  stores each received datagram byte for byte; this script picks one per request type.",
        f"- Legs: two {LEG_SECTORS * 512 // 2**20} MiB files on loop devices in the guest's /tmp.",
        f"  Tables (`$S` = {LEG_SECTORS}):",
        f"  - `0 $S mirror userspace 3 <uuid> clustered-core {REGION_SIZE} 2 /dev/loop0 0 /dev/loop1 0`",
        f"  - `... userspace 4 <uuid> clustered-core {REGION_SIZE} nosync 2 ...`",
        f"  - `... userspace 4 <uuid> integrated_flush clustered-core {REGION_SIZE} 2 ...`",
        "  - leg failure: second leg is a dm `linear` device reloaded as `error`;",
        f"  - small regions: region size {SMALL_REGION_SIZE} (4 KiB) and one 256 KiB write (64 regions).",
        "- Writes are `dd oflag=direct`; the responder is killed (SIGKILL) while mirror `mA` exists, a",
        "  write is started, and the responder restarted 3 s later (`CTR_replay`).",
        "",
        "## Files",
        "",
        "| file | request |",
        "| --- | --- |",
    ]
    for name, c in sorted(chosen.items()):
        lines.append(f"| `{name}.hex` | {describe(c)} |")
    lines += [
        "",
        "Request types the kernel never sent in this run: "
        + (", ".join(f"`{n}`" for n in missing) if missing else "none")
        + ". (IS_CLEAN is not called by dm-raid1; STATUS_TABLE is built by the kernel itself.)",
        "",
        "## What the kernel sent, step by step",
        "",
        "`[n]` = number of regions in the payload. Steps are from the guest script",
        "`harness/guest/capture.sh`; requests that arrive after a step's settle time count",
        "towards the next step.",
        "",
        "| step | requests |",
        "| --- | --- |",
    ]
    lines += [f"| {step} | {seq} |" for step, seq in step_sequences(captured)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Boot, capture, write fixtures; exit 1 if the guest script or the kernel log failed."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.kernel.capture_fixtures", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"fixture directory (default {DEFAULT_OUT})")
    parser.add_argument("--results-dir", type=Path, help="keep the raw capture here (default: a new temp dir)")
    parser.add_argument("--timeout", type=float, default=400)
    args = parser.parse_args(argv)

    env = {"SECTORS": str(LEG_SECTORS), "REGION": str(REGION_SIZE), "SMALL_REGION": str(SMALL_REGION_SIZE)}
    run = run_guest(guest_script("capture.sh"), timeout=args.timeout, results_dir=args.results_dir, env=env)
    print(run.guest_log)
    print(f"rc={run.rc} wall={run.wall_time:.1f}s results={run.results_dir}")
    # The responder kill is deliberate: failed sends with -ESRCH (-3) and "server not
    # found" are expected there, and only those.
    problems = [p for p in run.problems if not _EXPECTED_WHILE_KILLED.search(p)]
    if run.rc != 0 or problems:
        print(run.describe(), file=sys.stderr)
        return 1
    captured = load_capture(run.results_dir)
    chosen = choose_fixtures(captured)
    write_fixtures(args.out, chosen, run, captured)
    print(f"wrote {len(chosen)} fixtures to {args.out}: {' '.join(sorted(chosen))}")
    for step, seq in step_sequences(captured):
        print(f"  {step:45s} {seq}")
    print("kernel log lines about the userspace log:")
    for line in run.dmesg.splitlines():
        if "userspace" in line.lower() or "dm-log" in line or "raid1" in line:
            print("  " + line)
    print(shlex.join(["results:", str(run.results_dir)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
