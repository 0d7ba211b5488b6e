#!/bin/bash
# One boot of the crash-test node (tests/kernel/crash/scenarios.py). Runs as root
# inside the guest, from the repository root; logsvc and Redis run on the host and
# are reached through qemu's guestfwd at $DMULOG_LOGSVC (harness/topology.py). Every
# step has a time limit: a silent log server makes the kernel retry every 15 s forever.
#
# Environment (set by harness/topology.py and the scenario):
#   DMULOG_LOGSVC DMULOG_NODE   the stack
#   PHASE        crash: create, sync, write until the host kills the node
#                recover: create the same table again, resync, remove
#   UUID LOG_TYPE REGION SECTORS INTEGRATED   the mirror table
#   SEED THREADS SPAN MAX_BLOCKS               the writer
#   BRIDGE_KILLS KILL_SEED                     crash phase: kill -9 and restart the bridge this often
#   RESPAWN      1: run `dmulog bridge --respawn` and kill its bridge process (the keeper
#                holding the socket restarts it); 0: kill the whole bridge and start a new one
#   GRACEFUL     1: after the kills, stop the whole bridge with SIGTERM under I/O and start a new one
STEP_TIMEOUT=120
. harness/guest/lib.sh
BRIDGE_KILLS=${BRIDGE_KILLS:-0}
RESPAWN=${RESPAWN:-0}
GRACEFUL=${GRACEFUL:-0}
INTEGRATED=${INTEGRATED:-0}

# The bridge process under the keeper (the last one it started).
bridge_worker() { grep keeper_started_bridge $R/bridge.log | tail -1 | sed 's/.*"pid": \([0-9]*\).*/\1/'; }

table() { mirror_table "$SECTORS" "$(log_words "$UUID" "$LOG_TYPE" "$REGION" "$INTEGRATED" "$LD")" "$L0 0 $L1 0"; }

create_mirror() {
  note table "$(table)"
  $T dmsetup create m --table "$(table)" || die "dmsetup create"
  dmsetup mknodes m
  [ -b /dev/mapper/m ] || die "no /dev/mapper/m"
  wait_sync m 300
  note synced "$(dmsetup status m)"
}

completed() { grep -c '^D ' $R/writes.log 2>/dev/null || true; }

# wait_writes N SECONDS: until the writer completed N more writes.
wait_writes() {
  local target=$(( $(completed) + $1 ))
  for _ in $(seq $(( $2 * 10 ))); do [ "$(completed)" -ge $target ] && return 0; sleep 0.1; done
  die "writer made no progress: $(completed) of $target writes in $2 s"
}

# The kernel log as it happens: a crashed node never gets to save dmesg.
dmesg -w > $R/kmsg.txt 2>&1 &
disks_up
net_up
note boot_id "$(cat /proc/sys/kernel/random/boot_id)"
start_bridge
create_mirror

case "$PHASE" in
  crash)
    python -m tests.kernel.crash.checker write /dev/mapper/m $R/writes.log \
      --seed "$SEED" --span "$SPAN" --threads "${THREADS:-4}" --max-blocks "${MAX_BLOCKS:-16}" > $R/writer.out 2>&1 &
    WRITER=$!
    note writing yes
    if [ "$BRIDGE_KILLS" -gt 0 ]; then
      RANDOM=$KILL_SEED
      for i in $(seq "$BRIDGE_KILLS"); do
        # Kill only while writes flow: 20 more completed since the last restart, then a random pause.
        wait_writes 20 120
        sleep "$(( RANDOM % 3 )).$(( RANDOM % 10 ))"
        if [ "$RESPAWN" = 1 ]; then
          before=$(listening)
          kill -9 "$(bridge_worker)"
          note "bridge_killed_$i" "$(completed)"
          wait_listening "$before"
        else
          kill -9 "$BRIDGE_PID"; wait "$BRIDGE_PID" 2>/dev/null
          note "bridge_killed_$i" "$(completed)"
          sleep "0.$(( RANDOM % 10 ))"
          start_bridge
        fi
        note "bridge_restarted_$i" "$(completed)"
      done
      note bridge_kills_done yes
    fi
    if [ "$GRACEFUL" = 1 ]; then
      # SIGTERM: the bridge leaves the group, answers what it holds, exits; the kernel
      # loops on "log server not found" until the next bridge takes its replayed CTR.
      wait_writes 20 120
      kill -TERM "$BRIDGE_PID"; wait "$BRIDGE_PID"
      note bridge_term_rc "$?"
      note bridge_stopped_at "$(completed)"
      start_bridge
      note bridge_started_at "$(completed)"
      wait_writes 10 120
      note graceful_done yes
    fi
    # The host kills the node while the writer runs; never exit on our own.
    wait $WRITER
    note writer_exited "$?"
    sleep 1000
    ;;
  recover)
    $T dmsetup remove m || die "dmsetup remove"
    note removed yes
    kill $BRIDGE_PID; wait $BRIDGE_PID
    note done yes
    ;;
  *) die "unknown PHASE $PHASE" ;;
esac
