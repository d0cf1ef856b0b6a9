#!/bin/bash
# A discard must wait for the I/O already remapped to the blocks it frees.
# The data device delays every read by 5 s (dm-delay over a RAM disk;
# writes and discards go through at once), so reads of thin A are in flight
# when A's blocks are discarded; thin B then provisions the freed blocks
# with its own data. Reads of A must return A's data or zeros, never B's
# (upstream's all_io deferred set; without it the discard frees the blocks
# under the reads and B reuses them). A's non-discarded blocks, written
# meanwhile, and B's blocks stay intact; the metadata checks clean.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 8
[[ -d /sys/module/brd ]] && rmmod brd
require "RAM disk and dm-delay" all_of "modprobe brd rd_nr=1 rd_size=4096" "modprobe dm_delay"
# 4 MiB = 64 blocks of 64 KiB; reads wait 5 s, writes none.
require "data device: reads delayed 5 s" dmsetup create tdata \
	--table "0 8192 delay /dev/ram0 0 5000 /dev/ram0 0 0"
DATA=/dev/mapper/tdata
# bigverify DEV TAG FIRST COUNT: like pverify (TAG zero: zeros), in one
# O_DIRECT read, so the delayed 64 KiB pieces wait in parallel.
bigverify() {
	local want
	if [[ $2 == zero ]]; then want="head -c $(($4 * 4096)) /dev/zero"; else want="pattern $2 $3 $4"; fi
	cmp <($want) <(dd if="$1" bs=$(($4 * 4))K skip=$(($3 * 4096)) count=1 iflag=direct,skip_bytes status=none)
}
require "pool: 64 blocks of 64 KiB" pool_create pool 128 0
require "thin A (id 0)" thin_new pool 0 thinA 8
require "thin B (id 1)" thin_new pool 1 thinB 8
thin_check_served
A=/dev/mapper/thinA B=/dev/mapper/thinB
# A's 64 KiB blocks 0-7 are kept (written during the race), 8-63 are read
# and discarded; B takes 32 blocks, all from what A's discard freed.
KEEP=128 CHURN_FIRST=128 CHURN=896 BLOCKS_B=512

work=$(mktemp -d)
zero_sum=$(head -c 65536 /dev/zero | md5sum | cut -d' ' -f1)
# sums TAG: the md5 of each 64 KiB block of TAG's pattern over the churn.
sums() {
	local k
	for ((k = 8; k < 64; k++)); do
		echo "$k $(pattern "$1" $((k * 16)) 16 | md5sum | cut -d' ' -f1)"
	done >"$work/sums"
}
# reader: reads random churn blocks of A until told to stop; logs any
# block that is neither A's pattern nor zeros.
reader() {
	local k s want
	while [[ ! -e $work/stop ]]; do
		k=$((8 + RANDOM % 56))
		s=$(dd if=$A bs=64K skip=$k count=1 iflag=direct status=none | md5sum | cut -d' ' -f1)
		want=$(awk -v k=$k '$1 == k { print $2 }' "$work/sums")
		[[ $s == "$want" || $s == "$zero_sum" ]] || echo "round $round block $k: $s" >>"$work/bad"
		echo >>"$work/reads"
	done
}

# all_gone PID...: none of the processes is alive.
all_gone() {
	local p
	for p in "$@"; do
		kill -0 "$p" 2>/dev/null && return 1
	done
	true
}

for round in 1 2 3; do
	check "round $round: A fills its 64 blocks" all_of "pwrite $A K$round 0 $KEEP 64" \
		"pwrite $A C$round $CHURN_FIRST $CHURN 64"
	check_eq "round $round: pool full" 64 "$(pool_used_data pool)"
	sums "C$round"
	rm -f "$work/stop"
	pids=()
	for i in 1 2 3 4 5 6; do
		reader &
		pids+=($!)
	done
	# Let the readers get reads in flight.
	sleep 2
	pwrite $A W$round 0 $KEEP 4 &
	writer=$!
	check "round $round: discard A's blocks 8-63 under the reads" \
		blkdiscard -o $((8 * 65536)) -l $((56 * 65536)) $A
	check "round $round: B provisions 32 blocks (freed by the discard)" pwrite $B B$round 0 $BLOCKS_B 64
	# The reads in flight during the discard finish within 5 s.
	sleep 6
	touch "$work/stop"
	# Each reader ends after its read in flight (at most 5 s).
	if ! wait_for 30 all_gone "${pids[@]}"; then
		not_ok "round $round: readers finish"
		diag "$(dmsetup status)" "$(for p in $(pgrep -x dd); do echo "dd $p:"; cat /proc/$p/stack; done)"
		echo w >/proc/sysrq-trigger
		kill "${pids[@]}" 2>/dev/null
		break
	fi
	wait "${pids[@]}"
	wait $writer
	check_eq "round $round: A's writer finished" 0 $?
	check_eq "round $round: A's readers saw only A's data or zeros" "" "$(cat "$work/bad" 2>/dev/null)"
	diag "round $round: $(wc -l <"$work/reads") reads"
	check "round $round: A's kept blocks hold what was written meanwhile" bigverify $A W$round 0 $KEEP
	check "round $round: A's discarded blocks read zeros" bigverify $A zero $CHURN_FIRST $CHURN
	check "round $round: B holds its data" bigverify $B B$round 0 $BLOCKS_B
	check_eq "round $round: 8 + 32 blocks used" 40 "$(pool_used_data pool)"
	check "round $round: discard B" blkdiscard $B
	rm -f "$work/bad" "$work/reads"
done
rm -rf "$work"
expect_counts() { check_eq "thin_dump: A maps 8 blocks, B none" "8 0" "$(dump_mapped 0) $(dump_mapped 1)"; }
thin_finish expect_counts
