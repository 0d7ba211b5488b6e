"""Conformance of the whole stack with the real kernel, beyond one mirror's lifecycle.

test_mirror.py follows one mirror of each log type through its life with the
default options. This file covers what that leaves out, in two boots (each
scenario is its own test so a failure names what broke):

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
import sys
from pathlib import Path

import pytest

from logsvc.store import FUNCTION_PREFIX
from tests.kernel.vm import GuestRun, run_guest

pytestmark = pytest.mark.kernel
REPO = Path(__file__).resolve().parents[2]
ENV = {"DMULOG_VENV": str(Path(sys.executable).parent.parent)}
TYPES = ("clustered-core", "clustered-disk", "dmulog")
COMBOS = [(t, m, f) for t in TYPES for m in ("sync", "nosync") for f in ("plain", "integrated")]
COMBO_IDS = [f"{t}-{m}-{f}" for t, m, f in COMBOS]


CONFORMANCE = r"""
. tests/kernel/sh/conformance.sh
start_logsvc
start_bridge
note stack_ready "$SECONDS"
truncate -s 1M /tmp/logdev
LD=$(losetup -f --show /tmp/logdev)
note logdev "$LD $(devno $LD)"

# 1 + 6. The matrix: 4 MiB legs, four regions of 1 MiB. Leg 0 is zeros, leg 1
# random, so "sync" must copy every region and "nosync" must copy none.
MS=8192; RS=2048
for TYPE in clustered-core clustered-disk dmulog; do
  for MODE in sync nosync; do
    for FLUSH in plain integrated; do
      C="m.$TYPE-$MODE-$FLUSH"; UUID="conf-$TYPE-$MODE-$FLUSH"
      A=$(leg /tmp/a 4M); B=$(leg /tmp/b 4M random)
      WORDS="$UUID"
      [ $FLUSH = integrated ] && WORDS="$WORDS integrated_flush"
      WORDS="$WORDS $TYPE"
      [ $TYPE = clustered-disk ] && WORDS="$WORDS $LD"
      WORDS="$WORDS $RS $MODE"
      note "$C.legs" "$(devno $A) $(devno $B)"
      note "$C.uuid" "$UUID"
      $T dmsetup create mx --table "$(mirror_table $MS "$WORDS" "$A 0 $B 0")"; note "$C.create_rc" $?
      if dmsetup mknodes mx 2>/dev/null && [ -b /dev/mapper/mx ]; then
        note "$C.first_status" "$(dmsetup status mx)"
        settle mx 120; note "$C.settled" $?
        note "$C.write_rc" "$(bdwrite mx 64k 1 20)"   # bytes 1310720..1376255, in region 1
        note "$C.status" "$(dmsetup status mx)"
        note "$C.table" "$(dmsetup table mx)"
        $T dmsetup remove mx; note "$C.remove_rc" $?
      fi
      note "$C.legs_identical" "$(same /tmp/a /tmp/b)"
      note "$C.written_identical" "$(same /tmp/a /tmp/b 65536 1310720)"
      note "$C.region0_identical" "$(same /tmp/a /tmp/b 1048576)"
      losetup -d $A $B
    done
  done
done
note matrix_done "$SECONDS"

