#!/bin/bash
# Guest side of bench/upgrade.py: the I/O pause of a rolling upgrade, measured on the
# real kernel while a writer writes all the time. Runs as root inside the guest, from
# the repository root (harness/guest.py run_guest).
#
# The stack is what a small cluster runs: one redis-server (AOF, appendfsync always),
# two logsvc replicas on it (127.0.0.1:7500 and :7501, guest loopback), and the bridge
# naming both (--logsvc ipv4:...,...; docs/restarts.md "Several replicas"). The writer
# is fio: random 4 KiB O_DIRECT writes, one at a time, over a mirror of many regions,
# so that writes keep needing MARK, FLUSH and CLEAR; its latency log (one line per
# completed write, Unix-epoch milliseconds) is what the host reads the gaps from.
#
# Scenarios, each with a fio run of its own that starts with BASELINE_S seconds
# without any restart (the baseline of the same boot), then REPS upgrades of:
#   bridge         SIGTERM of a plain bridge, then a new one from scratch with a fresh
#                  journal directory: what a DaemonSet update with maxSurge 0 does
#   logsvc         SIGTERM of replica 0, started again (listening), then the same for
#                  replica 1: a Deployment rolling update with maxUnavailable 0
#   respawn        the same as bridge, for a bridge run with --respawn (keeper and all)
#   respawn-child  under --respawn, SIGTERM of the active child bridge only
#
# Environment (set by bench/upgrade.py; defaults after the colon):
#   SCENARIOS   which, in this order: bridge logsvc respawn respawn-child
#   REPS        upgrades per scenario: 3
#   BASELINE_S  seconds of writes without a restart first, per scenario: 30
#   SETTLE_S    seconds of writes after each upgrade before the next: 15
#   SECTORS REGION  leg size and region size, in 512-byte sectors
# Output: /results/events.tsv (SCENARIO REP EVENT EPOCH_SECONDS, one line per step),
# /results/<scenario>_lat.1.log (fio's per-write latency log), the servers' logs
# (bridge.log, logsvc0.log, logsvc1.log, redis.log) and /results/outcome.
. harness/guest/lib.sh

SCENARIOS=${SCENARIOS:-bridge logsvc respawn respawn-child}
REPS=${REPS:-3}
BASELINE_S=${BASELINE_S:-30}
SETTLE_S=${SETTLE_S:-15}
REDIS_SOCK=/tmp/redis/redis.sock
LOGSVCS=ipv4:127.0.0.1:7500,127.0.0.1:7501
DEV=/dev/mapper/up
# Each new bridge gets a journal directory of its own, as a new pod gets a new emptyDir.
JOURNALS=0

# mark SCENARIO REP EVENT: one timestamped line of $R/events.tsv ($EPOCHREALTIME: no fork).
mark() { echo "$1 $2 $3 $EPOCHREALTIME" >> $R/events.tsv; echo "-- [${SECONDS}s] $1 $2 $3"; }

# replica I: start logsvc replica I on 127.0.0.1:750I, on the shared Redis, in the
# background ($LOGSVC_PIDS[I]); with "wait", return once it listens (its readiness).
replica() {
  local log=$R/logsvc$1.log before
  before=$(grep -c logsvc_listening "$log" 2>/dev/null)
  dmulog --log-format json logsvc --listen "127.0.0.1:750$1" --redis "unix://$REDIS_SOCK" >> "$log" 2>&1 &
  LOGSVC_PIDS[$1]=$!
  [ "${2:-}" = wait ] || return 0
  for _ in $(seq 1800); do
    [ "$(grep -c logsvc_listening "$log" 2>/dev/null)" -gt "${before:-0}" ] && return 0
    kill -0 "${LOGSVC_PIDS[$1]}" 2>/dev/null || die "logsvc $1 exited"
    sleep 0.1
  done
  die "logsvc $1 did not listen in 180 s"
}

# new_bridge: a bridge from scratch (RESPAWN says which kind), on both replicas, with a fresh journal.
new_bridge() {
  JOURNALS=$(( JOURNALS + 1 ))
  DMULOG_JOURNAL_DIR=/run/dmulog/inflight-$JOURNALS start_bridge "$LOGSVCS"
}

# stop_bridge: SIGTERM the bridge (the keeper under --respawn) and wait until it is gone.
stop_bridge() { kill -TERM "$BRIDGE_PID"; wait "$BRIDGE_PID" 2>/dev/null; }

