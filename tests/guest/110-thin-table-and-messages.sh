#!/bin/bash
# thin-pool and thin tables and pool messages, as upstream's dm-thin parses
# them: every feature (table line, status, behaviour), every message, and bad
# values of each with upstream's error text in the log. Each refusal leaves
# the pool and module usable: a thin device written before and after reads
# back, and the metadata checks clean at the end.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
targets=$(dmsetup targets)
check_match "$POOL_TARGET at upstream's version" "(^|"$'\n'")$POOL_TARGET +v1\.23\.0" "$targets"
check_match "$THIN_TARGET at upstream's version" "(^|"$'\n'")$THIN_TARGET +v1\.23\.0" "$targets"
make_meta 8
make_data 64
mdev=$(printf '%d:%d' "$(dmsetup info -c --noheadings -o major tmeta)" "$(dmsetup info -c --noheadings -o minor tmeta)")
ddev=$(printf '%d:%d' "$(dmsetup info -c --noheadings -o major tdata)" "$(dmsetup info -c --noheadings -o minor tdata)")
len=$(sectors $DATA)

# Bad pool tables, before any pool exists.
P="0 $len $POOL_TARGET"
refused_table "3 arguments" "$POOL_TARGET: Invalid argument count" "$P $META $DATA 128"
refused_table "metadata and data the same" "$POOL_TARGET: Error setting metadata or data device" "$P $DATA $DATA 128 0"
refused_table "missing metadata device" "$POOL_TARGET: Error opening metadata block device" "$P /dev/nonexistent $DATA 128 0"
refused_table "missing data device" "$POOL_TARGET: Error getting data device" "$P $META /dev/nonexistent 128 0"
for bs in 0 64 100 192x abc 4194304 -128; do
	refused_table "block size $bs" "$POOL_TARGET: Invalid block size" "$P $META $DATA $bs 0"
done
refused_table "low water mark x" "$POOL_TARGET: Invalid low water mark" "$P $META $DATA 128 x"
refused_table "unknown feature" "$POOL_TARGET: Unrecognised pool feature requested" "$P $META $DATA 128 0 1 bogus"
refused_table "6 feature arguments" "$POOL_TARGET: Invalid number of pool feature arguments" \
	"$P $META $DATA 128 0 5 a b c d e"
refused_table "feature count larger than the words" "$POOL_TARGET: Invalid number of pool feature arguments" "$P $META $DATA 128 0 2 skip_block_zeroing"
# The pool's target type flags, as upstream's: it must be alone in its
# table (singleton), and a pool device's table cannot be replaced by
# another target type (immutable).
refused_table "pool beside another target (singleton)" "must appear alone in table" \
	"$P $META $DATA 128 0"$'\n'"$len 8 zero"
check "no device left behind by the refusals" test ! -e /dev/mapper/tbad

# A pool with no features: table line and status as upstream prints them.
require "create pool (64 KiB blocks, low water 4)" pool_create pool 128 4
# Upstream ends table and status lines with a space; so must we.
check_eq "table line" "0 $len $POOL_TARGET $mdev $ddev 128 4 0 " "$(dmsetup table pool)"
log_mark
check_fails "a pool's table cannot be replaced by another type (immutable)" \
	dmsetup load pool --table "0 $len zero"
check "logs 'can't replace immutable target type'" logged "can't replace immutable target type $POOL_TARGET"
dmsetup clear pool 2>/dev/null || true
st=$(pool_status pool)
check_match "status: transaction 0, metadata and data counts, no held root, rw, queue_if_no_space, no needs_check, threshold" \
	'^0 [0-9]+/2048 0/1024 - rw (discard_passdown|no_discard_passdown) queue_if_no_space - [0-9]+ $' "$st"
require "thin 0 created and activated" thin_new pool 0 thin0 32
thin_check_served
check "write to thin 0" pwrite /dev/mapper/thin0 t0 0 64
check "reads back" pverify /dev/mapper/thin0 t0 0 64