# 3. Bad tables: each must fail, say why, and leave nothing behind.
L0=$(leg /tmp/l0 4M); L1=$(leg /tmp/l1 4M)
truncate -s 1M /tmp/not-a-device
# The bridge logs a refused CTR before it answers, so its line is there when dmsetup returns.
bad() {
  local b d
  b=$(wc -l < $R/bridge.log); d=$(dmesg | wc -l)
  $T dmsetup create "bad-$1" --table "$2" > "$R/bad.$1.out" 2>&1; note "bad.$1.rc" $?
  tail -n +$((b + 1)) $R/bridge.log > "$R/bad.$1.bridge"
  dmesg | tail -n +$((d + 1)) > "$R/bad.$1.dmesg"
}
LEGS="$L0 0 $L1 0"
bad not_power_of_two "$(mirror_table $MS "conf-bad-not_power_of_two dmulog 1000" "$LEGS")"
bad zero "$(mirror_table $MS "conf-bad-zero clustered-core 0" "$LEGS")"
bad larger_than_target "$(mirror_table $MS "conf-bad-larger_than_target dmulog 16384" "$LEGS")"
bad unknown_type "$(mirror_table $MS "conf-bad-unknown_type clustered-mirror 1024" "$LEGS")"
bad unknown_option "$(mirror_table $MS "conf-bad-unknown_option dmulog 1024 fast" "$LEGS")"
bad too_few_words "0 $MS mirror userspace 2 conf-bad-too_few_words dmulog 2 $LEGS"
bad no_region_size "$(mirror_table $MS "conf-bad-no_region_size clustered-disk $LD" "$LEGS")"
bad no_device "$(mirror_table $MS "conf-bad-no_device clustered-disk 1024" "$LEGS")"
bad missing_device "$(mirror_table $MS "conf-bad-missing_device clustered-disk /dev/nonexistent 1024" "$LEGS")"
bad file_as_device "$(mirror_table $MS "conf-bad-file_as_device clustered-disk /tmp/not-a-device 1024" "$LEGS")"
bad missing_leg "$(mirror_table $MS "conf-bad-missing_leg dmulog 1024" "$L0 0 /dev/nonexistent 0")"
bad leg_count "0 $MS mirror userspace 3 conf-bad-leg_count dmulog 1024 3 $LEGS"
# 2^32 sectors fits the log's u64 reply but not the kernel's u32 region size (it divided by 0).
ZS=8589934592; Z0=$(zero_leg conf-z0 $ZS); Z1=$(zero_leg conf-z1 $ZS)
bad region_over_u32 "$(mirror_table $ZS "conf-bad-region_over_u32 dmulog 4294967296 nosync" "$Z0 0 $Z1 0")"
dmsetup ls > $R/bad-devices.txt 2>&1
dmsetup remove conf-z0 conf-z1; note bad.zero_legs_remove_rc $?
$REDIS --scan --pattern 'dmulog:{conf-bad-*' > $R/bad-keys.txt 2>&1; note bad.scan_rc $?
note bad.alive "$(alive)"
# The stack still works: a good mirror right after.
$T dmsetup create good --table "$(mirror_table $MS "conf-good-after-bad clustered-disk $LD 1024 nosync" "$LEGS")"
note bad.good.create_rc $?
dmsetup mknodes good
note bad.good.write_rc "$(bdwrite good 4k 8 100)"
note bad.good.status "$(dmsetup status good)"
$T dmsetup remove good; note bad.good.remove_rc $?
note bad.good.legs_identical "$(same /tmp/l0 /tmp/l1)"
losetup -d $L0 $L1
note bad_done "$SECONDS"

# 4. Several mirrors at once, I/O in parallel, and a reload with I/O running.
WORDS=(
  ""
  "conf-par-1 clustered-core 1024 sync"
  "conf-par-2 integrated_flush clustered-disk $LD 1024 nosync"
  "conf-par-3 integrated_flush dmulog 1024 sync"
  "conf-par-4 dmulog 1024 nosync"
)
TABLES=()
PIDS=()
for i in 1 2 3 4; do
  content=zero
  case $i in 1|3) content=random ;; esac   # the "sync" mirrors start with legs that differ
  a=$(leg /tmp/p$i-a 4M); b=$(leg /tmp/p$i-b 4M $content)
  TABLES[$i]=$(mirror_table $MS "${WORDS[$i]}" "$a 0 $b 0")
  ( $T dmsetup create par-$i --table "${TABLES[$i]}"; echo $? > /tmp/par-$i.create ) &
  PIDS+=($!)
