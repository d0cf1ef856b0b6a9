#!/bin/bash
# Snapshots of snapshots, three deep, with writes on every level after each
# snapshot (whole blocks, 4 KiB pieces that break sharing of a 64 KiB block,
# unprovisioned ranges), every level verified block by block against what it
# must hold; then the middle of the chain is deleted (the blocks it shared
# stay, the ones only it held are freed: exact data block counts), a
# snapshot of an inactive device, and everything again after reactivation.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
make_data 64
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 (16 MiB)" thin_new pool 0 thin0 16
thin_check_served
D=/dev/mapper
check "level 0: fill 16 blocks" pwrite $D/thin0 L0 0 256 64

require "snapshot 1 of active thin 0, activated" snap_activate pool 1 0 thin0 snap1 16
check "level 0 overwrites block 0 after the snapshot" pwrite $D/thin0 L0b 0 16
check "level 1 rewrites block 1 in 4 KiB pieces" pwrite $D/snap1 L1 16 16
check "level 1 writes 4 KiB inside block 2" pwrite $D/snap1 L1 40 1

require "snapshot 2 of active snapshot 1, activated" snap_activate pool 2 1 snap1 snap2 16
check "level 2 writes 8 KiB inside block 3" pwrite $D/snap2 L2 48 2
check "level 1 rewrites block 4 after snapshot 2" pwrite $D/snap1 L1b 64 16 64

require "snapshot 3 of active snapshot 2, activated" snap_activate pool 3 2 snap2 snap3 16
check "level 3 writes 4 KiB inside block 2" pwrite $D/snap3 L3 41 1
check "level 3 rewrites block 5" pwrite $D/snap3 L3 80 16
check "level 3 writes an unprovisioned block (62)" pwrite $D/snap3 L3 1000 1
check "level 2 rewrites block 6 after snapshot 3" pwrite $D/snap2 L2b 96 16

l0=("L0b 0 16" "L0 16 240" "zero 256 3840")
l1=("L0 0 16" "L1 16 16" "L0 32 8" "L1 40 1" "L0 41 23" "L1b 64 16" "L0 80 176" "zero 256 3840")
l2=("L0 0 16" "L1 16 16" "L0 32 8" "L1 40 1" "L0 41 7" "L2 48 2" "L0 50 46" "L2b 96 16" "L0 112 144" "zero 256 3840")
l3=("L0 0 16" "L1 16 16" "L0 32 8" "L1 40 1" "L3 41 1" "L0 42 6" "L2 48 2" "L0 50 30" "L3 80 16" "L0 96 160"
	"zero 256 744" "L3 1000 1" "zero 1001 3095")
verify_all() { # WHEN
	check "$1: level 0 holds its data" layout $D/thin0 "${l0[@]}"
	[[ -e $D/snap1 ]] && check "$1: level 1 holds its data" layout $D/snap1 "${l1[@]}"
	check "$1: level 2 holds its data" layout $D/snap2 "${l2[@]}"
	check "$1: level 3 holds its data" layout $D/snap3 "${l3[@]}"
}
verify_all "after the writes"
check_eq "status: level 3 maps 17 blocks" $((17 * 128)) "$(thin_mapped snap3)"
check_eq "pool: 25 data blocks used (16 + 9 broken or new)" 25 "$(pool_used_data pool)"

# Delete the middle of the chain: blocks shared with levels 2 and 3 stay,
# level 1's own block 4 is freed.
check "remove and delete snapshot 1" all_of "dmsetup remove snap1" "dmsetup message pool 0 'delete 1'"
check_eq "pool: 24 data blocks used" 24 "$(pool_used_data pool)"
verify_all "after deleting level 1"
# A snapshot of an inactive device needs no suspend.
check "remove snapshot 3's device, snapshot it as 4" all_of "dmsetup remove snap3" "snap_new pool 4 3"
require "activate snapshot 3 and snapshot 4" all_of "thin_activate pool 3 snap3 16" "thin_activate pool 4 snap4 16"
check "snapshot 4 reads as level 3" layout $D/snap4 "${l3[@]}"
check "level 4 writes into every shared block it holds (4 KiB each)" \
	all_of "for b in \$(seq 0 16 255); do pwrite $D/snap4 L4 \$b 1 || return 1; done"
check_eq "pool: 40 data blocks used (16 broken by level 4)" 40 "$(pool_used_data pool)"
check "level 3 is untouched by level 4" layout $D/snap3 "${l3[@]}"

check "remove everything" thin_teardown
require "pool again" pool_create pool 128 0
require "devices again" all_of "thin_activate pool 0 thin0 16" "thin_activate pool 2 snap2 16" "thin_activate pool 3 snap3 16"
verify_all "after reactivation"
expect_counts() {
	check_eq "thin_dump: devices 0 2 3 4" "0 2 3 4" \
		"$(sed -n 's/.*<device dev_id="\([0-9]*\)".*/\1/p' <<<"$THIN_DUMP" | sort -n | xargs)"
	check_eq "thin_dump: mapped blocks of 0 2 3 4" "16 16 17 17" \
		"$(dump_mapped 0) $(dump_mapped 2) $(dump_mapped 3) $(dump_mapped 4)"
}
thin_finish expect_counts
