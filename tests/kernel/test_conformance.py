"""Conformance of the whole stack with the real kernel, beyond one mirror's lifecycle.

test_mirror.py follows one mirror of each log type through its life with the
default options. This file covers what that leaves out, in two boots (each
scenario is its own test so a failure names what broke; the guest scripts are
``harness/guest/conformance.sh`` and ``limits.sh``):

* ``conformance`` boot: every log type x ``sync``/``nosync`` x with and
  without ``integrated_flush`` (the legs differ before creation, so a full
  copy and the absence of one are both visible in the leg files); the exact
  status and table texts the kernel prints (protocol.md §8); bad tables,
  which must fail with a reason in the bridge or kernel log and leave nothing
  in Redis (among them a region size of 2^32, which the kernel's u32 would
  truncate to 0 and divide by); several mirrors of mixed types with I/O in
  parallel; and a table reload, during which two instances of one log are
  live.
* ``limits`` boot: region sizes from 2 sectors to 1 MiB, a 4 GiB target, more
  regions than cmirrord allows (2,097,152), a partial last region, the largest
  region size the kernel holds (2^31 over 4 TiB dm-zero legs); and a leg
  that fails under a mirror: the write completes, the leg shows ``D``, the
  written regions go out of sync, and nothing retries in a loop.

Legs are sparse files on the guest's tmpfs behind loop devices (the 4 TiB
ones are dm-zero devices, never compared); they are compared as files, which
the loop driver keeps coherent with what the mirror wrote (the loop devices'
own page cache is never read).
"""

from __future__ import annotations

import json
import re

import pytest

from harness.guest import GuestRun, guest_script, run_guest
from logsvc.store import FUNCTION_PREFIX

pytestmark = pytest.mark.kernel
TYPES = ("clustered-core", "clustered-disk", "dmulog")
COMBOS = [(t, m, f) for t in TYPES for m in ("sync", "nosync") for f in ("plain", "integrated")]
COMBO_IDS = [f"{t}-{m}-{f}" for t, m, f in COMBOS]


def _fields(out: dict[str, str], prefix: str, *keys: str) -> tuple[str | None, ...]:
    """The values of ``<prefix>.<key>`` for each key, None where missing."""
    return tuple(out.get(f"{prefix}.{k}") for k in keys)


def _text(run: GuestRun, name: str) -> str:
    path = run.results_dir / name
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One boot: the option matrix, status texts, bad tables, parallel mirrors and a reload."""
    results = tmp_path_factory.mktemp("conformance")
    return run_guest(guest_script("conformance.sh"), timeout=1200, memory="1500M", results_dir=results)


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One boot: region sizes and counts at their limits, and a leg that fails."""
    results = tmp_path_factory.mktemp("limits")
    return run_guest(guest_script("limits.sh"), timeout=1200, memory="1500M", results_dir=results)


# ------------------------------------------------------------------------- conformance boot


def test_conformance_boot_completes_and_kernel_log_is_clean(conformance: GuestRun) -> None:
    """Every step ran, and the kernel never logged a timeout, a short reply buffer, BUG or WARNING."""
    assert 0 == conformance.rc, conformance.describe()
    assert "done" in conformance.outcome(), conformance.describe()
    assert [] == conformance.problems


def _sync_field(status: str) -> str:
    """The ``<in sync>/<regions>`` word of a mirror's `dmsetup status` line."""
    words = status.split(" ")
    return words[6] if len(words) > 6 else ""


def _combo(run: GuestRun, combo: str) -> dict[str, str]:
    prefix = f"m.{combo}."
    return {k[len(prefix) :]: v for k, v in run.outcome().items() if k.startswith(prefix)}


@pytest.mark.parametrize("combo", COMBO_IDS)
def test_matrix_creates_writes_and_removes(conformance: GuestRun, combo: str) -> None:
    """Each type x sync/nosync x integrated_flush builds, reaches N/N, takes O_DIRECT writes and goes away."""
    c = _combo(conformance, combo)
    assert ("0", "0", "0", "0") == (c.get("create_rc"), c.get("settled"), c.get("write_rc"), c.get("remove_rc")), c
    assert "4/4" == _sync_field(c.get("status", "")), c


@pytest.mark.parametrize("combo", COMBO_IDS)
def test_matrix_written_range_is_identical_on_both_legs(conformance: GuestRun, combo: str) -> None:
    """Whatever the options, a completed write is on both legs."""
    assert "yes" == _combo(conformance, combo).get("written_identical")


