#!/bin/bash
# core
# Bio ownership through dm core, driven by the test-only dmrs-defer target
# (selftest=1): bios held by `map` and later resubmitted, failed, dropped or
# requeued; per-bio data seen again in end_io; accept_partial splits and its
# refusals; zero-filled reads ended in map; message output; table events;
# queue limits from io_hints; suspend with held bios (flush and noflush).
. "$(dirname "$0")/lib.sh"
dm_reset
modprobe dm_rs selftest=1
size=$(sectors $DISK1)
work=$(mktemp -d)
dev=/dev/mapper/defer

# Exit status of background job PID, waited for in this shell (a `wait`
# inside check's command substitution would run in a subshell, which cannot
# wait for its parent's children).
writer_rc() { # PID VAR
	wait "$1"
	printf -v "$2" %d $?
}
hold_one() { # SEEK-BLOCK: starts a 4 KiB direct write that map holds
	dmsetup message defer 0 mode hold
	dd if="$work/b" of=$dev bs=4096 count=1 seek="$1" oflag=direct status=none 2>"$work/dd.err" &
	ddpid=$!
	wait_stat "bio at block $1 held" pending -gt 0
	dmsetup message defer 0 mode pass
}
stat_field() { dmsetup status defer | grep -o "$1=[0-9]*" | cut -d= -f2; }
# wait_stat DESC FIELD OP VALUE: polls up to 30 s until the status field
# passes `test FIELD OP VALUE`. It reads the field on every poll: a
# "$(stat_field ...)" in the caller's arguments is expanded once, before the
# wait, often before the background writer's bio has reached map.
wait_stat() {
	local desc=$1 field=$2 op=$3 value=$4 i
	for ((i = 0; i < 300; i++)); do
		test "$(stat_field "$field")" "$op" "$value" && { ok "$desc"; return; }
		sleep 0.1
	done
	not_ok "$desc"
	diag "status: $(dmsetup status defer)"
}

require "create dmrs-defer" dmsetup create defer --table "0 $size dmrs-defer $DISK1"
check_eq "served by dm-rs (holds a module reference)" 1 "$(module_refcnt dm_rs)"
check_match "table line names the device" "^0 $size dmrs-defer [0-9]+:[0-9]+\$" "$(dmsetup table defer)"

# Pass-through.
random_file "$work/a" 1048576
dd if="$work/a" of=$dev bs=64k oflag=direct status=none
read_range $DISK1 0 1048576 "$work/a.back"
check "pass-through writes reach the disk" cmp "$work/a" "$work/a.back"

# Held bios: writes wait in the target until released, then land.
dmsetup message defer 0 mode hold
random_file "$work/b" 65536
dd if="$work/b" of=$dev bs=4096 seek=1024 oflag=direct status=none &
ddpid=$!
wait_stat "held bios are pending" pending -gt 0
check "the writer waits while its bio is held" kill -0 $ddpid
dmsetup message defer 0 release
dmsetup message defer 0 mode pass
# The writer submits one 4 KiB bio at a time: keep releasing until it is done.
for ((i = 0; i < 100 && $(kill -0 $ddpid 2>/dev/null && echo 1 || echo 0); i++)); do
	dmsetup message defer 0 release
	sleep 0.1
done
writer_rc $ddpid rc
check_eq "writer completes after release" 0 "$rc"
read_range $DISK1 $((1024 * 4096)) 65536 "$work/b.back"
check "released bios wrote the right data" cmp "$work/b" "$work/b.back"
check_eq "end_io saw the per-bio tag of every held bio" "$(stat_field held)" "$(stat_field held_completed)"

