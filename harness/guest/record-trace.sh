#!/bin/bash
# Guest side of bench/record_trace.py: the trivial responder, capturing every request
# datagram in /results/capture, serves a 64 MiB mirror while fio runs a mixed workload.
#
# Environment (set by bench/record_trace.py):
#   LOG_WORDS        the userspace log's words (UUID, options, type, region size...)
#   RESPONDER_ARGS   more responder arguments (--resync: the log starts out of sync)
STEP_TIMEOUT=60
. harness/guest/lib.sh
start_responder ${RESPONDER_ARGS:-} --capture /results/capture
L0=$(leg /tmp/leg0 64M); L1=$(leg /tmp/leg1 64M)
$T dmsetup create m --table "$(mirror_table 131072 "$LOG_WORDS" "$L0 0 $L1 0")" || exit 2
dmsetup mknodes m
settle m 300 || exit 6
timeout 300 fio --name=mixed --filename=/dev/mapper/m --direct=1 --ioengine=psync --rw=randrw --rwmixwrite=70 \
  --bs=4k --size=64M --number_ios=600 --randseed=42 --output=/results/fio-rand.txt || exit 3
timeout 300 fio --name=seq --filename=/dev/mapper/m --direct=1 --ioengine=psync --rw=write --bs=1M \
  --size=16M --offset=32M --output=/results/fio-seq.txt || exit 4
sleep 4
$T dmsetup remove m || exit 5
kill $RESPONDER_PID; wait $RESPONDER_PID