done
wait "${PIDS[@]}"
for i in 1 2 3 4; do note "par.$i.create_rc" "$(cat /tmp/par-$i.create)"; dmsetup mknodes par-$i; done
for i in 1 2 3 4; do settle par-$i 180; note "par.$i.settled" $?; done
note par_synced "$SECONDS"
PIDS=()
for i in 1 2 3 4; do
  ( r1=$(bdwrite par-$i 4k 8 $((i * 40))); r2=$(bdwrite par-$i 1M 1 2); echo "$r1$r2" > /tmp/par-$i.io ) &
  PIDS+=($!)
done
wait "${PIDS[@]}"
for i in 1 2 3 4; do note "par.$i.io_rc" "$(cat /tmp/par-$i.io)"; note "par.$i.status" "$(dmsetup status par-$i)"; done
note par_io_done "$SECONDS"
# Reload par-4 (same table) while a writer keeps going.
( bdwrite par-4 4k 32 600 > /tmp/reload-writer.rc ) &
WPID=$!
$T dmsetup load par-4 --table "${TABLES[4]}"; note reload.load_rc $?
dmulog status conf-par-4 --logsvc "unix:$SOCK" > $R/reload-during.txt 2>&1; note reload.during_rc $?
$T dmsetup resume par-4; note reload.resume_rc $?
dmulog status conf-par-4 --logsvc "unix:$SOCK" > $R/reload-after.txt 2>&1; note reload.after_rc $?
wait $WPID
note reload.writer_rc "$(cat /tmp/reload-writer.rc)"
note reload.write_after_rc "$(bdwrite par-4 4k 8 900)"
settle par-4 120; note reload.settled $?
note reload.status "$(dmsetup status par-4)"
for i in 1 2 3 4; do
  $T dmsetup remove par-$i; note "par.$i.remove_rc" $?
  note "par.$i.legs_identical" "$(same /tmp/p$i-a /tmp/p$i-b)"
done
note par.alive "$(alive)"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
note done "$SECONDS"
"""

LIMITS = r"""
. tests/kernel/sh/conformance.sh
start_logsvc
start_bridge
note stack_ready "$SECONDS"

# 2a. 1 MiB regions over a 4 GiB target (sparse), nosync: 4096 regions, nothing copied.
A=$(leg /tmp/big-a 4G); B=$(leg /tmp/big-b 4G)
$T dmsetup create big --table "$(mirror_table 8388608 "conf-big dmulog 2048 nosync" "$A 0 $B 0")"
note big.create_rc $?
dmsetup mknodes big
note big.first_status "$(dmsetup status big)"
note big.write_rc "$(bdwrite big 1M 2 4000)$(bdwrite big 4k 4 0)"
note big.status "$(dmsetup status big)"
dmulog status conf-big --logsvc "unix:$SOCK" > $R/big.dmulog-status 2>&1; note big.dmulog_status_rc $?
$T dmsetup remove big; note big.remove_rc $?
note big.written_identical "$(same /tmp/big-a /tmp/big-b 2097152 4194304000)$(same /tmp/big-a /tmp/big-b 16384)"
losetup -d $A $B; rm -f /tmp/big-a /tmp/big-b
note big_done "$SECONDS"

# 2b. Region size 2 over 2,097,153 regions, one more than cmirrord's cap.
NS=4194306
A=$(leg /tmp/many-a $((NS * 512))); B=$(leg /tmp/many-b $((NS * 512)))
$T dmsetup create many --table "$(mirror_table $NS "conf-many clustered-core 2 nosync" "$A 0 $B 0")"
note many.create_rc $?
dmsetup mknodes many
note many.first_status "$(dmsetup status many)"
# 1 KiB at region 0, 4 KiB over regions 2000..2003, and the last region (2,097,152).
note many.write_rc "$(bdwrite many 1k 1 0)$(bdwrite many 4k 1 500)$(bdwrite many 1k 1 $((NS / 2 - 1)))"
note many.status "$(dmsetup status many)"
$T dmulog status conf-many --logsvc "unix:$SOCK" > $R/many.dmulog-status 2>&1; note many.dmulog_status_rc $?
$T dmsetup remove many; note many.remove_rc $?
W1=$(same /tmp/many-a /tmp/many-b 1024); W2=$(same /tmp/many-a /tmp/many-b 4096 2048000)
W3=$(same /tmp/many-a /tmp/many-b 1024 $((NS * 512 - 1024)))
note many.written_identical "$W1$W2$W3"
losetup -d $A $B; rm -f /tmp/many-a /tmp/many-b
note many_done "$SECONDS"

