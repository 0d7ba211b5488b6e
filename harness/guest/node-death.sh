#!/bin/bash
# One node of tests/kernel/test_node_death.py: several guests on the same leg images,
# a bridge each (with a lease), logsvc and Redis on the host (harness/topology.py).
# Every node activates the same mirror and writes it until the host says otherwise;
# the writers of all nodes share every region but no block (the checker's --stride).
# The host kills a node at a moment of its choosing; the others go on writing and
# reading while the dead node's regions are handed over and resynced.
#
# Environment (set by harness/topology.py and the test):
#   DMULOG_LOGSVC DMULOG_NODE DMULOG_NODE_INDEX   this node
#   NODES         how many nodes write the mirror (the writer's stride, unless STRIDE)
#   STRIDE PHASE  the writer's blocks, b % STRIDE == PHASE (default NODES, DMULOG_NODE_INDEX)
#   UUID SECTORS REGION SPAN SEED   the mirror table and the writer
#   THREADS WSPAN  the writer's threads (default 2) and the bytes it writes (default SPAN)
#   WRITE         0: no writer at all (the mirror is idle here; default 1)
#   SETTLE        seconds to wait for the new mirror to be in sync (default 300; 0: go on at once)
#   READER        0: no reader (default 1)
#   HOT HOTSIZE   BYTE: instead of the checker's writer, fio keeps 32 random 4 KiB writes
#                 (never two on one block: the legs of a mirror may take two at once in
#                 either order, so they would differ) in flight at all times on HOTSIZE bytes (default one region) at offset
#                 BYTE, so that region never goes idle; $R/dm-writes then holds the mirror's count
#                 of completed writes (/sys/block/dm-N/stat), five times a second
#   CUT           1: after go-write, wait for cut (the network goes down: this node
#                 is cut off from logsvc, nothing else), then heal (it comes back)
# Host commands (wait_host): go-write, then pause / go-on (the writer stops and
# restarts, so the host can compare the legs with the log while nothing is in
# flight), stop, go-remove.
# Output in /results/outcome: node_index, boot_id, create_rc, settled, status,
# writing, cut, healed, paused, resumed, read_errors, stopped, synced_again, status_end,
# remove_rc, done; /results/writes.log is the writer's record.
STEP_TIMEOUT=120
. harness/guest/lib.sh

completed() {
  if [ -n "${HOT:-}" ]; then cat $R/dm-writes 2>/dev/null; else grep -c '^D ' $R/writes.log 2>/dev/null || true; fi
}

# count_writes DEVICE: the device's completed writes into $R/dm-writes until the script ends.
count_writes() {
  local stat="/sys/block/dm-$(dmsetup info -c --noheadings -o minor "$1" | tr -d ' ')/stat"
  while :; do awk '{print $5}' "$stat" > $R/dm-writes.new && mv $R/dm-writes.new $R/dm-writes; sleep 0.2; done
}

# reader: O_DIRECT reads of random blocks until /tmp/stop-reading; errors counted.
reader() {
  local errors=0 n=$(( SPAN / 4096 ))
  while [ ! -e /tmp/stop-reading ]; do
    dd if=/dev/mapper/m of=/dev/null bs=4096 count=1 skip=$(( (RANDOM * 32768 + RANDOM) % n )) \
      iflag=direct status=none 2>/dev/null || errors=$(( errors + 1 ))
    sleep 0.05
  done
  echo "$errors" > /tmp/read-errors
}

shared_mirror "${SETTLE:-300}"

wait_host go-write 600
if [ "${WRITE:-1}" = 0 ]; then
  sleep infinity &
elif [ -n "${HOT:-}" ]; then
  count_writes m &
  fio --name=hot --thread --filename=/dev/mapper/m --rw=randwrite --bs=4k --offset="$HOT" --size="${HOTSIZE:-$(( REGION * 512 ))}" \
    --ioengine=libaio --iodepth=32 --serialize_overlap=1 --direct=1 --time_based --runtime=3600 --randrepeat=0 > $R/writer.out 2>&1 &
else
  python -m tests.kernel.crash.checker write /dev/mapper/m $R/writes.log --seed "$SEED" --threads "${THREADS:-2}" \
    --span "${WSPAN:-$SPAN}" --stride "${STRIDE:-$NODES}" --phase "${PHASE:-$DMULOG_NODE_INDEX}" > $R/writer.out 2>&1 &
fi
WRITER=$!
if [ "${READER:-1}" = 1 ]; then reader & READER_PID=$!; else echo 0 > /tmp/read-errors; fi
note writing yes

if [ "${CUT:-0}" = 1 ]; then
  wait_host cut 900
  ip link set eth0 down || die "eth0 down"
  note cut "$(completed)"
  wait_host heal 900
  ip link set eth0 up || die "eth0 up"
  note healed "$(completed)"
fi

wait_host pause 900
kill -STOP $WRITER
sleep 1  # writes in flight complete (a stopped process's pwrite still finishes in the kernel)
note paused "$(completed)"
wait_host go-on 600
kill -CONT $WRITER
note resumed yes

wait_host stop 900
kill -STOP $WRITER
sleep 1
kill -9 $WRITER; wait $WRITER 2>/dev/null
touch /tmp/stop-reading; [ -n "${READER_PID:-}" ] && wait "$READER_PID"
note read_errors "$(cat /tmp/read-errors)"
note stopped "$(completed)"
settle m 600; note synced_again $?
note status_end "$(dmsetup status m)"

wait_host go-remove 600
$T dmsetup remove m; note remove_rc $?
kill "$BRIDGE_PID"; wait "$BRIDGE_PID"; note bridge_rc $?
note done yes