@pytest.mark.parametrize("combo", [c for c in COMBO_IDS if "-sync-" in c])
def test_matrix_sync_copies_every_region(conformance: GuestRun, combo: str) -> None:
    """With sync, the legs (zeros against random bytes) end identical: the resync copied all four regions."""
    c = _combo(conformance, combo)
    assert ("yes", "yes") == (c.get("legs_identical"), c.get("region0_identical")), c


@pytest.mark.parametrize("combo", [c for c in COMBO_IDS if "-nosync-" in c])
def test_matrix_nosync_copies_nothing(conformance: GuestRun, combo: str) -> None:
    """With nosync, the mirror is 4/4 at once and the unwritten regions still differ: no copy happened."""
    c = _combo(conformance, combo)
    assert "4/4" == _sync_field(c.get("first_status", "")), c
    assert ("no", "no") == (c.get("legs_identical"), c.get("region0_identical")), c


def _expected_texts(run: GuestRun, combo: str) -> tuple[str, str]:
    """`dmsetup status` and `dmsetup table` of a matrix mirror, as protocol.md §8 says they read."""
    log_type, mode, flush = combo.rsplit("-", 2)
    c = _combo(run, combo)
    leg_a, leg_b = c["legs"].split(" ")
    ld_path, ld_number = run.outcome()["logdev"].split(" ")
    info = {"clustered-core": "1 clustered-core", "dmulog": "1 dmulog"}.get(log_type, f"3 clustered-disk {ld_number} A")
    words = [c["uuid"], *(["integrated_flush"] if flush == "integrated" else []), log_type,
             *([ld_path] if log_type == "clustered-disk" else []), "2048", mode]  # fmt: skip
    status = f"0 8192 mirror 2 {leg_a} {leg_b} 4/4 1 AA {info}"
    table = f"0 8192 mirror userspace {len(words)} {' '.join(words)} 2 {leg_a} 0 {leg_b} 0"
    return status, table


@pytest.mark.parametrize("log_type", TYPES)
def test_status_text_is_exactly_the_protocols(conformance: GuestRun, log_type: str) -> None:
    """`dmsetup status` reads as §8.1 and §8.2 say, clustered-disk's device by major:minor as cmirrord's fstat()."""
    for combo in (c for c in COMBO_IDS if c.startswith(log_type + "-")):
        assert _expected_texts(conformance, combo)[0] == _combo(conformance, combo).get("status"), combo


@pytest.mark.parametrize("log_type", TYPES)
def test_table_text_round_trips_the_log_words(conformance: GuestRun, log_type: str) -> None:
    """`dmsetup table` (built by the kernel) gives back argc, UUID, integrated_flush and the log words as given."""
    for combo in (c for c in COMBO_IDS if c.startswith(log_type + "-")):
        assert _expected_texts(conformance, combo)[1] == _combo(conformance, combo).get("table"), combo


# Bad table -> (where the reason is logged, pattern of the reason).
BAD_TABLES = {
    "not_power_of_two": ("bridge", r"region size 1000 is not a power of two"),
    "zero": ("bridge", r"region size 0 is not a power of two"),
    "larger_than_target": ("bridge", r"region size 16384 is larger than the target \(8192 sectors\)"),
    "unknown_type": ("bridge", r"unknown log type 'clustered-mirror'"),
    "unknown_option": ("bridge", r"unknown dmulog argument 'fast'"),
    "too_few_words": ("kernel", r"dm-log-userspace: Too few arguments to userspace dirty log"),
    "no_region_size": ("bridge", r"clustered-disk needs a region size"),
    "no_device": ("bridge", r"clustered-disk needs a log device"),
    "missing_device": ("bridge", r"log device /dev/nonexistent is not a block device on the calling node"),
    "file_as_device": ("bridge", r"log device /tmp/not-a-device is not a block device on the calling node"),
    "missing_leg": ("kernel", r"mirror: Device lookup failure"),
    "leg_count": ("kernel", r"mirror: Too few mirror arguments"),
    "region_over_u32": ("bridge", r"region size 4294967296 exceeds the kernel's limit of 2147483648 sectors"),
}


