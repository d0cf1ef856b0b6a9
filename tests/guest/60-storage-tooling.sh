#!/bin/bash
# The guest kernel runs the storage tooling users put beside our targets:
# loop devices, XFS, dm-zero (lvm2 sparse volumes), dm-mirror with dm-log
# (raw mirror resync, lvm2 pvmove). Each is upstream C code, so each check
# also proves which module served it. dm-rs stays unloaded: lvm2's snapshots
# here run on the C dm-snapshot. A section whose first step fails leaves out
# the steps that depend on it; the others still run.
# Not in the debug core set: no dm-rs code runs here, and it takes ~10 minutes
# on the debug kernel under TCG; it passes there too (--long).
. "$(dirname "$0")/lib.sh"
dm_reset
work=$(mktemp -d)
mib=$((1024 * 1024))
check "dm-rs is not loaded (the C targets serve this test)" test ! -d /sys/module/dm_rs

# zeros_at DEV MIB_OFFSET MIB: the range reads back as zeros, from the device.
zeros_at() { cmp -n $(($3 * mib)) <(dd if="$1" bs=1M skip="$2" count="$3" iflag=direct status=none) /dev/zero; }
# put_random DEV MIB_OFFSET MIB NAME: write random MiBs, kept in $work/NAME.
put_random() {
	random_file "$work/$4" $(($3 * mib))
	dd if="$work/$4" of="$1" bs=1M seek="$2" oflag=direct status=none
}
# same_at DEV MIB_OFFSET NAME: the device holds $work/NAME at that offset.
same_at() {
	local n
	n=$(stat -c %s "$work/$3")
	cmp "$work/$3" <(dd if="$1" bs=1M skip="$2" count=$((n / mib)) iflag=direct status=none)
}
wipe() { wipefs -qa "$1" && dd if=/dev/zero of="$1" bs=1M count=4 oflag=direct status=none; }

# loop (built in): a file becomes a block device; I/O lands in the file.
loop_device() {
	local backing=/dev/shm/loop.img loop
	truncate -s 64M $backing
	loop=$(losetup -f --show $backing)
	attempt "losetup attaches a file" test -b "$loop" || return
	check_match "a loop device" '^/dev/loop[0-9]+$' "$loop"
	check_eq "its size is the file's" $((64 * 2048)) "$(sectors "$loop")"
	put_random "$loop" 3 4 loop.in
	check "data reads back through the loop device" same_at "$loop" 3 loop.in
	check "untouched range reads zeros" zeros_at "$loop" 10 4
	check "detach" losetup -d "$loop"
	check "data landed in the backing file" cmp "$work/loop.in" <(dd if=$backing bs=1M skip=3 count=4 status=none)
	rm -f $backing
}

# XFS (module, autoloaded by mount): format, write, remount, repair check.
xfs_fs() {
	local mnt=$work/mnt
	mkdir -p "$mnt"
	attempt "mkfs.xfs" mkfs.xfs -q -f $DISK2 || return
	attempt "mount XFS (loads xfs)" mount -t xfs $DISK2 "$mnt" || return
	check "xfs module loaded" test -d /sys/module/xfs
	check_eq "mounted as xfs" xfs "$(findmnt -n -o FSTYPE "$mnt")"
	random_file "$work/xfs.in" $((8 * mib))
	check "write an 8 MiB file" cp "$work/xfs.in" "$mnt/data"
	check "and many small ones" bash -c 'for i in $(seq 200); do echo $i >"$1/f$i" || exit; done; sync' _ "$mnt"
	check "unmount" umount "$mnt"
	check "xfs_repair -n finds nothing" xfs_repair -n $DISK2
	attempt "remount" mount -t xfs $DISK2 "$mnt" || return
	check "file intact after remount" cmp "$work/xfs.in" "$mnt/data"
	check_eq "small files intact" "$(seq 200)" "$(for i in $(seq 200); do cat "$mnt/f$i"; done)"
	umount "$mnt"
	check "xfs unloads" unload_modules xfs
}

# dm-zero: a zero table reads zeros and swallows writes.
zero_target() {
	attempt "modprobe dm_zero" modprobe dm_zero || return
	attempt "zero table" dmsetup create zero0 --table "0 $((256 * 2048)) zero" || return
	check_eq "served by dm_zero (one table, refcount 1)" 1 "$(module_refcnt dm_zero)"
	check "reads zeros" zeros_at /dev/mapper/zero0 0 16
	check "writes are accepted" dd if=/dev/urandom of=/dev/mapper/zero0 bs=1M count=4 oflag=direct status=none
	check "and still reads zeros" zeros_at /dev/mapper/zero0 0 4
	dmsetup remove zero0
	check "dm_zero unloads" unload_modules dm_zero
}

