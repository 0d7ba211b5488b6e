#!/bin/bash
# Guest side of bench/guest.py: the same fio workloads on a 2-leg mirror with each
# dirty log, one configuration after another, in one boot. Runs as root inside the
# guest, from the repository root (harness/guest.py run_guest).
#
# Environment (set by bench/guest.py):
#   SECTORS REGION leg size and region size, in 512-byte sectors
#   CONFIGS        configurations to run, in this order: core responder responder-if
#                  dmulog-guest dmulog-guest-if dmulog-host dmulog-host-if
#   WORKLOADS      fio job files /results/jobs/<name>.fio, run in this order
#   LOG_TYPE       log type of the dmulog tables (clustered-core or dmulog)
#   HOST_LOGSVC    the bridge's --logsvc for dmulog-host*: logsvc on the host, through guestfwd
#   FIO_TIMEOUT    seconds one fio run (all repetitions of a workload) may take
# Output: /results/hops.txt (one hop's cost per transport, in the guest); per
# configuration C and workload W: /results/C/W.json (fio) and, for the userspace
# logs, /results/C/W.before and W.after (the log server's request counts around the
# run); /results/outcome says which configurations finished.
. harness/guest/lib.sh

want() { case " $CONFIGS " in *" $1 "*) return 0 ;; esac; return 1; }

# counts_now FILE: make the log server log its request counts (SIGUSR1) and keep that
# line in FILE. Counting is a counter in the server, so it costs the measured runs nothing.
counts_now() {
  local before
  before=$(grep -c "$COUNT_LINE" "$SERVER_LOG")
  kill -USR1 "$SERVER_PID" || die "log server $SERVER_PID is gone"
  for _ in $(seq 300); do
    if [ "$(grep -c "$COUNT_LINE" "$SERVER_LOG")" -gt "$before" ]; then
      grep "$COUNT_LINE" "$SERVER_LOG" | tail -1 > "$1"
      return 0
    fi
    sleep 0.1
  done
  die "no request counts in $SERVER_LOG"
}

# bench_log UUID INTEGRATED TYPE: the log part of a mirror table with a userspace log.
# No "nosync": every mirror starts as a new mirror does, with a full resync.
bench_log() { userspace_log "$(log_words "$1" "$3" "$REGION" "$2")"; }

# run_config NAME LOG [counts]: create the mirror with LOG, run every workload on it, remove it.
# With "counts", the log server's request counts are taken around each workload.
run_config() {
  local name=$1 dir=$R/$1
  mkdir -p "$dir"
  $T dmsetup create bench --table "0 $SECTORS mirror $2 2 $L0 0 $L1 0" || die "create $name"
  dmsetup mknodes bench
  # The workloads run on a mirror in its steady state: after the initial resync.
  wait_sync bench 900
  # First requests of a new log (and a bridge's first call on its channel) are not steady state.
  $T dd if=/dev/zero of=/dev/mapper/bench bs=4k count=16 oflag=direct status=none || die "warm-up $name"
  for w in $WORKLOADS; do
    [ "${3:-}" = counts ] && counts_now "$dir/$w.before"
    timeout "$FIO_TIMEOUT" fio --output-format=json --output="$dir/$w.json" "$R/jobs/$w.fio" \
      > "$dir/$w.fio.log" 2>&1 || die "fio $w on $name"
    [ "${3:-}" = counts ] && counts_now "$dir/$w.after"
  done
  $T dmsetup remove bench || die "remove $name"
  note "$name" done
}

# The legs: loop devices on tmpfs files, allocated up front so that no configuration
# pays for first-touch page allocation that another one skips.
make_legs
fallocate -l $(( SECTORS * 512 )) /tmp/leg0 || die "fallocate leg0"
fallocate -l $(( SECTORS * 512 )) /tmp/leg1 || die "fallocate leg1"

# What one hop between two guest processes costs, per transport (bench/transport.py):
# under emulation gRPC suffers far more than a plain socket, and this says how much.
timeout 300 python -m bench.transport 200 > $R/hops.txt 2>&1 || note hops failed

want core && run_config core "core 1 $REGION"

if want responder || want responder-if; then
  start_responder
  SERVER_PID=$RESPONDER_PID SERVER_LOG=$R/responder.log COUNT_LINE="^responder: requests"
  want responder && run_config responder "$(bench_log bench-responder 0 clustered-core)" counts
  want responder-if && run_config responder-if "$(bench_log bench-responder-if 1 clustered-core)" counts
  kill "$SERVER_PID"; wait "$SERVER_PID"
fi

COUNT_LINE='"request_counts"'
if want dmulog-guest || want dmulog-guest-if; then
  start_logsvc
  start_bridge
  SERVER_PID=$BRIDGE_PID SERVER_LOG=$R/bridge.log
  want dmulog-guest && run_config dmulog-guest "$(bench_log bench-dmulog-guest 0 "$LOG_TYPE")" counts
  want dmulog-guest-if && run_config dmulog-guest-if "$(bench_log bench-dmulog-guest-if 1 "$LOG_TYPE")" counts
  kill "$BRIDGE_PID" "$LOGSVC_PID"; wait "$BRIDGE_PID" "$LOGSVC_PID"
fi

if want dmulog-host || want dmulog-host-if; then
  net_up
  start_bridge "$HOST_LOGSVC"
  SERVER_PID=$BRIDGE_PID SERVER_LOG=$R/bridge.log
  want dmulog-host && run_config dmulog-host "$(bench_log bench-dmulog-host 0 "$LOG_TYPE")" counts
  want dmulog-host-if && run_config dmulog-host-if "$(bench_log bench-dmulog-host-if 1 "$LOG_TYPE")" counts
  kill "$BRIDGE_PID"; wait "$BRIDGE_PID"
fi
note done yes
