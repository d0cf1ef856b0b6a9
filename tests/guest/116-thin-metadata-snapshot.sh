#!/bin/bash
# Metadata snapshots: reserve_metadata_snap holds the metadata as it was
# (status names the held root), thin_dump -m reads that root from the live
# metadata device while the pool keeps changing (new devices, deletes,
# writes, transaction ids); release_metadata_snap drops it; a held root
# survives pool deactivation and reactivation, and the checkers accept
# metadata with one held.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
make_data 64
T=/dev/mapper/thin0
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 (16 MiB)" thin_new pool 0 thin0 16
thin_check_served
check "thin 0: write blocks 0-9" pwrite $T A 0 160 64
check "snapshot 1 of thin 0" snap_new pool 1 0 thin0
check "thin 0: write blocks 20-22" pwrite $T A 320 48 64
check "transaction id 1" dmsetup message pool 0 "set_transaction_id 0 1"
check "reserve_metadata_snap" dmsetup message pool 0 reserve_metadata_snap
held=$(pool_field pool 4)
check_match "status names the held root" '^[1-9][0-9]*$' "$held"
# dump_devices XML: "id:mapped_blocks" of each device, in order.
dump_devices() { sed -n 's/.*<device dev_id="\([0-9]*\)" mapped_blocks="\([0-9]*\)".*/\1:\2/p' <<<"$1" | xargs; }
check_snapshot_dump() { # WHEN
	local x
	x=$(thin_dump -m $META 2>&1)
	check_match "$1: thin_dump -m reads the held root (transaction 1)" '^<superblock [^>]*transaction="1"' "$x"
	check_eq "$1: it lists devices 0 and 1 as they were (13 and 10 blocks)" "0:13 1:10" "$(dump_devices "$x")"
	x=$(thin_dump --metadata-snap="$held" $META 2>&1)
	check_eq "$1: thin_dump --metadata-snap=$held reads the same" "0:13 1:10" "$(dump_devices "$x")"
}
check_snapshot_dump "right after reserve"

# The pool moves on; the snapshot does not.
check "create thin 2, write it" all_of "thin_new pool 2 thin2 16" "pwrite /dev/mapper/thin2 B 0 32 64"
check "delete snapshot 1" dmsetup message pool 0 "delete 1"
check "thin 0: write blocks 30-39" pwrite $T A 480 160 64
check "transaction id 2" dmsetup message pool 0 "set_transaction_id 1 2"
check_eq "held root unchanged" "$held" "$(pool_field pool 4)"
check_snapshot_dump "after the pool changed"
check "release_metadata_snap" dmsetup message pool 0 release_metadata_snap
check_eq "no held root" - "$(pool_field pool 4)"
check_fails "thin_dump -m finds none" thin_dump -m $META

# A held root across deactivation.
check "reserve again" dmsetup message pool 0 reserve_metadata_snap
held=$(pool_field pool 4)
check "thin 0: write blocks 40-41" pwrite $T A 640 32 64
check "deactivate" thin_teardown
meta_checks "$META" "metadata with a held root"
x=$(thin_dump -m $META 2>&1)
check_eq "thin_dump -m on the inactive device: devices 0 and 2 as at the second reserve" "0:23 2:2" "$(dump_devices "$x")"
check_eq "thin_dump of the current metadata: device 0 has 25 blocks" "0:25 2:2" "$(dump_devices "$THIN_DUMP")"
require "pool again" pool_create pool 128 0
check_eq "status names the same held root" "$held" "$(pool_field pool 4)"
check "release it" dmsetup message pool 0 release_metadata_snap
check_eq "no held root" - "$(pool_field pool 4)"
require "thin 0 again" thin_activate pool 0 thin0 16
check "thin 0 reads back" layout $T "A 0 160" "zero 160 160" "A 320 48" "zero 368 112" "A 480 192" "zero 672 3424"
expect_counts() { check_eq "thin_dump: devices 0 and 2" "0:25 2:2" "$(dump_devices "$THIN_DUMP")"; }
thin_finish expect_counts
