#!/bin/bash
# tests/kernel/test_harness.py: the trivial responder serves a two-leg mirror that
# is created, written, queried and removed. The last three lines of output are the
# mirror's status and the md5sums of both legs.
STEP_TIMEOUT=30
. harness/guest/lib.sh
start_responder
L0=$(leg /tmp/leg0 8M); L1=$(leg /tmp/leg1 8M)
$T dmsetup create m --table "$(mirror_table 16384 "$(log_words test-harness clustered-core 1024)" "$L0 0 $L1 0")" \
  || die "create"
dmsetup mknodes m
write m 64k 32 0
$T dmsetup status m
$T dmsetup remove m || die "remove"
for leg in "$L0" "$L1"; do $T dd if="$leg" iflag=direct bs=1M status=none | md5sum; done
kill "$RESPONDER_PID"; wait "$RESPONDER_PID"
