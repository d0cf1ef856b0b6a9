#!/bin/bash
# snapshot + snapshot-origin: a persistent and a transient snapshot of one
# origin; writes to the origin and to the snapshots; every device's bytes
# checked against the expected pattern; status and table lines compared
# byte for byte with the C dm-snapshot running the same steps; a persistent
# snapshot reloaded from its COW device; a small COW device overflowing
# (P: the snapshot goes invalid, the origin carries on; PO: Overflow).
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
work=$(mktemp -d)
osize=32768 # origin: 16 MiB
csize=16384 # COW devices: 8 MiB
small=512   # the COW device that overflows: 256 KiB

check_eq "dm_snapshot (C) is not loaded" missing "$(module_refcnt dm_snapshot)"
check_match "dm-rs registered rs-snapshot" "rs-snapshot" "$(dmsetup targets)"

random_file "$work/orig" $((osize * 512))
random_file "$work/w1" 1048576
random_file "$work/w2" 4096
random_file "$work/w3" 66560
random_file "$work/w4" 131072
random_file "$work/w5" 8192
random_file "$work/w6" 4096
random_file "$work/w7" 65536
random_file "$work/w8" 524288

# build P ORIGIN-TARGET SNAPSHOT-TARGET DISK1-OFFSET DISK2-OFFSET: base
# devices, the origin and two snapshots (P chunk 8, N chunk 16), named with
# prefix P.
build() {
	local p=$1 ot=$2 st=$3 o1=$4 o2=$5
	dmsetup create ${p}base --table "0 $osize linear $DISK1 $o1" &&
		dmsetup create ${p}cowp --table "0 $csize linear $DISK2 $o2" &&
		dmsetup create ${p}cown --table "0 $csize linear $DISK2 $((o2 + csize))" &&
		dmsetup create ${p}cows --table "0 $small linear $DISK2 $((o2 + 2 * csize))" &&
		put "$work/orig" /dev/mapper/${p}base 0 &&
		zero_header /dev/mapper/${p}cowp && zero_header /dev/mapper/${p}cows &&
		dmsetup create ${p}origin --table "0 $osize $ot /dev/mapper/${p}base" &&
		dmsetup create ${p}snapp --table "0 $osize $st /dev/mapper/${p}base /dev/mapper/${p}cowp P 8" &&
		dmsetup create ${p}snapn --table "0 $osize $st /dev/mapper/${p}base /dev/mapper/${p}cown N 16" &&
		reorigin $p
}
# writes P: the same writes on either stack.
writes() {
	local p=$1
	put "$work/w1" /dev/mapper/${p}origin 1048576 &&
		put "$work/w2" /dev/mapper/${p}origin 0 &&
		put "$work/w3" /dev/mapper/${p}snapp $((5 * 1048576 + 512)) &&
		put "$work/w4" /dev/mapper/${p}origin $((5 * 1048576)) &&
		put "$work/w5" /dev/mapper/${p}snapn $((12 * 1048576)) &&
		put "$work/w6" /dev/mapper/${p}origin $((osize * 512 - 4096))
}

require "build the dm-rs stack" build rs- rs-snap-origin rs-snapshot 0 0
check_match "origin is served by dm-rs" "^0 $osize rs-snap-origin " "$(dmsetup table rs-origin)"
check_match "snapshot is served by dm-rs" "^0 $osize rs-snapshot " "$(dmsetup table rs-snapp)"
require "writes to the origin and the snapshots" writes rs-

cp "$work/orig" "$work/exp-origin"
patch "$work/exp-origin" "$work/w1" 1048576
patch "$work/exp-origin" "$work/w2" 0
patch "$work/exp-origin" "$work/w4" $((5 * 1048576))
patch "$work/exp-origin" "$work/w6" $((osize * 512 - 4096))
cp "$work/orig" "$work/exp-p"
patch "$work/exp-p" "$work/w3" $((5 * 1048576 + 512))
cp "$work/orig" "$work/exp-n"
patch "$work/exp-n" "$work/w5" $((12 * 1048576))
check "origin holds the origin writes" same /dev/mapper/rs-origin "$work/exp-origin"
check "base device holds them too" same /dev/mapper/rs-base "$work/exp-origin"
check "persistent snapshot: the old data plus its own write" same /dev/mapper/rs-snapp "$work/exp-p"
check "transient snapshot: the old data plus its own write" same /dev/mapper/rs-snapn "$work/exp-n"