# dm-mirror + dm-log: a raw mirror resyncs leg 2 from leg 1, writes go to both.
mirror_target() {
	local size=$((32 * 2048)) regions
	wipe $DISK1 && wipe $DISK2
	put_random $DISK1 0 16 leg1
	check "legs differ before the mirror" bash -c '! cmp -s -n $((16 << 20)) "$0" "$1"' $DISK1 $DISK2
	attempt "modprobe dm_mirror" modprobe dm_mirror || return
	check "dm_log and dm_region_hash loaded with it" test -d /sys/module/dm_log -a -d /sys/module/dm_region_hash
	# core log, 512 KiB regions, no sync/nosync word: resync everything.
	attempt "mirror table" dmsetup create mirr --table "0 $size mirror core 1 1024 2 $DISK1 0 $DISK2 0" || return
	check_eq "served by dm_mirror (one table, refcount 1)" 1 "$(module_refcnt dm_mirror)"
	regions=$((size / 1024))
	for _ in $(seq 120); do
		[[ $(dmsetup status mirr) == *" $regions/$regions "* ]] && break
		sleep 0.5
	done
	check_match "mirror reports in sync with both legs alive" " $regions/$regions 1 AA 1 core\$" "$(dmsetup status mirr)"
	check "resync copied leg 1 to leg 2" same_at $DISK2 0 leg1
	put_random /dev/mapper/mirr 20 4 mwrite
	check "a write through the mirror reads back" same_at /dev/mapper/mirr 20 mwrite
	check "and is on leg 1" same_at $DISK1 20 mwrite
	check "and on leg 2" same_at $DISK2 20 mwrite
	dmsetup remove mirr
	check "dm_mirror, dm_region_hash, dm_log unload" unload_modules dm_mirror dm_region_hash dm_log
}

# lvm2 pvmove (dm-mirror, autoloaded): an LV moves between PVs intact.
pvmove_lv() {
	attempt "lvcreate on disk 1" lvcreate -qy -L 32M -n moved vgt $DISK1 || return
	put_random /dev/vgt/moved 0 32 moved
	check_eq "LV on disk 1" "$DISK1(0)" "$(lvs --noheadings -o devices vgt/moved | tr -d ' ')"
	check "pvmove disk 1 -> disk 2" pvmove -i 1 $DISK1 $DISK2
	check "pvmove used dm_mirror (loaded by lvm2)" test -d /sys/module/dm_mirror
	check_eq "LV now on disk 2" "$DISK2(0)" "$(lvs --noheadings -o devices vgt/moved | tr -d ' ')"
	check_eq "nothing left on disk 1" 0 "$(pvs --noheadings --units s --nosuffix -o pv_used $DISK1 | tr -d ' ')"
	check "data intact after the move" same_at /dev/vgt/moved 0 moved
	check "data intact after reactivation" bash -c 'lvchange -an vgt/moved && lvchange -ay vgt/moved && "$@"' _ \
		cmp "$work/moved" /dev/vgt/moved
	lvremove -qy vgt/moved >/dev/null
}

# lvm2 sparse volume (lvcreate -s -V: a snapshot of a zero device) on the C
# dm-snapshot, with dm-zero autoloaded by lvm2.
sparse_lv() {
	# lvm2 makes sparse volumes thin by default; the classic kind is a snapshot.
	local classic='global { sparse_segtype_default = "snapshot" }'
	attempt "modprobe dm_snapshot" modprobe dm_snapshot || return
	attempt "sparse volume: lvcreate -s -V" lvcreate -qy --config "$classic" -s -V 512M -L 32M -n sparse vgt || return
	check "dm_zero loaded by lvm2" test -d /sys/module/dm_zero
	check_match "a zero table backs it" '(^|'$'\n'')[^ ]+: 0 [0-9]+ zero ?('$'\n''|$)' "$(dmsetup table)"
	check_match "the C snapshot serves it" '^0 [0-9]+ snapshot ' "$(dmsetup table vgt-sparse)"
	check_match "dm_snapshot and dm_zero hold tables" '^[1-9] [1-9]' "$(module_refcnt dm_snapshot) $(module_refcnt dm_zero)"
	check "sparse volume reads zeros" zeros_at /dev/vgt/sparse 0 16
	put_random /dev/vgt/sparse 100 4 sparse
	check "a write reads back" same_at /dev/vgt/sparse 100 sparse
	check "around it still zeros" zeros_at /dev/vgt/sparse 96 4
	check "reactivate" bash -c 'lvchange -an vgt/sparse && lvchange -ay vgt/sparse'
	check "the write survived (persistent exception store)" same_at /dev/vgt/sparse 100 sparse
}

lvm2_volumes() {
	wipe $DISK1 && wipe $DISK2
	attempt "pvcreate both disks" pvcreate -qy $DISK1 $DISK2 || return
	attempt "vgcreate" vgcreate -q vgt $DISK1 $DISK2 || return
	pvmove_lv
	sparse_lv
	check "remove the VG" vgremove -qff vgt
	pvremove -qy $DISK1 $DISK2 >/dev/null
}

loop_device
xfs_fs
zero_target
mirror_target
lvm2_volumes
check "C modules unload" unload_modules dm_snapshot dm_zero dm_mirror dm_region_hash dm_log dm_bufio
rm -rf "$work"
done_testing
