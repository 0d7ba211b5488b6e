"""The real-kernel harness itself: exit codes, logs and the trivial responder reach the host.

The tests without the ``kernel`` marker need no VM: they check what every boot relies
on (the init template, the guest scripts and their one library, a topology's disks).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.guest import GUEST_DIR, guest_script, kernel_log_problems, run_guest
from harness.initramfs import render_init
from harness.kernel import Kernel, KernelVMError
from harness.topology import DISKS, Topology, node_name

LIBRARY = GUEST_DIR / "lib.sh"
#: Every guest script: all of harness/guest/ but the initramfs /init and the library.
GUEST_SCRIPTS = sorted(p for p in GUEST_DIR.glob("*.sh") if p.name not in ("init.sh", "lib.sh"))
_FUNCTION = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(\)", re.MULTILINE)
#: What may come before a script sources the library: its shebang, comments, blank lines, settings.
_PREAMBLE = re.compile(r"#.*|\s*|[A-Z_][A-Z0-9_]*=\S*( [A-Z_][A-Z0-9_]*=\S*)*")


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
    run = run_guest(guest_script("responder-mirror.sh"), timeout=180)

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


# ------------------------------------------------------------------- without a VM


def _functions(text: str) -> set[str]:
    """Names of the shell functions a script defines."""
    return set(_FUNCTION.findall(text))


def redefined_helpers(script: str, library: str) -> list[str]:
    """Functions of ``library`` that ``script`` defines again: a second copy of a helper."""
    return sorted(_functions(script) & _functions(library))


def sources_library_first(script: str) -> bool:
    """Whether the script sources lib.sh before any command of its own (settings may come first)."""
    for line in script.splitlines():
        if line == ". harness/guest/lib.sh":
            return True
        if not _PREAMBLE.fullmatch(line):
            return False
    return False


def test_the_guest_scripts_are_the_ones_the_harness_runs() -> None:
    """Every script the tests, the demo and the benchmarks boot is here (a missing name fails before any boot)."""
    names = {p.name for p in GUEST_SCRIPTS}
    assert {"conformance.sh", "limits.sh", "lifecycle.sh", "bridge-restart.sh", "demo.sh", "crash-node.sh",
            "bench.sh", "two-nodes.sh", "responder-mirror.sh", "record-trace.sh", "capture.sh",
            "rolling-upgrade.sh"} <= names  # fmt: skip
    with pytest.raises(KernelVMError, match="no guest script"):
        guest_script("no-such-script.sh")


@pytest.mark.parametrize("script", GUEST_SCRIPTS, ids=lambda p: p.name)
def test_every_guest_script_sources_the_library_first_and_parses(script: Path) -> None:
    """Each script starts from lib.sh (settings may precede it), is executable, and bash accepts it."""
    assert sources_library_first(script.read_text()), script
    assert script.stat().st_mode & 0o111, f"{script} is not executable (run_guest runs it by its shebang)"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert 0 == proc.returncode, proc.stderr


@pytest.mark.parametrize("script", GUEST_SCRIPTS, ids=lambda p: p.name)
def test_no_guest_script_has_its_own_copy_of_a_library_helper(script: Path) -> None:
    """One start_bridge, one start_logsvc, one wait_sync...: a script uses the library's, never its own."""
    assert [] == redefined_helpers(script.read_text(), LIBRARY.read_text())


def test_the_checks_see_a_second_start_bridge_and_a_script_without_the_library() -> None:
    """A planted copy of start_bridge is found, and so is a script that runs a command before sourcing lib.sh."""
    library = LIBRARY.read_text()
    assert {"start_bridge", "start_logsvc", "start_responder", "wait_sync", "settle", "die", "note"} <= _functions(
        library
    )
    assert ["start_bridge"] == redefined_helpers("#!/bin/bash\n. harness/guest/lib.sh\nstart_bridge() {\n  :\n}\n",
                                                 library)  # fmt: skip
    assert sources_library_first("#!/bin/bash\n# about\nSTEP_TIMEOUT=60 X=1\n. harness/guest/lib.sh\n")
    assert not sources_library_first("#!/bin/bash\nmodprobe loop\n. harness/guest/lib.sh\n")
    assert not sources_library_first("#!/bin/bash\necho no library\n")


def test_the_library_parses() -> None:
    """lib.sh itself is valid bash."""
    proc = subprocess.run(["bash", "-n", str(LIBRARY)], capture_output=True, text=True, check=False)
    assert 0 == proc.returncode, proc.stderr


def _fake_kernel(root: Path) -> Kernel:
    return Kernel("linux-image-test", "1", "6.1.0-test", root, root / "boot" / "vmlinuz",
                  root / "lib" / "modules" / "6.1.0-test")  # fmt: skip


def test_the_init_template_renders_with_every_placeholder_filled(tmp_path: Path) -> None:
    """The rendered /init names the modules and the guest's modprobe base, has no placeholder left, and parses."""
    init = render_init(_fake_kernel(tmp_path), ["virtio_pci", "9p"])

    assert [] == re.findall(r"@[A-Z_]+@", init)
    assert "for m in virtio_pci 9p; do insmod" in init
    assert " -d /kernel -a dm_mod dm_log " in init
    busybox = shutil.which("busybox")
    if busybox is not None:
        (tmp_path / "init").write_text(init)
        proc = subprocess.run([busybox, "sh", "-n", str(tmp_path / "init")], capture_output=True, text=True)
        assert 0 == proc.returncode, proc.stderr


def test_an_unknown_placeholder_in_the_init_template_is_an_error(tmp_path: Path) -> None:
    """A placeholder the renderer does not know would reach busybox as a word; it fails here instead."""
    template = tmp_path / "init.sh"
    template.write_text("#!/bin/busybox sh\nfor m in @MODULES@; do :; done\necho @NO_SUCH_THING@\n")

    with pytest.raises(KernelVMError, match="@NO_SUCH_THING@"):
        render_init(_fake_kernel(tmp_path), ["9p"], template)


def test_every_guest_of_a_topology_opens_the_disks_shared(tmp_path: Path) -> None:
    """Each disk is a shareable drive (no image lock, share-rw) named as QMP knows it; nodes are node-<i>."""
    topo = Topology(tmp_path)
    try:
        args = topo.disk_args()
    finally:
        topo.close()
    drives = [args[i + 1] for i, arg in enumerate(args) if arg == "-drive"]
    devices = [args[i + 1] for i, arg in enumerate(args) if arg == "-device"]
    assert [f"file={topo.image(name)},if=none,id={name},format=raw,cache=none,aio=threads,file.locking=off"
            for name in DISKS] == drives  # fmt: skip
    assert [f"virtio-blk-pci,drive={name},share-rw=on" for name in DISKS] == devices
    assert ["node-0", "node-1", "node-2"] == [node_name(i) for i in range(3)]


def test_a_topology_that_cannot_start_leaves_no_server_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When logsvc does not come up, entering the topology fails and the Redis it started is gone too."""
    from harness.topology import TopologyError

    def refuse(self: Topology, replica: int = 0, timeout: float = 30) -> None:
        raise TopologyError("logsvc exited with 2")

    monkeypatch.setattr(Topology, "start_logsvc", refuse)
    topo = Topology(tmp_path / "topo")
    with pytest.raises(TopologyError), topo:
        pass
    assert topo.redis.proc is not None and topo.redis.proc.poll() is not None
