#!/bin/bash
# Writable snapshots in a shared exception store through a power cut (run
# by scripts/crash-test). Boot 1: an origin filled with a base pattern,
# snapshots 0 and 1 in one shared store (8 KiB chunks); rounds of writes
# made durable by fsync (a flush) or O_DSYNC: 32 KiB to the origin (one
# copy per chunk shared by both snapshots), 12 KiB to snapshot 1 inside
# that range starting mid-chunk (it copies the shared chunks to its own
# first, keeping the copied halves), 32 KiB to snapshot 0 elsewhere (its
# own copies of the origin); each round logged once durable, and the guest
# is reset in the middle of round 13 (snapshot writes only). Boot 2: both snapshots reopen from
# the COW device, valid; every logged write is where it belongs, the rest
# reads the base pattern, and all three devices take new writes.
. "$(dirname "$0")/../guest/thin-lib.sh"
. "$(dirname "$0")/crash-lib.sh"
blocks=4096 # origin: 16 MiB of 4 KiB blocks
span=8      # 4 KiB blocks per round on the origin
own=2048    # where snapshot 0's own writes go

snap_up() {
	local id
	for id in 0 1; do
		dmsetup create ssnap$id --table "0 $((blocks * 8)) rs-snapshot /dev/mapper/sorig shared 3 /dev/mapper/scow 16 $id" || return 1
	done
	dmsetup create sorigin --table "0 $((blocks * 8)) rs-snap-origin /dev/mapper/sorig"
}
# expect TAG FIRST_ROUND LAST_ROUND BASE_AT: rounds' ranges of TAG, based at block BASE_AT.
expect() {
	local r
	for ((r = $2; r <= $3; r++)); do pattern "$1$r" $(($4 + (r - 1) * span)) $span; done
}
# expect1 LAST: what snapshot 1 reads over the first LAST rounds' range.
expect1() {
	local r o
	for ((r = 1; r <= $1; r++)); do
		o=$(((r - 1) * span))
		pattern base $o 1
		pattern "t$r" $((o + 1)) 3
		pattern base $((o + 4)) 4
	done
}
# reads DEV FIRST COUNT EXPECTED-CMD...: COUNT blocks at FIRST read as the command prints.
reads() {
	local dev=$1 first=$2 count=$3
	shift 3
	cmp <("$@") <(dd if="$dev" bs=4K skip="$first" count="$count" iflag=direct status=none)
}

dm_reset
require "C dm_snapshot is not loaded" test ! -d /sys/module/dm_snapshot
require "load dm-rs snapshot (prefix=rs-)" modprobe dm_rs prefix=rs- targets=snapshot
require "origin and COW slices" all_of "slice sorig $DISK1 0 16" "slice scow $DISK2 0 16"
if [[ $CRASH_PHASE == crash ]]; then
	require "fill the origin with the base pattern" pwrite /dev/mapper/sorig base 0 $blocks 64
	dd if=/dev/zero of=/dev/mapper/scow bs=4K count=1 oflag=direct status=none
	require "shared snapshots 0 and 1 and the origin" snap_up
	for ((r = 1; r <= 12; r++)); do
		o=$(((r - 1) * span)) s=$((own + (r - 1) * span))
		if ((r % 2)); then
			require "round $r: O_DSYNC writes" all_of "dsync_write /dev/mapper/sorigin o$r $o $span" \
				"dsync_write /dev/mapper/ssnap1 t$r $((o + 1)) 3" "dsync_write /dev/mapper/ssnap0 s$r $s $span"
		else
			require "round $r: writes, each fsynced" all_of "fsync_write /dev/mapper/sorigin o$r $o $span" \
				"fsync_write /dev/mapper/ssnap1 t$r $((o + 1)) 3" "fsync_write /dev/mapper/ssnap0 s$r $s $span"
		fi
		durable round $r
	done
	# Snapshot writes only: no origin write's commit makes up for a
	# snapshot write released before its own commit.
	crash_now all_of "pwrite /dev/mapper/ssnap1 t13 $((12 * span + 1)) 3" \
		"pwrite /dev/mapper/ssnap0 s13 $((own + 12 * span)) $span"
fi

# Boot 2.
last=$(rounds_done)
check_eq "boot 1 logged 12 rounds" 12 "$last"
require "the snapshots reopen from the COW device, the origin over them" snap_up
check_match "served by dm_rs" '^[1-9][0-9]*$' "$(module_refcnt dm_rs)"
for id in 0 1; do
	check_match "snapshot $id is valid" '^0 [0-9]+ rs-snapshot [0-9]+/[0-9]+ [0-9]+$' "$(dmsetup status ssnap$id)"
done
check "the origin holds every logged round" reads /dev/mapper/sorigin 0 $((last * span)) expect o 1 "$last" 0
check "the origin's untouched part holds the base pattern" \
	reads /dev/mapper/sorigin $(((last + 1) * span)) $((blocks - (last + 1) * span)) pattern base $(((last + 1) * span)) $((blocks - (last + 1) * span))
check "snapshot 0 reads the base pattern where the origin changed" \
	reads /dev/mapper/ssnap0 0 $((last * span)) pattern base 0 $((last * span))
check "snapshot 0 holds its own logged writes" reads /dev/mapper/ssnap0 $own $((last * span)) expect s 1 "$last" $own
check "snapshot 1 holds its logged writes over the base pattern" reads /dev/mapper/ssnap1 0 $((last * span)) expect1 "$last"
check "snapshot 1 reads the base pattern beyond them" \
	reads /dev/mapper/ssnap1 $own $((last * span)) pattern base $own $((last * span))
check "the origin and the snapshots take new writes" all_of \
	"pwrite /dev/mapper/sorigin new $((own - span)) $span" "pverify /dev/mapper/sorigin new $((own - span)) $span" \
	"pverify /dev/mapper/ssnap0 base $((own - span)) $span" "pverify /dev/mapper/ssnap1 base $((own - span)) $span" \
	"pwrite /dev/mapper/ssnap1 snew $((blocks - span)) $span" "pverify /dev/mapper/ssnap1 snew $((blocks - span)) $span"
check "remove origin and snapshots" dmsetup remove sorigin ssnap0 ssnap1
check "dm_rs unloads" unload_modules dm_rs
dm_reset
done_testing
