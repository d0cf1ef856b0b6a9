#!/bin/bash
# Bios over several blocks. dm-rs does not have dm core cut thin bios at
# block boundaries: a read or write whose blocks are all mapped, to
# consecutive data blocks, unshared for a write and not locked by the pool,
# goes to the data device in one piece; any other is cut at its first block
# boundary and the rest mapped again. Checked here: fewer data-device reads
# than blocks for a large read of consecutively provisioned blocks (C:
# exactly one a block), and the data of large and unaligned reads and writes
# over holes, over blocks mapped out of order and over blocks shared with a
# snapshot (each write breaks the sharing of every block it covers).
# core
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
make_data 64
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 (32 MiB)" thin_new pool 0 thin0 32
thin_check_served
T=/dev/mapper/thin0

# bigverify DEV TAG FIRST COUNT IO_KIB: as pverify, read with IO_KIB reads.
bigverify() {
	cmp <(pattern "$2" "$3" "$4") \
		<(dd if="$1" bs=${5}K skip=$(($3 * 4 / $5)) count=$(($4 * 4 / $5)) iflag=direct status=none)
}

check "2 MiB written with 1 MiB writes (provisioning 32 blocks)" pwrite $T a 0 512 1024
check "read back with 1 MiB reads" bigverify $T a 0 512 1024
check "and with 4 KiB reads" pverify $T a 0 512
before=$(dm_reads tdata)
check "one 1 MiB read of 16 consecutive blocks" bigverify $T a 0 256 1024
reads=$(($(dm_reads tdata) - before))
if [[ $THIN_IMPL == rs ]]; then
	check "it reached the data device in fewer than 8 bios (was $reads)" test "$reads" -lt 8
else
	check_eq "C: one data-device read a block" 16 "$reads"
fi

# Blocks 64-67 and 69-71 written, 68 left a hole; one 512 KiB read over all.
check "blocks 64-67 and 69-71 written" all_of "pwrite $T h 1024 64 64" "pwrite $T i 1104 48 64"
check "a 512 KiB read over them: the pattern" all_of \
	"cmp <(pattern h 1024 64) <(dd if=$T bs=512K skip=8 count=1 iflag=direct status=none | head -c 262144)" \
	"cmp <(pattern i 1104 48) <(dd if=$T bs=512K skip=8 count=1 iflag=direct status=none | tail -c 196608)"
check "and zeros in the hole (block 68)" \
	cmp -n 65536 <(dd if=$T bs=512K skip=8 count=1 iflag=direct status=none | tail -c +262145) /dev/zero

# Blocks 80-87 provisioned last first: data blocks in reverse order.
for b in 87 86 85 84 83 82 81 80; do pwrite $T r $((b * 16)) 16 64; done
check "blocks mapped in reverse order read back with one 512 KiB read" bigverify $T r 1280 128 512

# Unaligned: one 96 KiB write from 32 KiB into block 0 (over blocks 0-2).
write96() {
	pattern u 8 24 | dd of=$T bs=96K count=1 seek=32768 iflag=fullblock oflag=direct,seek_bytes status=none
}
check "an unaligned 96 KiB write over three blocks" write96
check "reads back with one 96 KiB read" \
	cmp <(pattern u 8 24) <(dd if=$T bs=96K count=1 skip=32768 iflag=direct,skip_bytes status=none)
check "the neighbours are intact" all_of "pverify $T a 0 8" "pverify $T a 32 16"

# A snapshot shares blocks 0-31: 1 MiB writes break the sharing of every
# block they cover, the other side keeps the old data.
require "snapshot 1 of thin 0" snap_activate pool 1 0 thin0 snap1 32
S=/dev/mapper/snap1
check "1 MiB writes to the origin over shared blocks 16-31" pwrite $T b 256 256 1024
check "the origin reads the new data (1 MiB reads)" bigverify $T b 256 256 1024
check "the snapshot keeps the old (1 MiB reads)" bigverify $S a 256 256 1024
check "1 MiB writes over the now unshared blocks" pwrite $T c 256 256 1024
check "read back" bigverify $T c 256 256 1024
check "the snapshot is untouched" bigverify $S a 256 256 1024
check "a 1 MiB write to the snapshot over shared blocks 0-15" pwrite $S d 0 256 1024
check "the snapshot has it" bigverify $S d 0 256 1024
check "the origin keeps its data there" all_of "pverify $T a 0 8" "pverify $T u 8 24" "pverify $T a 32 224"
check "the snapshot keeps the rest" all_of "bigverify $S h 1024 64 256" "bigverify $S r 1280 128 512"
check_eq "status: the origin maps 47 blocks" $((47 * 128)) "$(thin_mapped thin0)"
check_eq "status: the snapshot maps 47 blocks" $((47 * 128)) "$(thin_mapped snap1)"

dump_maps() { check_eq "thin_dump: device 1 maps 47 blocks" 47 "$(dump_mapped 1)"; }
thin_finish dump_maps