def _bridge_reasons(run: GuestRun, name: str) -> list[str]:
    """The `detail` of every failed request the bridge logged for this bad table's log."""
    details = []
    for line in _text(run, f"bad.{name}.bridge").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("uuid") == f"conf-bad-{name}" and entry.get("event") == "request_failed":
            details.append(f"{entry.get('request')} {entry.get('errno')} {entry.get('detail')}")
    return details


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_bad_table_fails_with_its_reason_logged(conformance: GuestRun, name: str) -> None:
    """`dmsetup create` fails, no device is left, and the bridge log (CTR EINVAL) or kernel log says why."""
    assert "1" == conformance.outcome().get(f"bad.{name}.rc"), _text(conformance, f"bad.{name}.out")
    assert f"bad-{name}\t" not in _text(conformance, "bad-devices.txt")
    where, reason = BAD_TABLES[name]
    dmesg = _text(conformance, f"bad.{name}.dmesg")
    if where == "bridge":
        details = _bridge_reasons(conformance, name)
        assert any(re.match(rf"CTR EINVAL .*{reason}", d) for d in details), details
        assert "Userspace log server failed to create log" in dmesg, dmesg
    else:
        assert re.search(reason, dmesg), dmesg


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_bad_table_leaves_nothing_in_redis(conformance: GuestRun, name: str) -> None:
    """No key of the bad table's log is left, even when the kernel failed the table after a successful CTR."""
    assert "0" == conformance.outcome().get("bad.scan_rc")
    keys = _text(conformance, "bad-keys.txt").split()
    assert [] == [k for k in keys if k.startswith(f"dmulog:{{conf-bad-{name}}}:")]


def test_region_size_over_u32_is_refused_before_the_kernel_divides_by_it(conformance: GuestRun) -> None:
    """2^32 sectors, which the kernel's u32 region size truncates to 0, fails the CTR: no divide error, no oops."""
    dmesg = _text(conformance, "bad.region_over_u32.dmesg")
    assert "1" == conformance.outcome().get("bad.region_over_u32.rc"), _text(conformance, "bad.region_over_u32.out")
    assert not re.search(r"divide error|Oops|Call Trace|RIP:", dmesg), dmesg
    assert "0" == conformance.outcome().get("bad.zero_legs_remove_rc")


def test_a_good_mirror_works_right_after_bad_tables(conformance: GuestRun) -> None:
    """Bad tables break nothing: the stack keeps running and the next mirror works."""
    out = conformance.outcome()
    assert "yes" == out.get("bad.alive")
    assert ("0", "0", "0", "yes") == _fields(out, "bad.good", "create_rc", "write_rc", "remove_rc", "legs_identical")
    status = out.get("bad.good.status", "")
    assert re.fullmatch(r"0 8192 mirror 2 7:\d+ 7:\d+ 8/8 1 AA 3 clustered-disk 7:\d+ A", status), status


def test_parallel_mirrors_of_mixed_types(conformance: GuestRun) -> None:
    """Four mirrors (three types, both flush modes) created, resynced and written at the same time all agree."""
    out = conformance.outcome()
    for i in (1, 2, 3, 4):
        got = _fields(out, f"par.{i}", "create_rc", "settled", "io_rc", "remove_rc", "legs_identical")
        assert ("0", "0", "00", "0", "yes") == got, (i, got)
        assert re.fullmatch(r"0 8192 mirror 2 7:\d+ 7:\d+ 8/8 1 AA .*", out.get(f"par.{i}.status", "")), i
    assert "yes" == out.get("par.alive")


_INSTANCE = re.compile(r"^ {6}luid (0x[0-9a-f]+) boot \S+ epoch \d+ (\w+) 8 regions$", re.MULTILINE)
"""An instance line of ``dmulog status <UUID>`` (under its node)."""


def test_reload_runs_two_instances_until_resume(conformance: GuestRun) -> None:
    """Between `dmsetup load` and `resume` the log has the old table's instance and the new one; then only the new."""
    out = conformance.outcome()
    assert ("0", "0", "0", "0") == _fields(out, "reload", "load_rc", "during_rc", "resume_rc", "after_rc")
    during = _INSTANCE.findall(_text(conformance, "reload-during.txt"))
    after = _INSTANCE.findall(_text(conformance, "reload-after.txt"))
    assert ["constructed", "resumed"] == sorted(state for _, state in during), during
    new_luid = next(luid for luid, state in during if state == "constructed")
    assert [(new_luid, "resumed")] == after, after


