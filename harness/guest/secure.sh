#!/bin/bash
# The boot of tests/kernel/test_secure.py: the bridge and logsvc in the guest speak mTLS,
# the bridge's certificate is node "guest" of tenant "kernel.example" (the SPIFFE trust
# domain), and the policy gives that tenant a quota of one log. The host made the
# certificates and the policy in /results/pki (harness/certs.py).
#   1. a mirror on the tenant's first log: resyncs, takes writes, both legs identical;
#   2. a second mirror, whose log would be the tenant's second: its table load fails,
#      answered at once (the bridge does not retry a capacity quota);
#   3. a bridge started as another node with the same certificate: logsvc refuses its
#      CTR (PERMISSION_DENIED) and the table load fails.
. harness/guest/lib.sh
P=$R/pki
TLS="--tls-key $P/guest.key --tls-ca $P/ca.crt"
dmesg -w > $R/kmsg.txt 2>&1 &
dmulog --log-format json logsvc --listen "unix:$SOCK" --state-dir /tmp/dmulog-state --tls-cert $P/logsvc.crt \
  --tls-key $P/logsvc.key --tls-ca $P/ca.crt --auth-policy $P/policy.toml >> $R/logsvc.log 2>&1 &
LOGSVC_PID=$!
wait_log $R/logsvc.log logsvc_listening 120 || die "logsvc did not start"
secure_bridge() {
  local before
  before=$(listening)
  dmulog --log-format json bridge --logsvc "unix:$SOCK" --node "$1" --tls-cert $P/guest.crt $TLS \
    --tls-server-name logsvc.dmulog >> $R/bridge.log 2>&1 &
  BRIDGE_PID=$!
  wait_listening "$before"
}
secure_bridge guest
make_legs
$T dmsetup create m1 --table "$(mirror_table $SECTORS "$(log_words secure-1 dmulog $REGION)" "$L0 0 $L1 0")" \
  || die "create m1"
dmsetup mknodes m1
wait_sync m1 180
write m1 4k 16 100
note m1_status "$(dmsetup status m1)"
start=$SECONDS
$T dmsetup create m2 --table "$(mirror_table $SECTORS "$(log_words secure-2 dmulog $REGION)" "$L0 0 $L1 0")" \
  > $R/m2.txt 2>&1
note m2_rc $?
note m2_seconds $(( SECONDS - start ))
note m2_error "$(tr '\n' ' ' < $R/m2.txt)"
sync
note legs_identical "$(legs_identical)"
$T dmsetup remove m1; note remove_rc $?
kill $BRIDGE_PID; wait $BRIDGE_PID
secure_bridge impostor
$T dmsetup create m3 --table "$(mirror_table $SECTORS "$(log_words secure-1 dmulog $REGION)" "$L0 0 $L1 0")" \
  > $R/m3.txt 2>&1
note m3_rc $?
note m3_error "$(tr '\n' ' ' < $R/m3.txt)"
kill $BRIDGE_PID $LOGSVC_PID; wait $BRIDGE_PID $LOGSVC_PID
note done yes