# Bad thin tables.
T="0 2048 $THIN_TARGET"
refused_table "thin: 1 argument" "$THIN_TARGET: Invalid argument count" "$T /dev/mapper/pool"
refused_table "thin: 3 extra arguments" "$THIN_TARGET: Invalid argument count" "$T /dev/mapper/pool 0 $DATA x"
refused_table "thin: device id x" "$THIN_TARGET: Invalid device id" "$T /dev/mapper/pool x"
refused_table "thin: missing pool device" "$THIN_TARGET: Error opening pool device" "$T /dev/nonexistent 0"
refused_table "thin: pool device that is no pool" "$THIN_TARGET: Couldn't find pool object" "$T $DATA 0"
refused_table "thin: id never created" "$THIN_TARGET: Couldn't open thin internal device" "$T /dev/mapper/pool 7"
refused_table "thin: missing external origin" "$THIN_TARGET: Error opening origin device" "$T /dev/mapper/pool 0 /dev/nonexistent"

# Messages: good ones change what status and thin_dump show; bad ones are
# refused with upstream's text.
refused_message "create_thin without id" pool "create_thin" "Message received with 1 arguments instead of 2."
refused_message "create_thin x" pool "create_thin x" "Message received with invalid device id: x"
refused_message "create_thin 2^24" pool "create_thin 16777216" "Message received with invalid device id: 16777216"
refused_message "create_thin of an existing id" pool "create_thin 0" \
	"Creation of new thinly-provisioned device with id 0 failed."
check "create_thin 2^24-1 (largest id)" dmsetup message pool 0 "create_thin 16777215"
check "message names are case-insensitive (CREATE_THIN 5)" dmsetup message pool 0 "CREATE_THIN 5"
refused_message "create_snap with one id" pool "create_snap 1" "Message received with 2 arguments instead of 3."
refused_message "create_snap of a missing origin" pool "create_snap 1 99" "Creation of new snapshot 1 of device 99 failed."
refused_message "create_snap bad origin id" pool "create_snap 1 y" "Message received with invalid device id: y"
refused_message "create_snap onto an existing id" pool "create_snap 5 0" "Creation of new snapshot 5 of device 0 failed."
check "create_snap 1 of active thin 0 (suspended)" snap_new pool 1 0 thin0
refused_message "delete without id" pool "delete" "Message received with 1 arguments instead of 2."
refused_message "delete of a missing id" pool "delete 42" "Deletion of thin device 42 failed."
refused_message "delete of an active thin" pool "delete 0" "Deletion of thin device 0 failed."
check "delete 16777215" dmsetup message pool 0 "delete 16777215"
refused_message "set_transaction_id with one id" pool "set_transaction_id 0" \
	"Message received with 2 arguments instead of 3."
refused_message "set_transaction_id bad current id" pool "set_transaction_id x 1" \
	"set_transaction_id message: Unrecognised id x."
refused_message "set_transaction_id bad new id" pool "set_transaction_id 0 y" \
	"set_transaction_id message: Unrecognised new id y."
refused_message "set_transaction_id from a wrong current id" pool "set_transaction_id 5 6" \
	"Failed to change transaction id from 5 to 6."
check "set_transaction_id 0 9" dmsetup message pool 0 "set_transaction_id 0 9"
check_eq "status shows transaction 9" 9 "$(pool_field pool 1)"
refused_message "reserve_metadata_snap with an argument" pool "reserve_metadata_snap 1" \
	"Message received with 2 arguments instead of 1."
check "reserve_metadata_snap" dmsetup message pool 0 reserve_metadata_snap
check_match "status shows the held root" '^[1-9][0-9]*$' "$(pool_field pool 4)"
refused_message "reserve_metadata_snap twice" pool "reserve_metadata_snap" "reserve_metadata_snap message failed."
check "release_metadata_snap" dmsetup message pool 0 release_metadata_snap
check_eq "no held root" - "$(pool_field pool 4)"
refused_message "release_metadata_snap with none held" pool "release_metadata_snap" "release_metadata_snap message failed."
refused_message "release_metadata_snap with an argument" pool "release_metadata_snap x" \
	"Message received with 2 arguments instead of 1."
