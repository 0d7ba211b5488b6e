#!/bin/bash
# Guest side of tests/kernel/capture_fixtures.py: the trivial responder, capturing
# every request datagram, serves mirrors driven through every request type the
# kernel sends. Each `step` appends "<requests captured so far> <step name>" to
# /results/steps.txt after letting the kernel's asynchronous follow-ups (CLEAR +
# FLUSH after a write) arrive.
#
# Environment (set by tests/kernel/capture_fixtures.py):
#   SECTORS        leg size in sectors
#   REGION         region size in sectors
#   SMALL_REGION   region size of the batch steps (full 32-region MARK and FLUSH batches)
STEP_TIMEOUT=60
. harness/guest/lib.sh
CAP=/results/capture
STEPS=/results/steps.txt
mkdir -p "$CAP"
: > "$STEPS"
SETTLE=0.3

nreq() { ls "$CAP" | grep -c -- '-req\.hex$'; }
step() { sleep "$SETTLE"; echo "$(nreq) $1" >> "$STEPS"; echo "== $1 ($(nreq) requests so far)"; }
create() { echo "table: $2"; $T dmsetup create "$1" --table "$2" || die "dmsetup create $1"; dmsetup mknodes "$1"; }
remove() { $T dmsetup remove "$1" || die "dmsetup remove $1"; }
legs_equal() {
  [ "$($T dd if="$L0" iflag=direct bs=1M status=none | md5sum)" = \
    "$($T dd if="$L1" iflag=direct bs=1M status=none | md5sum)" ] || die "legs differ"
}

S=$SECTORS; RS=$REGION; SRS=$SMALL_REGION
L0=$(leg /tmp/leg0.img $((S * 512))) || die losetup
L1=$(leg /tmp/leg1.img $((S * 512))) || die losetup
uname -r > /results/uname.txt
start_responder --capture "$CAP"
step responder-started

# --- plain: clustered-core, default sync ---------------------------------------------
create mA "0 $S mirror userspace 3 dmulog-fixture-plain clustered-core $RS 2 $L0 0 $L1 0"
step plain.create
write mA 4k 1 0;                       step plain.write-4k-region0
write mA 4k 1 0;                       step plain.rewrite-4k-region0
$T dmsetup status mA || die status; step plain.status
$T dmsetup table mA || die table;   step plain.table
write mA 64k 16 32;                    step plain.write-1m-regions4-5
$T dd if=/dev/mapper/mA of=/dev/null bs=64k count=16 skip=32 iflag=direct status=none || die read
step plain.read-1m-regions4-5
$T dmsetup suspend mA || die suspend; step plain.suspend
$T dmsetup resume mA || die resume;   step plain.resume
write mA 4k 1 768;                     step plain.write-4k-region6-after-resume
kill -KILL "$RESPONDER_PID"; wait "$RESPONDER_PID" 2>/dev/null
step plain.responder-killed
# I/O while no server listens: the kernel logs "server not found", retries CTR every
# 2 s; the restarted responder gets the replayed CTR, then RESUME, then the request.
$T dd if=/dev/urandom of=/dev/mapper/mA bs=4k count=1 seek=1024 oflag=direct status=none &
DD=$!
sleep 3
start_responder --capture "$CAP"
wait "$DD" || die "write during responder restart failed"
step plain.write-4k-region8-across-restart
$T dmsetup status mA || die status; step plain.status-after-restart
write mA 4k 1 1280;                    step plain.write-4k-region10-after-restart
remove mA;                          step plain.remove
legs_equal

# --- nosync ---------------------------------------------------------------------------
create mB "0 $S mirror userspace 4 dmulog-fixture-nosync clustered-core $RS nosync 2 $L0 0 $L1 0"
step nosync.create
write mB 4k 1 0;                       step nosync.write-4k-region0
$T dmsetup status mB || die status; step nosync.status
remove mB;                          step nosync.remove

# --- integrated_flush -----------------------------------------------------------------
create mC "0 $S mirror userspace 4 dmulog-fixture-integrated integrated_flush clustered-core $RS 2 $L0 0 $L1 0"
step integrated.create
SETTLE=3.5   # the payload-less FLUSH after clears is deferred by 3 s
write mC 4k 1 0;                       step integrated.write-4k-region0
write mC 64k 16 32;                    step integrated.write-1m-regions4-5
SETTLE=0.3
$T dmsetup status mC || die status; step integrated.status
$T dmsetup suspend mC || die suspend; step integrated.suspend
$T dmsetup resume mC || die resume;   step integrated.resume
remove mC;                          step integrated.remove
legs_equal

# --- leg failure: SET_REGION_SYNC(region, 0) -------------------------------------------
$T dmsetup create legD --table "0 $S linear $L1 0" || die "create legD"
dmsetup mknodes legD
create mD "0 $S mirror userspace 3 dmulog-fixture-legfail clustered-core $RS 2 $L0 0 /dev/mapper/legD 0"
step legfail.create
write mD 4k 1 0;                       step legfail.write-4k-region0
$T dmsetup suspend legD && $T dmsetup load legD --table "0 $S error" && $T dmsetup resume legD \
    || die "could not break legD"
step legfail.leg-replaced-by-error-target
write mD 4k 1 384;                     step legfail.write-4k-region3-failing-leg
$T dmsetup status mD || die status; step legfail.status
remove mD;                          step legfail.remove
remove legD

# --- small regions: 64 regions dirtied by one write ------------------------------------
create mE "0 $S mirror userspace 3 dmulog-fixture-batch clustered-core $SRS 2 $L0 0 $L1 0"
step batch.create
write mE 256k 1 0;                     step batch.write-256k-64-regions
remove mE;                          step batch.remove
create mF "0 $S mirror userspace 4 dmulog-fixture-batch-integrated integrated_flush clustered-core $SRS 2 $L0 0 $L1 0"
step batch-integrated.create
SETTLE=3.5
write mF 256k 1 0;                     step batch-integrated.write-256k-64-regions
SETTLE=0.3
remove mF;                          step batch-integrated.remove

kill "$RESPONDER_PID"; wait "$RESPONDER_PID" 2>/dev/null
losetup -d "$L0" "$L1"
echo "capture complete: $(nreq) requests"
