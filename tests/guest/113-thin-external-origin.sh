#!/bin/bash
# A thin device over an external origin: unprovisioned blocks read the
# origin (zeros past its end, also inside a block the origin's end cuts),
# reads provision nothing, a partial write copies the rest of its block
# from the origin (zeros past the end), the origin itself is never written,
# and a snapshot of such a device sees its writes and the origin.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
make_data 64
# The origin: 16 MiB + 24 KiB, so it ends 6 4 KiB blocks into 64 KiB block 256.
osec=$((16 * 2048 + 48))
require "external origin (16 MiB + 24 KiB on disk 1)" \
	dmsetup create torigin --table "0 $osec linear $DISK1 $((32 * 2048))"
O=/dev/mapper/torigin
check "fill the origin" all_of "pwrite $O EXT 0 4096 1024" "pwrite $O EXT 4096 6"
origin_intact() { layout $O "EXT 0 4102"; }
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 (24 MiB) over the origin" thin_new pool 0 thin0 24 $O
thin_check_served
T=/dev/mapper/thin0
check_match "table line names the origin" " $THIN_TARGET [0-9]+:[0-9]+ 0 [0-9]+:[0-9]+\$" "$(dmsetup table thin0)"
check "unprovisioned blocks read the origin, zeros past its end" layout $T "EXT 0 4102" "zero 4102 2042"
check_eq "reads provisioned nothing" "0 -" "$(dmsetup status thin0 | cut -d' ' -f4-)"

check "4 KiB write at 4 KiB block 5 (block 0)" pwrite $T W 5 1
check "64 KiB write over block 2" pwrite $T W 32 16 64
check "4 KiB write at 4105 (block 256, which the origin's end cuts)" pwrite $T W 4105 1
check "4 KiB write past the origin (4K block 5000)" pwrite $T W 5000 1
thin0_layout=("EXT 0 5" "W 5 1" "EXT 6 26" "W 32 16" "EXT 48 4048" "EXT 4096 6" "zero 4102 3" "W 4105 1"
	"zero 4106 894" "W 5000 1" "zero 5001 1143")
check "partial blocks hold the origin's rest, zeros past its end" layout $T "${thin0_layout[@]}"
check_eq "status: 4 blocks mapped" 512 "$(thin_mapped thin0)"
check "the origin was not written" origin_intact

require "snapshot 1 of thin 0" snap_new pool 1 0 thin0
require "activate it over the same origin" thin_activate pool 1 snap1 24 $O
check "the snapshot reads thin 0's writes and the origin" layout /dev/mapper/snap1 "${thin0_layout[@]}"
check "snapshot writes 4 KiB into an unprovisioned origin block (4K 70)" pwrite /dev/mapper/snap1 S 70 1
check "and into a block shared with thin 0 (4K 33)" pwrite /dev/mapper/snap1 S 33 1
check "the snapshot has both" layout /dev/mapper/snap1 "EXT 0 5" "W 5 1" "EXT 6 26" "W 32 1" "S 33 1" "W 34 14" \
	"EXT 48 22" "S 70 1" "EXT 71 25"
check "thin 0 is unchanged" layout $T "${thin0_layout[@]}"
check "the origin was not written" origin_intact

check "remove everything" thin_teardown
require "pool and devices again" all_of "pool_create pool 128 0" "thin_activate pool 0 thin0 24 $O" \
	"thin_activate pool 1 snap1 24 $O"
check "thin 0 after reactivation" layout $T "${thin0_layout[@]}"
check "snapshot after reactivation" layout /dev/mapper/snap1 "S 33 1" "S 70 1" "EXT 71 25"
expect_counts() {
	check_eq "thin_dump: devices 0 and 1 map 4 and 5 blocks" "4 5" "$(dump_mapped 0) $(dump_mapped 1)"
}
thin_finish expect_counts
