#!/bin/bash
# A thin pool through a power cut (run by scripts/crash-test). Boot 1: rounds
# of writes to a thin device, each an overwrite of a hot 32 KiB range, then
# a fresh 96 KiB range (new blocks, some partly written, zeroing on), made
# durable alternately by fsync (a flush) and by O_DSYNC writes (FUA); every
# 7th round first snapshots the device. Each round is logged once durable;
# right after round 16 the guest is reset while round 17 is being written
# (well inside the pool's 1 s commit period, so only the flush's own commit
# can have saved round 16's new mappings). Boot 2: the metadata passes
# thin_check and pdata-check as it was left, the pool activates, every
# logged round reads back on the device and on every logged snapshot (which
# holds the rounds before it and zeros after), the hot range holds the last
# logged round, and the pool takes new writes and checks clean after
# teardown.
# THIN_IMPL=c runs it on C dm-thin (the oracle).
. "$(dirname "$0")/../guest/thin-lib.sh"
. "$(dirname "$0")/crash-lib.sh"
span=24          # 4 KiB blocks per round: 1.5 pool blocks
hot=60000        # the hot range: 8 blocks, one pool block's first half
thin_mib=256

# expect_rounds FROM TO: the expected image of rounds FROM..TO's ranges.
expect_rounds() {
	local r
	for ((r = $1; r <= $2; r++)); do pattern "r$r" $(((r - 1) * span)) $span; done
}
# holds DEV LAST SNAP_ROUND: DEV's first LAST rounds read back; with
# SNAP_ROUND (a snapshot taken before that round), the rounds from it on
# read zeros.
holds() {
	local dev=$1 last=$2 upto=$2
	[[ -n ${3:-} ]] && upto=$(($3 - 1))
	cmp <(expect_rounds 1 "$upto"; head -c $(((last - upto) * span * 4096)) /dev/zero) \
		<(dd if="$dev" bs=4K count=$((last * span)) iflag=direct status=none)
}
# hot_is DEV TAG...: each block of the hot range holds one of the TAGs' pattern.
hot_is() {
	local dev=$1 b t ok
	shift
	for ((b = hot; b < hot + 8; b++)); do
		ok=0
		for t in "$@"; do
			if [[ $t == zero ]]; then
				zverify "$dev" $b 1 && ok=1
			else
				pverify "$dev" "$t" $b 1 && ok=1
			fi
		done
		((ok)) || {
			echo "hot block $b holds none of: $*"
			return 1
		}
	done
}

dm_reset
thin_load
if [[ $CRASH_PHASE == crash ]]; then
	make_meta 16
	make_data 512
	require "pool (64 KiB blocks, zeroing on)" pool_create pool 128 0
	require "thin 0 ($thin_mib MiB)" thin_new pool 0 thin0 $thin_mib
	for ((r = 1; r <= 16; r++)); do
		if ((r % 7 == 0)); then
			require "round $r: snapshot $((1000 + r)) of thin 0" snap_new pool $((1000 + r)) 0 thin0
		fi
		require "round $r: hot range" all_of "pattern hot$r $hot 8 | dd of=/dev/mapper/thin0 bs=4K seek=$hot count=8 iflag=fullblock oflag=direct status=none"
		if ((r % 2)); then
			require "round $r: new range, O_DSYNC" dsync_write /dev/mapper/thin0 "r$r" $(((r - 1) * span)) $span
		else
			require "round $r: new range, then fsync" fsync_write /dev/mapper/thin0 "r$r" $(((r - 1) * span)) $span
		fi
		((r % 7 == 0)) && durable snap $((1000 + r)) $r
		durable round $r
	done
	crash_now pwrite /dev/mapper/thin0 r17 $((16 * span)) $span
fi

# Boot 2.
require "metadata device as boot 1 left it" slice tmeta $DISK1 0 16
require "data device as boot 1 left it" slice tdata $DISK2 0 512
META=/dev/mapper/tmeta DATA=/dev/mapper/tdata
last=$(rounds_done)
check_eq "boot 1 logged 16 rounds" 16 "$last"
meta_checks "$META" "metadata after the reset"
require "the pool activates" pool_create pool 128 0
require "thin 0 activates" thin_activate pool 0 thin0 $thin_mib
thin_check_served
check "every logged round reads back on thin 0" holds /dev/mapper/thin0 "$last"
check "the hot range holds round $last's writes" hot_is /dev/mapper/thin0 "hot$last"
nsnaps=0
while read -r _ id round; do
	name=snap$id
	attempt "snapshot $id (before round $round) activates" thin_activate pool "$id" "$name" $thin_mib || continue
	check "snapshot $id holds rounds 1-$((round - 1)) and zeros after" holds "/dev/mapper/$name" "$last" "$round"
	if ((round > 1)); then
		check "snapshot $id's hot range holds round $((round - 1))'s writes" hot_is "/dev/mapper/$name" "hot$((round - 1))"
	fi
	nsnaps=$((nsnaps + 1))
done < <(grep '^snap ' "$CRASH_PROGRESS")
check "boot 1 logged snapshots ($nsnaps)" test "$nsnaps" -ge 2
check "the pool takes new writes after the reset" all_of \
	"pwrite /dev/mapper/thin0 after $((last * span)) $span" "pverify /dev/mapper/thin0 after $((last * span)) $span"
thin_finish