refused_message "unknown message" pool "bogus 1" "Unrecognised thin pool target message received: bogus"
check_fails "a thin device takes no messages" dmsetup message thin0 0 "create_thin 3"
check "thin 0 still reads back after the refusals" pverify /dev/mapper/thin0 t0 0 64
require "snapshot 1 activates" thin_activate pool 1 snap1 32
check "snapshot 1 reads thin 0's data" pverify /dev/mapper/snap1 t0 0 64

# Features: each alone and all at once, by table reload of the live pool.
# Discard support cannot change after the first load.
refused_reload() { # DESC ERROR FEATURE...
	local desc=$1 err=$2
	shift 2
	log_mark
	check_fails "$desc: reload refused" dmsetup reload pool --table "$(pool_table "$META" "$DATA" 128 4 "$@")"
	check "$desc: logs '$err'" logged "$err"
	dmsetup clear pool
}
refused_reload "ignore_discard on a discarding pool" "$POOL_TARGET: Discard support cannot be disabled once enabled" ignore_discard
refused_table "a second pool on the same metadata device" "$POOL_TARGET: metadata device already in use by a pool" \
	"$(pool_table "$META" "$DATA" 128 4)"
for f in skip_block_zeroing no_discard_passdown read_only error_if_no_space; do
	check "reload with $f" pool_reload pool 128 4 "$f"
	check_eq "table line shows $f" "0 $len $POOL_TARGET $mdev $ddev 128 4 1 $f " "$(dmsetup table pool)"
done
check "reload with all four (upper case)" pool_reload pool 128 4 ERROR_IF_NO_SPACE READ_ONLY no_discard_passdown Skip_Block_Zeroing
check_eq "table line lists them in upstream's order" \
	"0 $len $POOL_TARGET $mdev $ddev 128 4 4 skip_block_zeroing no_discard_passdown read_only error_if_no_space " \
	"$(dmsetup table pool)"
check_match "status: ro, no_discard_passdown, error_if_no_space" \
	'^9 [0-9]+/2048 [0-9]+/1024 - ro no_discard_passdown error_if_no_space - [0-9]+ $' "$(pool_status pool)"
refused_message "messages refused in read-only mode" pool "create_thin 3" \
	"unable to service pool target messages in READ_ONLY or FAIL mode"
check "read-only pool: provisioned blocks still read" pverify /dev/mapper/thin0 t0 0 64
check_fails "read-only pool: a write to an unprovisioned block fails" pwrite /dev/mapper/thin0 ro 1024 1
check "back to read-write" pool_reload pool 128 4
check_match "status rw" '^9 [0-9/]+ [0-9/]+ - rw ' "$(pool_status pool)"
check "write after the mode changes" pwrite /dev/mapper/thin0 t0b 1024 16
check "reads back" pverify /dev/mapper/thin0 t0b 1024 16
check "and the first write too" pverify /dev/mapper/thin0 t0 0 64
dmsetup remove snap1 thin0
check "delete snapshot 1" dmsetup message pool 0 "delete 1"

# A pool created with ignore_discard reports it; the pool's metadata
# is kept across the re-creation.
dmsetup remove pool
require "re-create the pool with ignore_discard" pool_create pool 128 4 ignore_discard
check_match "status ignore_discard, transaction kept" '^9 [0-9/]+ [0-9/]+ - rw ignore_discard queue_if_no_space - ' "$(pool_status pool)"
require "thin 0 activates again" thin_activate pool 0 thin0 32
check "its data survived" pverify /dev/mapper/thin0 t0 0 64
check "and the write made after the mode changes" pverify /dev/mapper/thin0 t0b 1024 16
thin_check_served
dmsetup remove thin0 pool
require "a read_only pool opens existing metadata" pool_create pool 128 4 read_only
check_match "status ro" '^9 [0-9/]+ [0-9/]+ - ro ' "$(pool_status pool)"
expect_dump() {
	check_eq "thin_dump lists devices 0 and 5" "0 5" \
		"$(sed -n 's/.*<device dev_id="\([0-9]*\)".*/\1/p' <<<"$THIN_DUMP" | sort -n | xargs)"
	check_eq "device 0 maps 5 blocks (64 4 KiB writes + 16 later)" 5 "$(dump_mapped 0)"
	check_match "transaction 9 in the superblock" 'transaction="9"' "$THIN_DUMP"
}
thin_finish expect_dump
