# Shared helpers of the crash tests (tests/crash/*, run by scripts/crash-test):
# the same file runs in two boots on the same disks, CRASH_PHASE=crash then
# CRASH_PHASE=verify. Boot 1 logs what it saw become durable in
# CRASH_PROGRESS (in the checkout, so on the host at once: 9p without a
# cache) and resets the guest mid-write; boot 2 checks it against the disks.
# shellcheck shell=bash
case ${CRASH_PHASE:-} in
crash | verify) ;;
*)
	echo "Bail out! CRASH_PHASE must be crash or verify (run these files with scripts/crash-test)"
	exit 1
	;;
esac
[[ -n ${CRASH_PROGRESS:-} ]] || {
	echo "Bail out! CRASH_PROGRESS is not set"
	exit 1
}

# durable WORDS...: log a line once what it names is durable.
durable() { echo "$*" >>"$CRASH_PROGRESS"; }
# rounds_done: the last round logged durable (0 if none).
rounds_done() { awk '$1 == "round" { n = $2 } END { print n + 0 }' "$CRASH_PROGRESS" 2>/dev/null || echo 0; }

# crash_now [CMD...]: reset the guest at once, as a power cut: no sync, no
# unmount. CMD (the next round's writes) is started in the background
# first, so the reset lands in the middle of it. Call it right after a
# round is logged durable, so nothing else (like a periodic commit) has
# time to make up for a flush that did not do its job.
crash_now() {
	(($#)) && "$@" &
	sleep "0.0$((RANDOM % 5))"
	# The mark goes to the host through 9p at once; serial output still
	# buffered in the guest can be lost in the reset.
	echo crashing >>"$CRASH_PROGRESS"
	echo b >/proc/sysrq-trigger
	sleep 60
	echo "not ok - the guest was still running after sysrq-b"
	exit 1
}

# fsync_write DEV TAG FIRST COUNT: pattern TAG at 4 KiB block FIRST, O_DIRECT,
# then fsync (a flush through the whole stack).
fsync_write() {
	pattern "$2" "$3" "$4" | dd of="$1" bs=4K seek="$3" count="$4" iflag=fullblock \
		oflag=direct conv=fsync,notrunc status=none
}
# dsync_write DEV TAG FIRST COUNT: the same with O_DSYNC: each write durable
# when it completes (FUA, or write + flush where the device has no FUA).
dsync_write() {
	pattern "$2" "$3" "$4" | dd of="$1" bs=4K seek="$3" count="$4" iflag=fullblock \
		oflag=direct,dsync conv=notrunc status=none
}
