# Shell helpers of the conformance tests (tests/kernel/test_conformance.py), on
# top of stack.sh: legs of any size, tables with the right argument count, and
# checks that do not end the script, so that one failing step still lets the
# others run and report.
. tests/kernel/sh/stack.sh
REDIS="redis-cli -s /tmp/dmulog-state/redis.sock"
# devno PATH: decimal major:minor of a block device node.
devno() { printf '%d:%d' "0x$(stat -L -c %t "$1")" "0x$(stat -L -c %T "$1")"; }
# leg FILE SIZE [random]: a sparse file (random content if asked) behind a loop device.
leg() {
  rm -f "$1"; truncate -s "$2" "$1"
  [ "${3:-}" = random ] && head -c "$2" /dev/urandom > "$1"
  losetup -f --show "$1"
}
# mirror_table SECTORS "LOG WORDS" "LEGS": a userspace-log mirror table; argc counts the log words.
mirror_table() { echo "0 $1 mirror userspace $(echo $2 | wc -w) $2 2 $3"; }
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
# same FILE FILE [BYTES [OFFSET]]: yes when the ranges hold the same bytes.
same() { cmp -s ${3:+-n $3} ${4:+-i $4} "$1" "$2" && echo yes || echo no; }
# bdwrite NAME BS COUNT SEEK: O_DIRECT random data; prints dd's exit code.
bdwrite() { $T dd if=/dev/urandom of="/dev/mapper/$1" bs="$2" count="$3" seek="$4" oflag=direct status=none; echo $?; }
# zero_leg NAME SECTORS: a dm-zero device (reads zeros, drops writes) of any size; prints its path.
zero_leg() {
  modprobe -q -d "$DMULOG_MODPROBE_BASE" dm_zero
  dmsetup create "$1" --table "0 $2 zero" && dmsetup mknodes "$1" && echo "/dev/mapper/$1"
}
alive() { kill -0 "$BRIDGE_PID" "$LOGSVC_PID" 2>/dev/null && echo yes || echo no; }
