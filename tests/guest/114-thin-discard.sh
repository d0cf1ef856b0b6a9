#!/bin/bash
# Discards through a thin device: a discard covering a whole block unmaps it
# (status mapped count and pool data count drop, it reads zeros) and, with
# passdown, reaches the data device; a partial block stays mapped with its
# data; a block shared with a snapshot is unmapped from the thin only
# (nothing freed, nothing passed down); no_discard_passdown unmaps without
# passing down; an ignore_discard pool takes no discards at all; passdown
# asked for on a data device without discards is turned off, as upstream.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
ram_data 64
require "pool: 64 KiB blocks, discards passed down" pool_create pool 128 0
check_match "status: discard_passdown" '^0 [0-9/]+ [0-9/]+ - rw discard_passdown ' "$(pool_status pool)"
require "thin 0 (16 MiB)" thin_new pool 0 thin0 16
thin_check_served
T=/dev/mapper/thin0
check "fill blocks 0-15" pwrite $T D 0 256 64
check_eq "16 blocks mapped" $((16 * 128)) "$(thin_mapped thin0)"
# kib_discard OFFSET_KIB LENGTH_KIB
kib_discard() { blkdiscard -o $(($1 * 1024)) -l $(($2 * 1024)) $T; }

d0=$(discard_ios $DATA)
check "discard block 0 exactly" kib_discard 0 64
check_eq "15 blocks mapped" $((15 * 128)) "$(thin_mapped thin0)"
check_eq "pool: 15 data blocks used" 15 "$(pool_used_data pool)"
check "block 0 reads zeros, block 1 intact" layout $T "zero 0 16" "D 16 16"
d1=$(discard_ios $DATA)
check "the freed block's discard reached the data device" test "$d1" -gt "$d0"

check "discard 8 KiB inside block 1" kib_discard 68 8
check_eq "block 1 stays mapped" $((15 * 128)) "$(thin_mapped thin0)"
check "block 1 keeps its data" layout $T "D 16 16"
check "discard from the middle of block 2 to the middle of block 4" kib_discard 160 128
check_eq "only block 3 unmapped" $((14 * 128)) "$(thin_mapped thin0)"
check "blocks 2 and 4 keep their data, 3 reads zeros" layout $T "D 32 16" "zero 48 16" "D 64 16"
check "discard of unprovisioned blocks 20-30" kib_discard $((20 * 64)) $((11 * 64))
check_eq "mapped count unchanged" $((14 * 128)) "$(thin_mapped thin0)"

# Shared with a snapshot: unmapped from thin 0 only.
require "snapshot 1 of thin 0" snap_new pool 1 0 thin0
require "activate snapshot 1" thin_activate pool 1 snap1 16
d2=$(discard_ios $DATA)
check "discard block 5 on thin 0" kib_discard $((5 * 64)) 64
check_eq "thin 0: 13 blocks mapped" $((13 * 128)) "$(thin_mapped thin0)"
check_eq "snapshot: still 14" $((14 * 128)) "$(thin_mapped snap1)"
check_eq "pool: still 14 data blocks used" 14 "$(pool_used_data pool)"
check "snapshot still reads block 5" layout /dev/mapper/snap1 "D 80 16"
check "thin 0 reads zeros there" zverify $T 80 16
check_eq "nothing passed down for a block still in use" "$d2" "$(discard_ios $DATA)"

# no_discard_passdown: unmapped, freed, not passed down.
check "reload with no_discard_passdown" pool_reload pool 128 0 no_discard_passdown
check_match "status: no_discard_passdown" '^0 [0-9/]+ [0-9/]+ - rw no_discard_passdown ' "$(pool_status pool)"
check "discard blocks 6-7 on the snapshot and thin 0" all_of "blkdiscard -o $((6 * 65536)) -l $((2 * 65536)) /dev/mapper/snap1" \
	"kib_discard $((6 * 64)) 128"
check_eq "pool: 12 data blocks used" 12 "$(pool_used_data pool)"
check_eq "nothing passed down" "$d2" "$(discard_ios $DATA)"
check "back to passdown" pool_reload pool 128 0
check "discard the whole of thin 0" blkdiscard $T
check_eq "thin 0 maps nothing" "0 -" "$(dmsetup status thin0 | cut -d' ' -f4-)"
check "thin 0 reads zeros" zverify $T 0 4096
check "the snapshot keeps its 12 blocks" layout /dev/mapper/snap1 "zero 0 16" "D 16 32" "zero 48 16" "D 64 32" \
	"zero 96 32" "D 128 128"
check_eq "pool: 12 data blocks used" 12 "$(pool_used_data pool)"

# An ignore_discard pool: the thin device takes no discards.
check "remove devices and pool" thin_teardown
require "pool with ignore_discard" pool_create pool 128 0 ignore_discard
require "snapshot 1 again" thin_activate pool 1 snap1 16
check_eq "the thin device offers no discard" 0 \
	"$(cat "$(sysfs_dev /dev/mapper/snap1)/queue/discard_max_bytes")"
check_fails "blkdiscard is refused" blkdiscard -o $((8 * 65536)) -l 65536 /dev/mapper/snap1
check_eq "snapshot keeps its 12 blocks" $((12 * 128)) "$(thin_mapped snap1)"
check "and their data" layout /dev/mapper/snap1 "D 128 128"

# Passdown asked for on a data device that takes no discards (a thin of the
# ignore_discard pool): the pool is bound without passdown, as upstream's
# (status no_discard_passdown, a warning) while its table line keeps what
# was asked for; its thins still unmap discarded blocks.
require "thin 2 of the ignore_discard pool (8 MiB)" thin_new pool 2 thin2 8
require "metadata for a pool on it" slice tmeta2 $DISK1 16 8
dd if=/dev/zero of=/dev/mapper/tmeta2 bs=4K count=1 oflag=direct status=none
log_mark
require "pool2 on thin 2, passdown asked for" dmsetup create pool2 --table \
	"$(pool_table /dev/mapper/tmeta2 /dev/mapper/thin2 128 0)"
check_match "pool2 status: no_discard_passdown" '^0 [0-9/]+ [0-9/]+ - rw no_discard_passdown ' \
	"$(pool_status pool2)"
check "the downgrade is logged" logged "discard unsupported: Disabling discard passdown."
check_eq "the pool device offers no discard" 0 "$(cat "$(sysfs_dev /dev/mapper/pool2)/queue/discard_max_bytes")"
check_match "pool2's table line still asks for passdown (no feature words)" \
	"^0 [0-9]+ $POOL_TARGET [0-9]+:[0-9]+ [0-9]+:[0-9]+ 128 0 0 ?\$" "$(dmsetup table pool2)"
require "pool2 thin 0 (4 MiB)" thin_new pool2 0 p2thin 4
check "write blocks 0-3" pwrite /dev/mapper/p2thin P 0 64 64
check "discard block 1" blkdiscard -o 65536 -l 65536 /dev/mapper/p2thin
check_eq "pool2: 3 data blocks used" 3 "$(pool_used_data pool2)"
check "block 1 reads zeros, the others their data" layout /dev/mapper/p2thin "P 0 16" "zero 16 16" "P 32 32"
check "remove pool2 and what it stands on" dmsetup remove p2thin pool2 tmeta2 thin2
expect_counts() { check_eq "thin_dump: devices 0 and 1 map 0 and 12 blocks" "0 12" "$(dump_mapped 0) $(dump_mapped 1)"; }
thin_finish expect_counts
