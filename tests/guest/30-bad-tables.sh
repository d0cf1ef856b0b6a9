#!/bin/bash
# core
# Bad snapshot-origin table lines fail with a clear error, never an oops, and
# leave the module usable.
. "$(dirname "$0")/lib.sh"
dm_reset
modprobe dm_rs targets=snapshot
size=$(sectors $DISK1)

bad() { # DESC TABLE EXPECTED_LOG
	local out
	if out=$(dmsetup create bad --table "$2" 2>&1); then
		not_ok "$1 is refused"
		dmsetup remove bad
	else
		ok "$1 is refused"
	fi
	dmsetup remove bad >/dev/null 2>&1
	check_match "$1: kernel says why" "$3" "$(dmesg_since_start | tail -n 5)"
}

bad "no arguments" "0 $size snapshot-origin" 'snapshot-origin: origin: incorrect number of arguments'
bad "two arguments" "0 $size snapshot-origin $DISK1 $DISK2" 'origin: incorrect number of arguments'
bad "missing device" "0 $size snapshot-origin /dev/nonexistent" 'snapshot-origin: Cannot get target device'
bad "garbage device" "0 $size snapshot-origin 99999:99999" 'Cannot get target device'
bad "binary garbage" "0 $size snapshot-origin $(printf '\x01\x7f\xfe%%s%%n')" 'Cannot get target device'
long=$(head -c 3000 /dev/zero | tr '\0' a)
bad "very long word" "0 $size snapshot-origin $long" 'Cannot get target device'

# Busy: a mounted file system holds the disk exclusively.
mkfs.ext4 -q -F $DISK2
mkdir -p /tmp/mnt && mount $DISK2 /tmp/mnt
bad "busy device" "0 $size snapshot-origin $DISK2" 'Cannot get target device'
umount /tmp/mnt

check "module still usable: good table loads" dmsetup create good --table "0 $size snapshot-origin $DISK1"
check "and serves I/O" dd if=/dev/mapper/good of=/dev/null bs=64k count=16 iflag=direct status=none
dmsetup remove good
check "module unloads after the errors" rmmod dm_rs
done_testing
