#!/bin/bash
# lvm2's own test suite (test/shell, built by scripts/lvm2-suite) on dm-rs:
# dm-rs loaded as a user gets it (a default modprobe: the thin and snapshot
# families under upstream's names), the C dm_snapshot and dm_thin_pool kept
# out (lvm2 may try to modprobe them: with our targets registered they
# cannot load), and each lvm2 test one TAP result. A listed test that lvm2
# skips, or passes with warnings, is a failure here: the list holds tests
# that run and pass cleanly on the C targets.
# Environment: LVM2_SUITE (the built test directory), LVM2_TESTS (names).
. "$(dirname "$0")/../guest/lib.sh"
dm_reset
suite=${LVM2_SUITE:?} tests=(${LVM2_TESTS:?}) impl=${LVM2_IMPL:-rs}
if [[ $impl == rs ]]; then
	require "C dm_snapshot and dm_thin_pool are not loaded" \
		test ! -d /sys/module/dm_snapshot -a ! -d /sys/module/dm_thin_pool
	require "load dm-rs (default: its families unprefixed)" modprobe dm_rs
else
	# LVM2_IMPL=c: the same tests on upstream's C targets (the oracle).
	require "load C dm_snapshot and dm_thin_pool" modprobe -a dm_snapshot dm_thin_pool
fi
require "thin-pool, thin, snapshot, snapshot-origin and snapshot-merge registered" \
	bash -c 'for t in thin-pool thin snapshot snapshot-origin snapshot-merge; do dmsetup targets | grep -q "^$t " || exit 1; done'
for m in dm_zero dm_mirror loop; do modprobe "$m" 2>/dev/null; done
# The guest's own lvm.conf and udev settings are for our tests; the suite
# brings its own.
unset LVM_SYSTEM_DIR DM_DISABLE_UDEV
work=$(mktemp -d /run/lvm2-suite.XXXXXX)
mkdir -p "$work/tmp" "$work/results"
only=$(printf 'shell/%s.sh,' "${tests[@]}")
# The runner stops in time for every verdict to be reported (run-tests'
# limit, DMRS_TEST_TIMEOUT, would kill this file and lose them all).
limit=${DMRS_TEST_TIMEOUT:-600}
(cd "$suite" && LVM_TEST_DIR=$work/tmp LVM_TEST_PREFER_BRD=0 \
	timeout -k 10 $((limit * 9 / 10 - 60)) ./lib/runner --testdir . \
	--outdir "$work/results" --flavours ndev-vanilla --only "${only%,}" --batch --timeout 600 \
	>"$work/runner.log" 2>&1)
for t in "${tests[@]}"; do
	verdict=$(sed -n "s|^## ndev-vanilla: shell/$t\.sh \.* \([a-z ]*[a-z]\).*|\1|p" "$work/runner.log" | tail -1)
	log=$work/results/ndev-vanilla:shell_$t.sh.txt
	case $verdict in
	passed) ok "lvm2 $t" ;;
	*)
		not_ok "lvm2 $t (${verdict:-did not run})"
		# Where it failed: what led to lvm2's stack trace, else the end.
		if [[ -f $log ]]; then
			out=$(grep -v -e '## DEBUG' -e '## Line:' "$log")
			diag "$(grep -B20 -m1 'STACKTRACE' <<<"$out" || tail -25 <<<"$out")"
		fi
		;;
	esac
done
[[ $impl == rs ]] && check "dm-rs served them: C dm_snapshot and dm_thin_pool never loaded" \
	test ! -d /sys/module/dm_snapshot -a ! -d /sys/module/dm_thin_pool
rm -rf "$work"
dm_reset
done_testing
