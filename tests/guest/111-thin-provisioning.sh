#!/bin/bash
# Provisioning on first write. The data device is filled with junk first, so
# what a new block holds is visible: with zeroing on, the unwritten rest of a
# partly written block reads zeros; with skip_block_zeroing it reads the
# junk; a whole-block write needs no zeroing. Unprovisioned blocks read
# zeros; concurrent writers to one new block all land in one allocation;
# status counts mapped sectors; a non-power-of-2 block size works; all of it
# survives deactivation; new blocks are zeroed on a data device that
# advertises WRITE_ZEROES the device under it gave up (lvm2's own tests run
# on such a stack).
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
make_data 64
check "fill the data device with junk" pwrite $DATA junk 0 $((64 * 256)) 1024
require "pool: 64 KiB blocks, zeroing on" pool_create pool 128 0
require "thin 0 (32 MiB)" thin_new pool 0 thin0 32
thin_check_served
T=/dev/mapper/thin0
check "unprovisioned device reads zeros" zverify $T 0 $((32 * 256))
check_eq "status: nothing mapped" "0 -" "$(dmsetup status thin0 | cut -d' ' -f4-)"

# 4 KiB into 64 KiB block 0: the other 15 read zeros.
check "4 KiB write at 4 KiB block 1" pwrite $T a 1 1
check "it reads back" pverify $T a 1 1
check "the rest of the new block reads zeros" all_of "zverify $T 0 1" "zverify $T 2 14"
check_eq "status: one block mapped, highest sector 127" "128 127" "$(dmsetup status thin0 | cut -d' ' -f4-)"
# A whole-block write (64 KiB, aligned) at block 2.
check "64 KiB write filling block 2" pwrite $T b 32 16 64
check "it reads back" pverify $T b 32 16
check "block 1 between them is still unprovisioned zeros" zverify $T 16 16
check_eq "status: two blocks mapped, highest sector 383" "256 383" "$(dmsetup status thin0 | cut -d' ' -f4-)"
check_eq "pool: 2 data blocks used" 2 "$(pool_used_data pool)"
# A write straddling two new blocks (blocks 4 and 5).
check "32 KiB write across the boundary of blocks 4 and 5" pwrite $T c 76 8
check "reads back" pverify $T c 76 8
check "zeros before and after it" all_of "zverify $T 64 12" "zverify $T 84 12"
# 16 writers at once, each 4 KiB of the same new block 8: one allocation,
# all 16 land.
for i in $(seq 0 15); do
	pwrite $T par $((128 + i)) 1 &
done
wait
check "16 concurrent writes into one new block all read back" pverify $T par 128 16
check_eq "status: 5 blocks mapped" 640 "$(thin_mapped thin0)"
check_eq "pool: 5 data blocks used" 5 "$(pool_used_data pool)"
# Overwrites of provisioned blocks allocate nothing.
check "overwrite part of block 0 and all of block 2" all_of "pwrite $T a2 0 4" "pwrite $T b2 32 16 64"
check "overwrites read back" all_of "pverify $T a2 0 4" "pverify $T b2 32 16"
check "rest of block 0 intact" zverify $T 4 12
check_eq "pool: still 5 data blocks used" 5 "$(pool_used_data pool)"

# skip_block_zeroing: the unwritten rest of a new block is whatever the data
# device held (the junk), not zeros; written parts read back.
check "reload with skip_block_zeroing" pool_reload pool 128 0 skip_block_zeroing
check "4 KiB write at 4 KiB block 163 (block 10)" pwrite $T d 163 1
check "it reads back" pverify $T d 163 1
rest=$(dd if=$T bs=4K skip=160 count=1 iflag=direct status=none | head -c 11)
check_eq "the block's first 4 KiB reads the data device's junk, not zeros" "junk block " "$rest"
check "zeroing back on" pool_reload pool 128 0
check "4 KiB write at 4 KiB block 179 (block 11)" pwrite $T e 179 1
check "block 11 around it reads zeros again" all_of "zverify $T 176 3" "zverify $T 180 12"

