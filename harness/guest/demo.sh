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
TABLE=$(mirror_table $SECTORS "$(log_words demo-mirror dmulog $REGION)" "$L0 0 $L1 0")
say "dmsetup create demo --table \"$TABLE\""
$T dmsetup create demo --table "$TABLE" || die create
dmsetup mknodes demo
say "dmsetup status demo   (initial resync in progress)"
dmsetup status demo
say "dmulog status demo-mirror"
dmulog status demo-mirror --logsvc "unix:$SOCK"
wait_sync demo 300
say "resync done: dmsetup status demo"
dmsetup status demo
say "writing: 8 MiB sequential, then 4 KiB writes scattered over the mirror"
write demo 1M 8 8
( for i in $(seq 0 9 120); do dd if=/dev/urandom of=/dev/mapper/demo bs=4k count=8 seek=$((i * 128)) \
    oflag=direct status=none; done ) &
WRITER=$!
sleep 3
say "dmulog status demo-mirror   (while writes are in flight: marked regions are dirty)"
dmulog status demo-mirror --logsvc "unix:$SOCK"
wait $WRITER
$T dmsetup remove demo || die remove
say "mirror removed; legs identical: $(legs_identical)"
say "dmulog status   (the native type keeps its state in Redis after removal)"
dmulog status --logsvc "unix:$SOCK"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
