#!/bin/bash
# The shared exception store (dm-rs only; no C counterpart upstream):
# snapshots 0, 1 and 5 of one origin on one COW device, taken at different
# times, some unloaded while the origin is written; writes to the origin
# and to the snapshots (own copies, copies shared by several snapshots,
# copies of the origin); every device checked against its expected image;
# every snapshot reloaded from the COW device; ES_DESTROY, a full COW
# device, ES_INVALIDATE; bad table lines refused with the module usable.
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
work=$(mktemp -d)
osize=16384 # origin: 8 MiB
csize=16384 # COW device: 8 MiB
fsize=1024  # the COW device that fills up: 512 KiB
MiB=1048576

check_eq "dm_snapshot (C) is not loaded" missing "$(module_refcnt dm_snapshot)"
check_match "dm-rs registered rs-snapshot" "rs-snapshot" "$(dmsetup targets)"

random_file "$work/orig" $((osize * 512))
for i in 1 2 3 4 5 6 7; do random_file "$work/w$i" 20480; done
random_file "$work/big" $((2 * MiB))

# snap NAME ID [COW]: a snapshot in the shared store, taken now (origin
# suspended meanwhile).
snap() {
	local cow=${3:-cow}
	dmsetup suspend origin &&
		dmsetup create "$1" --table "0 $osize rs-snapshot /dev/mapper/base shared 3 /dev/mapper/$cow 16 $2"
	local r=$?
	dmsetup resume origin
	return $r
}

setup() {
	dmsetup create base --table "0 $osize linear $DISK1 0" &&
		dmsetup create cow --table "0 $csize linear $DISK2 0" &&
		dmsetup create fcow --table "0 $fsize linear $DISK2 $csize" &&
		put "$work/orig" /dev/mapper/base 0 &&
		zero_header /dev/mapper/cow && zero_header /dev/mapper/fcow &&
		dmsetup create origin --table "0 $osize rs-snap-origin /dev/mapper/base"
}
require "origin and devices" setup
cp "$work/orig" "$work/exp-origin"

# Snapshot 0 of the original contents.
require "snapshot id 0" snap s0 0
check_match "snapshot served by dm-rs" "^0 $osize rs-snapshot " "$(dmsetup table s0)"
check_match "origin served by dm-rs" "^0 $osize rs-snap-origin " "$(dmsetup table origin)"
check_match "table line printed back" "^[0-9]+:[0-9]+ shared 3 [0-9]+:[0-9]+ 16 0$" "$(table_of s0)"
# 1024 chunks: 96 metadata blocks (48 chunks), nothing allocated yet.
check_eq "status: metadata only" "768/$csize 768" "$(status_of s0)"
cp "$work/orig" "$work/exp-s0"

# owrite FILE OFFSET / swrite DEV FILE OFFSET: a write and its effect.
owrite() { put "$1" /dev/mapper/origin "$2" && patch "$work/exp-origin" "$1" "$2"; }
swrite() { put "$2" "/dev/mapper/$1" "$3" && patch "$work/exp-$1" "$2" "$3"; }

require "origin write (copied for 0)" owrite "$work/w1" $MiB
require "snapshot id 1" snap s1 1
cp "$work/exp-origin" "$work/exp-s1"
require "origin write (copied once for 0 and 1)" owrite "$work/w2" 0
check_eq "one copy for both: 6 data chunks in all" "864/$csize 768" "$(status_of s0)"
require "snapshot 0 writes into the chunk it shares (copy, then its own)" swrite s0 "$work/w3" 512
require "snapshot 0 writes where it has no copy (copy of the origin)" swrite s0 "$work/w4" $((3 * MiB + 4096))
require "snapshot 1 writes into its chunk, now its own" swrite s1 "$work/w5" 8192
check "snapshot 0" same /dev/mapper/s0 "$work/exp-s0"
check "snapshot 1" same /dev/mapper/s1 "$work/exp-s1"

# Snapshot 1 unloaded: origin writes still copy for it.
require "remove snapshot 1" dmsetup remove s1
require "origin writes while snapshot 1 is not loaded" owrite "$work/w6" $((MiB + 8192))
require "a large origin write" owrite "$work/big" $((5 * MiB))
require "snapshot id 5" snap s5 5
cp "$work/exp-origin" "$work/exp-s5"
require "snapshot 5 writes" swrite s5 "$work/w7" $((5 * MiB + 512))
require "snapshot 1 loaded again" dmsetup create s1 --table "0 $osize rs-snapshot /dev/mapper/base shared 3 /dev/mapper/cow 16 1"
check "origin" same /dev/mapper/origin "$work/exp-origin"
check "base device" same /dev/mapper/base "$work/exp-origin"
for s in s0 s1 s5; do check "snapshot $s" same /dev/mapper/$s "$work/exp-$s"; done

