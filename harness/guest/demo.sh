#!/bin/bash
# `make demo` (harness/demo.py): the whole stack in the guest, a 64 MiB
# mirror with dmulog's native log, its resync and writes shown to a person.
SECTORS=131072 REGION=1024
. harness/guest/lib.sh
say() { echo; echo "### $*"; }
say "kernel $(uname -r): dm modules loaded: $(lsmod | awk '/^dm_/{print $1}' | xargs)"
start_logsvc
start_bridge
make_legs
say "dmulog logsvc and dmulog bridge are running"
grep -h -E 'logsvc_listening|bridge_listening' $R/logsvc.log $R/bridge.log
# Leg 1 goes through dm-delay (no delay for now), so that writes can be kept in
# flight later, long enough to see their marks.
modprobe -q -d "$DMULOG_MODPROBE_BASE" dm_delay || die "no dm_delay module"
delay_table() { echo "0 $SECTORS delay $L1 0 0 $L1 0 $1"; }
dmsetup create slowleg --table "$(delay_table 0)" && dmsetup mknodes slowleg || die "dm-delay leg"
TABLE=$(mirror_table $SECTORS "$(log_words demo-mirror dmulog $REGION)" "$L0 0 /dev/mapper/slowleg 0")
say "dmsetup create demo --table \"$TABLE\""
$T dmsetup create demo --table "$TABLE" || die create
dmsetup mknodes demo
STATUS=$(dmsetup status demo)
SYNC=$(echo "$STATUS" | awk '{print $7}')
if [ "${SYNC%/*}" != "${SYNC#*/}" ]; then
  say "dmsetup status demo   (the initial resync is under way: $SYNC regions in sync)"
else
  say "dmsetup status demo   (already in sync: $SYNC)"
fi
echo "$STATUS"
say "dmulog status demo-mirror"
dmulog status demo-mirror --logsvc "unix:$SOCK"
wait_sync demo 300
say "resync done: dmsetup status demo"
dmsetup status demo
say "writing 8 MiB sequentially"
write demo 1M 8 8
say "every write to leg 1 now waits 3 s (dm-delay); 4 KiB writes to 14 regions start"
dmsetup suspend slowleg && dmsetup load slowleg --table "$(delay_table 3000)" && dmsetup resume slowleg \
  || die "slowing leg 1"
( for i in $(seq 0 9 120); do dd if=/dev/urandom of=/dev/mapper/demo bs=4k count=8 seek=$((i * 128)) \
    oflag=direct status=none & done; wait ) &
WRITER=$!
# Wait (at most 10 s) until the log shows marks, then show it: what is printed is
# a log with writes really in flight, or says that none was.
for _ in $(seq 50); do
  SEEN=$(dmulog status demo-mirror --logsvc "unix:$SOCK")
  echo "$SEEN" | grep -q "marked regions (region" && break
  sleep 0.2
done
if echo "$SEEN" | grep -q "marked regions (region"; then
  say "dmulog status demo-mirror   (writes in flight: their regions are marked by this node, and dirty)"
else
  say "dmulog status demo-mirror   (no write was in flight when it was read)"
fi
echo "$SEEN"
wait $WRITER
say "dmulog status demo-mirror   (the writes completed: the kernel cleared their regions)"
dmulog status demo-mirror --logsvc "unix:$SOCK"
$T dmsetup remove demo || die remove
dmsetup remove slowleg || die "remove dm-delay leg"
say "mirror removed; legs identical: $(legs_identical)"
say "dmulog status   (the native type keeps its state in Redis after removal)"
dmulog status --logsvc "unix:$SOCK"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
