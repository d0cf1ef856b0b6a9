#!/bin/bash
# I/O errors on the metadata device (dm-flakey loaded in place of a linear
# table under the pool), with upstream's outcomes. Write errors: the commit
# fails, the pool aborts to its last commit and goes read-only with
# needs_check (provisioned blocks still read and take overwrites, new blocks
# and messages are refused). Read and write errors: the abort cannot reread
# the metadata and the pool goes to fail mode (status "Fail", all I/O
# errors). Each time, after the device heals and the pool is re-created,
# every acknowledged write reads back and the metadata checks clean.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
require "load dm-flakey" modprobe dm_flakey
require "metadata slice" slice tmeta0 $DISK1 0 8
msec=$((8 * 2048))
# The pool's metadata device: a linear table over the slice, or a flakey
# one failing the I/O its features name, all the time.
require "metadata device over the slice" dmsetup create tmeta --table "0 $msec linear /dev/mapper/tmeta0 0"
META=/dev/mapper/tmeta
dd if=/dev/zero of=$META bs=4K count=1 oflag=direct status=none
meta_table() { # linear | FLAKEY_FEATURES ("1 error_writes")
	if [[ $1 == linear ]]; then
		echo "0 $msec linear /dev/mapper/tmeta0 0"
	else
		echo "0 $msec flakey /dev/mapper/tmeta0 0 0 1 $1"
	fi
}
switch_meta() { dmsetup suspend tmeta && dmsetup reload tmeta --table "$(meta_table "$1")" && dmsetup resume tmeta; }
make_data 64
T=/dev/mapper/thin0
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 (16 MiB)" thin_new pool 0 thin0 16
thin_check_served
check "write blocks 0-19 and flush" all_of "pwrite $T A 0 320 64" "sync $T"
check "overwrite blocks 0-3 (provisioned: no metadata change) and flush" all_of "pwrite $T A2 0 64" "sync $T"
check "transaction id 1 (committed)" dmsetup message pool 0 "set_transaction_id 0 1"

check "metadata writes start failing" switch_meta "1 error_writes"
log_mark
# Writes to new blocks, then a flush: the commit (by the flush or the
# periodic one) fails, so neither the writes nor the flush may succeed.
check_fails "writes to new blocks and a flush do not both succeed" all_of "pwrite $T B 640 160 64" "sync $T"
check "pool goes read-only with needs_check" wait_for 10 \
	eval '[[ $(pool_status pool) =~ ^1\ [0-9/]+\ [0-9/]+\ -\ ro\ [a-z_]+\ [a-z_]+\ needs_check\  ]]'
check_match "status line" '^1 [0-9/]+ [0-9/]+ - ro [a-z_]+ [a-z_]+ needs_check ' "$(pool_status pool)"
check "the failed commit is logged" logged "metadata operation 'dm_pool_commit_metadata' failed: error = -5"
check "the abort is logged" logged "aborting current metadata transaction"
check "the mode change is logged" logged "switching pool to read-only mode"
check "provisioned blocks still read" pverify $T A 64 16
check "and take overwrites" all_of "pwrite $T C 0 1" "pverify $T C 0 1"
check_fails "new blocks are refused" pwrite $T C 1600 1
refused_message "messages refused in read-only mode" pool "create_thin 1" \
	"unable to service pool target messages in READ_ONLY or FAIL mode"
check "remove the read-only pool" thin_teardown
check "the metadata device heals" switch_meta linear
meta_checks "$META" "metadata as last committed"
check_match "transaction 1 was committed" 'transaction="1"' "$THIN_DUMP"
check_eq "device 0 maps the 20 flushed blocks" 20 "$(dump_mapped 0)"
require "the pool opens again" pool_create pool 128 0
check_match "rw; needs_check never reached the failing disk" '^1 [0-9/]+ [0-9/]+ - rw [a-z_]+ [a-z_]+ - ' \
	"$(pool_status pool)"
require "thin 0 again" thin_activate pool 0 thin0 16
check "every acknowledged write reads back; the unacknowledged ones were rolled back" \
	layout $T "C 0 1" "A2 1 63" "A 64 256" "zero 320 3776"

check "write blocks 40-49 and flush" all_of "pwrite $T D 640 160 64" "sync $T"
check "metadata reads and writes start failing" switch_meta "2 error_reads error_writes"
log_mark
check_fails "writes to new blocks and a flush do not both succeed" all_of "pwrite $T E 1280 160 64" "sync $T"
check "pool is in fail mode" wait_for 10 eval '[[ $(dmsetup status pool) =~ \ Fail$ ]]'
check_eq "thin status: Fail" Fail "$(dmsetup status thin0 | cut -d' ' -f4-)"
check "the mode change is logged" logged "switching pool to fail mode"
check_fails "reads fail in fail mode" dd if=$T of=/dev/null bs=4K count=1 iflag=direct status=none
check_fails "writes to provisioned blocks fail in fail mode" pwrite $T F 0 1
refused_message "messages refused in fail mode" pool "create_thin 1" \
	"unable to service pool target messages in READ_ONLY or FAIL mode"
check "remove the failed pool" thin_teardown
check "the metadata device heals" switch_meta linear
require "the pool opens again" pool_create pool 128 0
require "thin 0 again" thin_activate pool 0 thin0 16
check "every acknowledged write reads back" layout $T "C 0 1" "A2 1 63" "A 64 256" "zero 320 320" "D 640 160" "zero 800 3296"

# A status query commits even when nothing changed (as upstream's): with
# metadata writes failing, it is what finds the pool failed (lvm2 asks for
# status to notice a failed metadata device). With --noflush it does not.
check "write block 100 and flush" all_of "pwrite $T G 1600 16 64" "sync $T"
check "metadata writes start failing" switch_meta "1 error_writes"
log_mark
check_match "status --noflush: no commit, still rw" '^1 [0-9/]+ [0-9/]+ - rw ' \
	"$(dmsetup status --noflush pool | cut -d' ' -f4-)"
check_match "status: its commit fails, the pool is read-only" '^1 [0-9/]+ [0-9/]+ - ro ' "$(pool_status pool)"
check "the failed commit is logged" logged "metadata operation 'dm_pool_commit_metadata' failed: error = -5"
check "block 100 reads back" pverify $T G 1600 16
check "remove the read-only pool" thin_teardown
check "the metadata device heals" switch_meta linear
expect_counts() { check_eq "thin_dump: device 0 maps 31 blocks" 31 "$(dump_mapped 0)"; }
thin_finish expect_counts