# Every device reloaded: the store is read back from the COW device.
require "remove all snapshots" dmsetup remove s0 s1 s5
for s in "s0 0" "s1 1" "s5 5"; do
	set -- $s
	require "reload $1" dmsetup create "$1" --table "0 $osize rs-snapshot /dev/mapper/base shared 3 /dev/mapper/cow 16 $2"
done
for s in s0 s1 s5; do check "snapshot $s after reload" same /dev/mapper/$s "$work/exp-$s"; done
require "table reload of a live snapshot" eval "dmsetup reload s1 --table '0 $osize rs-snapshot /dev/mapper/base shared 3 /dev/mapper/cow 16 1' && dmsetup resume s1"
check "snapshot 1 after a table reload" same /dev/mapper/s1 "$work/exp-s1"

# Bad table lines: refused, the module stays usable.
bad() { ! dmsetup create bad --table "0 $osize rs-snapshot /dev/mapper/base $1" 2>/dev/null; }
check "id 64 refused" bad "shared 3 /dev/mapper/cow 16 64"
check "id -1 refused" bad "shared 3 /dev/mapper/cow 16 -1"
check "chunk size 12 refused" bad "shared 3 /dev/mapper/cow 12 2"
check "another chunk size than the store's refused" bad "shared 3 /dev/mapper/cow 32 2"
check "shared 2 refused" bad "shared 2 /dev/mapper/cow 16"
check "missing id refused" bad "shared 3 /dev/mapper/cow 16"
check "an id live on another device refused" bad "shared 3 /dev/mapper/cow 16 0"
check_match "snapshot-merge refused" "not supported with a shared exception store" "$(dmsetup create bad --table "0 $osize rs-snap-merge /dev/mapper/base shared 3 /dev/mapper/cow 16 0" 2>&1; dmesg | tail -5)"
dmsetup remove bad 2>/dev/null
check "snapshot 0 unaffected" same /dev/mapper/s0 "$work/exp-s0"

# ES_DESTROY: snapshot 5 leaves the store, its own chunks are freed.
before=$(status_of s0 | cut -d/ -f1)
check_fails "ES_DESTROY refused while the snapshot is live" dmsetup message s5 0 ES_DESTROY
check_eq "refused ES_DESTROY left it valid" "$before" "$(status_of s5 | cut -d/ -f1)"
require "suspend the snapshot to destroy" dmsetup suspend s5
require "ES_DESTROY" dmsetup message s5 0 ES_DESTROY
require "resume the destroyed snapshot" dmsetup resume s5
check_eq "destroyed snapshot is invalid" Invalid "$(status_of s5)"
after=$(status_of s0 | cut -d/ -f1)
check "its own chunk freed ($before -> $after)" test "$after" -lt "$before"
check_fails "destroyed snapshot reads fail" dd if=/dev/mapper/s5 of=/dev/null bs=4096 count=1 iflag=direct status=none
for s in s0 s1; do check "snapshot $s after ES_DESTROY" same /dev/mapper/$s "$work/exp-$s"; done
require "suspend and resume the destroyed snapshot" eval "dmsetup suspend s5 && dmsetup resume s5"
check_eq "it stays invalid" Invalid "$(status_of s5)"
dmsetup remove s5

# A full COW device: its snapshots go invalid, the origin and the other
# store's snapshots carry on.
require "snapshots on the small store" eval "snap f0 0 fcow && snap f1 1 fcow"
cp "$work/exp-origin" "$work/exp-f"
log_mark
require "origin writes fill the small store" owrite "$work/big" $((3 * MiB))
check_eq "full store: snapshot invalid" Invalid "$(status_of f0)"
check_eq "full store: the other invalid" Invalid "$(status_of f1)"
check_match "the kernel said why" "Unable to allocate exception" "$(dmesg_since_mark)"
check "origin carries on" same /dev/mapper/origin "$work/exp-origin"
for s in s0 s1; do check "snapshot $s unaffected" same /dev/mapper/$s "$work/exp-$s"; done
dmsetup remove f0 f1

# ES_INVALIDATE: the whole store goes invalid, the origin carries on.
require "ES_INVALIDATE" dmsetup message s0 0 ES_INVALIDATE
check_eq "snapshot 0 invalid" Invalid "$(status_of s0)"
check_eq "snapshot 1 invalid" Invalid "$(status_of s1)"
require "origin write after invalidation" owrite "$work/w1" $((7 * MiB))
check "origin" same /dev/mapper/origin "$work/exp-origin"
require "remove the devices" dmsetup remove s0 s1 origin fcow cow base
require "module unloads" modprobe -r dm_rs
rm -rf "$work"
done_testing
