# The shell helpers of every guest script in harness/guest/, sourced first thing:
#   . harness/guest/lib.sh
# Guest scripts run as root inside the guest, from the repository root, with
# DMULOG_VENV set to the project's virtualenv (harness/guest.py run_guest). The
# host passes parameters by environment; each script's header lists its own.
#
# Settings (environment, defaults after the colon):
#   STEP_TIMEOUT   seconds one dmsetup or dd step may take, through $T: 300
#   SECTORS        leg size of make_legs, in 512-byte sectors: 65536 (32 MiB)
#   REGION         region size in sectors: 1024 (512 KiB)
#   DMULOG_LOGSVC  the bridge's --logsvc: the guest's own logsvc (start_logsvc)
#   DMULOG_NODE    the bridge's --node: guest
#   RESPAWN        1: start_bridge runs `dmulog bridge --respawn`: 0
set -u -o pipefail
export PATH="$DMULOG_VENV/bin:$PATH"
R=/results
T="timeout ${STEP_TIMEOUT:-300}"
SOCK=/tmp/logsvc.sock
SECTORS=${SECTORS:-65536}
REGION=${REGION:-1024}
# The guest logsvc's own redis-server (start_logsvc).
REDIS="redis-cli -s /tmp/dmulog-state/redis.sock"

# ----------------------------------------------------------------- reporting

# die MESSAGE: end the script; the message goes to the guest log and $R/failures.
die() { echo "FAILED: $*"; echo "$*" >> $R/failures; dmsetup table 2>&1; exit 1; }
# note KEY VALUE: one line of $R/outcome, the host's usual report (GuestRun.outcome()).
note() { echo "$1=$2" >> $R/outcome; echo "-- [${SECONDS}s] $1=$2"; }

# wait_log FILE PATTERN SECONDS: wait until PATTERN shows up in FILE.
wait_log() {
  for _ in $(seq $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# wait_standby SECONDS: under --respawn, until the keeper's latest standby bridge has started and
# waits for its turn (a standby_ready after the last keeper_started_standby in $R/bridge.log). The
# first bridge logs standby_ready too, before the keeper starts any standby (bridge/keeper.py).
wait_standby() {
  for _ in $(seq $(( $1 * 10 ))); do
    grep -oE 'keeper_started_standby|standby_ready' "$R/bridge.log" 2>/dev/null \
      | awk '/keeper_started_standby/ { s = 1; r = 0 } /standby_ready/ { if (s) r = 1 } END { exit !r }' && return 0
    sleep 0.1
  done
  return 1
}

# wait_host NAME SECONDS: until the host says go (harness/topology.py Boot.tell creates
# /results/NAME; the share is uncached, so the guest sees it at once), or die.
wait_host() {
  for _ in $(seq $(( $2 * 10 ))); do [ -e "$R/$1" ] && return 0; sleep 0.1; done
  die "the host did not say $1 in $2 s"
}

# ----------------------------------------------------------------- the stack

# start_logsvc: logsvc in the guest, with its own redis-server, on unix:$SOCK ($LOGSVC_PID).
start_logsvc() {
  dmulog --log-format json logsvc --listen "unix:$SOCK" --state-dir /tmp/dmulog-state >> $R/logsvc.log 2>&1 &
  LOGSVC_PID=$!
  wait_log $R/logsvc.log logsvc_listening 120 || die "logsvc did not start"
}

# listening: how many times a bridge said it listens, in $R/bridge.log.
listening() {
  local n
  n=$(grep -c bridge_listening $R/bridge.log 2>/dev/null)
  echo "${n:-0}"
}

# wait_listening N: until $R/bridge.log has more than N bridge_listening lines.
wait_listening() {
  for _ in $(seq 1200); do
    [ "$(listening)" -gt "${1:-0}" ] && return 0
    kill -0 "$BRIDGE_PID" 2>/dev/null || die "bridge exited"
    sleep 0.1
  done
  die "bridge did not start in 120 s"
}

# start_bridge [LOGSVC]: a bridge on logsvc at LOGSVC (default $DMULOG_LOGSVC, else the
# one start_logsvc started) in the background ($BRIDGE_PID); returns once it listens.
start_bridge() {
  local before respawn=""
  before=$(listening)
  [ "${RESPAWN:-0}" = 1 ] && respawn=--respawn
  dmulog --log-format json bridge $respawn --logsvc "${1:-${DMULOG_LOGSVC:-unix:$SOCK}}" \
    --node "${DMULOG_NODE:-guest}" >> $R/bridge.log 2>&1 &
  BRIDGE_PID=$!
  wait_listening "$before"
}

# alive: yes when the bridge and logsvc started above both still run.
alive() { kill -0 "$BRIDGE_PID" "$LOGSVC_PID" 2>/dev/null && echo yes || echo no; }

# start_responder [ARGS...]: the trivial in-guest responder (harness/responder.py)
# in the background ($RESPONDER_PID), once it listens; its output goes to $R/responder.log.
start_responder() {
  rm -f /tmp/responder.ready
  python -m harness.responder "$@" --ready-file /tmp/responder.ready >> $R/responder.log 2>&1 &
  RESPONDER_PID=$!
  for _ in $(seq 1200); do
    [ -e /tmp/responder.ready ] && return 0
    kill -0 "$RESPONDER_PID" 2>/dev/null || die "responder exited"
    sleep 0.1
  done
  die "responder did not start in 120 s"
}

# ------------------------------------------------------------------- devices

# disks_up: the virtio disks of a host topology (harness/topology.py DISKS, in that
# order): L0 and L1 the legs, LD the log device.
disks_up() {
  modprobe -d "$DMULOG_MODPROBE_BASE" virtio_blk || die "modprobe virtio_blk"
  L0=/dev/vda L1=/dev/vdb LD=/dev/vdc
  for _ in $(seq 100); do [ -b $L1 ] && [ -b $LD ] && break; sleep 0.1; done
  [ -b $L1 ] && [ -b $LD ] || die "no virtio disks"
}

# net_up: the network card of a host topology, whose guestfwd reaches the host logsvc.
net_up() {
  modprobe -q -d "$DMULOG_MODPROBE_BASE" -a failover net_failover virtio_net
  for _ in $(seq 100); do [ -d /sys/class/net/eth0 ] && break; sleep 0.1; done
  ip link set eth0 up || die "eth0 up"
  ip addr add 10.0.2.15/24 dev eth0 || die "eth0 address"
}

# shared_mirror SECONDS: one node of a host topology with several nodes on one mirror:
# its kernel log streamed to $R/kmsg.txt (a killed node saves no dmesg), disks and
# network up, its bridge, and the dmulog mirror m of $UUID ($SECTORS sectors, $REGION
# per region) on the shared legs, created and given SECONDS to be in sync. Notes
# node_index, boot_id, create_rc, settled and status.
shared_mirror() {
  dmesg -w > $R/kmsg.txt 2>&1 &
  disks_up
  net_up
  note node_index "$DMULOG_NODE_INDEX"
  note boot_id "$(cat /proc/sys/kernel/random/boot_id)"
  start_bridge
  $T dmsetup create m --table "$(mirror_table $SECTORS "$(log_words $UUID dmulog $REGION)" "$L0 0 $L1 0")"
  note create_rc $?
  dmsetup mknodes m
  settle m "$1"; note settled $?
  note status "$(dmsetup status m)"
}

# leg FILE SIZE [random]: a sparse file (random content if asked) behind a loop device; prints the device.
leg() {
  rm -f "$1"; truncate -s "$2" "$1"
  [ "${3:-}" = random ] && head -c "$2" /dev/urandom > "$1"
  losetup -f --show "$1"
}

# make_legs: loop devices L0 L1 (legs of $SECTORS sectors) and LD (a 1 MiB log device) on /tmp files.
make_legs() {
  L0=$(leg /tmp/leg0 $(( SECTORS * 512 ))); L1=$(leg /tmp/leg1 $(( SECTORS * 512 ))); LD=$(leg /tmp/logdev 1M)
}

# zero_leg NAME SECTORS: a dm-zero device (reads zeros, drops writes) of any size; prints its path.
zero_leg() {
  modprobe -q -d "$DMULOG_MODPROBE_BASE" dm_zero
  dmsetup create "$1" --table "0 $2 zero" && dmsetup mknodes "$1" && echo "/dev/mapper/$1"
}

# devno PATH: decimal major:minor of a block device node.
devno() { printf '%d:%d' "0x$(stat -L -c %t "$1")" "0x$(stat -L -c %T "$1")"; }

# ------------------------------------------------------------------- mirrors

# log_words UUID TYPE REGION [INTEGRATED [LOGDEV]]: the words of a userspace log;
# INTEGRATED 1 adds integrated_flush, and clustered-disk takes LOGDEV.
log_words() {
  local flush=""
  [ "${4:-0}" = 1 ] && flush="integrated_flush "
  case "$2" in
    clustered-disk) echo "$1 ${flush}$2 ${5:?clustered-disk needs a log device} $3" ;;
    *) echo "$1 ${flush}$2 $3" ;;
  esac
}

