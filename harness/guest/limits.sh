#!/bin/bash
# The limits boot of tests/kernel/test_conformance.py: region sizes and counts at
# their limits, and a leg that fails under a mirror. Each step notes its results
# and goes on.
. harness/guest/lib.sh
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