# 2c. Region size 2 with "sync": 16 regions copied one by one.
A=$(leg /tmp/tiny-a 16K); B=$(leg /tmp/tiny-b 16K random)
$T dmsetup create tiny --table "$(mirror_table 32 "conf-tiny dmulog 2 sync" "$A 0 $B 0")"
note tiny.create_rc $?
dmsetup mknodes tiny
settle tiny 180; note tiny.settled $?
note tiny.status "$(dmsetup status tiny)"
$T dmsetup remove tiny; note tiny.remove_rc $?
note tiny.legs_identical "$(same /tmp/tiny-a /tmp/tiny-b)"
losetup -d $A $B
note tiny_done "$SECONDS"

# 2d. A partial last region: 4 MiB + 4 KiB with 1 MiB regions is 5 regions.
A=$(leg /tmp/part-a 4100K); B=$(leg /tmp/part-b 4100K random)
$T dmsetup create part --table "$(mirror_table 8200 "conf-part clustered-core 2048" "$A 0 $B 0")"
note part.create_rc $?
dmsetup mknodes part
settle part 120; note part.settled $?
note part.write_rc "$(bdwrite part 4k 1 1024)"   # the last 4 KiB: all of region 4
note part.status "$(dmsetup status part)"
$T dmsetup remove part; note part.remove_rc $?
note part.legs_identical "$(same /tmp/part-a /tmp/part-b)"
losetup -d $A $B
note part_done "$SECONDS"

# 2e. Region size equal to the target: one region.
A=$(leg /tmp/one-a 4M); B=$(leg /tmp/one-b 4M)
$T dmsetup create one --table "$(mirror_table 8192 "conf-one dmulog 8192 nosync" "$A 0 $B 0")"
note one.create_rc $?
dmsetup mknodes one
note one.write_rc "$(bdwrite one 4k 4 10)"
note one.status "$(dmsetup status one)"
$T dmsetup remove one; note one.remove_rc $?
note one.legs_identical "$(same /tmp/one-a /tmp/one-b)"
losetup -d $A $B
note one_done "$SECONDS"

# 2f. The largest region size the kernel holds (2^31 sectors, 1 TiB, its region size is
# a u32) over 4 TiB dm-zero legs: four regions, nosync, so nothing is copied.
ZS=8589934592; Z0=$(zero_leg conf-zmax-0 $ZS); Z1=$(zero_leg conf-zmax-1 $ZS)
note maxregion.legs "$(devno $Z0) $(devno $Z1)"
$T dmsetup create maxregion --table "$(mirror_table $ZS "conf-maxregion dmulog 2147483648 nosync" "$Z0 0 $Z1 0")"
note maxregion.create_rc $?
note maxregion.status "$(dmsetup status maxregion)"
dmulog status conf-maxregion --logsvc "unix:$SOCK" > $R/maxregion.dmulog-status 2>&1
note maxregion.dmulog_status_rc $?
$T dmsetup remove maxregion; note maxregion.remove_rc $?
dmsetup remove conf-zmax-0 conf-zmax-1; note maxregion.remove_legs_rc $?
note maxregion_done "$SECONDS"

