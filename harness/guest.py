"""Run one shell script inside a real Linux kernel that has dm-mirror and dm-log-userspace.

Why this exists: the host kernel has no device-mapper, and dm-log-userspace can only be
tested against the real thing (its wire format, retries and timing are kernel behaviour,
not something we can fake). So we boot Debian's own kernel (:mod:`harness.kernel`) under
qemu (TCG; KVM does not work here) with a tiny busybox initramfs
(:mod:`harness.initramfs`), share the host's root filesystem read-only over 9p, and run
a guest script inside it: one of ``harness/guest/*.sh`` (:func:`guest_script`), which source
``harness/guest/lib.sh``, or a script's text.

Typical use::

    run = run_guest(guest_script("lifecycle.sh"), env={"FOO": "1"}, timeout=120)
    assert run.rc == 0, run.describe()
    assert not run.problems, run.problems

Command line: ``python -m harness.guest shell-check`` boots once and prints
``uname -r`` and the loaded dm modules; ``python -m harness.guest run SCRIPT`` runs a
script file; ``python -m harness.guest kernel`` fetches the kernel and prints its paths.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.initramfs import build_initramfs, guest_modprobe_base
from harness.kernel import Kernel, KernelVMError, ensure_kernel

__all__ = ["GUEST_DIR", "REPO", "GuestRun", "guest_script", "kernel_log_problems", "main", "run_guest"]

#: The repository root: guest scripts run from there (they source ``harness/guest/lib.sh``).
REPO = Path(__file__).resolve().parents[1]
#: Every guest script, and the library they share.
GUEST_DIR = Path(__file__).resolve().parent / "guest"

#: Substrings (regular expressions) of kernel log lines that must never appear in a good
#: run. The dm-log-userspace ones are how the kernel reports a protocol problem: the
#: mirror itself often keeps going, so exit codes alone would hide them.
_PROBLEM_PATTERNS = (
    r"Insufficient space",
    r"timed out",
    r"Unable to send",
    r"Userspace log server not found",
    r"\bBUG\b",
    r"WARNING:",
    r"Oops",
    r"Call Trace",
)
_PROBLEM_RE = re.compile("|".join(_PROBLEM_PATTERNS))

#: Seconds a boot may take to start its script. Under emulation on a loaded host a
#: guest kernel now and then hangs in its own start-up (its console shows RCU stalls
#: and "timer wakeup didn't happen", and nothing more); no disk has been touched
#: then, so such a boot is started again, once, and says so on stderr.
START_LIMIT = 240.0
_SCRIPT_STARTED = "modules loaded, running"  # harness/guest/init.sh

#: Host directories the guest replaces with its own (tmpfs or kernel filesystems): a
#: script or results directory under them is invisible in the guest.
_GUEST_PRIVATE_DIRS = (Path("/tmp"), Path("/run"), Path("/proc"), Path("/sys"), Path("/dev"))


def guest_script(name: str) -> Path:
    """The guest script ``harness/guest/<name>``; an unknown name is an error here, not in the guest."""
    path = GUEST_DIR / name
    if not path.is_file():
        raise KernelVMError(f"no guest script {path}")
    return path


@dataclasses.dataclass(frozen=True)
class GuestRun:
    """What one boot of the test VM produced.

    Attributes:
        rc: exit code of the guest script, or None if it never finished (see ``error``).
        console: serial console text (boot messages, init messages).
        guest_log: stdout and stderr of the guest script.
        dmesg: the whole kernel log, saved at the end of every run that got that far.
        results_dir: host directory shared as ``/results`` in the guest; it is kept.
        wall_time: seconds from starting qemu to its exit.
        timed_out: the host killed qemu after ``timeout`` seconds.
        guest_timed_out: the in-guest watchdog gave up on the script (dmesg still saved).
        qemu_returncode: qemu's exit status (says nothing about the test itself).
    """

    rc: int | None
    console: str
    guest_log: str
    dmesg: str
    results_dir: Path
    wall_time: float
    timed_out: bool
    guest_timed_out: bool
    qemu_returncode: int | None

    @property
    def problems(self) -> list[str]:
        """Kernel log lines that must never appear in a good run."""
        return kernel_log_problems(self.dmesg)

    @property
    def ok(self) -> bool:
        """The script exited 0 and the kernel logged nothing alarming."""
        return self.rc == 0 and not self.problems

    @property
    def error(self) -> str | None:
        """Why there is no exit code, in words; None when the script finished."""
        if self.rc is not None:
            return None
        if self.timed_out:
            return f"qemu killed by the host after {self.wall_time:.0f} s (host timeout)"
        if self.guest_timed_out:
            return "guest script exceeded its in-guest timeout; guest powered off"
        return f"qemu exited (status {self.qemu_returncode}) before the guest wrote an exit code"

    def outcome(self) -> dict[str, str]:
        """The ``key=value`` lines the guest script wrote to ``/results/outcome`` (the tests' usual report)."""
        path = self.results_dir / "outcome"
        lines = path.read_text().splitlines() if path.exists() else []
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def describe(self, tail: int = 40) -> str:
        """A multi-line summary for assertion messages: outcome, log tails, problems."""
        parts = [
            f"rc={self.rc} wall={self.wall_time:.1f}s results={self.results_dir}",
        ]
        if self.error:
            parts.append(f"error: {self.error}")
        if self.problems:
            parts.append("kernel log problems:\n  " + "\n  ".join(self.problems))
        parts.append("--- guest log (tail) ---\n" + _tail(self.guest_log, tail))
        if self.rc is None:
            parts.append("--- console (tail) ---\n" + _tail(self.console, tail))
        return "\n".join(parts)


def kernel_log_problems(dmesg: str) -> list[str]:
    """Return the kernel log lines that must never appear in a good run.

    dm-log-userspace reports protocol trouble (a reply too large for the caller, a
    timeout, no server) only in the kernel log; BUG/WARNING/Oops/Call Trace mean the
    kernel itself is unhappy. Tests should assert this list is empty, not just rc == 0.
    """
    return [line for line in dmesg.splitlines() if _PROBLEM_RE.search(line)]


def run_guest(
    script: Path | str,
    *,
    timeout: float = 300,
    results_dir: Path | None = None,
    qemu_extra: Sequence[str] = (),
    memory: str = "1G",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cache_dir: Path | None = None,
) -> GuestRun:
    """Boot the test VM, run ``script`` as root in it, and return what happened.

    Args:
        script: a script file (run by its shebang if executable, else by bash), or the
            script text itself (a ``str``; written into the results dir first).
        timeout: hard limit in seconds for the whole boot; qemu is killed after it.
            The guest gives up on the script a little earlier (``max(timeout / 2,
            timeout - 15)`` s) so that dmesg is still saved.
        results_dir: host directory mounted at ``/results`` in the guest; a fresh
            temporary directory (kept afterwards) when None.
        qemu_extra: more qemu arguments, e.g. a restricted user-mode network.
        memory: guest RAM, qemu ``-m`` syntax.
        env: environment for the script (exported by a wrapper script), on top of
            ``DMULOG_VENV`` (this Python's environment, whose ``bin`` the guest
            scripts put first in PATH).
        cwd: directory the script starts in: the repository root when None, where the
            scripts of ``harness/guest/`` expect to start.
        cache_dir: kernel and initramfs cache; ``default_cache_dir()`` when None.

    Guest environment: ``HOME=/tmp/home`` (tmpfs), ``DMULOG_MODPROBE_BASE`` (use
    ``modprobe -d "$DMULOG_MODPROBE_BASE" name`` for more modules) and
    ``DMULOG_KERNEL_VERSION`` and ``DMULOG_VENV``. Everything but /tmp, /run and /results is
    read-only.
    """
    kernel = ensure_kernel(cache_dir)
    initrd = build_initramfs(kernel, cache_dir)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise KernelVMError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    if results_dir is None:
        results_dir = Path(tempfile.mkdtemp(prefix="dmulog-vm-"))
    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("rc", "guest.log", "dmesg.txt", "console.log", "qemu.stderr", "guest-timeout", "qemu.pid",
                  "console-hung.log"):
        (results_dir / stale).unlink(missing_ok=True)

    wrapper = _write_wrapper(script, results_dir, kernel, env or {}, cwd)
    guest_timeout = max(1, int(max(timeout / 2, timeout - 15)))
    shares = _private_shares([cwd or REPO, Path(sys.prefix)])
    append = f"console=ttyS0 panic=-1 quiet dmulog.script={wrapper} dmulog.timeout={guest_timeout}"
    if shares:
        append += " dmulog.shares=" + ",".join(f"x{i}={p}" for i, p in enumerate(shares))
    share_args = [
        arg
        for i, p in enumerate(shares)
        for arg in ("-virtfs", f"local,path={_qemu_opt(p)},mount_tag=x{i},security_model=none,readonly=on,"
                               "multidevs=remap")
    ]  # fmt: skip
    pidfile = results_dir / "qemu.pid"
    cmd = [
        qemu,
        "-accel", "tcg",
        "-machine", "q35",
        "-cpu", "max",
        "-smp", "2",
        "-m", memory,
        "-display", "none",
        "-vga", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-net", "none",
        "-pidfile", str(pidfile),
        "-kernel", str(kernel.boot_image),
        "-initrd", str(initrd),
        "-append", append,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={_qemu_opt(results_dir)},mount_tag=results,security_model=none,multidevs=remap",
        "-virtfs", f"local,path={_qemu_opt(kernel.root)},mount_tag=kernel,security_model=none,readonly=on,"
                   "multidevs=remap",
        *share_args,
        *qemu_extra,
    ]  # fmt: skip
    start = time.monotonic()
    # A start-up hang is retried only where a boot has time for two starts.
    start_limit = START_LIMIT if timeout > 2 * START_LIMIT else None
    for attempt in (1, 2):
        with (results_dir / "console.log").open("wb") as console, (results_dir / "qemu.stderr").open("wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=err)
            try:
                outcome = _await_qemu(proc, results_dir / "console.log", timeout, start_limit if attempt == 1 else None)
            except BaseException:  # e.g. Ctrl-C in a test run: never leave a VM behind
                _kill_qemu(proc, pidfile)
                raise
            if outcome != "exited":
                _kill_qemu(proc, pidfile)
        if outcome != "hung":
            break
        hung = results_dir / "console-hung.log"
        shutil.copyfile(results_dir / "console.log", hung)
        print(f"dmulog-vm: the guest did not start its script within {START_LIMIT:.0f} s; booting it again "
              f"(its console: {hung})", file=sys.stderr)  # fmt: skip
    timed_out = outcome == "timeout"
    wall = time.monotonic() - start
    if timed_out:
        print(f"dmulog-vm: qemu killed after {timeout:.0f} s (results in {results_dir})", file=sys.stderr)
    rc_text = _read(results_dir / "rc").strip()
    return GuestRun(
        rc=int(rc_text) if rc_text.lstrip("-").isdigit() else None,
        console=_read(results_dir / "console.log").replace("\r\n", "\n"),
        guest_log=_read(results_dir / "guest.log"),
        dmesg=_read(results_dir / "dmesg.txt"),
        results_dir=results_dir,
        wall_time=wall,
        timed_out=timed_out,
        guest_timed_out=(results_dir / "guest-timeout").exists(),
        qemu_returncode=proc.returncode,
    )


def _await_qemu(proc: subprocess.Popen[bytes], console: Path, timeout: float, start_limit: float | None) -> str:
    """Wait for qemu: ``exited``, ``timeout``, or ``hung`` (no script started within ``start_limit`` s)."""
    deadline = time.monotonic() + timeout
    started_by = None if start_limit is None else time.monotonic() + start_limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        try:
            proc.wait(timeout=min(left, 1.0) if started_by is not None else left)
            return "exited"
        except subprocess.TimeoutExpired:
            pass
        if started_by is not None:
            if _SCRIPT_STARTED in _read(console):
                started_by = None
            elif time.monotonic() > started_by:
                return "hung"


def _write_wrapper(
    script: Path | str, results_dir: Path, kernel: Kernel, env: Mapping[str, str], cwd: Path | None
) -> str:
    """Write ``/results/run.sh`` (env exports, cd, exec the script); return its guest path.

    A script the guest cannot see at its host path (under /tmp or /run, which are the
    guest's own tmpfs) is copied into the results dir first; a text script is written
    there. Either way it runs by its shebang if it is executable, else by bash.
    """
    if isinstance(script, Path):
        host_path = script.resolve()
        if not host_path.is_file():
            raise KernelVMError(f"guest script {script} does not exist")
        if _guest_visible(host_path):
            in_guest = str(host_path)
        else:
            shutil.copy2(host_path, results_dir / "script")
            in_guest = "/results/script"
        executable = os.access(host_path, os.X_OK)
    else:
        (results_dir / "script").write_text(script)
        executable = script.startswith("#!")
        (results_dir / "script").chmod(0o755 if executable else 0o644)
        in_guest = "/results/script"
    if cwd is None:
        cwd = REPO
    exports = {
        "DMULOG_MODPROBE_BASE": guest_modprobe_base(kernel),
        "DMULOG_KERNEL_VERSION": kernel.version,
        "DMULOG_VENV": sys.prefix,
        **env,
    }
    for key in exports:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise KernelVMError(f"invalid environment variable name {key!r}")
    lines = ["#!/bin/sh", "# written by harness/guest.py run_guest()"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines.append(f"cd {shlex.quote(str(cwd))} || exit 125")
    run = shlex.quote(in_guest) if executable else f"/bin/bash {shlex.quote(in_guest)}"
    lines.append(f"exec {run}")
    (results_dir / "run.sh").write_text("\n".join(lines) + "\n")
    return "/results/run.sh"


def _qemu_opt(path: Path) -> str:
    """A path as a qemu option value (commas are doubled there)."""
    return str(path).replace(",", ",,")


def _private_shares(paths: Sequence[Path]) -> list[Path]:
    """Directories the guest must get as extra shares: those hidden under its own /tmp or /run.

    A checkout (and its virtualenv) may live in /tmp, e.g. a CI clone; the guest mounts
    its own tmpfs there, so each such directory is shared read-only at the same path.
    """
    wanted = sorted({p.resolve() for p in paths if not _guest_visible(p.resolve())})
    return [p for p in wanted if not any(q in p.parents for q in wanted)]


def _guest_visible(path: Path) -> bool:
    """Whether the guest sees this host path unchanged (i.e. it is not under /tmp etc.)."""
    return not any(path == d or d in path.parents for d in _GUEST_PRIVATE_DIRS)


def _kill_qemu(proc: subprocess.Popen[bytes], pidfile: Path) -> None:
    """SIGKILL qemu itself (by its -pidfile, falling back to our child) and reap it."""
    pid = proc.pid
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if pid != proc.pid and proc.poll() is None:
        proc.kill()
    proc.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``shell-check`` (smoke test), ``run SCRIPT``, ``kernel`` (paths)."""
    parser = argparse.ArgumentParser(prog="python -m harness.guest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("shell-check", help="boot once, print uname -r and the loaded dm modules")
    run_p = sub.add_parser("run", help="run a script file in the guest")
    run_p.add_argument("script", type=Path)
    run_p.add_argument("--timeout", type=float, default=300)
    run_p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    run_p.add_argument("--results-dir", type=Path)
    sub.add_parser("kernel", help="download/unpack the kernel if needed and print its paths")
    args = parser.parse_args(argv)

    if args.command == "kernel":
        t0 = time.monotonic()
        kernel = ensure_kernel()
        initrd = build_initramfs(kernel)
        print(f"package   {kernel.package} {kernel.package_version}")
        print(f"version   {kernel.version}\nvmlinuz   {kernel.vmlinuz}\nvmlinux   {kernel.vmlinux}")
        print(f"modules   {kernel.modules_dir}")
        print(f"initramfs {initrd}\n({time.monotonic() - t0:.2f} s)")
        return 0
    if args.command == "shell-check":
        run = run_guest("uname -r; lsmod | grep dm_", timeout=120)
    else:
        env = dict(item.split("=", 1) for item in args.env)
        run = run_guest(args.script, timeout=args.timeout, env=env, results_dir=args.results_dir)
    print(run.guest_log, end="" if run.guest_log.endswith("\n") or not run.guest_log else "\n")
    print(f"--- rc={run.rc} wall={run.wall_time:.1f}s results={run.results_dir}")
    if run.error:
        print(f"--- {run.error}\n--- console tail:\n{_tail(run.console, 30)}")
    for line in run.problems:
        print(f"--- kernel log problem: {line}")
    return 0 if run.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
