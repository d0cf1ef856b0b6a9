# Helpers for guest tests: TAP output and device-mapper chores.
# Source it from a test; the test ends with `done_testing`.
# shellcheck shell=bash
set -u

_tap_n=0
_tap_failed=0

ok() {
	_tap_n=$((_tap_n + 1))
	echo "ok $_tap_n - $*"
}

not_ok() {
	_tap_n=$((_tap_n + 1))
	_tap_failed=$((_tap_failed + 1))
	echo "not ok $_tap_n - $*"
}

diag() {
	printf '%s\n' "$@" | sed 's/^/#   /'
}

# check DESC CMD...: passes if CMD succeeds; shows its output otherwise.
check() {
	local desc=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$desc"
	else
		not_ok "$desc"
		diag "command: $*" "$out"
	fi
}

# require DESC CMD...: like check, but a failure ends the test file (later
# steps would only act on something that does not exist).
require() {
	local desc=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$desc"
	else
		not_ok "$desc"
		diag "command: $*" "$out" "stopping: later steps depend on this"
		done_testing
		exit 1
	fi
}

# check_fails DESC CMD...: passes if CMD fails.
check_fails() {
	local desc=$1 out
	shift
	if out=$("$@" 2>&1); then
		not_ok "$desc"
		diag "command unexpectedly succeeded: $*" "$out"
	else
		ok "$desc"
	fi
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
	if [[ $2 == "$3" ]]; then
		ok "$1"
	else
		not_ok "$1"
		diag "expected: '$2'" "actual:   '$3'"
	fi
}

# check_match DESC REGEX ACTUAL
check_match() {
	if [[ $3 =~ $2 ]]; then
		ok "$1"
	else
		not_ok "$1"
		diag "expected to match: '$2'" "actual: '$3'"
	fi
}

done_testing() {
	echo "1..$_tap_n"
	((_tap_failed == 0))
}

# Scratch disks attached by vm-run.
DISK1=/dev/vdb
DISK2=/dev/vdc

sectors() { blockdev --getsz "$1"; }

# The kernel log since the test started, to look for our messages.
_dmesg_mark=$(dmesg | wc -l)
dmesg_since_start() { dmesg | tail -n +$((_dmesg_mark + 1)); }

# Remove every dm device and unload dm-rs and the C targets we may have loaded.
dm_reset() {
	dmsetup remove_all --force >/dev/null 2>&1 || true
	local m
	for m in dm_rs dm_snapshot dm_thin_pool dm_cache_smq dm_cache dm_bufio dm_persistent_data; do
		[[ -d /sys/module/$m ]] && rmmod "$m" 2>/dev/null
	done
	true
}

# Which module provides a loaded target: prints "dm_rs" or the C module name.
# dm core holds a reference on the owning module for each live table.
module_refcnt() { cat "/sys/module/$1/refcnt" 2>/dev/null || echo missing; }

# Random bytes in a file, for data-path checks.
random_file() { # PATH BYTES
	head -c "$2" /dev/urandom >"$1"
}

# Bytes LENGTH at OFFSET of DEV, read with O_DIRECT where alignment allows so
# they come from the device, not the page cache.
read_range() { # DEV OFFSET LENGTH OUT
	if (($2 % 4096 == 0 && $3 % 4096 == 0)); then
		dd if="$1" of="$4" bs=4096 skip=$(($2 / 4096)) count=$(($3 / 4096)) iflag=direct status=none
	else
		blockdev --flushbufs "$1"
		dd if="$1" of="$4" bs=1 skip="$2" count="$3" status=none
	fi
}

# log_mark, then dmesg_since_mark: the kernel log written after the mark, to
# tie a message to the step that caused it.
log_mark() { _log_mark=$(dmesg | wc -l); }
dmesg_since_mark() { dmesg | tail -n +$((${_log_mark:-0} + 1)); }

# Flush requests DEV's queue has completed (field 16 of its stat file): grows
# only when a flush reached the disk itself.
flush_count() { awk '{ print $16 }' "/sys/block/$(basename "$1")/stat"; }

# Reads the device-mapper device NAME has completed (field 1 of its stat file).
dm_reads() { # NAME
	local devt
	devt=$(dmsetup info -c --noheadings -o major,minor --separator : "$1" | tr -d ' ')
	awk '{ print $1 }' "/sys/dev/block/$devt/stat"
}

# Devices holding DEV open through a claim (dm tables using it), one a line.
holders() { ls "/sys/block/$(basename "$1")/holders"; }

# Unload MODULE...: each one that is loaded; fails if one cannot go (still in use).
unload_modules() {
	local m rc=0
	for m in "$@"; do
		[[ -d /sys/module/$m ]] || continue
		rmmod "$m" || rc=1
	done
	return $rc
}

# attempt DESC CMD...: like check, and returns CMD's status, so a test can
# leave out the steps that depend on it (the failure is already counted).
attempt() {
	local failed=$_tap_failed
	check "$@"
	((_tap_failed == failed))
}