# 5. A leg that fails: leg 1 is a dm-linear device whose table becomes "error".
A=$(leg /tmp/fail-a 4M); B=$(leg /tmp/fail-b 4M)
dmsetup create conf-lin --table "0 8192 linear $B 0"; dmsetup mknodes conf-lin
LIN=/dev/mapper/conf-lin
note fail.legs "$(devno $A) $(devno $LIN)"
$T dmsetup create failing --table "$(mirror_table 8192 "conf-fail dmulog 1024 nosync" "$A 0 $LIN 0")"
note fail.create_rc $?
dmsetup mknodes failing
note fail.status0 "$(dmsetup status failing)"
$REDIS monitor > /tmp/monitor.txt 2>&1 &
MON=$!
sleep 1
dmsetup suspend conf-lin && dmsetup load conf-lin --table "0 8192 error" && dmsetup resume conf-lin
note fail.swap_rc $?
# count_requests: Function calls on this log so far (one per kernel request; MONITOR
# also shows the commands each call runs inside Redis, which are not counted).
count_requests() { grep '"FCALL' /tmp/monitor.txt | grep -c '{conf-fail}'; }
lines() { cat $R/bridge.log $R/logsvc.log | wc -l; }
note fail.write_rc "$(bdwrite failing 4k 4 300)"   # region 2
note fail.status1 "$(dmsetup status failing)"
r0=$(count_requests); l0=$(lines); d0=$(dmesg | wc -l)
sleep 10
note fail.quiet_requests $(( $(count_requests) - r0 ))
note fail.quiet_log_lines $(( $(lines) - l0 ))
note fail.quiet_kernel_lines $(( $(dmesg | wc -l) - d0 ))
note fail.write2_rc "$(bdwrite failing 4k 4 300)$(bdwrite failing 4k 4 660)"   # region 2 again, region 5
note fail.status2 "$(dmsetup status failing)"
dmulog status conf-fail --logsvc "unix:$SOCK" > $R/fail.dmulog-status 2>&1; note fail.dmulog_status_rc $?
note fail.alive "$(alive)"
# A resume makes the kernel recover the out-of-sync regions onto the dead leg;
# once that is over, nothing may repeat either.
r0=$(count_requests); d0=$(dmesg | wc -l)
$T dmsetup suspend failing && $T dmsetup resume failing; note fail.resume_rc $?
settle failing 60; note fail.resettled $?
note fail.recovery_requests $(( $(count_requests) - r0 ))
note fail.recovery_kernel_lines $(( $(dmesg | wc -l) - d0 ))
dmesg | tail -n +$((d0 + 1)) > $R/fail.recovery.dmesg
r0=$(count_requests); l0=$(lines); d0=$(dmesg | wc -l)
sleep 10
note fail.resumed_requests $(( $(count_requests) - r0 ))
note fail.resumed_log_lines $(( $(lines) - l0 ))
note fail.resumed_kernel_lines $(( $(dmesg | wc -l) - d0 ))
note fail.status3 "$(dmsetup status failing)"
note fail.write3_rc "$(bdwrite failing 4k 4 300)"
note fail.alive_after_resume "$(alive)"
$T dmsetup remove failing; note fail.remove_rc $?
$T dmsetup remove conf-lin; note fail.remove_linear_rc $?
kill $MON; wait $MON
grep '"FCALL' /tmp/monitor.txt | grep '{conf-fail}' | sed -E 's/ "dmulog:\{conf-fail\}:[a-z]+"//g' > $R/fail.monitor
losetup -d $A $B
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
note done "$SECONDS"
"""


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
    return run_guest(CONFORMANCE, timeout=1200, env=ENV, cwd=REPO, memory="1500M", results_dir=results)


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """One boot: region sizes and counts at their limits, and a leg that fails."""
    results = tmp_path_factory.mktemp("limits")
    return run_guest(LIMITS, timeout=1200, env=ENV, cwd=REPO, memory="1500M", results_dir=results)


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


_INSTANCE = re.compile(r"^ {4}guest luid (0x[0-9a-f]+) boot \S+ (\w+) 8 regions$", re.MULTILINE)


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
