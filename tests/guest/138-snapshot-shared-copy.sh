#!/bin/bash
# snapshot-origin with several snapshots of one chunk size: a first write to
# an origin chunk reads it once and copies it to all of them in one kcopyd
# job (upstream reads it once per snapshot); a snapshot of another chunk
# size copies on its own. Reads of the origin's device are counted (C
# dm-snapshot running the same write shows the count upstream needs), and
# every device's bytes are checked. Then snapshots are removed while origin
# writes copy chunks to them: no hang, and the others keep their data.
# core
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
work=$(mktemp -d)
osize=32768 # origin: 16 MiB
csize=16384 # COW devices: 8 MiB

random_file "$work/orig" $((osize * 512))
random_file "$work/w1" 65536
random_file "$work/w2" 4096

# build P ORIGIN-TARGET SNAPSHOT-TARGET DISK2-OFFSET: the origin, three
# snapshots of chunk 8 and one of chunk 16, named with prefix P.
build() {
	local p=$1 ot=$2 st=$3 o2=$4 i
	dmsetup create ${p}base --table "0 $osize linear $DISK1 0" &&
		put "$work/orig" /dev/mapper/${p}base 0 &&
		dmsetup create ${p}origin --table "0 $osize $ot /dev/mapper/${p}base" || return 1
	for i in 1 2 3 4; do
		local chunk=8
		((i == 4)) && chunk=16
		dmsetup create ${p}cow$i --table "0 $csize linear $DISK2 $((o2 + (i - 1) * csize))" &&
			zero_header /dev/mapper/${p}cow$i &&
			dmsetup create ${p}snap$i \
				--table "0 $osize $st /dev/mapper/${p}base /dev/mapper/${p}cow$i P $chunk" || return 1
	done
	reorigin $p
}
# reads_for_write P: the origin device's reads while a 64 KiB write to P's
# origin copies its chunks.
reads_for_write() {
	local p=$1 before
	before=$(dm_reads ${p}base)
	put "$work/w1" /dev/mapper/${p}origin 1048576 || return 1
	echo $(($(dm_reads ${p}base) - before))
}

cp "$work/orig" "$work/exp"
patch "$work/exp" "$work/w1" 1048576

require "build the C stack" build c- snapshot-origin snapshot $((4 * csize))
# Sixteen 4 KiB chunks for each chunk-8 snapshot, eight 8 KiB ones for the
# other: upstream reads every chunk once per snapshot.
check_eq "C reads each chunk once per snapshot" 56 "$(reads_for_write c-)"
dmsetup remove c-origin c-snap1 c-snap2 c-snap3 c-snap4 c-cow1 c-cow2 c-cow3 c-cow4 c-base

require "build the dm-rs stack" build rs- rs-snap-origin rs-snapshot 0
check_match "origin is served by dm-rs" "^0 $osize rs-snap-origin " "$(dmsetup table rs-origin)"
check_eq "dm-rs reads each chunk once for the three chunk-8 snapshots" 24 "$(reads_for_write rs-)"
check "the origin has the write" same /dev/mapper/rs-origin "$work/exp"
for i in 1 2 3 4; do
	check "snapshot $i keeps the original bytes" same /dev/mapper/rs-snap$i "$work/orig"
done
s1=$(status_of rs-snap1)
check_eq "the chunk-8 snapshots used the same COW space" "$s1 $s1" \
	"$(status_of rs-snap2) $(status_of rs-snap3)"
check_match "the chunk-16 snapshot has its 8 chunks" '^[0-9]+/[0-9]+ [0-9]+$' "$(status_of rs-snap4)"

# Origin writes to fresh chunks while snapshots 2 and 4 go away.
writer() {
	local i
	for ((i = 0; i < 512; i++)); do
		put "$work/w2" /dev/mapper/rs-origin $((4 * 1048576 + i * 8192)) || return 1
	done
}
for ((i = 0; i < 512; i++)); do
	patch "$work/exp" "$work/w2" $((4 * 1048576 + i * 8192))
done
writer &
wpid=$!
sleep 1
check "the origin writes are still running" kill -0 $wpid
check "snapshot 2 is removed during origin writes" dmsetup remove rs-snap2
check "snapshot 4 is removed during origin writes" dmsetup remove rs-snap4
wait $wpid
check_eq "the origin writes complete" 0 "$?"
check "the origin has every write" same /dev/mapper/rs-origin "$work/exp"
check "snapshot 1 keeps the original bytes" same /dev/mapper/rs-snap1 "$work/orig"
check "snapshot 3 keeps the original bytes" same /dev/mapper/rs-snap3 "$work/orig"
check_eq "snapshots 1 and 3 still share their copies" "$(status_of rs-snap1)" "$(status_of rs-snap3)"
check "snapshot 1 reloads from its COW device" \
	bash -c "dmsetup suspend rs-origin && dmsetup remove rs-snap1 &&
		dmsetup create rs-snap1 --table '0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cow1 P 8' &&
		dmsetup resume rs-origin"
check "and still has the original bytes" same /dev/mapper/rs-snap1 "$work/orig"

dmsetup remove_all
check "dm_rs unloads" rmmod dm_rs
rm -rf "$work"
done_testing
