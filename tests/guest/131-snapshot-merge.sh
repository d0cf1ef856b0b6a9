#!/bin/bash
# snapshot: reads in flight to the origin tracked against the copies that
# overtake them; the exception handover between table loads (lvm2 reloads
# a live snapshot, N and P); snapshot-merge to completion while the origin
# is written, interrupted and resumed after a reload; every device's bytes
# checked against known patterns, status lines against C dm-snapshot's.
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
modprobe dm_delay
work=$(mktemp -d)
osize=16384 # origin: 8 MiB
csize=16384 # COW devices: 8 MiB

check_eq "dm_snapshot (C) is not loaded" missing "$(module_refcnt dm_snapshot)"

random_file "$work/orig" $((osize * 512))

# --- Reads of the snapshot in flight to the origin ------------------------
# The origin's reads are slowed down (dm-delay: reads 3 s, writes at once).
# An origin write to a chunk starts its copy (the persistent store's
# allocation shows in the status at once); a snapshot read of the chunk
# mapped while the copy runs goes to the origin and is still queued when
# the copy is committed and the origin write released. Unless the read is
# tracked and the commit waits for it, the write lands first and the
# snapshot reads the new data.
dmsetup create rs-tbase --table "0 $osize linear $DISK1 0"
put "$work/orig" /dev/mapper/rs-tbase 0
dmsetup create rs-tslow --table "0 $osize delay /dev/mapper/rs-tbase 0 3000 /dev/mapper/rs-tbase 0 0"
dmsetup create rs-tcow --table "0 $csize linear $DISK2 0"
zero_header /dev/mapper/rs-tcow
dmsetup create rs-torigin --table "0 $osize rs-snap-origin /dev/mapper/rs-tslow"
dmsetup create rs-tsnap --table "0 $osize rs-snapshot /dev/mapper/rs-tslow /dev/mapper/rs-tcow P 8"
# allocated DEV: the sectors a snapshot's store has handed out.
allocated() { status_of $1 | cut -d/ -f1; }
# copy_started DEV BEFORE: up to 10 s for an allocation past BEFORE.
copy_started() {
	local i
	for ((i = 0; i < 100; i++)); do
		(($(allocated $1) > $2)) && return 0
		sleep 0.1
	done
	return 1
}
random_file "$work/t1" 4096
for chunk in 3 40 700; do
	off=$((chunk * 4096))
	before=$(allocated rs-tsnap)
	put "$work/t1" /dev/mapper/rs-torigin $off &
	writer=$!
	check "origin write to chunk $chunk starts its copy" copy_started rs-tsnap "$before"
	sleep 0.3
	dd if=/dev/mapper/rs-tsnap of="$work/tread" bs=4096 skip=$chunk count=1 iflag=direct status=none
	wait $writer
	check "snapshot read of chunk $chunk racing its copy returns the old data" \
		cmp "$work/tread" <(dd if="$work/orig" bs=4096 skip=$chunk count=1 status=none)
done
check "the origin has the new data" cmp <(dd if=/dev/mapper/rs-torigin bs=4096 skip=700 count=1 iflag=direct status=none) "$work/t1"
dmsetup remove rs-tsnap rs-torigin rs-tslow rs-tcow rs-tbase

# --- Handover between table loads -----------------------------------------
# build P: base, COW devices, origin, a persistent (chunk 8) and a transient
# (chunk 16) snapshot, with prefix P and the given target names.
build() {
	local p=$1 ot=$2 st=$3 o1=$4 o2=$5
	dmsetup create ${p}base --table "0 $osize linear $DISK1 $o1" &&
		dmsetup create ${p}cowp --table "0 $csize linear $DISK2 $o2" &&
		dmsetup create ${p}cown --table "0 $csize linear $DISK2 $((o2 + csize))" &&
		put "$work/orig" /dev/mapper/${p}base 0 &&
		zero_header /dev/mapper/${p}cowp &&
		dmsetup create ${p}origin --table "0 $osize $ot /dev/mapper/${p}base" &&
		dmsetup create ${p}snapp --table "0 $osize $st /dev/mapper/${p}base /dev/mapper/${p}cowp P 8" &&
		dmsetup create ${p}snapn --table "0 $osize $st /dev/mapper/${p}base /dev/mapper/${p}cown N 16" &&
		reorigin $p
}
# reload P DEV: load DEV's own table again and switch to it, as lvm2 does
# (the new table takes the live one's exceptions over on resume).
reload() {
	local t
	t=$(dmsetup table $1$2) && dmsetup load $1$2 --table "$t" &&
		dmsetup suspend $1$2 && dmsetup resume $1$2
}
random_file "$work/w1" 1048576
random_file "$work/w2" 65536
random_file "$work/w3" 131072
random_file "$work/w4" 8192

