#!/bin/bash
# Running out of metadata space: snapshots of a mapped device, each followed
# by writes that break sharing of several mapping leaves, use up a 512 KiB
# metadata device. Upstream keeps a reserve, so the pool switches to
# out-of-metadata-space mode (status ro, new blocks and messages refused,
# mapped data still readable) rather than failing a transaction; growing
# the metadata device by table reload brings it back to write mode. Then
# thin_repair copies the metadata to a new device and the pool opens on the
# copy with every block intact (and without the data block upstream may
# leak when it runs out).
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
# 512 KiB of metadata (128 blocks): make_meta counts MiB.
require "metadata device (512 KiB)" dmsetup create tmeta --table "0 1024 linear $DISK1 0"
dd if=/dev/zero of=/dev/mapper/tmeta bs=4096 count=1 oflag=direct status=none
META=/dev/mapper/tmeta
make_data 128
T=/dev/mapper/thin0
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 (64 MiB)" thin_new pool 0 thin0 64
thin_check_served
check_match "metadata: 128 blocks" '^0 [0-9]+/128 ' "$(pool_status pool)"
check "fill thin 0 (1024 blocks, several mapping leaves)" pwrite $T A 0 16384 1024
# One round: snapshot thin 0, then 4 KiB into 4 blocks spread over its
# leaves (each write copies a shared leaf and a 64 KiB block).
round() { # N
	local b
	snap_new pool "$1" 0 thin0 || return 1
	for b in 0 256 512 768; do
		pwrite $T "B$1" $(((b + $1) * 16)) 1 || return 1
	done
}
log_mark
ev=$(pool_events pool)
n=0
while ((++n <= 150)) && [[ $(pool_field pool 5) == rw ]] && round $n 2>/dev/null; do :; done
diag "out of metadata space after $((n - 1)) snapshot rounds"
check "the pool left write mode within 150 rounds" test $n -le 150
check_match "status: out of metadata space shows as ro, no needs_check" '^[0-9]+ [0-9]+/128 [0-9/]+ - ro [a-z_]+ [a-z_]+ - ' \
	"$(pool_status pool)"
check "the metadata low-water mark (a quarter of 128 blocks) sent events" test "$(pool_events pool)" -gt "$ev"
check "logged: the metadata low-water mark" logged "reached low water mark for metadata device: sending event."
check "logged: no free metadata blocks" logged "No free metadata blocks"
check "logged: the mode change (upstream calls it read-only)" logged "switching pool to read-only mode"
refused_message "messages refused" pool "create_thin 999" \
	"unable to service pool target messages in READ_ONLY or FAIL mode"
check_fails "a write to a new block is refused" pwrite $T C 16000 1
check "mapped data still reads" pverify $T A 17 15

log_mark
check "grow the metadata device to 1 MiB" slice_grow tmeta $DISK1 0 1
check "reload the pool onto it" pool_reload pool 128 0
check_match "status: rw with 256 metadata blocks" '^[0-9]+ [0-9]+/256 [0-9/]+ - rw ' "$(pool_status pool)"
check "logged: growth and write mode" all_of "logged 'growing the metadata device from 128 to 256 blocks'" \
	"logged 'switching pool to write mode'"
check "new blocks are written again" all_of "pwrite $T C 16000 16" "pverify $T C 16000 16"
check "and snapshots taken" snap_new pool 900 0 thin0
last=$((n - 1))
check "thin 0 holds round $last's writes" pverify $T "B$last" $(((768 + last) * 16)) 1

check "tear down" thin_teardown
# Upstream may leak one data block here: the one allocated for the write
# that found no metadata space (its count is committed, its mapping never
# is). pdata-check sees it, thin_check does not; thin_repair drops it.
meta_checks "$META" "metadata that ran out" "checked next: at most upstream's one leaked data block"
pd=$(grep -v '^note:' <<<"$("$PDATA_CHECK" --thin "$META" 2>&1)")
check_match "pdata-check: no errors, nothing leaked but at most one data block" \
	'^(|leak: data space map: leaked block [0-9]+: count 1, no references'$'\n''pdata-check: [^ ]+: 0 errors, 1 leaks)$' "$pd"
require "a new 2 MiB metadata device" slice tmeta2 $DISK1 8 2
check "thin_repair copies the metadata onto it" thin_repair -i "$META" -o /dev/mapper/tmeta2
require "the pool opens on the repaired metadata" \
	dmsetup create pool --table "$(pool_table /dev/mapper/tmeta2 "$DATA" 128 0)"
require "thin 0 and snapshot 1" all_of "thin_activate pool 0 thin0 64" "thin_activate pool 1 snap1 64"
check "thin 0 reads back" all_of "pverify $T A 1 15" "pverify $T B$last $(((768 + last) * 16)) 1" "pverify $T C 16000 16"
check "snapshot 1 reads thin 0 as it was (where the rounds wrote)" layout /dev/mapper/snap1 "A 0 2048" "A 4096 2048" \
	"A 8192 2048" "A 12288 2048"
# The end checks the repaired metadata. pdata-check rejects thin_repair's
# space map as it does thin_restore's (see 119): its verdict is shown, not
# counted, apart from leaks.
META=/dev/mapper/tmeta2
THIN_PDATA_NOTE="pdata-check disagrees with thin_repair's space map"
repaired_checks() {
	check_eq "pdata-check finds no leaks in the repaired metadata" "" \
		"$("$PDATA_CHECK" --thin "$META" 2>&1 | grep '^leak:')"
	check_match "thin_dump: snapshots $last and 900" "dev_id=\"$last\".*dev_id=\"900\"" "$(tr -d '\n' <<<"$THIN_DUMP")"
}
thin_finish repaired_checks
