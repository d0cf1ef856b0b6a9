#!/bin/bash
# A persistent snapshot through a power cut (run by scripts/crash-test).
# Boot 1: an origin filled with a base pattern and a persistent snapshot
# (8 KiB chunks); rounds of 32 KiB writes to the origin (each copies four
# chunks to the COW device first) and to the snapshot itself, made durable
# by fsync (a flush) or O_DSYNC; each round is logged once durable and
# right after round 12 the guest is reset in the middle of round 13. Boot 2: the snapshot
# reloads from its COW device (status valid), every logged origin write is
# on the origin, the snapshot still reads the base pattern where the origin
# changed and its own logged writes where it was written, and both take new
# writes. SNAP_IMPL=c runs it on C dm-snapshot (the oracle).
. "$(dirname "$0")/../guest/thin-lib.sh"
. "$(dirname "$0")/crash-lib.sh"
SNAP_IMPL=${SNAP_IMPL:-rs}
blocks=4096 # origin: 16 MiB of 4 KiB blocks
span=8      # 4 KiB blocks per round on each device
own=2048    # where the snapshot's own writes go
if [[ $SNAP_IMPL == rs ]]; then
	ORIGIN_TARGET=rs-snap-origin SNAP_TARGET=rs-snapshot SNAP_MODULE=dm_rs
else
	ORIGIN_TARGET=snapshot-origin SNAP_TARGET=snapshot SNAP_MODULE=dm_snapshot
fi

snap_up() {
	dmsetup create ssnap --table "0 $((blocks * 8)) $SNAP_TARGET /dev/mapper/sorig /dev/mapper/scow P 16" &&
		dmsetup create sorigin --table "0 $((blocks * 8)) $ORIGIN_TARGET /dev/mapper/sorig"
}
# expect TAG FIRST_ROUND LAST_ROUND BASE_AT: rounds' ranges of TAG, based at block BASE_AT.
expect() {
	local r
	for ((r = $2; r <= $3; r++)); do pattern "$1$r" $(($4 + (r - 1) * span)) $span; done
}
# reads DEV FIRST COUNT EXPECTED-CMD...: COUNT blocks at FIRST read as the command prints.
reads() {
	local dev=$1 first=$2 count=$3
	shift 3
	cmp <("$@") <(dd if="$dev" bs=4K skip="$first" count="$count" iflag=direct status=none)
}

dm_reset
if [[ $SNAP_IMPL == rs ]]; then
	require "C dm_snapshot is not loaded" test ! -d /sys/module/dm_snapshot
	require "load dm-rs snapshot (prefix=rs-)" modprobe dm_rs prefix=rs- targets=snapshot
else
	require "load C dm_snapshot" modprobe dm_snapshot
fi
require "origin and COW slices" all_of "slice sorig $DISK1 0 16" "slice scow $DISK2 0 16"
if [[ $CRASH_PHASE == crash ]]; then
	require "fill the origin with the base pattern" pwrite /dev/mapper/sorig base 0 $blocks 64
	dd if=/dev/zero of=/dev/mapper/scow bs=4K count=1 oflag=direct status=none
	require "persistent snapshot and origin" snap_up
	for ((r = 1; r <= 12; r++)); do
		o=$(((r - 1) * span)) s=$((own + (r - 1) * span))
		if ((r % 2)); then
			require "round $r: O_DSYNC writes to origin and snapshot" all_of \
				"dsync_write /dev/mapper/sorigin o$r $o $span" "dsync_write /dev/mapper/ssnap s$r $s $span"
		else
			require "round $r: writes to origin and snapshot, each fsynced" all_of \
				"fsync_write /dev/mapper/sorigin o$r $o $span" "fsync_write /dev/mapper/ssnap s$r $s $span"
		fi
		durable round $r
	done
	crash_now pwrite /dev/mapper/sorigin o13 $((12 * span)) $span
fi

# Boot 2.
last=$(rounds_done)
check_eq "boot 1 logged 12 rounds" 12 "$last"
require "the snapshot reloads from its COW device, the origin over it" snap_up
check_match "served by $SNAP_MODULE" '^[1-9][0-9]*$' "$(module_refcnt "$SNAP_MODULE")"
check_match "the snapshot is valid" '^0 [0-9]+ [a-z-]+ [0-9]+/[0-9]+ [0-9]+$' "$(dmsetup status ssnap)"
check "the origin holds every logged round" reads /dev/mapper/sorigin 0 $((last * span)) expect o 1 "$last" 0
check "the origin's untouched part holds the base pattern" \
	reads /dev/mapper/sorigin $(((last + 1) * span)) $((blocks - (last + 1) * span)) pattern base $(((last + 1) * span)) $((blocks - (last + 1) * span))
check "the snapshot reads the base pattern where the origin changed" \
	reads /dev/mapper/ssnap 0 $((last * span)) pattern base 0 $((last * span))
check "the snapshot holds its own logged writes" reads /dev/mapper/ssnap $own $((last * span)) expect s 1 "$last" $own
check "the origin and the snapshot take new writes" all_of \
	"pwrite /dev/mapper/sorigin new $((own - span)) $span" "pverify /dev/mapper/sorigin new $((own - span)) $span" \
	"pverify /dev/mapper/ssnap base $((own - span)) $span" \
	"pwrite /dev/mapper/ssnap snew $((blocks - span)) $span" "pverify /dev/mapper/ssnap snew $((blocks - span)) $span"
check "remove origin and snapshot" dmsetup remove sorigin ssnap
check "$SNAP_MODULE unloads" unload_modules "$SNAP_MODULE"
dm_reset
done_testing