# The C target, same steps, for the status and table lines.
modprobe dm_snapshot
require "build the C stack" build c- snapshot-origin snapshot 65536 65536
require "the same writes on the C stack" writes c-
check "C origin agrees" same /dev/mapper/c-origin "$work/exp-origin"
check "C persistent snapshot agrees" same /dev/mapper/c-snapp "$work/exp-p"
for d in snapp snapn; do
	rs=$(status_of rs-$d) c=$(status_of c-$d)
	check_match "$d status has usage" '^[0-9]+/[0-9]+ [0-9]+$' "$rs"
	check_eq "$d status equals C's" "$c" "$rs"
	check_eq "$d table equals C's (device numbers aside)" \
		"$(table_of c-$d | sed 's/[0-9]*:[0-9]*/D/g')" "$(table_of rs-$d | sed 's/[0-9]*:[0-9]*/D/g')"
done
check_eq "origin status equals C's" "$(status_of c-origin)" "$(status_of rs-origin)"

# Reload the persistent snapshot from its COW device.
before=$(status_of rs-snapp)
table=$(dmsetup table rs-snapp)
check "remove the persistent snapshot" dmsetup remove rs-snapp
require "load it again from the COW device" dmsetup create rs-snapp --table "$table"
reorigin rs-
check_eq "status after the reload" "$before" "$(status_of rs-snapp)"
check "reloaded snapshot: same bytes" same /dev/mapper/rs-snapp "$work/exp-p"
check "origin write after the reload" put "$work/w7" /dev/mapper/rs-origin $((8 * 1048576))
patch "$work/exp-origin" "$work/w7" $((8 * 1048576))
check "reloaded snapshot keeps the old data" same /dev/mapper/rs-snapp "$work/exp-p"
check "origin has the new data" same /dev/mapper/rs-origin "$work/exp-origin"

# Concurrent writers: random writes to the origin's first 4 MiB (8 in
# flight, chunks copied while other writes wait on them; the COW devices
# have room for all) and to the transient snapshot's last 2 MiB; the
# persistent snapshot must not change, the written data must verify, the
# transient snapshot must keep its first 14 MiB.
fio --name=o --filename=/dev/mapper/rs-origin --rw=randwrite --bsrange=512-64k --size=4M \
	--direct=1 --ioengine=libaio --iodepth=8 --number_ios=1500 --randrepeat=0 \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --output="$work/fo" &
fo=$!
fio --name=n --filename=/dev/mapper/rs-snapn --rw=randwrite --bs=4k --offset=14M --size=2M \
	--direct=1 --ioengine=libaio --iodepth=8 --randrepeat=0 \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --output="$work/fn" &
fn=$!
if wait $fo; then ok "origin writer verified its data"; else
	not_ok "origin writer verified its data"
	diag "$(cat "$work/fo")"
fi
if wait $fn; then ok "snapshot writer verified its data"; else
	not_ok "snapshot writer verified its data"
	diag "$(cat "$work/fn")"
fi
check "persistent snapshot unchanged by the origin writes" same /dev/mapper/rs-snapp "$work/exp-p"
head -c $((14 * 1048576)) "$work/exp-n" >"$work/exp-n14"
check "transient snapshot keeps its first 14 MiB" cmp -n $((14 * 1048576)) "$work/exp-n14" \
	<(dd if=/dev/mapper/rs-snapn bs=1M count=14 iflag=direct status=none)
# What fio wrote is now expected on both.
dd if=/dev/mapper/rs-origin of="$work/exp-origin" bs=1M iflag=direct status=none
dd if=/dev/mapper/rs-snapn of="$work/exp-n" bs=1M iflag=direct status=none

