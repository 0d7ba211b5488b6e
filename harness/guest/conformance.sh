#!/bin/bash
# The conformance boot of tests/kernel/test_conformance.py: every log type x
# sync/nosync x integrated_flush, the exact status and table texts, bad tables,
# parallel mirrors and a reload. Each step notes its results and goes on, so that
# one failing step still lets the others run and report.
. harness/guest/lib.sh
start_logsvc
start_bridge
note stack_ready "$SECONDS"
LD=$(leg /tmp/logdev 1M)
note logdev "$LD $(devno $LD)"

# 1 + 6. The matrix: 4 MiB legs, four regions of 1 MiB. Leg 0 is zeros, leg 1
# random, so "sync" must copy every region and "nosync" must copy none.
MS=8192; RS=2048
for TYPE in clustered-core clustered-disk dmulog; do
  for MODE in sync nosync; do
    for FLUSH in plain integrated; do
      C="m.$TYPE-$MODE-$FLUSH"; UUID="conf-$TYPE-$MODE-$FLUSH"
      A=$(leg /tmp/a 4M); B=$(leg /tmp/b 4M random)
      INTEGRATED=0; [ $FLUSH = integrated ] && INTEGRATED=1
      WORDS="$(log_words $UUID $TYPE $RS $INTEGRATED $LD) $MODE"
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
