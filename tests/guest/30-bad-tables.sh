#!/bin/bash
# Bad snapshot-origin table lines fail with a clear error, never an oops, and
# leave the module usable. dm-rs runs under prefix=rs-, so only it can serve
# rs-snap-origin: the kernel's error line must name that target, and after
# each bad line a good table loads and serves I/O through dm-rs.
. "$(dirname "$0")/lib.sh"
dm_reset
require "load dm-rs with prefix=rs-" modprobe dm_rs prefix=rs- targets=snapshot
size=$(sectors $DISK1)

# After a refused line: nothing stays held, and dm-rs still works.
still_usable() { # DESC
	check_eq "$1: no module reference left" 0 "$(module_refcnt dm_rs)"
	check_eq "$1: no device left claimed" "" "$(holders $DISK1; holders $DISK2)"
	if ! dmsetup create good --table "0 $size rs-snap-origin $DISK1" >/dev/null 2>&1; then
		not_ok "$1: a good table loads afterwards"
		return
	fi
	ok "$1: a good table loads afterwards"
	check_eq "$1: it is served by dm-rs (refcount 1)" 1 "$(module_refcnt dm_rs)"
	check "$1: and serves I/O" dd if=/dev/mapper/good of=/dev/null bs=64k count=16 iflag=direct status=none
	dmsetup remove good
}

bad() { # DESC TABLE EXPECTED_REASON
	local out
	log_mark
	if out=$(dmsetup create bad --table "$2" 2>&1); then
		not_ok "$1 is refused"
		dmsetup remove bad
	else
		ok "$1 is refused"
	fi
	dmsetup remove bad >/dev/null 2>&1
	# dm core logs "<dev>: <target>: <ti->error> (<errno>)".
	check_match "$1: dm-rs says why" "rs-snap-origin: $3" "$(dmesg_since_mark)"
	still_usable "$1"
}

t="0 $size rs-snap-origin"
bad "no arguments" "$t" 'origin: incorrect number of arguments \((-EINVAL|-22)\)'
bad "two arguments" "$t $DISK1 $DISK2" 'origin: incorrect number of arguments \((-EINVAL|-22)\)'
bad "missing device" "$t /dev/nonexistent" 'Cannot get target device'
bad "garbage device" "$t 99999:99999" 'Cannot get target device'
bad "binary garbage" "$t $(printf '\x01\x7f\xfe%%s%%n')" 'Cannot get target device'
long=$(head -c 3000 /dev/zero | tr '\0' a)
bad "very long word" "$t $long" 'Cannot get target device'

# Busy: a mounted file system holds the disk exclusively.
mkfs.ext4 -q -F $DISK2
mkdir -p /tmp/mnt && mount $DISK2 /tmp/mnt
bad "busy device" "$t $DISK2" 'Cannot get target device \((-EBUSY|-16)\)'
umount /tmp/mnt

check "module unloads after the errors" rmmod dm_rs
done_testing