# A persistent snapshot whose COW device fills: invalid, the origin carries on.
for p in rs- c-; do
	t=rs-snapshot
	[[ $p == c- ]] && t=snapshot
	dmsetup create ${p}snaps --table "0 $osize $t /dev/mapper/${p}base /dev/mapper/${p}cows P 8"
	reorigin $p
done
check "origin write overflowing the small snapshot" put "$work/w8" /dev/mapper/rs-origin $((2 * 1048576))
put "$work/w8" /dev/mapper/c-origin $((2 * 1048576))
patch "$work/exp-origin" "$work/w8" $((2 * 1048576))
check_eq "overflowed snapshot is Invalid" Invalid "$(status_of rs-snaps)"
check_eq "as in C" "$(status_of c-snaps)" "$(status_of rs-snaps)"
check_fails "reading the invalid snapshot fails" dd if=/dev/mapper/rs-snaps of=/dev/null bs=4096 count=1 iflag=direct
check "origin holds every write" same /dev/mapper/rs-origin "$work/exp-origin"
check "the other snapshots are intact" same /dev/mapper/rs-snapn "$work/exp-n"
check_match "and valid" '^[0-9]+/[0-9]+ [0-9]+$' "$(status_of rs-snapp)"
dmsetup remove rs-snaps c-snaps

# PO: a snapshot write that finds the COW device full fails; Overflow.
for p in rs- c-; do
	t=rs-snapshot
	[[ $p == c- ]] && t=snapshot
	zero_header /dev/mapper/${p}cows
	dmsetup create ${p}snapo --table "0 $osize $t /dev/mapper/${p}base /dev/mapper/${p}cows PO 8"
	reorigin $p
done
check_fails "snapshot write past a full PO COW device fails" put "$work/w8" /dev/mapper/rs-snapo 0
put "$work/w8" /dev/mapper/c-snapo 0 2>/dev/null
check_eq "PO snapshot reports Overflow" Overflow "$(status_of rs-snapo)"
check_eq "as in C" "$(status_of c-snapo)" "$(status_of rs-snapo)"
check_eq "PO table equals C's (device numbers aside)" \
	"$(table_of c-snapo | sed 's/[0-9]*:[0-9]*/D/g')" "$(table_of rs-snapo | sed 's/[0-9]*:[0-9]*/D/g')"

# Bad table lines fail with a reason; the module stays usable.
b=/dev/mapper/rs-base
check_fails "store type X is refused" dmsetup create rs-bad --table "0 $osize rs-snapshot $b /dev/mapper/rs-cows X 8"
check_fails "chunk size 12 is refused" dmsetup create rs-bad --table "0 $osize rs-snapshot $b /dev/mapper/rs-cows P 12"
check_fails "missing chunk size is refused" dmsetup create rs-bad --table "0 $osize rs-snapshot $b /dev/mapper/rs-cows P"
check_fails "unknown feature is refused" dmsetup create rs-bad --table "0 $osize rs-snapshot $b /dev/mapper/rs-cows P 8 1 bogus"
check_fails "a second snapshot on a COW device in use is refused" \
	dmsetup create rs-bad --table "0 $osize rs-snapshot $b /dev/mapper/rs-cowp P 8"
dmsetup remove rs-bad 2>/dev/null
check_match "the reasons reach the kernel log (upstream's: the store's own reason is overwritten)" "Couldn't create exception store" "$(dmesg_since_start)"
dmsetup remove rs-snapo
zero_header /dev/mapper/rs-cows
check "the generalised form loads" dmsetup create rs-gen --table "0 $osize rs-snapshot $b persistent 2 /dev/mapper/rs-cows 8"
check_match "and prints the classic table line, as upstream" " rs-snapshot [0-9]+:[0-9]+ [0-9]+:[0-9]+ P 8\$" \
	"$(dmsetup table rs-gen)"
dmsetup create rs-cown2 --table "0 4096 linear $DISK2 40000"
check "the transient generalised form loads" dmsetup create rs-gen2 --table "0 $osize rs-snapshot $b transient 2 /dev/mapper/rs-cown2 8"

dmsetup remove_all
check "dm_rs unloads" rmmod dm_rs
rm -rf "$work"
done_testing
