#!/bin/bash
# An lvm2 classic-snapshot session as a user runs it, lvm2 unchanged: a
# linear LV with ext4, `lvcreate -s` (lvm2 builds snapshot-origin and
# snapshot tables), writes to the origin and to the snapshot, fsck,
# `lvconvert --merge` of an unused snapshot (merges at once, lvm2 polls it to
# the end) and of a snapshot whose origin is mounted (deferred to the next
# activation), lvremove; the files checked at every step. lvm2 uses the
# unprefixed target names: with SNAP_IMPL=rs (default) dm-rs is loaded as
# a user gets it (a default modprobe: the complete families), and the C
# dm_snapshot must stay unloaded;
# SNAP_IMPL=c runs the same steps on the C module (the oracle).
. "$(dirname "$0")/thin-lib.sh"
SNAP_IMPL=${SNAP_IMPL:-rs}
dm_reset
if [[ $SNAP_IMPL == rs ]]; then
	snap_module=dm_rs
	require "C dm_snapshot is not loaded" test ! -d /sys/module/dm_snapshot
	require "load dm-rs (default: the snapshot family unprefixed)" modprobe dm_rs
else
	snap_module=dm_snapshot
	require "load C dm_snapshot" modprobe dm_snapshot
fi
require "snapshot, snapshot-origin and snapshot-merge registered" \
	thin_targets_registered snapshot snapshot-origin snapshot-merge
work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"
# served WHAT: the live snapshot tables are held by the module under test.
served() {
	check_match "$1: vgs-lv is a snapshot-origin" '^0 [0-9]+ snapshot-origin ' "$(dmsetup table vgs-lv)"
	check_match "$1: $snap_module holds the tables" '^[1-9][0-9]*$' "$(module_refcnt "$snap_module")"
	[[ $SNAP_IMPL == rs ]] && check "$1: C dm_snapshot still not loaded" test ! -d /sys/module/dm_snapshot
	true
}
# files_are DEV DESC A F1: the filesystem on DEV holds file a = A and f1 = F1.
files_are() {
	check "$2" all_of "mount -o ro $1 $mnt" "cmp $3 $mnt/a" "test \"\$(cat $mnt/f1)\" = $4" "umount $mnt"
}
# lv_gone LV: lvm2 no longer lists it.
lv_gone() { ! lvs vgs/"$1" >/dev/null 2>&1; }

for d in $DISK1 $DISK2; do
	wipefs -qa $d
	dd if=/dev/zero of=$d bs=1M count=4 oflag=direct status=none
done
require "pvcreate, vgcreate" all_of "pvcreate -qy $DISK1 $DISK2" "vgcreate -q vgs $DISK1 $DISK2"
require "lvcreate a 64 MiB linear LV" lvcreate -qy -L 64M -n lv vgs
check "mkfs.ext4" mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/vgs/lv
random_file "$work/a1" $((4 << 20))
random_file "$work/a2" $((4 << 20))
random_file "$work/a3" $((4 << 20))
random_file "$work/big" $((12 << 20))
check "write the first files" all_of "mount /dev/vgs/lv $mnt" "cp $work/a1 $mnt/a" "echo 1 >$mnt/f1" "umount $mnt"

# Snapshot 1: changed on both sides, then merged while unused.
require "lvcreate -s (32 MiB COW, 8 KiB chunks)" lvcreate -qy -s -L 32M -c 8k -n snap1 vgs/lv
served "with snapshot 1"
check_match "vgs-snap1 is a persistent snapshot with 16-sector chunks" \
	'^0 [0-9]+ snapshot [0-9]+:[0-9]+ [0-9]+:[0-9]+ P 16$' "$(dmsetup table vgs-snap1)"
check "change the origin (a2, f1=2, a 12 MiB file)" all_of "mount /dev/vgs/lv $mnt" "cp $work/a2 $mnt/a" \
	"echo 2 >$mnt/f1" "cp $work/big $mnt/big" "umount $mnt"
files_are /dev/vgs/lv "the origin holds the new files" "$work/a2" 2
files_are /dev/vgs/snap1 "the snapshot holds the old files" "$work/a1" 1
check "write to the snapshot (f1=3, a new file s)" all_of "mount /dev/vgs/snap1 $mnt" "echo 3 >$mnt/f1" \
	"echo snap >$mnt/s" "umount $mnt"
check "fsck clean on both" all_of "fsck.ext4 -fn /dev/vgs/lv" "fsck.ext4 -fn /dev/vgs/snap1"
check_match "the snapshot's status counts its COW use" '^0 [0-9]+ snapshot [1-9][0-9]*/[0-9]+ [0-9]+$' \
	"$(dmsetup status vgs-snap1)"
check "lvconvert --merge (nothing open: merges now, polled to the end)" lvconvert -qy -i 1 --merge vgs/snap1
check "snapshot 1 is gone" lv_gone snap1
check "no snapshot tables left" test -z "$(dmsetup table | grep -E ' snapshot(-merge|-origin)? ')"
files_are /dev/vgs/lv "the origin now holds the snapshot's files" "$work/a1" 3
check "the snapshot's new file s came along, the origin's big file went" all_of "mount -o ro /dev/vgs/lv $mnt" \
	"test \"\$(cat $mnt/s)\" = snap" "test ! -e $mnt/big" "umount $mnt"
check "fsck clean after the merge" fsck.ext4 -fn /dev/vgs/lv

# Snapshot 2: merge asked for while the origin is mounted: deferred.
require "lvcreate -s a second snapshot" lvcreate -qy -s -L 32M -n snap2 vgs/lv
served "with snapshot 2"
check "mount the origin, change it (a3, f1=4)" all_of "mount /dev/vgs/lv $mnt" "cp $work/a3 $mnt/a" \
	"echo 4 >$mnt/f1" "sync"
check "lvconvert --merge while the origin is open (deferred)" lvconvert -qy --merge vgs/snap2
check "the origin stays usable with the merge pending" all_of "cmp $work/a3 $mnt/a" "umount $mnt"
check "snapshot 2 still there until the next activation" lvs vgs/snap2
check "deactivate and activate the origin (the merge starts)" all_of "lvchange -qy -an vgs/lv" "lvchange -qy -ay vgs/lv"
# lvm2 polls the merge in the background; `lvconvert LV` polls it here too.
check "the merge completes" all_of "lvconvert -qy -i 1 vgs/lv || true" "wait_for 120 lv_gone snap2"
files_are /dev/vgs/lv "the origin holds snapshot 2's files again" "$work/a1" 3
check "fsck clean after the deferred merge" fsck.ext4 -fn /dev/vgs/lv

check "lvremove, vgremove, pvremove" all_of "lvremove -qy vgs/lv" "vgremove -qy vgs" "pvremove -qy $DISK1 $DISK2"
check "no dm devices left" test -z "$(dmsetup ls | grep -v 'No devices found')"
[[ $SNAP_IMPL == rs ]] && check "C dm_snapshot never loaded" test ! -d /sys/module/dm_snapshot
check "$snap_module unloads" unload_modules "$snap_module"
rm -rf "$work"
dm_reset
done_testing
