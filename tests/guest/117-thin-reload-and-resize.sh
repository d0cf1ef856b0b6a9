#!/bin/bash
# The pool under table reloads and suspends while thin I/O runs: writes in
# flight across pool reloads (new low water mark, features) and thin
# suspend/resume all land; the metadata device grows by table reload
# (status shows the new size, the log says so); the pool is torn down and
# reactivated with every block intact.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 4
make_data 128
T=/dev/mapper/thin0
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 and 1 (32 MiB each)" all_of "thin_new pool 0 thin0 32" "thin_new pool 1 thin1 32"
thin_check_served
check_match "metadata: 1024 blocks" '^0 [0-9]+/1024 ' "$(pool_status pool)"

# Writers on both thins (4 KiB and 64 KiB writes) while the pool is
# reloaded and the thins are suspended and resumed.
pwrite $T R 0 2048 4 &
w0=$!
pwrite /dev/mapper/thin1 S 0 4096 64 &
w1=$!
for lw in 16 32 64; do
	check "reload the pool with low water mark $lw during writes" pool_reload pool 128 $lw
	check "suspend and resume thin 0 during writes" all_of "dmsetup suspend thin0" "dmsetup resume thin0"
	check "suspend thin 1 without flushing, resume" all_of "dmsetup suspend --noflush thin1" "dmsetup resume thin1"
done
check "reload with skip_block_zeroing during writes" pool_reload pool 128 64 skip_block_zeroing
wait $w0
check_eq "the 4 KiB writer finished" 0 $?
wait $w1
check_eq "the 64 KiB writer finished" 0 $?
check_match "table line has the last low water mark and feature" " 128 64 1 skip_block_zeroing \$" "$(dmsetup table pool)"
check "thin 0 reads back" layout $T "R 0 2048" "zero 2048 6144"
check "thin 1 reads back" layout /dev/mapper/thin1 "S 0 4096" "zero 4096 4096"

# The metadata device grows by table reload.
log_mark
check "grow the metadata device to 8 MiB" slice_grow tmeta $DISK1 0 8
check "reload the pool onto it" pool_reload pool 128 64
check_match "metadata: 2048 blocks" '^0 [0-9]+/2048 ' "$(pool_status pool)"
check "the growth is logged" logged "growing the metadata device from 1024 to 2048 blocks"
check "write after the growth" pwrite $T R2 4096 1024 64
# And the data device (also covered with queued I/O in 115).
log_mark
check "grow the data device to 160 MiB" slice_grow tdata $DISK2 0 160
check "reload the pool onto it" pool_reload pool 128 64
check_match "data: 2560 blocks" '^0 [0-9/]+ [0-9]+/2560 ' "$(pool_status pool)"
check "the growth is logged" logged "growing the data device from 2048 to 2560 blocks"
load_pool() { dmsetup reload pool --table "$(pool_table "$META" "$DATA" 128 64)"; }
log_mark
check "shrink the data slice to 150 MiB, load the pool onto it" \
	all_of "slice_grow tdata $DISK2 0 150" "dmsetup suspend pool" load_pool
check_fails "resume refuses a data device smaller than the metadata says" dmsetup resume pool
check "the refusal is logged" logged "(2400 blocks) too small: expected 2560"
check "grow the slice back, load, resume" all_of "slice_grow tdata $DISK2 0 160" load_pool "dmsetup resume pool"
check_match "pool still rw at 2560 blocks" '^0 [0-9/]+ [0-9]+/2560 - rw ' "$(pool_status pool)"

check "tear down" thin_teardown
require "reactivate pool and thins" all_of "pool_create pool 128 64" "thin_activate pool 0 thin0 32" "thin_activate pool 1 thin1 32"
check "thin 0 reads back" layout $T "R 0 2048" "zero 2048 2048" "R2 4096 1024" "zero 5120 3072"
check "thin 1 reads back" layout /dev/mapper/thin1 "S 0 4096" "zero 4096 4096"
expect_counts() { check_eq "thin_dump: 128 + 64 and 256 blocks" "192 256" "$(dump_mapped 0) $(dump_mapped 1)"; }
thin_finish expect_counts
