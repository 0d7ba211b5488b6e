#!/bin/bash
# The boot of tests/kernel/test_lost_instance.py: a mirror's instance vanishes from the
# log while the mirror runs (as after a lease expiry or a lost Redis), so the next
# requests are answered -ESRCH and the kernel replays CTR and RESUME, then asks them
# again. A write and a read right after must land on both legs: the request asked
# again must still have its reply room (bridge/wire.py error_reply).
. harness/guest/lib.sh
dmesg -w > $R/kmsg.txt 2>&1 &
start_logsvc
start_bridge
make_legs
UUID=lost-instance
$T dmsetup create m --table "$(mirror_table $SECTORS "$(log_words $UUID dmulog $REGION)" "$L0 0 $L1 0")" \
  || die "create"
dmsetup mknodes m
wait_sync m 180
write m 4k 16 100
note before "$(dmsetup status m)"
$REDIS DEL "dmulog:{$UUID}:inst" > /dev/null || die "no redis-cli"
sleep 2  # past the bridge's latch (1 s): IN_SYNC goes to logsvc, which knows no such instance now
note write_rc "$(bdwrite m 4k 8 2000)"
dd if=/dev/mapper/m of=/dev/null bs=4k count=8 skip=3000 iflag=direct status=none; note read_rc $?
wait_log $R/kmsg.txt "Reconnected to userspace log server" 60; note reconnected $?
sleep 2
note after "$(dmsetup status m)"
sync
note legs_identical "$(legs_identical)"
$T dmsetup remove m; note remove_rc $?
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
note done yes
