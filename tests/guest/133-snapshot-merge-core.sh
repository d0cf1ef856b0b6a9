#!/bin/bash
# core
# The snapshot family's locking on the debug kernel (lockdep, KASAN), kept
# short: a snapshot read while an origin write copies its chunk, a
# persistent snapshot's exceptions handed over to a reloaded table, and
# merged back into its origin through snapshot-merge while the origin is
# written and another snapshot of it first takes copies of what the merge
# overwrites; the data checked at each step. 131-snapshot-merge has the full
# scenarios.
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
work=$(mktemp -d)
osize=2048 # origin: 1 MiB
csize=2048

random_file "$work/orig" $((osize * 512))
random_file "$work/w1" 65536
random_file "$work/w2" 4096
dmsetup create rs-base --table "0 $osize linear $DISK1 0"
dmsetup create rs-cowp --table "0 $csize linear $DISK2 0"
put "$work/orig" /dev/mapper/rs-base 0
zero_header /dev/mapper/rs-cowp
dmsetup create rs-origin --table "0 $osize rs-snap-origin /dev/mapper/rs-base"
require "a persistent snapshot" \
	dmsetup create rs-snapp --table "0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cowp P 8"
reorigin rs-
put "$work/w1" /dev/mapper/rs-origin 0 &
writer=$!
dd if=/dev/mapper/rs-snapp of="$work/r" bs=4096 count=16 iflag=direct status=none
wait $writer
check "a snapshot read beside the origin write sees the old data" \
	cmp "$work/r" <(head -c 65536 "$work/orig")
cp "$work/orig" "$work/exp"
patch "$work/exp" "$work/w2" 131072
check "a snapshot write" put "$work/w2" /dev/mapper/rs-snapp 131072
reload() {
	local t
	t=$(dmsetup table rs-snapp) && dmsetup load rs-snapp --table "$t" &&
		dmsetup suspend rs-snapp && dmsetup resume rs-snapp
}
check "reload the snapshot (handover)" reload
check "the reloaded snapshot has its data" same /dev/mapper/rs-snapp "$work/exp"
start_merge() {
	dmsetup suspend rs-snapp && dmsetup suspend rs-origin &&
		dmsetup load rs-origin --table "0 $osize rs-snap-merge /dev/mapper/rs-base /dev/mapper/rs-cowp P 8" &&
		dmsetup resume rs-origin && dmsetup remove rs-snapp
}
# A second snapshot, taken just before the merge, has none of the chunks
# the merge overwrites: the merge waits for their copies to it first.
cp "$work/orig" "$work/pre"
patch "$work/pre" "$work/w1" 0
dmsetup create rs-cown --table "0 $csize linear $DISK2 $csize"
require "a transient snapshot (8 KiB chunks) of the origin before the merge" \
	dmsetup create rs-snapn --table "0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cown N 16"
check "merge it (as lvm2 does)" start_merge
check "write to the merging origin" put "$work/w2" /dev/mapper/rs-origin 4096
patch "$work/exp" "$work/w2" 4096
merged() {
	local i
	for ((i = 0; i < 600; i++)); do
		[[ $(status_of rs-origin) == "16/$csize 16" ]] && return 0
		sleep 0.5
	done
	return 1
}
check "the merge completes" merged
check "the origin holds the snapshot's data and the new write" same /dev/mapper/rs-base "$work/exp"
check "the other snapshot still reads the origin as it was before the merge" same /dev/mapper/rs-snapn "$work/pre"
dmsetup remove_all
check "dm_rs unloads" rmmod dm_rs
rm -rf "$work"
done_testing