require "build the dm-rs stack" build rs- rs-snap-origin rs-snapshot 0 0
check_match "snapshot is served by dm-rs" "^0 $osize rs-snapshot " "$(dmsetup table rs-snapp)"
put "$work/w1" /dev/mapper/rs-origin 1048576
put "$work/w2" /dev/mapper/rs-snapn $((3 * 1048576))
cp "$work/orig" "$work/exp-origin"
patch "$work/exp-origin" "$work/w1" 1048576
cp "$work/orig" "$work/exp-p"
cp "$work/orig" "$work/exp-n"
patch "$work/exp-n" "$work/w2" $((3 * 1048576))
before_p=$(status_of rs-snapp) before_n=$(status_of rs-snapn)

check_fails "a new table cannot take over from a live (not suspended) snapshot" \
	dmsetup create rs-other --table "0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cowp P 8"
check_match "with upstream's reason" "Unable to perform snapshot handover until source is suspended" "$(dmesg_since_start)"
dmsetup remove rs-other 2>/dev/null
check "reload the persistent snapshot" reload rs- snapp
check "reload the transient snapshot" reload rs- snapn
check_eq "persistent status unchanged by the handover" "$before_p" "$(status_of rs-snapp)"
check_eq "transient status unchanged by the handover" "$before_n" "$(status_of rs-snapn)"
check "persistent snapshot keeps its data" same /dev/mapper/rs-snapp "$work/exp-p"
check "transient snapshot keeps its data (only the handover has it)" same /dev/mapper/rs-snapn "$work/exp-n"
check "origin write after the handover" put "$work/w3" /dev/mapper/rs-origin $((5 * 1048576))
patch "$work/exp-origin" "$work/w3" $((5 * 1048576))
check "new tables still copy for origin writes (P)" same /dev/mapper/rs-snapp "$work/exp-p"
check "new tables still copy for origin writes (N)" same /dev/mapper/rs-snapn "$work/exp-n"
check "snapshot write after the handover" put "$work/w4" /dev/mapper/rs-snapn 0
patch "$work/exp-n" "$work/w4" 0
check "and it reads back" same /dev/mapper/rs-snapn "$work/exp-n"
check "origin holds its writes" same /dev/mapper/rs-origin "$work/exp-origin"

# The same steps on the C target: same status lines.
modprobe dm_snapshot
require "build the C stack" build c- snapshot-origin snapshot 32768 65536
put "$work/w1" /dev/mapper/c-origin 1048576
put "$work/w2" /dev/mapper/c-snapn $((3 * 1048576))
reload c- snapp
reload c- snapn
put "$work/w3" /dev/mapper/c-origin $((5 * 1048576))
put "$work/w4" /dev/mapper/c-snapn 0
for d in snapp snapn; do
	check_eq "$d status after the handover equals C's" "$(status_of c-$d)" "$(status_of rs-$d)"
done
dmsetup remove_all

# --- snapshot-merge to completion, the origin written meanwhile -----------
# merge_done DEV: "done" once only metadata is allocated (lvm2's test).
merge_done() {
	local a t m
	IFS='/ ' read -r a t m <<<"$(status_of $1)"
	[[ $a =~ ^[0-9]+$ && $a == "$m" ]]
}
# wait_merge DEV: up to 300 s for the merge to finish.
wait_merge() {
	local i
	for ((i = 0; i < 600; i++)); do
		merge_done $1 && return 0
		sleep 0.5
	done
	return 1
}
# start_merge P MERGE-TARGET: turn P's origin into the merge of P's
# persistent snapshot, as lvm2 does (the snapshot hands its exceptions
# over to the new table, then goes).
start_merge() {
	local p=$1 mt=$2
	dmsetup suspend ${p}snapp && dmsetup suspend ${p}origin &&
		dmsetup load ${p}origin --table "0 $osize $mt /dev/mapper/${p}base /dev/mapper/${p}cowp P 8" &&
		dmsetup resume ${p}origin && dmsetup remove ${p}snapp
}
random_file "$work/m1" 262144
random_file "$work/m2" 4096
random_file "$work/m3" 65536
random_file "$work/m4" 4096
# merge_scenario P ORIGIN-TARGET SNAPSHOT-TARGET MERGE-TARGET OFFSETS...
merge_scenario() {
	local p=$1
	build $p $2 $3 $5 $6 || return 1
	put "$work/w1" /dev/mapper/${p}origin 1048576 &&
		put "$work/m1" /dev/mapper/${p}origin $((4 * 1048576)) &&
		put "$work/m2" /dev/mapper/${p}snapp $((6 * 1048576)) &&
		put "$work/w3" /dev/mapper/${p}origin $((6 * 1048576)) &&
		start_merge $p $4 &&
		put "$work/m3" /dev/mapper/${p}origin $((1048576 + 8192)) &&
		put "$work/m4" /dev/mapper/${p}origin $((7 * 1048576))
}
# What the merged origin holds: the snapshot's view, then the writes to
# the merging origin.
cp "$work/orig" "$work/exp-m"
patch "$work/exp-m" "$work/m2" $((6 * 1048576))
patch "$work/exp-m" "$work/m3" $((1048576 + 8192))
patch "$work/exp-m" "$work/m4" $((7 * 1048576))

