#!/bin/bash
# Running out of data space, in each of upstream's ways: the low water mark
# sends a dm event; in queue mode writes past the end wait (status
# out_of_data_space) and complete once the data device grows by table
# reload; with error_if_no_space they fail at once and the pool recovers
# after growth; in queue mode with no_space_timeout the waiting writes fail
# when it expires. Nothing acknowledged is lost: every write that succeeded
# reads back at the end.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
make_data 4
T=/dev/mapper/thin0
require "pool: 64 KiB blocks, 64 of them, low water mark 8" pool_create pool 128 8
require "thin 0 (16 MiB)" thin_new pool 0 thin0 16
thin_check_served
check_eq "64 data blocks" 0/64 "$(pool_field pool 3)"
ev=$(pool_events pool)
log_mark
check "write 60 blocks" pwrite $T A 0 $((60 * 16)) 64
check "low water mark crossed: event sent" test "$(pool_events pool)" -gt "$ev"
check "and logged" logged "reached low water mark for data device: sending event."
check_match "still rw" '^0 [0-9/]+ 60/64 - rw ' "$(pool_status pool)"

# Queue mode: the write past the end waits until the data device grows.
ev=$(pool_events pool)
pwrite $T A $((60 * 16)) $((10 * 16)) 64 &
writer=$!
check "pool reports out_of_data_space" wait_for 30 \
	eval '[[ $(pool_status pool) =~ ^0\ [0-9/]+\ 64/64\ -\ out_of_data_space\  ]]'
check "the mode change sent an event" test "$(pool_events pool)" -gt "$ev"
sleep 2
check "the write is waiting, not failed" kill -0 $writer
check "grow the data device to 96 blocks by table reload" data_grow 6
wait $writer
check_eq "the waiting write completed" 0 $?
check_match "pool rw, 70 of 96 blocks used" '^0 [0-9/]+ 70/96 - rw ' "$(pool_status pool)"
check "blocks 0-69 read back" layout $T "A 0 $((70 * 16))"

# error_if_no_space: writes past the end fail at once.
check "reload with error_if_no_space" pool_reload pool 128 8 error_if_no_space
check_fails "writing blocks 70-99 runs out" pwrite $T B $((70 * 16)) $((30 * 16)) 64
check_match "pool out_of_data_space, error_if_no_space" \
	'^0 [0-9/]+ 96/96 - out_of_data_space [a-z_]+ error_if_no_space ' "$(pool_status pool)"
check "blocks 70-95 that fitted read back" layout $T "B $((70 * 16)) $((26 * 16))"
check "grow to 128 blocks" data_grow 8 error_if_no_space
check_match "pool rw" '^0 [0-9/]+ 96/128 - rw [a-z_]+ error_if_no_space ' "$(pool_status pool)"
check "write blocks 96-99 again" pwrite $T B $((96 * 16)) $((4 * 16)) 64
check "blocks 0-99 read back" layout $T "A 0 $((70 * 16))" "B $((70 * 16)) $((30 * 16))"

# Queue mode with a 3 second no_space_timeout: the waiting write fails then.
old_timeout=$(cat "$THIN_PARAMS/no_space_timeout")
check_eq "no_space_timeout defaults to upstream's 60 s" 60 "$old_timeout"
check "set no_space_timeout to 3 s" bash -c "echo 3 >$THIN_PARAMS/no_space_timeout"
check "reload in queue mode" pool_reload pool 128 8
start=$SECONDS
check_fails "writing blocks 100-130 runs out and fails after the timeout" pwrite $T C $((100 * 16)) $((31 * 16)) 64
took=$((SECONDS - start))
check "it waited for the timeout first (${took} s)" test $took -ge 3
check_match "pool out_of_data_space, erroring since the timeout" \
	'^0 [0-9/]+ 128/128 - out_of_data_space [a-z_]+ error_if_no_space ' "$(pool_status pool)"
echo "$old_timeout" >"$THIN_PARAMS/no_space_timeout"
check "grow to 160 blocks" data_grow 10
check_match "pool rw, queue_if_no_space again" '^0 [0-9/]+ 128/160 - rw [a-z_]+ queue_if_no_space ' "$(pool_status pool)"
check "blocks 100-127 that fitted read back" layout $T "C $((100 * 16)) $((28 * 16))"
check "write blocks 128-130 again" pwrite $T C $((128 * 16)) $((3 * 16)) 64
check "everything reads back" layout $T "A 0 $((70 * 16))" "B $((70 * 16)) $((30 * 16))" "C $((100 * 16)) $((31 * 16))" \
	"zero $((131 * 16)) $((125 * 16))"
expect_counts() { check_eq "thin_dump: device 0 maps 131 blocks" 131 "$(dump_mapped 0)"; }
thin_finish expect_counts
