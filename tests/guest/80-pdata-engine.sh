#!/bin/bash
# core
# The metadata engine runs in the kernel over dm-bufio, through the thin
# metadata layer, driven by the test-only dmrs-pdata target (registered only
# with selftest=1; every operation is a `dmsetup message` whose answer comes
# back as the message output): format, several thousand mappings committed
# and read back after a reopen on a new dm-bufio client, uncommitted changes
# thrown away by abort and by a reopen, the map path's non-blocking lookup
# (would_block while the path is not cached, a hit once it is, converging
# with prefetches), snapshots sharing blocks (the deepest engine path, whose
# kernel stack use is measured and bounded), a metadata snapshot. User
# space's thin_check must accept the result and thin_dump must show the
# same mappings. Then one btree node is corrupted on the disk: lookups
# through it must fail with a validation error naming the block, without an
# oops, while the rest still reads; the module unloads cleanly.
. "$(dirname "$0")/lib.sh"
dm_reset
meta=$DISK1
work=$(mktemp -d)
n=4000 # mappings in the first fill: a mapping tree of two levels and more

modprobe dm_rs
check "a default load does not register dmrs-pdata" bash -c '! dmsetup targets | grep -q "^dmrs-pdata"'
rmmod dm_rs
require "load with selftest=1" modprobe dm_rs selftest=1
check_match "dmrs-pdata registered" '(^|'$'\n'')dmrs-pdata +v1\.0\.0' "$(dmsetup targets)"
dd if=/dev/zero of=$meta bs=4096 count=1 oflag=direct conv=notrunc status=none
mkpd() { dmsetup create pd --table "0 8 dmrs-pdata $meta"; }
require "create the self-test device on $meta" mkpd
check_eq "dm_rs serves it (one table reference)" 1 "$(module_refcnt dm_rs)"
msg() { dmsetup message pd 0 "$@"; }
# expect DESC REGEX MSG...: the message succeeds and answers REGEX.
expect() {
	local desc=$1 re=$2 out
	shift 2
	if out=$(msg "$@" 2>&1); then
		check_match "$desc" "$re" "$out"
	else
		not_ok "$desc"
		diag "message failed: $*" "$out"
	fi
}
check_fails "an unknown message fails" msg bogus
check_fails "operations need open metadata" msg commit

# Format, fill, commit, reopen.
expect "format: 128-sector data blocks, 65536 of them" '^formatted data_blocks=65536 free_data=65536 ' format 128 65536
check_fails "a second format is refused while open" msg format 128 65536
expect "create thin device 0" '^created 0$' create 0
out=$(msg fill 0 0 $n)
check_match "fill $n mappings" "^filled $n dblocks=[0-9]+\\.\\.[0-9]+$" "$out"
first=$(sed -n 's/^filled [0-9]* dblocks=\([0-9]*\)\.\..*/\1/p' <<<"$out")
last=$(sed -n 's/.*\.\.\([0-9]*\)$/\1/p' <<<"$out")
check_eq "data blocks were allocated in order" $((first + n - 1)) "$last"
expect "device 0 maps $n blocks" "^mapped_blocks=$n\$" count 0
expect "commit" '^committed$' commit

expect "uncommitted: 100 more mappings" '^filled 100 ' fill 0 $n 100
expect "uncommitted: remove vblock 10" '^removed 0 10$' remove 0 10
expect "removed block reads unmapped" '^unmapped$' lookup 0 10
expect "abort" '^aborted$' abort
expect "after abort: the new mappings are gone" '^unmapped$' lookup 0 $((n + 50))
expect "after abort: the removed mapping is back" "^mapped $((first + 10)) shared=0\$" lookup 0 10
expect "after abort: $n mapped" "^mapped_blocks=$n\$" count 0

expect "uncommitted: 50 more mappings" '^filled 50 ' fill 0 $n 50
expect "reopen without commit on a new dm-bufio client" '^reopened devices=1$' reopen
expect "the uncommitted mappings are gone" '^unmapped$' lookup 0 $((n + 10))

# The map path's lookup: nothing of the mapping tree is cached after reopen.
v=1234 d=$((first + 1234))
expect "try-lookup of an uncached path would block" '^would_block$' try-lookup 0 $v
expect "blocking lookup" "^mapped $d shared=0\$" lookup 0 $v
expect "try-lookup of the now cached path hits" "^hit $d\$" try-lookup 0 $v
expect "forget every cached block" '^dropped$' drop-cache
expect "try-lookup would block again" '^would_block$' try-lookup 0 $v
rounds=0 got=
while ((rounds < 20)); do
	got=$(msg try-lookup 0 $v)
	[[ $got == would_block ]] || break
	msg prefetch >/dev/null
	rounds=$((rounds + 1))
	sleep 0.2
done
check_eq "prefetching what it missed, try-lookup hits ($rounds prefetch rounds)" "hit $d" "$got"
expect "every committed mapping reads back after the reopen" "^verify ok=$n missing=0 wrong=0\$" verify 0 0 $n $first