def test_reload_under_io_keeps_the_legs_identical(conformance: GuestRun) -> None:
    """Writes running across the reload, and after it, all land on both legs."""
    out = conformance.outcome()
    assert ("0", "0", "0") == (out.get("reload.writer_rc"), out.get("reload.write_after_rc"), out.get("reload.settled"))
    assert re.fullmatch(r"0 8192 mirror 2 7:\d+ 7:\d+ 8/8 1 AA 1 dmulog", out.get("reload.status", ""))
    assert "yes" == out.get("par.4.legs_identical")


# ------------------------------------------------------------------------------ limits boot


def test_limits_boot_completes_and_kernel_log_is_clean(limits: GuestRun) -> None:
    """Every step ran (a failed leg included), and the kernel never logged BUG, WARNING or a timeout."""
    assert 0 == limits.rc, limits.describe()
    assert "done" in limits.outcome(), limits.describe()
    assert [] == limits.problems


def test_one_mib_regions_over_a_4_gib_target(limits: GuestRun) -> None:
    """4096 regions of 2048 sectors, nosync: in sync at once, writes land on both legs, `dmulog status` works."""
    out = limits.outcome()
    assert ("0", "00", "0", "0") == _fields(out, "big", "create_rc", "write_rc", "dmulog_status_rc", "remove_rc")
    for key in ("first_status", "status"):
        assert re.fullmatch(r"0 8388608 mirror 2 7:\d+ 7:\d+ 4096/4096 1 AA 1 dmulog", out.get(f"big.{key}", "")), key
    assert "yesyes" == out.get("big.written_identical")
    assert "4096 regions of 2048 sectors (1 MiB), 4 GiB in all" in _text(limits, "big.dmulog-status")


def test_more_regions_than_cmirrord_allows(limits: GuestRun) -> None:
    """2,097,153 regions of 2 sectors (cmirrord stops at 2,097,152): created, written to the last one, removed."""
    out = limits.outcome()
    assert ("0", "000", "0", "0") == _fields(out, "many", "create_rc", "write_rc", "dmulog_status_rc", "remove_rc")
    for key in ("first_status", "status"):
        assert re.fullmatch(r"0 4194306 mirror 2 7:\d+ 7:\d+ 2097153/2097153 1 AA 1 clustered-core",
                            out.get(f"many.{key}", "")), key  # fmt: skip
    assert "yesyesyes" == out.get("many.written_identical")
    text = _text(limits, "many.dmulog-status")
    assert "2097153 regions of 2 sectors (1 KiB)" in text and "in sync 2097153/2097153 (100.0%)" in text, text


def test_region_size_2_resyncs_every_region(limits: GuestRun) -> None:
    """The smallest region size with sync copies all 16 regions of a small target, one by one."""
    out = limits.outcome()
    assert ("0", "0", "0", "yes") == _fields(out, "tiny", "create_rc", "settled", "remove_rc", "legs_identical")
    assert re.fullmatch(r"0 32 mirror 2 7:\d+ 7:\d+ 16/16 1 AA 1 dmulog", out.get("tiny.status", ""))


def test_partial_last_region_is_resynced(limits: GuestRun) -> None:
    """A target that is not a whole number of regions gets ceil(len/size) regions, the short last one copied too."""
    out = limits.outcome()
    expected = ("0", "0", "0", "0", "yes")
    assert expected == _fields(out, "part", "create_rc", "settled", "write_rc", "remove_rc", "legs_identical")
    assert re.fullmatch(r"0 8200 mirror 2 7:\d+ 7:\d+ 5/5 1 AA 1 clustered-core", out.get("part.status", ""))


def test_region_size_equal_to_the_target(limits: GuestRun) -> None:
    """The largest region size the log accepts (the whole target) makes a one-region mirror that works."""
    out = limits.outcome()
    assert ("0", "0", "0", "yes") == _fields(out, "one", "create_rc", "write_rc", "remove_rc", "legs_identical")
    assert re.fullmatch(r"0 8192 mirror 2 7:\d+ 7:\d+ 1/1 1 AA 1 dmulog", out.get("one.status", ""))


def test_largest_region_size_the_kernel_holds(limits: GuestRun) -> None:
    """2^31 sectors (the largest power of two in the kernel's u32) over 2^33: four regions, status, removal."""
    out = limits.outcome()
    expected = ("0", "0", "0", "0")
    assert expected == _fields(out, "maxregion", "create_rc", "dmulog_status_rc", "remove_rc", "remove_legs_rc"), out
    leg_a, leg_b = out.get("maxregion.legs", "? ?").split(" ")
    assert f"0 8589934592 mirror 2 {leg_a} {leg_b} 4/4 1 AA 1 dmulog" == out.get("maxregion.status")
    text = _text(limits, "maxregion.dmulog-status")
    assert "4 regions of 2147483648 sectors (1 TiB), 4 TiB in all" in text, text


