#!/bin/bash
# snapshot discard features: discard_zeroes_cow (a discard of a whole chunk
# with an exception zeroes its copy, one without is done with no copy) and
# discard_passdown_origin (the discard also reaches the origin device). The
# same steps run on dm-rs and on the C dm-snapshot (the oracle); every
# device's bytes, the table lines and the discard limits must agree. The
# origins are loop devices on tmpfs (a discard punches a hole: zeros); the
# COW devices are on a disk whose discards leave the data, so a zeroed copy
# was zeroed by the snapshot. Without the features a snapshot takes no
# discards.
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
modprobe dm_snapshot
work=$(mktemp -d)
mount -t tmpfs tmpfs "$work"
size=8192 # every device: 4 MiB
mib=1048576

check_match "dm-rs registered rs-snapshot" "rs-snapshot" "$(dmsetup targets)"
random_file "$work/orig" $((size * 512))
random_file "$work/w1" 4096
random_file "$work/w2" 4096

# loopdev NAME: a loop device on a fresh 4 MiB tmpfs file.
loopdev() {
	truncate -s $((size * 512)) "$work/$1.img" && losetup -f --show "$work/$1.img"
}
# build P ORIGIN-TARGET SNAPSHOT-TARGET DISK2-OFFSET: a base loop device,
# zeroed COW devices on DISK2 (past the offset), the origin and three snapshots
# (chunk 4 KiB): z with discard_zeroes_cow, b with both features, n with
# none.
build() {
	local p=$1 ot=$2 st=$3 o=$4 base
	base=$(loopdev ${p}base) && put "$work/orig" "$base" 0 &&
		dmsetup create ${p}base --table "0 $size linear $base 0" &&
		for s in z b n; do
			dmsetup create ${p}cow$s --table "0 $size linear $DISK2 $((o += size))" &&
				dd if=/dev/zero of=/dev/mapper/${p}cow$s bs=1M count=4 oflag=direct status=none || return 1
		done &&
		dmsetup create ${p}origin --table "0 $size $ot /dev/mapper/${p}base" &&
		dmsetup create ${p}snapz --table "0 $size $st /dev/mapper/${p}base /dev/mapper/${p}cowz P 8 1 discard_zeroes_cow" &&
		dmsetup create ${p}snapb --table "0 $size $st /dev/mapper/${p}base /dev/mapper/${p}cowb P 8 2 discard_zeroes_cow discard_passdown_origin" &&
		dmsetup create ${p}snapn --table "0 $size $st /dev/mapper/${p}base /dev/mapper/${p}cown P 8" &&
		reorigin $p
}
# queue DEV ATTR: the dm device's queue limit ATTR.
queue() { cat "/sys/block/dm-$(dmsetup info -c --noheadings -o minor "$1")/queue/$2"; }
# discard DEV OFFSET LENGTH (bytes)
discard() { blkdiscard -o "$2" -l "$3" "/dev/mapper/$1"; }
# steps P: the same I/O on either stack.
steps() {
	local p=$1
	put "$work/w1" /dev/mapper/${p}origin 0 &&             # chunk 0 copied to every snapshot
		put "$work/w2" /dev/mapper/${p}snapz $((2 * 4096)) && # chunk 2: z's own write
		put "$work/w2" /dev/mapper/${p}snapb $((2 * 4096)) && # and b's
		discard ${p}snapz 0 4096 &&                             # exception: zeroed
		discard ${p}snapz $((2 * 4096)) 4096 &&                 # exception: zeroed
		discard ${p}snapz $((4 * 4096)) 4096 &&                 # none: no effect
		discard ${p}snapz $mib $mib &&                          # 256 chunks, none copied
		discard ${p}snapb $((8 * 4096)) 4096 &&                 # none: the origin's chunk goes
		discard ${p}snapb 0 4096                                # exception zeroed, origin's too
}

require "build the dm-rs stack" build rs- rs-snap-origin rs-snapshot 0
check_match "snapshot is served by dm-rs" "^0 $size rs-snapshot " "$(dmsetup table rs-snapz)"
require "build the C stack" build c- snapshot-origin snapshot 65536
for d in snapz snapb snapn; do
	check_eq "$d table equals C's (device numbers aside)" \
		"$(table_of c-$d | sed 's/[0-9]*:[0-9]*/D/g')" "$(table_of rs-$d | sed 's/[0-9]*:[0-9]*/D/g')"
	for q in discard_granularity discard_max_bytes discard_max_hw_bytes; do
		rs=$(queue rs-$d $q) c=$(queue c-$d $q)
		check_match "$d $q is there" '^[0-9]+$' "$rs"
		check_eq "$d $q equals C's ($c)" "$c" "$rs"
	done
done
check_eq "z splits discards by chunk (4 KiB)" 4096 "$(queue rs-snapz discard_max_bytes)"
check_match "the table line shows the features" " P 8 2 discard_zeroes_cow discard_passdown_origin\$" \
	"$(dmsetup table rs-snapb)"
check "the steps on dm-rs" steps rs-
steps c- || diag "the steps failed on C"
check_fails "a snapshot without the features takes no discard" discard rs-snapn 0 4096
check_fails "as in C" discard c-snapn 0 4096

cp "$work/orig" "$work/exp-z"
dd if=/dev/zero of="$work/zero" bs=4096 count=1 status=none
patch "$work/exp-z" "$work/zero" 0
patch "$work/exp-z" "$work/zero" $((2 * 4096))
patch "$work/exp-z" "$work/zero" $((8 * 4096)) # b's discard passed down to the origin
check "z: its exceptions zeroed, the rest the origin's data" same /dev/mapper/rs-snapz "$work/exp-z"
for d in origin base snapz snapb snapn cowz cowb; do
	dd if=/dev/mapper/c-$d of="$work/c-$d" bs=1M iflag=direct status=none
	check "$d: the same bytes as C's" same /dev/mapper/rs-$d "$work/c-$d"
done
check "the passed-down discard zeroed the origin's chunk 8" cmp -n 4096 "$work/zero" \
	<(dd if=/dev/mapper/rs-base bs=4096 skip=8 count=1 iflag=direct status=none)
for d in snapz snapb snapn; do
	check_eq "$d status equals C's" "$(status_of c-$d)" "$(status_of rs-$d)"
done

check_fails "passdown without zeroes_cow is refused" \
	dmsetup create rs-bad --table "0 $size rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cown P 8 1 discard_passdown_origin"
check_fails "an unknown feature is refused" \
	dmsetup create rs-bad --table "0 $size rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cown P 8 1 bogus"
check_fails "three features are refused" \
	dmsetup create rs-bad --table "0 $size rs-snapshot /dev/mapper/rs-base /dev/mapper/rs-cown P 8 3 a b c"
dmsetup remove rs-bad 2>/dev/null
log=$(dmesg_since_start)
check_match "upstream's reasons reach the kernel log" "discard_passdown_origin feature depends on discard_zeroes_cow" "$log"
check_match "and" "Unrecognised feature requested" "$log"
check_match "and" "Invalid number of feature arguments" "$log"

dmsetup remove_all
losetup -D
check "dm_rs unloads" rmmod dm_rs
umount "$work"
rm -rf "$work"
done_testing
