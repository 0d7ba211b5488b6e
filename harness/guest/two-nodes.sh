#!/bin/bash
# One node of tests/kernel/test_nodes.py: several guests on the same leg images, each
# with its own bridge, logsvc and Redis on the host (harness/topology.py); every node
# activates the same mirror, writes a block of its own, reads every other node's
# block, and removes the mirror. The host says when to go on (wait_host), and may
# freeze, crash or reboot a node in between.
#
# Environment (set by harness/topology.py and the test):
#   DMULOG_LOGSVC DMULOG_NODE DMULOG_NODE_INDEX   this node
#   NODES         how many nodes share the mirror
#   UUID SECTORS REGION   the mirror table (a dmulog log)
#   BLOCK         bytes each node writes, at byte BLOCK * DMULOG_NODE_INDEX
# Output in /results/outcome: node_index, boot_id, create_rc, settled, status, write_rc,
# read_from_node_<i> (yes when node i's block reads back as node i wrote it),
# remove_rc, done.
STEP_TIMEOUT=120
. harness/guest/lib.sh

# block_of NODE: the bytes node NODE writes, which say who wrote them. (Not `yes | head`:
# under pipefail, the SIGPIPE that ends yes would fail every pipeline this is in.)
block_of() { head -c "$BLOCK" < <(yes "written by node-$1"); }

shared_mirror 180
block_of "$DMULOG_NODE_INDEX" | $T dd of=/dev/mapper/m bs="$BLOCK" seek="$DMULOG_NODE_INDEX" iflag=fullblock \
  oflag=direct status=none
note write_rc $?

# Every node has written: read the others' blocks past this node's page cache.
wait_host go-read 300
for i in $(seq 0 $(( NODES - 1 ))); do
  [ "$i" = "$DMULOG_NODE_INDEX" ] && continue
  $T dd if=/dev/mapper/m bs="$BLOCK" skip="$i" count=1 iflag=direct status=none > /tmp/block-$i
  note "read_from_node_$i" "$(block_of "$i" | cmp -s - /tmp/block-$i && echo yes || echo no)"
done

wait_host go-remove 300
$T dmsetup remove m; note remove_rc $?
kill "$BRIDGE_PID"; wait "$BRIDGE_PID"; note bridge_rc $?
note done yes