# userspace_log "WORDS": the log part of a mirror table; its argc counts the words.
userspace_log() { echo "userspace $(echo $1 | wc -w) $1"; }

# mirror_table SECTORS "LOG WORDS" "LEGS": a two-leg mirror table with a userspace log.
mirror_table() { echo "0 $1 mirror $(userspace_log "$2") 2 $3"; }

# sync_of NAME: the "N/M" field of dmsetup status.
sync_of() { timeout 30 dmsetup status "$1" | awk '{print $7}'; }

# settle NAME SECONDS: wait until the mirror reports N/N; status 1 if it never does.
settle() {
  local s
  for _ in $(seq $(( $2 * 2 ))); do
    s=$(sync_of "$1")
    [ -n "$s" ] && [ "${s%/*}" = "${s#*/}" ] && return 0
    sleep 0.5
  done
  return 1
}

# wait_sync NAME SECONDS: until the mirror reports N/N, or die.
wait_sync() { settle "$1" "$2" || die "$1 not in sync after $2 s (at $(sync_of "$1"))"; }

# bdwrite NAME BS COUNT SEEK: O_DIRECT random data; prints dd's exit code.
bdwrite() { $T dd if=/dev/urandom of="/dev/mapper/$1" bs="$2" count="$3" seek="$4" oflag=direct status=none; echo $?; }

# write NAME BS COUNT SEEK: O_DIRECT random data, or die.
write() { [ "$(bdwrite "$@")" = 0 ] || die "write to $1 failed"; }

# same FILE FILE [BYTES [OFFSET]]: yes when the ranges hold the same bytes.
same() { cmp -s ${3:+-n $3} ${4:+-i $4} "$1" "$2" && echo yes || echo no; }

# legs_identical: yes when the legs L0 and L1 hold the same bytes.
legs_identical() { same "$L0" "$L1"; }
