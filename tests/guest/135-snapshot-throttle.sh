#!/bin/bash
# The limit on chunk copies in flight (dm_rs.snapshot_cow_threshold, as
# dm-snapshot's): while a snapshot has more copies in flight than the
# threshold, a write to its origin waits, even one that needs no copy, and
# goes on when a copy ends; the same write under the default threshold
# does not wait. Then many concurrent origin and snapshot writes with the
# threshold at 1, every device's bytes checked against the expected
# pattern.
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
modprobe dm_delay
work=$(mktemp -d)
osize=8192 # origin: 4 MiB
csize=8192 # COW devices: 4 MiB
param=/sys/module/dm_rs/parameters/snapshot_cow_threshold
delay_ms=5000

check_eq "dm_snapshot (C) is not loaded" missing "$(module_refcnt dm_snapshot)"
check_eq "snapshot_cow_threshold defaults to upstream's 2048" 2048 "$(cat $param)"

random_file "$work/orig" $((osize * 512))
random_file "$work/w0" 4096
random_file "$work/w1" 4096
random_file "$work/w2" 4096
dmsetup create rs-base --table "0 $osize linear $DISK1 0"
put "$work/orig" /dev/mapper/rs-base 0
# The COW device's writes take 5 s (dm-delay), so a copy stays in flight.
dmsetup create rs-cowlin --table "0 $csize linear $DISK2 0"
zero_header /dev/mapper/rs-cowlin
dmsetup create rs-cow --table "0 $csize delay /dev/mapper/rs-cowlin 0 0 /dev/mapper/rs-cowlin 0 $delay_ms"
dmsetup create rs-origin --table "0 $osize rs-snap-origin /dev/mapper/rs-base"
require "a persistent snapshot (4 KiB chunks) on the slow COW device" \
	dmsetup create rs-snap --table "0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cow P 8"
cp "$work/orig" "$work/exp"

# allocated: the sectors the snapshot's store has handed out.
allocated() { status_of rs-snap | cut -d/ -f1; }
# copy_started BEFORE: up to 10 s for an allocation past BEFORE.
copy_started() {
	local i
	for ((i = 0; i < 100; i++)); do
		(($(allocated) > $1)) && return 0
		sleep 0.1
	done
	return 1
}
# beside_copy CHUNK FILE DESC: while an origin write of FILE to CHUNK (4 KiB
# chunks) has its copy in flight, rewrites chunk 0 (needing no copy) and
# sets $ms to the milliseconds that took; then waits for the first write.
# Runs in this shell (not under check/require: the writer is its child).
beside_copy() {
	local before writer t0 t1
	before=$(allocated)
	put "$2" /dev/mapper/rs-origin $(($1 * 4096)) >/dev/null 2>&1 &
	writer=$!
	copy_started "$before"
	require "a copy in flight ($3)" test $? = 0
	t0=$(date +%s%N)
	put "$work/w0" /dev/mapper/rs-origin 0
	t1=$(date +%s%N)
	ms=$(((t1 - t0) / 1000000))
	wait $writer
	patch "$work/exp" "$2" $(($1 * 4096))
}

# Chunk 0 copied once: later writes to it need no copy.
put "$work/w0" /dev/mapper/rs-origin 0
patch "$work/exp" "$work/w0" 0

beside_copy 16 "$work/w1" "default threshold"
check "under the default threshold an origin write needing no copy goes on at once (${ms} ms)" test "$ms" -lt $((delay_ms / 2))
check "threshold set to 0" bash -c "echo 0 >$param"
beside_copy 32 "$work/w2" "threshold 0"
check "over the threshold the same write waits for the copy to end (${ms} ms)" test "$ms" -ge $((delay_ms / 2))
check "origin data" same /dev/mapper/rs-origin "$work/exp"
check "snapshot still reads the original data" same /dev/mapper/rs-snap "$work/orig"
dmsetup remove rs-snap rs-origin rs-cow rs-cowlin

# Many writers with the threshold at 1: writes park and come back, none is
# lost or misplaced. A fresh snapshot on an undelayed COW device.
echo 1 >$param
dmsetup create rs-cow2 --table "0 $csize linear $DISK2 $csize"
zero_header /dev/mapper/rs-cow2
put "$work/orig" /dev/mapper/rs-base 0
dmsetup create rs-origin --table "0 $osize rs-snap-origin /dev/mapper/rs-base"
dmsetup create rs-snap2 --table "0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cow2 P 16"
cp "$work/orig" "$work/oexp"
cp "$work/orig" "$work/sexp"
pids=()
for i in $(seq 0 11); do
	random_file "$work/o$i" 65536
	random_file "$work/s$i" 32768
	patch "$work/oexp" "$work/o$i" $((i * 131072))
	patch "$work/sexp" "$work/s$i" $((i * 131072 + 65536))
done
for i in $(seq 0 11); do
	put "$work/o$i" /dev/mapper/rs-origin $((i * 131072)) &
	pids+=($!)
	put "$work/s$i" /dev/mapper/rs-snap2 $((i * 131072 + 65536)) &
	pids+=($!)
done
ok=0
for p in "${pids[@]}"; do wait "$p" || ok=1; done
check "24 concurrent writers under threshold 1 all succeed" test $ok = 0
check "origin data after concurrent writes" same /dev/mapper/rs-origin "$work/oexp"
check "snapshot data after concurrent writes" same /dev/mapper/rs-snap2 "$work/sexp"
check_match "snapshot still valid" '^[0-9]+/[0-9]+ [0-9]+$' "$(status_of rs-snap2)"
echo 2048 >$param
check_match "dm-rs served the snapshot (rs-snapshot, registered only by dm_rs)" "^0 $osize rs-snapshot " "$(dmsetup table rs-snap2)"
dm_reset

done_testing