def test_failed_leg_write_completes_and_the_leg_shows_d(limits: GuestRun) -> None:
    """A write that fails on leg 1 still completes (no handle_errors); the status marks that leg D (§8.1)."""
    out = limits.outcome()
    leg_a, leg_b = out.get("fail.legs", "? ?").split(" ")
    assert ("0", "0", "0", "00") == _fields(out, "fail", "create_rc", "swap_rc", "write_rc", "write2_rc")
    assert f"0 8192 mirror 2 {leg_a} {leg_b} 8/8 1 AA 1 dmulog" == out.get("fail.status0")
    assert f"0 8192 mirror 2 {leg_a} {leg_b} 7/8 1 AD 1 dmulog" == out.get("fail.status1")
    assert f"0 8192 mirror 2 {leg_a} {leg_b} 6/8 1 AD 1 dmulog" == out.get("fail.status2")


def test_failed_leg_sets_the_written_regions_out_of_sync(limits: GuestRun) -> None:
    """The kernel sends SET_REGION_SYNC(r, 0) for each region written while the leg is dead; the log shows them."""
    calls = _text(limits, "fail.monitor")
    for region in (2, 5):
        assert re.search(rf'"{FUNCTION_PREFIX}set_region_sync" .* "{region}" "0"', calls), calls
    text = _text(limits, "fail.dmulog-status")
    assert "in sync 6/8 (75.0%)" in text and "|..X..X..|" in text, text


def test_failed_leg_causes_no_retry_loop(limits: GuestRun) -> None:
    """With the leg dead and no I/O nothing repeats: no request and no log line in 10 s, after a resume too."""
    out = limits.outcome()
    keys = ("quiet_requests", "quiet_log_lines", "quiet_kernel_lines", "recovery_requests", "recovery_kernel_lines",
            "resumed_requests", "resumed_log_lines", "resumed_kernel_lines")  # fmt: skip
    counts = {k: int(out.get(f"fail.{k}", "-1")) for k in keys}
    assert all(0 <= n for n in counts.values()), counts
    # The resume and the recovery after it (two regions, a handful of requests each), with status polls.
    assert counts["recovery_requests"] <= 60 and counts["recovery_kernel_lines"] <= 4, counts
    idle = {k: n for k, n in counts.items() if k.startswith(("quiet_", "resumed_"))}
    assert all(n <= 2 for n in idle.values()), idle


def test_kernel_reports_a_failed_recovery_as_in_sync(limits: GuestRun) -> None:
    """Without handle_errors the kernel answers a failed recovery with SET_REGION_SYNC(r, 1), and shows AA again.

    This pins the kernel's behaviour (dm_rh_update_states() completes failed
    recoveries as successes unless errors are handled), not dmulog's: after a
    resume over a dead leg the log is told the regions are in sync, and
    `dmsetup status` reads N/N AA. Only handle_errors (and dmeventd) would
    keep the failure visible.
    """
    out = limits.outcome()
    calls = _text(limits, "fail.monitor")
    assert "Write error during recovery" in _text(limits, "fail.recovery.dmesg")
    for region in (2, 5):
        assert re.search(rf'"{FUNCTION_PREFIX}set_region_sync" .* "{region}" "1"', calls), calls
    assert ("0", "0") == (out.get("fail.resume_rc"), out.get("fail.resettled"))
    leg_a, leg_b = out.get("fail.legs", "? ?").split(" ")
    assert f"0 8192 mirror 2 {leg_a} {leg_b} 8/8 1 AA 1 dmulog" == out.get("fail.status3")


def test_failed_leg_leaves_the_stack_running_and_removes_cleanly(limits: GuestRun) -> None:
    """The bridge and logsvc survive a dead leg and a resume over it; the mirror and its linear leg remove cleanly."""
    out = limits.outcome()
    assert ("yes", "yes") == (out.get("fail.alive"), out.get("fail.alive_after_resume"))
    assert ("0", "0", "0", "0") == _fields(out, "fail", "resume_rc", "write3_rc", "remove_rc", "remove_linear_rc")