# Deactivate everything and come back: all of it is still there.
check "remove thin and pool" bash -c 'dmsetup remove thin0 && dmsetup remove pool'
require "pool again" pool_create pool 128 0
require "thin 0 again" thin_activate pool 0 thin0 32
check "everything reads back" all_of "pverify $T a2 0 4" "pverify $T b2 32 16" "pverify $T c 76 8" \
	"pverify $T par 128 16" "pverify $T d 163 1" "pverify $T e 179 1" "zverify $T 4 12" "zverify $T 16 16"
check_eq "status: 7 blocks mapped" 896 "$(thin_mapped thin0)"

# A second pool, a block size that is no power of two (192 KiB = 384 sectors).
require "second metadata and data slices" all_of "slice tmeta2 $DISK1 16 8" "slice tdata2 $DISK2 128 32"
dd if=/dev/zero of=/dev/mapper/tmeta2 bs=4K count=1 oflag=direct status=none
require "pool2: 192 KiB blocks" dmsetup create pool2 --table \
	"$(pool_table /dev/mapper/tmeta2 /dev/mapper/tdata2 384 0)"
require "pool2 thin 0" thin_new pool2 0 p2thin 8
U=/dev/mapper/p2thin
check "4 KiB writes at 4 KiB blocks 47 and 48 (both sides of the first boundary)" pwrite $U f 47 2
check "read back" pverify $U f 47 2
check "zeros around them in both blocks" all_of "zverify $U 0 47" "zverify $U 49 47"
check_eq "status: two 384-sector blocks, highest sector 767" "768 767" "$(dmsetup status p2thin | cut -d' ' -f4-)"
dmsetup remove p2thin pool2
meta_checks /dev/mapper/tmeta2 "second pool's metadata"
check_eq "thin_dump of pool2: 2 blocks mapped" 2 "$(dump_mapped 0)"
check_match "block size 384 in its superblock" 'data_block_size="384"' "$THIN_DUMP"

# A data device that still advertises WRITE_ZEROES after the device under
# it gave it up (a linear over a loop device on tmpfs, which has no zero
# range: the loop clears its own limit on the first WRITE_ZEROES, the
# linear's stays). New blocks must still be zeroed (as upstream, through the
# pool's device, with plain writes), not fail.
wzimg=/run/thin-wz.img
truncate -s 16M $wzimg
wzloop=$(losetup -f --show $wzimg)
require "a linear over a loop device on tmpfs" slice wzlin "$wzloop" 0 16
blkdiscard -z -l 65536 /dev/mapper/wzlin 2>/dev/null
wzlin_dev=$(dmsetup info -c --noheadings -o blkdevname wzlin | tr -d ' ')
require "the loop device gave WRITE_ZEROES up, the linear over it did not" all_of \
	"test $(cat /sys/block/${wzloop#/dev/}/queue/write_zeroes_max_bytes) -eq 0" \
	"test $(cat /sys/block/$wzlin_dev/queue/write_zeroes_max_bytes) -gt 0"
check "fill the linear with junk" pwrite /dev/mapper/wzlin junk 0 $((16 * 256)) 1024
require "third metadata slice" slice tmeta3 $DISK1 24 8
dd if=/dev/zero of=/dev/mapper/tmeta3 bs=4K count=1 oflag=direct status=none
require "pool3 on it: 64 KiB blocks, zeroing on" dmsetup create pool3 --table \
	"$(pool_table /dev/mapper/tmeta3 /dev/mapper/wzlin 128 0)"
require "pool3 thin 0" thin_new pool3 0 wzthin 8
check "4 KiB write at 4 KiB block 1 of a new block" pwrite /dev/mapper/wzthin w 1 1
check "it reads back" pverify /dev/mapper/wzthin w 1 1
check "the rest of the new block reads zeros" all_of "zverify /dev/mapper/wzthin 0 1" "zverify /dev/mapper/wzthin 2 14"
check_eq "pool3: 1 data block used" 1 "$(pool_used_data pool3)"
dmsetup remove wzthin pool3 wzlin tmeta3
losetup -d "$wzloop"
rm -f $wzimg

dump_has_7() { check_eq "thin_dump: device 0 maps 7 blocks" 7 "$(dump_mapped 0)"; }
thin_finish dump_has_7