require "merge while writing the origin (dm-rs)" merge_scenario rs- rs-snap-origin rs-snapshot rs-snap-merge 0 0
check_match "the merge is served by dm-rs" "^0 $osize rs-snap-merge " "$(dmsetup table rs-origin)"
check "the merging origin shows the snapshot's data and the new writes" same /dev/mapper/rs-origin "$work/exp-m"
check "the merge completes" wait_merge rs-origin
check_eq "the merged status is metadata only" "16/$csize 16" "$(status_of rs-origin)"
check "the merged origin holds them" same /dev/mapper/rs-origin "$work/exp-m"
check "so does the device under it" same /dev/mapper/rs-base "$work/exp-m"
require "the same on the C target" merge_scenario c- snapshot-origin snapshot snapshot-merge 32768 65536
check "C merge completes" wait_merge c-origin
check "C merged origin agrees" same /dev/mapper/c-base "$work/exp-m"
check_eq "merged status equals C's" "$(status_of c-origin)" "$(status_of rs-origin)"
check_eq "merge table equals C's (names and device numbers aside)" \
	"$(dmsetup table c-origin | sed 's/[0-9]*:[0-9]*/D/g; s/snapshot-merge/M/')" \
	"$(dmsetup table rs-origin | sed 's/[0-9]*:[0-9]*/D/g; s/rs-snap-merge/M/')"
dmsetup remove_all

# --- An interrupted merge resumes from the COW device ---------------------
# The COW device is slowed down (dm-delay, 15 ms) and holds one exception
# per chunk of the origin's first MiB, copied in random order (no
# consecutive runs): the merge takes a few seconds, and is stopped halfway
# by suspending, then the table is destroyed and created again.
slow_stack() {
	dmsetup create rs-base --table "0 $osize linear $DISK1 0" &&
		dmsetup create rs-cowlin --table "0 $csize linear $DISK2 0" &&
		dmsetup create rs-cowp --table "0 $csize delay /dev/mapper/rs-cowlin 0 15" &&
		put "$work/orig" /dev/mapper/rs-base 0 &&
		zero_header /dev/mapper/rs-cowp &&
		dmsetup create rs-origin --table "0 $osize rs-snap-origin /dev/mapper/rs-base" &&
		dmsetup create rs-snapp --table "0 $osize rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cowp P 8" &&
		reorigin rs-
}
require "a snapshot on a slow COW device" slow_stack
fio --name=r --filename=/dev/mapper/rs-origin --rw=randwrite --bs=4k --size=1M \
	--direct=1 --ioengine=libaio --iodepth=8 --output="$work/fr" >/dev/null
full=$(status_of rs-snapp)
check "the snapshot still has the old data" same /dev/mapper/rs-snapp "$work/orig"
require "start the merge" start_merge rs- rs-snap-merge
sleep 2
check "stop it by suspending" dmsetup suspend rs-origin
part=$(status_of rs-origin)
IFS='/ ' read -r a0 t0 m0 <<<"$full"
IFS='/ ' read -r a1 t1 m1 <<<"$part"
diag "allocated before the merge: $full; when stopped: $part"
check "stopped halfway: some merged ($a1 < $a0)" test "$a1" -lt "$a0"
check "stopped halfway: some left ($a1 > $m1)" test "$a1" -gt "$m1"
sleep 1
check_eq "no progress while suspended" "$part" "$(status_of rs-origin)"
table=$(dmsetup table rs-origin)
check "remove the merging device" dmsetup remove rs-origin
require "create it again from the COW device" dmsetup create rs-origin --table "$table"
check "it shows the snapshot's data at once" same /dev/mapper/rs-origin "$work/orig"
check "the merge resumes and completes" wait_merge rs-origin
check "the origin holds the snapshot's data" same /dev/mapper/rs-base "$work/orig"

# --- A merge that hits an I/O error stops: Merge failed -------------------
# The same slow stack; once the merge runs, the COW device starts failing.
dmsetup remove_all
require "a snapshot on a slow COW device, again" slow_stack
fio --name=r --filename=/dev/mapper/rs-origin --rw=randwrite --bs=4k --size=1M \
	--direct=1 --ioengine=libaio --iodepth=8 --output="$work/fr" >/dev/null
require "start the merge" start_merge rs- rs-snap-merge
sleep 1
log_mark
dmsetup load rs-cowlin --table "0 $csize error"
dmsetup suspend rs-cowlin && dmsetup resume rs-cowlin
# merge_failed DEV: up to 60 s for the status to say so.
merge_failed() {
	local i
	for ((i = 0; i < 120; i++)); do
		[[ $(status_of $1) == "Merge failed" ]] && return 0
		sleep 0.5
	done
	return 1
}
check "the status says Merge failed" merge_failed rs-origin
check_match "with upstream's reason in the log" "shutting down merge" "$(dmesg_since_mark)"
check "the merging device still reads what the origin holds" \
	cmp <(dd if=/dev/mapper/rs-origin bs=4096 skip=1024 count=16 iflag=direct status=none) \
	<(dd if="$work/orig" bs=4096 skip=1024 count=16 status=none)

dmsetup remove_all
check "dm_rs unloads" rmmod dm_rs
rm -rf "$work"
done_testing