# writer_start SCENARIO: fio in the background ($FIO_PID), latency log $R/SCENARIO_lat.1.log.
writer_start() {
  timeout 7200 fio --name="$1" --filename=$DEV --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
    --iodepth=1 --norandommap --randrepeat=0 --time_based --runtime=7000 \
    --write_lat_log="$R/$1" --log_unix_epoch=1 --output-format=json --output="$R/$1.json" \
    > "$R/$1.fio.log" 2>&1 &
  FIO_PID=$!
}

# writer_stop: fio stops on SIGINT and writes its logs (its exit status then says nothing).
writer_stop() { kill -INT "$FIO_PID"; wait "$FIO_PID"; }

# standby_wait: under --respawn, until the keeper's latest standby bridge has imported and
# waits (lib.sh wait_standby): the steady state of a node, which a second upgrade soon after
# the first would not meet under emulation.
standby_wait() {
  [ "$RESPAWN" = 1 ] || return 0
  wait_standby 180 || die "no standby bridge ready in 180 s"
}

# upgrade SCENARIO REP: one rolling upgrade of the scenario's kind, marked step by step.
upgrade() {
  local before child
  standby_wait
  mark "$1" "$2" start
  case $1 in
    bridge|respawn)
      stop_bridge; mark "$1" "$2" stopped
      new_bridge; mark "$1" "$2" listening ;;
    respawn-child)
      before=$(listening)
      child=$(grep keeper_started_bridge $R/bridge.log | tail -1 | grep -o '"pid": *[0-9]*' | grep -o '[0-9]*$')
      [ -n "$child" ] || die "no child bridge pid in bridge.log"
      kill -TERM "$child" || die "no child bridge $child"
      wait_listening "$before"; mark "$1" "$2" listening ;;
    logsvc)
      for i in 0 1; do
        kill -TERM "${LOGSVC_PIDS[$i]}"; wait "${LOGSVC_PIDS[$i]}" 2>/dev/null
        mark "$1" "$2" "stopped$i"
        replica "$i" wait; mark "$1" "$2" "ready$i"
      done ;;
  esac
  sleep "$SETTLE_S"
  mark "$1" "$2" end
}

# scenario NAME: a fio run: baseline first, then REPS upgrades.
scenario() {
  standby_wait
  writer_start "$1"
  sleep 5  # fio's own start-up, not part of any window
  mark "$1" 0 baseline_start
  sleep "$BASELINE_S"
  mark "$1" 0 baseline_end
  for rep in $(seq "$REPS"); do upgrade "$1" "$rep"; done
  writer_stop "$1"
  note "$1" done
}

dmesg -w > $R/kmsg.txt 2>&1 &
# The kernel log counts seconds since boot, the events Unix time: one pair ties them.
echo "$EPOCHREALTIME $(cut -d' ' -f1 /proc/uptime)" > $R/clock
mkdir -p /tmp/redis
redis-server --port 0 --unixsocket $REDIS_SOCK --dir /tmp/redis --appendonly yes --appendfsync always \
  --save "" >> $R/redis.log 2>&1 &
for _ in $(seq 100); do [ -S $REDIS_SOCK ] && break; sleep 0.1; done
[ -S $REDIS_SOCK ] || die "redis-server did not start"
# Both replicas import at once; then wait for each (they are Python under emulation).
replica 0; replica 1
wait_log $R/logsvc0.log logsvc_listening 180 || die "logsvc 0 did not start"
wait_log $R/logsvc1.log logsvc_listening 180 || die "logsvc 1 did not start"

RESPAWN=0
case " $SCENARIOS " in *" bridge "*|*" logsvc "*) ;; *) RESPAWN=1 ;; esac
new_bridge
make_legs
fallocate -l $(( SECTORS * 512 )) /tmp/leg0 || die "fallocate leg0"
fallocate -l $(( SECTORS * 512 )) /tmp/leg1 || die "fallocate leg1"
$T dmsetup create up --table "$(mirror_table $SECTORS "$(log_words dmulog-upgrade dmulog $REGION)" "$L0 0 $L1 0")" \
  || die "create"
dmsetup mknodes up
# Writes run on a mirror in its steady state: after the initial resync.
wait_sync up 900
note synced yes

for s in $SCENARIOS; do
  case $s in
    respawn|respawn-child)
      if [ "$RESPAWN" != 1 ]; then stop_bridge; RESPAWN=1; new_bridge; fi ;;
  esac
  scenario "$s"
done

# A region can still be resyncing after the last upgrade (one the kernel held marked
# across a restart): say so, then let it finish before comparing the legs.
note status_after_writes "$(dmsetup status up)"
wait_sync up 300
note status "$(dmsetup status up)"
$T dmsetup remove up || die remove
note legs_identical "$(legs_identical)"
stop_bridge
kill "${LOGSVC_PIDS[@]}"; wait "${LOGSVC_PIDS[@]}"
note done yes
