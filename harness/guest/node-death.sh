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
# Host commands (wait_host): go-write, then pause / go-on (the writer stops and
# restarts, so the host can compare the legs with the log while nothing is in
# flight), stop, go-remove.
# Output in /results/outcome: node_index, boot_id, create_rc, settled, status,
# writing, paused, resumed, read_errors, stopped, synced_again, status_end,
# remove_rc, done; /results/writes.log is the writer's record.
STEP_TIMEOUT=120
. harness/guest/lib.sh

completed() { grep -c '^D ' $R/writes.log 2>/dev/null || true; }

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

shared_mirror 300

wait_host go-write 600
python -m tests.kernel.crash.checker write /dev/mapper/m $R/writes.log --seed "$SEED" --span "$SPAN" \
  --threads 2 --stride "${STRIDE:-$NODES}" --phase "${PHASE:-$DMULOG_NODE_INDEX}" > $R/writer.out 2>&1 &
WRITER=$!
reader &
READER=$!
note writing yes

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
touch /tmp/stop-reading; wait $READER
note read_errors "$(cat /tmp/read-errors)"
note stopped "$(completed)"
settle m 600; note synced_again $?
note status_end "$(dmsetup status m)"

wait_host go-remove 600
$T dmsetup remove m; note remove_rc $?
kill "$BRIDGE_PID"; wait "$BRIDGE_PID"; note bridge_rc $?
note done yes
