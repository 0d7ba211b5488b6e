#!/bin/bash
# The lifecycle boot of tests/kernel/test_mirror.py: a mirror of each log type
# created, resynced, written, suspended and resumed, reloaded, written again and
# removed on the whole stack in the guest; and a second log server refused.
. harness/guest/lib.sh
start_logsvc
# Another userspace log server (here the trivial responder) already listens: refuse.
start_responder
dmulog bridge --logsvc "unix:$SOCK" > $R/refused-other.txt 2>&1; note refused_other_rc $?
kill $RESPONDER_PID; wait $RESPONDER_PID
start_bridge
dmulog bridge --logsvc "unix:$SOCK" > $R/refused-second.txt 2>&1; note refused_second_rc $?
make_legs
for TYPE in clustered-core clustered-disk dmulog; do
  UUID="dmulog-e2e-$TYPE"
  TABLE=$(mirror_table $SECTORS "$(log_words $UUID $TYPE $REGION 0 $LD)" "$L0 0 $L1 0")
  M="m-$TYPE"
  $T dmsetup create $M --table "$TABLE" || die "create $TYPE"
  dmsetup mknodes $M
  wait_sync $M 180
  note "$TYPE.initial_sync" "$(sync_of $M)"
  write $M 4k 64 100            # 256 KiB of 4 KiB writes
  write $M 1M 4 16              # 4 MiB sequential
  note "$TYPE.status" "$(dmsetup status $M)"
  note "$TYPE.table" "$(dmsetup table $M)"
  note "$TYPE.deps" "$(dmsetup deps $M | sed 's/.*: //')"
  $T dmsetup suspend $M || die "suspend $TYPE"
  $T dmsetup resume $M || die "resume $TYPE"
  wait_sync $M 180
  note "$TYPE.after_resume" "$(dmsetup status $M)"
  $T dmsetup load $M --table "$TABLE" || die "load $TYPE"
  $T dmsetup resume $M || die "reload $TYPE"
  wait_sync $M 180
  write $M 4k 32 3000
  note "$TYPE.after_reload" "$(dmsetup status $M)"
  dmulog status "$UUID" --logsvc "unix:$SOCK" > $R/$TYPE.dmulog-status || die "dmulog status $TYPE"
  $T dmsetup remove $M || die "remove $TYPE"
  note "$TYPE.legs_identical" "$(legs_identical)"
done
dmulog status --logsvc "unix:$SOCK" > $R/list.txt
kill -USR1 $BRIDGE_PID
wait_log $R/bridge.log request_counts 60 || die "no request counts from the bridge"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
note done yes
