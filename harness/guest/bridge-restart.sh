#!/bin/bash
# The bridge-restart boot of tests/kernel/test_mirror.py: kill -9 the bridge under
# I/O, start a new one, and the kernel's replayed CTR and RESUME are accepted.
. harness/guest/lib.sh
start_logsvc
start_bridge
make_legs
UUID=dmulog-e2e-restart
TABLE=$(mirror_table $SECTORS "$(log_words $UUID clustered-disk $REGION 0 $LD)" "$L0 0 $L1 0")
$T dmsetup create m --table "$TABLE" || die create
dmsetup mknodes m
wait_sync m 180
kill -9 $BRIDGE_PID; wait $BRIDGE_PID 2>/dev/null
# A status query meets the missing server for sure (writes alone may not need a log request).
timeout 120 dmsetup status m > /dev/null 2>&1 &
# Writes now reach a kernel with no server: it loops, replaying CTR every 2 s.
( dd if=/dev/urandom of=/dev/mapper/m bs=4k count=64 seek=50 oflag=direct status=none; echo $? > /tmp/dd.rc ) &
DD=$!
sleep 5
start_bridge
for _ in $(seq 600); do [ -e /tmp/dd.rc ] && break; sleep 0.1; done
note dd_rc "$(cat /tmp/dd.rc 2>/dev/null || echo none)"
wait_sync m 180
note status "$(dmsetup status m)"
$T dmsetup remove m || die remove
note legs_identical "$(legs_identical)"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
note done yes
