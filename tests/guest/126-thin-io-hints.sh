#!/bin/bash
# The I/O size hints a pool device advertises (and its thins inherit), as
# upstream's pool_io_hints: io_opt the block size and io_min the block or,
# when the data device's largest I/O is smaller than a block, the largest
# power of two dividing the block that fits it; a data device whose
# optimal size is already a multiple of the block size (a stripe) keeps
# its own. Passes on C dm-thin too (THIN_IMPL=c).
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 4

q() { cat "$(sysfs_dev "$1")/queue/$2"; }
# expect_hints DATA BLOCK_SECTORS: "io_min io_opt" upstream gives a pool of
# BLOCK_SECTORS blocks on DATA, from DATA's own limits.
expect_hints() {
	local bs=$2 max opt min
	max=$(($(q "$1" max_sectors_kb) * 2)) opt=$(($(q "$1" optimal_io_size) / 512))
	min=$(q "$1" minimum_io_size)
	if ((max < bs)); then
		while ((bs % max)); do
			((max & (max - 1))) || max=$((max - 1))
			while ((max & (max - 1))); do max=$((max & (max - 1))); done
		done
	fi
	if ((opt < bs || opt % bs)); then
		((bs % max == 0)) && min=$((max * 512)) || min=$((bs * 512))
		opt=$((bs * 512))
	else
		opt=$((opt * 512))
	fi
	echo "$min $opt"
}
hints() { echo "$(q "$1" minimum_io_size) $(q "$1" optimal_io_size)"; }
# pool_on BLOCK_SECTORS: a new pool (fresh metadata) on $DATA with thin 0.
pool_on() {
	dd if=/dev/zero of=$META bs=4096 count=1 oflag=direct status=none &&
		pool_create pool "$1" 0 && thin_new pool 0 thin0 16
}
pool_off() { dmsetup remove thin0 pool; }

# 2 MiB blocks on a plain disk slice.
make_data 64
require "pool: 2 MiB blocks, thin 0" pool_on 4096
thin_check_served
want=$(expect_hints $DATA 4096)
diag "data device: max $(q $DATA max_sectors_kb) KiB, io_min $(q $DATA minimum_io_size), io_opt $(q $DATA optimal_io_size)"
check_eq "2 MiB blocks: pool io_min/io_opt as upstream" "$want" "$(hints /dev/mapper/pool)"
check_eq "the thin inherits them" "$want" "$(hints /dev/mapper/thin0)"
check_eq "io_opt is the block" 2097152 "$(q /dev/mapper/pool optimal_io_size)"
pool_off
dmsetup remove tdata

# A data device taking at most 96 KiB an I/O: io_min is the largest power
# of two dividing 2 MiB that fits (64 KiB), not the block.
old_max=$(cat /sys/block/vdc/queue/max_sectors_kb)
echo 96 >/sys/block/vdc/queue/max_sectors_kb
make_data 64
require "pool: 2 MiB blocks on a device of 96 KiB I/Os" pool_on 4096
check_eq "expected io_min 64 KiB" "65536 2097152" "$(expect_hints $DATA 4096)"
check_eq "pool io_min 64 KiB, io_opt 2 MiB" "65536 2097152" "$(hints /dev/mapper/pool)"
check "thin 0 takes a 2 MiB write and reads it back" all_of "pwrite /dev/mapper/thin0 M 0 512 512" \
	"pverify /dev/mapper/thin0 M 0 512"
pool_off
dmsetup remove tdata
echo "$old_max" >/sys/block/vdc/queue/max_sectors_kb

# A stripe of two 64 KiB chunks (io_opt 128 KiB): a multiple of 64 KiB
# blocks, kept; not of 192 KiB blocks, replaced.
require "striped data device" dmsetup create tdata --table \
	"0 $((64 * 2048)) striped 2 128 $DISK2 0 $DISK2 $((64 * 2048))"
DATA=/dev/mapper/tdata
check_eq "the stripe's own hints" "65536 131072" "$(hints $DATA)"
require "pool: 64 KiB blocks on the stripe" pool_on 128
check_eq "64 KiB blocks: the stripe's hints kept" "65536 131072" "$(hints /dev/mapper/pool)"
pool_off
require "pool: 192 KiB blocks on the stripe" pool_on 384
check_eq "192 KiB blocks: the block's" "$(expect_hints $DATA 384)" "$(hints /dev/mapper/pool)"
check_eq "io_opt 192 KiB" 196608 "$(q /dev/mapper/pool optimal_io_size)"
thin_finish
