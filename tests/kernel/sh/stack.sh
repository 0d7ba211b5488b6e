# Shell helpers for guest scripts: start the dmulog stack and drive mirrors.
# Sourced by the real-kernel tests and the demo; runs as root inside the guest,
# from the repository root, with DMULOG_VENV set to the project's virtualenv.
set -u -o pipefail
export PATH="$DMULOG_VENV/bin:$PATH"
R=/results
T="timeout 300"
SOCK=/tmp/logsvc.sock
SECTORS=${SECTORS:-65536}   # 32 MiB legs
REGION=${REGION:-1024}      # 512 KiB regions

die() { echo "FAILED: $*"; echo "$*" >> $R/failures; dmsetup table 2>&1; exit 1; }
note() { echo "$1=$2" >> $R/outcome; echo "-- [${SECONDS}s] $1=$2"; }

# wait_log FILE PATTERN SECONDS: wait until PATTERN shows up in FILE.
wait_log() {
  for _ in $(seq $(( $3 * 10 ))); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

start_logsvc() {
  dmulog --log-format json logsvc --listen "unix:$SOCK" --state-dir /tmp/dmulog-state >> $R/logsvc.log 2>&1 &
  LOGSVC_PID=$!
  wait_log $R/logsvc.log logsvc_listening 120 || die "logsvc did not start"
}

# start_bridge [LOGSVC]: a bridge on logsvc at LOGSVC (default: the one start_logsvc started).
start_bridge() {
  local before
  before=$(grep -c bridge_listening $R/bridge.log 2>/dev/null || true)
  dmulog --log-format json bridge --logsvc "${1:-unix:$SOCK}" --node guest >> $R/bridge.log 2>&1 &
  BRIDGE_PID=$!
  for _ in $(seq 1200); do
    [ "$(grep -c bridge_listening $R/bridge.log 2>/dev/null || true)" -gt "${before:-0}" ] && return 0
    kill -0 $BRIDGE_PID 2>/dev/null || die "bridge exited"
    sleep 0.1
  done
  die "bridge did not start"
}

# legs: four 32 MiB loop devices L0 L1 (legs) and LD (a small log device).
make_legs() {
  truncate -s $(( SECTORS * 512 )) /tmp/leg0 /tmp/leg1
  truncate -s 1M /tmp/logdev
  L0=$(losetup -f --show /tmp/leg0); L1=$(losetup -f --show /tmp/leg1); LD=$(losetup -f --show /tmp/logdev)
}

# sync_of NAME: the "N/M" field of dmsetup status.
sync_of() { dmsetup status "$1" | awk '{print $7}'; }

# wait_sync NAME SECONDS: until the mirror reports N/N.
wait_sync() {
  local s
  for _ in $(seq $(( $2 * 5 ))); do
    s=$(sync_of "$1")
    [ "${s%/*}" = "${s#*/}" ] && return 0
    sleep 0.2
  done
  die "$1 not in sync after $2 s (at $s)"
}

# write NAME BS COUNT SEEK: O_DIRECT random data.
write() {
  $T dd if=/dev/urandom of="/dev/mapper/$1" bs="$2" count="$3" seek="$4" oflag=direct status=none \
    || die "write to $1 failed"
}

legs_identical() { cmp -s "$L0" "$L1" && echo yes || echo no; }