# Held, then failed or dropped: the writer sees an I/O error, end_io counts
# it. Dropping a held bio ends it with an error, never a hang.
for how in fail drop; do
	errors0=$(stat_field errors)
	hold_one $((2048 + ${#how}))
	dmsetup message defer 0 $how
	writer_rc $ddpid rc
	check "$how: the writer sees an I/O error" test "$rc" -ne 0
	check "$how: end_io saw the error" test "$(stat_field errors)" -gt "$errors0"
done

# Held across a suspend: presuspend resubmits (flush suspend) or requeues
# (noflush suspend, dm core keeps the bio and maps it again after resume).
for kind in flush noflush; do
	dmsetup message defer 0 mode hold
	dd if="$work/b" of=$dev bs=4096 count=1 seek=4096 oflag=direct status=none &
	ddpid=$!
	wait_stat "$kind: bio held before suspend" pending -gt 0
	if [[ $kind == noflush ]]; then
		timeout 30 dmsetup suspend --noflush defer
	else
		timeout 30 dmsetup suspend defer
	fi
	check "$kind suspend completes with a held bio" test $? -eq 0
	dmsetup message defer 0 mode pass 2>/dev/null || true
	check "$kind resume" dmsetup resume defer
	dmsetup message defer 0 mode pass
	dmsetup message defer 0 release
	check "$kind: writer completes" timeout 30 bash -c "while kill -0 $ddpid 2>/dev/null; do sleep 0.1; done"
	read_range $DISK1 $((4096 * 4096)) 4096 "$work/s.back"
	check "$kind: the held write landed" cmp <(head -c 4096 "$work/b") "$work/s.back"
done

# Zero mode: reads end in map with zero-filled data and no I/O.
dmsetup message defer 0 mode zero
dd if=$dev of="$work/z" bs=64k count=4 iflag=direct status=none
check "reads in zero mode return zeros" cmp "$work/z" <(head -c 262144 /dev/zero)
dmsetup message defer 0 mode pass
dd if=$dev of="$work/nz" bs=64k count=1 iflag=direct status=none
check "pass mode reads the data again" cmp "$work/nz" <(head -c 65536 "$work/a")

# accept_partial: bios longer than N sectors are split, 0 is refused.
dmsetup message defer 0 mode split 8
p0=$(stat_field partial)
dd if=$dev of="$work/sp" bs=1M count=1 iflag=direct status=none
check "split reads return the right data" cmp "$work/sp" "$work/a"
check "accept_partial split long bios" test "$(stat_field partial)" -gt "$p0"
dmsetup message defer 0 mode split 0
r0=$(stat_field refused)
dd if=$dev of="$work/sp0" bs=64k count=1 iflag=direct status=none
check "reads still correct when a split is refused" cmp "$work/sp0" <(head -c 65536 "$work/a")
check "accept_partial(0) is refused, not sent to dm core" test "$(stat_field refused)" -gt "$r0"
dmsetup message defer 0 mode pass

# Error mode: map kills the bio.
dmsetup message defer 0 mode error
check_fails "error mode fails reads" dd if=$dev of=/dev/null bs=4096 count=1 iflag=direct status=none
dmsetup message defer 0 mode pass

# Message output comes back to user space; bad messages are refused.
devt=$(dmsetup info -c --noheadings -o major,minor --separator : defer | tr -d ' ')
check_eq "message output reaches dmsetup (dm_device_name is major:minor)" "$devt" "$(dmsetup message defer 0 name)"
check_match "stats message answers" '^mapped=[0-9]+ held=[0-9]+ suspended=0$' "$(dmsetup message defer 0 stats)"
check_fails "unknown message refused" dmsetup message defer 0 frobnicate
check_fails "trailing words refused" dmsetup message defer 0 mode pass extra
check_fails "bad split count refused" dmsetup message defer 0 mode split 99999999999

# Table events from the target handle.
ev0=$(dmsetup info -c --noheadings -o events defer | tr -d ' ')
dmsetup message defer 0 event
ev1=$(dmsetup info -c --noheadings -o events defer | tr -d ' ')
check_eq "event message raised one table event" $((ev0 + 1)) "$ev1"

# io_hints reached the queue.
dmname=$(dmsetup info -c --noheadings -o blkdevname defer | tr -d ' ')
check_eq "io_opt set by io_hints" 65536 "$(cat /sys/block/$dmname/queue/optimal_io_size)"
check_eq "io_min set by io_hints" 4096 "$(cat /sys/block/$dmname/queue/minimum_io_size)"

# end_io taking a failed bio back (DM_ENDIO_INCOMPLETE): the target owns it
# again, the writer waits, and ending it later calls end_io again.
dmsetup message defer 0 endio retry
hold_one 3000
dmsetup message defer 0 fail
wait_stat "end_io took the failed bio back" returned -eq 1
check "the writer still waits for the taken-back bio" kill -0 $ddpid
c0=$(stat_field held_completed)
dmsetup message defer 0 finish-returned
writer_rc $ddpid rc
check_eq "ending the taken-back bio completes the writer" 0 "$rc"
check_eq "end_io ran again for it" $((c0 + 1)) "$(stat_field held_completed)"
check_fails "nothing left to finish" dmsetup message defer 0 finish-returned
# fail-final marks the per-bio data so end_io lets it fail.
hold_one 3001
dmsetup message defer 0 fail-final
writer_rc $ddpid rc
check "per-bio mark stops the retry: the writer sees the error" test "$rc" -ne 0
# end_io changing the status: the writer sees ENOSPC, not EIO.
dmsetup message defer 0 endio nospace
hold_one 3002
dmsetup message defer 0 fail
writer_rc $ddpid rc
check_match "end_io's done_with(NO_SPACE) reaches the writer" 'No space left on device' "$(cat "$work/dd.err")"
# end_io requeue (DM_ENDIO_REQUEUE) outside a noflush suspend: dm core fails
# the bio although the write itself succeeded, which tells the result apart
# from DM_ENDIO_DONE.
dmsetup message defer 0 endio requeue
q0=$(stat_field requeued)
hold_one 3003
dmsetup message defer 0 release
writer_rc $ddpid rc
check "DM_ENDIO_REQUEUE outside a noflush suspend fails the bio" test "$rc" -ne 0
check "end_io requeue counted" test "$(stat_field requeued)" -gt "$q0"
dmsetup message defer 0 endio pass

# map requeue (DM_MAPIO_REQUEUE) outside a suspend: dm core fails it too; the
# next bio passes again.
q0=$(stat_field requeued)
dmsetup message defer 0 mode requeue 1
check_fails "DM_MAPIO_REQUEUE outside a noflush suspend fails the read" dd if=$dev of=/dev/null bs=4096 count=1 iflag=direct status=none
check_eq "map requeued once" $((q0 + 1)) "$(stat_field requeued)"
dd if=$dev of="$work/rq" bs=4096 count=1 iflag=direct status=none
check "then reads pass again" cmp "$work/rq" <(head -c 4096 "$work/a")

# Held reads ended in a worker-like context with zero-filled data.
dmsetup message defer 0 mode hold
dd if=$dev of="$work/hz" bs=4096 count=1 iflag=direct status=none &
ddpid=$!
wait_stat "read held" pending -gt 0
dmsetup message defer 0 mode pass
dmsetup message defer 0 release-zero
writer_rc $ddpid rc
check_eq "held read completes" 0 "$rc"
check "held read ended as zeros" cmp "$work/hz" <(head -c 4096 /dev/zero)

# Suspend state through the target handle.
dmsetup suspend defer
check_match "handle sees the device suspended" 'suspended=1' "$(dmsetup message defer 0 stats)"
dmsetup resume defer
check_match "and resumed" 'suspended=0' "$(dmsetup message defer 0 stats)"

# Removing with nothing held, then the module unloads.
check "remove" dmsetup remove defer

# Constructor setters: duplicated flush bios, discards, max_io_len.
require "create with features" dmsetup create defer --table "0 $size dmrs-defer $DISK1 5 flush_bios 2 discards max_io_len 64"
dd if=/dev/zero of=$dev bs=4096 count=1 oflag=direct conv=fsync status=none
check "a flush reached map" test "$(stat_field flushes)" -gt 0
check_eq "num_flush_bios 2: the second flush bio is numbered 1" 1 "$(stat_field max_flush_nr)"
dmname=$(dmsetup info -c --noheadings -o blkdevname defer | tr -d ' ')
check "discards enabled by the target" test "$(cat /sys/block/$dmname/queue/discard_max_bytes)" -gt 0
check "blkdiscard through the target" blkdiscard -o 0 -l 1048576 $dev
p0=$(stat_field mapped)
dd if=$dev of=/dev/null bs=1M count=1 iflag=direct status=none
check "max_io_len splits a 1 MiB read into 64-sector bios" test "$(stat_field mapped)" -ge $((p0 + 16))
check "remove" dmsetup remove defer
require "create without discards" dmsetup create defer --table "0 $size dmrs-defer $DISK1"
dmname=$(dmsetup info -c --noheadings -o blkdevname defer | tr -d ' ')
check_eq "io_hints turned discards off without the feature" 0 "$(cat /sys/block/$dmname/queue/discard_max_bytes)"
check "remove" dmsetup remove defer

# Bad table lines: clear errors, module still usable.
for t in "" "$DISK1 1" "$DISK1 1 bogus" "$DISK1 2 flush_bios 9" "$DISK1 1 max_io_len" "$DISK1 0 extra" \
	"/dev/nonexistent"; do
	check_fails "bad table '$t' refused" dmsetup create bad --table "0 $size dmrs-defer $t"
	dmsetup remove bad >/dev/null 2>&1
done
check_match "errors say why" 'dmrs-defer: (unknown feature|invalid flush_bios|expected <dev>)' "$(dmesg_since_start)"
check_fails "a table longer than the device is refused" dmsetup create bad --table "0 $((size + 8)) dmrs-defer $DISK1"
dmsetup remove bad >/dev/null 2>&1
check "module unloads" rmmod dm_rs
done_testing
