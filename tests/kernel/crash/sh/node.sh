#!/bin/bash
# One boot of the crash-test node. Runs as root inside the guest, from the
# repository root; logsvc and Redis run on the host and are reached through
# qemu's guestfwd at $DMULOG_LOGSVC. Every step has a time limit: a silent log
# server makes the kernel retry every 15 s forever.
#
# Environment (set by tests/kernel/crash/topology.py and the scenario):
#   DMULOG_VENV DMULOG_LOGSVC DMULOG_NODE   the stack
#   PHASE        crash: create, sync, write until the host kills the node
#                recover: create the same table again, resync, remove
#   UUID LOG_TYPE REGION SECTORS INTEGRATED   the mirror table
#   SEED THREADS SPAN MAX_BLOCKS               the writer
#   BRIDGE_KILLS KILL_SEED                     crash phase: kill -9 and restart the bridge this often
#   RESPAWN      1: run `dmulog bridge --respawn` and kill its bridge process (the keeper
#                holding the socket restarts it); 0: kill the whole bridge and start a new one
#   GRACEFUL     1: after the kills, stop the whole bridge with SIGTERM under I/O and start a new one
set -u -o pipefail
export PATH="$DMULOG_VENV/bin:$PATH"
R=/results
T="timeout 120"
LEG0=/dev/vda LEG1=/dev/vdb LOGDEV=/dev/vdc
BRIDGE_KILLS=${BRIDGE_KILLS:-0}
RESPAWN=${RESPAWN:-0}
GRACEFUL=${GRACEFUL:-0}
INTEGRATED=${INTEGRATED:-0}

die() { echo "FAILED: $*"; echo "$*" >> $R/failures; dmsetup table 2>&1; exit 1; }
note() { echo "$1=$2" >> $R/outcome; echo "-- [${SECONDS}s] $1=$2"; }

# The disks and the network card are virtio devices whose drivers the harness does not load.
devices_up() {
  modprobe -d "$DMULOG_MODPROBE_BASE" -a virtio_blk failover net_failover virtio_net || die "modprobe virtio"
  for _ in $(seq 100); do [ -b $LEG1 ] && [ -b $LOGDEV ] && [ -d /sys/class/net/eth0 ] && break; sleep 0.1; done
  [ -b $LEG1 ] && [ -b $LOGDEV ] || die "no virtio disks"
  ip link set eth0 up || die "eth0 up"
  ip addr add 10.0.2.15/24 dev eth0 || die "eth0 address"
}

listening() { grep -c bridge_listening $R/bridge.log 2>/dev/null || true; }

# wait_listening N: until the bridge log has more than N bridge_listening lines.
wait_listening() {
  for _ in $(seq 1200); do
    [ "$(listening)" -gt "${1:-0}" ] && return 0
    kill -0 $BRIDGE_PID 2>/dev/null || die "bridge exited"
    sleep 0.1
  done
  die "bridge did not start in 120 s"
}

start_bridge() {
  local before respawn=""
  before=$(listening)
  [ "$RESPAWN" = 1 ] && respawn=--respawn
  dmulog --log-format json bridge $respawn --logsvc "$DMULOG_LOGSVC" --node "$DMULOG_NODE" >> $R/bridge.log 2>&1 &
  BRIDGE_PID=$!
  wait_listening "$before"
}

# The bridge process under the keeper (the last one it started).
bridge_worker() { grep keeper_started_bridge $R/bridge.log | tail -1 | sed 's/.*"pid": \([0-9]*\).*/\1/'; }

table() {
  local flush="" n=3 args
  [ "$INTEGRATED" = 1 ] && { flush="integrated_flush "; n=$(( n + 1 )); }
  case "$LOG_TYPE" in
    dmulog) args="$UUID ${flush}dmulog $REGION" ;;
    clustered-disk) args="$UUID ${flush}clustered-disk $LOGDEV $REGION"; n=$(( n + 1 )) ;;
    clustered-core) args="$UUID ${flush}clustered-core $REGION" ;;
    *) die "unknown LOG_TYPE $LOG_TYPE" ;;
  esac
  echo "0 $SECTORS mirror userspace $n $args 2 $LEG0 0 $LEG1 0"
}

sync_of() { timeout 30 dmsetup status m | awk '{print $7}'; }

wait_sync() {
  local s=""
  for _ in $(seq $(( $1 * 5 ))); do
    s=$(sync_of)
    [ -n "$s" ] && [ "${s%/*}" = "${s#*/}" ] && return 0
    sleep 0.2
  done
  die "not in sync after $1 s (at $s)"
}

create_mirror() {
  note table "$(table)"
  $T dmsetup create m --table "$(table)" || die "dmsetup create"
  dmsetup mknodes m
  [ -b /dev/mapper/m ] || die "no /dev/mapper/m"
  wait_sync 300
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
devices_up
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
