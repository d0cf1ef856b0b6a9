#!/bin/bash
# core
# The thin family's locking on the debug kernel (lockdep, KASAN,
# DEBUG_ATOMIC_SLEEP), kept short: provisioning with zeroing, a snapshot
# whose origin then breaks sharing (kcopyd) while the snapshot is read,
# a discard racing reads of the blocks it frees, a flush, a pool reload
# with I/O in flight, and the metadata checked at the end. The 11x/12x
# scenarios cover each feature fully on the release kernel.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 4
make_data 16
require "pool: 64 KiB blocks, zeroing on" pool_create pool 128 0
require "thin 0 (4 MiB)" thin_new pool 0 thin0 4
thin_check_served
T=/dev/mapper/thin0 S=/dev/mapper/snap1
check "fill blocks 0-3" pwrite $T A 0 64 64
check "4 KiB inside block 5 (provisioned, rest zeroed)" pwrite $T B 84 1
check "blocks 0-3 and 5 read back, the rest zeros" \
	layout $T "A 0 64" "zero 64 20" "B 84 1" "zero 85 939"

require "snapshot 1 of thin 0, activated" snap_activate pool 1 0 thin0 snap1 4
# Origin writes to half of blocks 0 and 1 break sharing (the other half
# copied) while the snapshot reads the same blocks.
{ pwrite $T C 0 8 && pwrite $T C 16 8; } &
writer=$!
dd if=$S of=/dev/null bs=64K count=4 iflag=direct status=none &
reader=$!
wait $reader
wait $writer
check_eq "the origin's writes breaking sharing complete" 0 $?
check "thin 0 has the new data and the copied rest of blocks 0-1" layout $T "C 0 8" "A 8 8" "C 16 8" "A 24 40" "zero 64 20" "B 84 1"
check "snapshot 1 kept the old data" layout $S "A 0 64" "zero 64 20" "B 84 1" "zero 85 939"
check_eq "pool: 7 data blocks used (5 + 2 broken)" 7 "$(pool_used_data pool)"

# A discard of thin 0's own blocks while they are read.
dd if=$T of=/dev/null bs=64K count=2 iflag=direct status=none &
reader=$!
check "discard blocks 0-1 of thin 0 (its own since the copies)" blkdiscard -o 0 -l $((128 * 1024)) $T
wait $reader
check "the discarded blocks read zeros" layout $T "zero 0 32" "A 32 32"
check_eq "pool: 5 data blocks used" 5 "$(pool_used_data pool)"
check "snapshot 1 still holds them" layout $S "A 0 64"

fsynced() { pattern F 128 16 | dd of=$T bs=64K seek=8 count=1 iflag=fullblock oflag=direct conv=fsync status=none; }
check "a flushed write" fsynced
pwrite $S D 192 16 64 &
writer=$!
check "reload the pool with a snapshot write in flight" pool_reload pool 128 0
wait $writer
check_eq "the snapshot write completes" 0 $?
check "everything reads back after the reload" all_of \
	"layout $T 'zero 0 32' 'A 32 32' 'zero 64 20' 'B 84 1' 'zero 85 43' 'F 128 16'" \
	"layout $S 'A 0 64' 'zero 64 20' 'B 84 1' 'zero 85 107' 'D 192 16' 'zero 208 816'"
thin_finish