# Removals, then snapshots sharing device 0's blocks. Changing both
# snapshots copies shared leaves: every data block in them gains references
# (counts above 2 go to the data space map's ref-count btree): the deepest
# engine path.
expect "remove vblock 7" '^removed 0 7$' remove 0 7
expect "snapshot 1 of device 0" '^snapshot 1 of 0$' snap 1 0
expect "snapshot 2 of device 0" '^snapshot 2 of 0$' snap 2 0
expect "map vblock 100 of snapshot 1 elsewhere" '^inserted 1 100 60000$' insert 1 100 60000
expect "map vblock 101 of snapshot 2 elsewhere" '^inserted 2 101 60001$' insert 2 101 60001
expect "snapshot 1 sees its own block" '^mapped 60000 shared=0$' lookup 1 100
expect "device 0 keeps its block, now shared" "^mapped $((first + 100)) shared=1\$" lookup 0 100
expect "snapshot 2 shares device 0's vblock 100" "^mapped $((first + 100)) shared=1\$" lookup 2 100
expect "commit" '^committed$' commit
held=$(msg reserve-snap)
check_match "take a metadata snapshot" '^held_root=[1-9][0-9]*$' "$held"
expect "200 more mappings on device 0" '^filled 200 ' fill 0 $n 200
expect "commit" '^committed$' commit
want0=$((n - 1 + 200)) want1=$((n - 1)) want2=$((n - 1))
expect "device 0 maps $want0" "^mapped_blocks=$want0\$" count 0
expect "device 1 maps $want1" "^mapped_blocks=$want1\$" count 1

# Stack depth: each operation's deepest use so far (callers included), and
# the insert into a snapshot above (insert -> shadow a shared leaf -> data
# block references up to 3 -> the data space map's ref-count btree ->
# shadow -> metadata allocation), the deepest engine path.
stack_field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; }
# stack_bound OP NUM DEN: OP's deepest use is at most NUM/DEN of the stack.
stack_bound() {
	local st deepest size
	st=$(msg stack "$1")
	check_match "stack use of $1 was measured" "^stack deepest=[0-9]+ own=[0-9]+ at_entry=[0-9]+ size=[0-9]+ op=$1\$" "$st"
	diag "$st"
	deepest=$(stack_field deepest "$st") size=$(stack_field size "$st")
	check "$1 used at most $2/$3 of the ${size:-?}-byte stack (${deepest:-?} bytes)" \
		test "${deepest:-99999}" -gt 0 -a "${deepest:-99999}" -le $((${size:-0} * $2 / $3))
}
for op in format reopen insert fill remove snap commit abort lookup; do
	stack_bound $op 1 2
done

expect "close (commits)" '^closed$' close
check "remove the device" dmsetup remove pd

# User space reads what the engine wrote.
blockdev --flushbufs $meta
check "thin_check accepts the engine's metadata" thin_check $meta
# counts FILE: "dev mapped_blocks mappings" per device of a thin_dump.
counts() {
	awk '/<device /{ if (d != "") print d, m, c; match($0, /dev_id="[0-9]+"/); d = substr($0, RSTART + 8, RLENGTH - 9);
		match($0, /mapped_blocks="[0-9]+"/); m = substr($0, RSTART + 15, RLENGTH - 16); c = 0 }
		/<single_mapping/{ c++ } /<range_mapping/{ match($0, /length="[0-9]+"/); c += substr($0, RSTART + 8, RLENGTH - 9) }
		END { if (d != "") print d, m, c }' "$1"
}
thin_dump $meta >"$work/dump" 2>&1
check_eq "thin_dump: every device's mappings as the engine counted them" \
	"0 $want0 $want0"$'\n'"1 $want1 $want1"$'\n'"2 $want2 $want2" "$(counts "$work/dump")"
thin_dump -m $meta >"$work/snapdump" 2>&1
check_eq "thin_dump -m: the metadata snapshot has device 0 as it was" "0 $((n - 1)) $((n - 1))" \
	"$(counts "$work/snapdump" | head -1)"

# Release the metadata snapshot in a new table; thin_check again.
require "create the self-test device again" mkpd
expect "open the formatted metadata" '^opened data_blocks=65536 ' open 128
expect "release the metadata snapshot" '^released$' release-snap
expect "close" '^closed$' close
check "remove the device" dmsetup remove pd
blockdev --flushbufs $meta
check "thin_check accepts it after the release" thin_check $meta

# Corrupt device 0's mapping tree root: the superblock's mapping root (at
# byte 320) is the top level, a leaf whose first value is device 0's tree.
u64_at() { od -An -t u8 -j "$1" -N 8 $meta | tr -d ' '; }
top=$(u64_at 320)
flags=$(od -An -t u4 -j $((top * 4096 + 4)) -N 4 $meta | tr -d ' ')
max=$(od -An -t u4 -j $((top * 4096 + 20)) -N 4 $meta | tr -d ' ')
check_eq "the top level is one leaf (flags 2)" 2 "$flags"
key0=$(u64_at $((top * 4096 + 32)))
check_eq "its first key is device 0" 0 "$key0"
root0=$(u64_at $((top * 4096 + 32 + 8 * max)))
check_match "device 0's tree root is a block number" '^[1-9][0-9]*$' "$root0"
dd if=/dev/urandom of=$meta bs=512 seek=$((root0 * 8 + 2)) count=1 oflag=direct conv=notrunc status=none
require "create the self-test device on the damaged metadata" mkpd
expect "the metadata opens (superblock intact)" '^opened ' open 128
log_mark
out=$(msg lookup 0 5 2>&1)
rc=$?
check "a lookup through the damaged block fails" test $rc -ne 0
diag "$out"
check_match "the failure is a validation error naming block $root0" \
	"metadata block $root0 failed btree_node validation: EILSEQ" "$(dmesg_since_mark)"
check_fails "the non-blocking lookup rejects it too" msg try-lookup 0 5
expect "snapshot 1, whose root is another block, still reads" '^mapped 60000 shared=0$' lookup 1 100
expect "close" '^closed$' close
check "remove the device" dmsetup remove pd
check "dm_rs unloads (nothing leaked a reference)" rmmod dm_rs
rm -rf "$work"
done_testing
