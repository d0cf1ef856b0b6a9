#!/bin/bash
# An lvm2 thin session as a user runs it, lvm2 unchanged: a thin pool, a
# thin volume with ext4 (mkfs, files, fsck), fstrim giving blocks back, a
# thin snapshot that keeps the old files while the origin changes, growth of
# pool data and metadata with lvextend, deactivation and activation (lvm2
# runs thin_check then), the pool's metadata checked through lvm2's
# read-only component activation, lvremove. lvm2 uses the unprefixed target
# names: with THIN_IMPL=rs dm-rs is loaded with targets=thin and no prefix
# and the C dm_thin_pool must stay unloaded throughout.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
if [[ $THIN_IMPL == rs ]]; then
	require "C dm_thin_pool is not loaded" test ! -d /sys/module/dm_thin_pool
	require "load dm-rs thin without a prefix (targets=thin)" modprobe dm_rs targets=thin
else
	require "load C dm_thin_pool" modprobe dm_thin_pool
fi
thin_use c
require "thin-pool and thin registered" thin_targets_registered thin-pool thin
thin_use "$THIN_IMPL"
work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"
served() { # the pool is live, held by the module under test, C absent in rs mode
	check_match "$1: the pool's table is thin-pool" '^0 [0-9]+ thin-pool ' "$(dmsetup table vgt-pool-tpool)"
	check_match "$1: $THIN_MODULE holds the tables" '^[1-9][0-9]*$' "$(module_refcnt "$THIN_MODULE")"
	[[ $THIN_IMPL == rs ]] && check "$1: C dm_thin_pool still not loaded" test ! -d /sys/module/dm_thin_pool
	true
}
for d in $DISK1 $DISK2; do
	wipefs -qa $d
	dd if=/dev/zero of=$d bs=1M count=4 oflag=direct status=none
done
require "pvcreate, vgcreate" all_of "pvcreate -qy $DISK1 $DISK2" "vgcreate -q vgt $DISK1 $DISK2"
require "lvcreate --type thin-pool (64 MiB, 4 MiB metadata, 64 KiB chunks)" \
	lvcreate -qy --type thin-pool -L 64M --poolmetadatasize 4M --chunksize 64k -n pool vgt
require "lvcreate a 128 MiB thin volume" lvcreate -qy -V 128M --thinpool vgt/pool -n thin1
served "after lvcreate"
# No lazy initialisation: its background writes would provision blocks
# while the test counts them.
check "mkfs.ext4 on the thin volume" mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/vgt/thin1
check "mount it" mount /dev/vgt/thin1 "$mnt"
random_file "$work/a" $((8 << 20))
random_file "$work/big" $((16 << 20))
check "write files" all_of "cp $work/a $mnt/a" "cp $work/big $mnt/big" \
	"for i in \$(seq 100); do echo \$i >$mnt/f\$i || return 1; done" "sync"
mapped=$(thin_mapped vgt-thin1)
check "delete a 16 MiB file, commit, fstrim" all_of "rm $mnt/big" "sync" "fstrim $mnt" "sync"
after=$(thin_mapped vgt-thin1)
check "fstrim gave at least 8 MiB back to the pool ($mapped -> $after sectors)" test $((mapped - after)) -ge $((8 * 2048))
check "unmount, fsck clean" all_of "umount $mnt" "fsck.ext4 -fn /dev/vgt/thin1"

require "lvcreate a thin snapshot" lvcreate -qy -s vgt/thin1 -n snap1
require "activate it (-K: lvm2 sets activation skip on thin snapshots)" lvchange -qy -ay -K vgt/snap1
random_file "$work/a2" $((8 << 20))
check "change the origin's file" all_of "mount /dev/vgt/thin1 $mnt" "cp $work/a2 $mnt/a" "echo changed >$mnt/f1" "umount $mnt"
check "the origin holds the new file" all_of "mount -o ro /dev/vgt/thin1 $mnt" "cmp $work/a2 $mnt/a" "umount $mnt"
check "the snapshot holds the old files" all_of "mount -o ro /dev/vgt/snap1 $mnt" "cmp $work/a $mnt/a" \
	"test \"\$(cat $mnt/f1)\" = 1" "umount $mnt"
check "fsck clean on both" all_of "fsck.ext4 -fn /dev/vgt/thin1" "fsck.ext4 -fn /dev/vgt/snap1"
served "with a snapshot"

check "lvextend the pool's data by 32 MiB" lvextend -qy -L +32M vgt/pool
check_match "pool data: 1536 blocks of 64 KiB" '^0 [0-9]+ thin-pool [0-9]+ [0-9/]+ [0-9]+/1536 ' "$(dmsetup status vgt-pool-tpool)"
check "lvextend the pool's metadata by 4 MiB" lvextend -qy --poolmetadatasize +4M vgt/pool
check_match "pool metadata: 2048 blocks" '^0 [0-9]+ thin-pool [0-9]+ [0-9]+/2048 ' "$(dmsetup status vgt-pool-tpool)"
check "the grown pool takes a 40 MiB file" all_of "mount /dev/vgt/thin1 $mnt" "head -c $((40 << 20)) /dev/urandom >$mnt/c" \
	"sync" "umount $mnt"

# Deactivate, and activate through a thin_check wrapper that leaves a mark:
# lvm2 runs thin_check on the pool's metadata before it activates it.
cat >"$work/thin_check" <<WRAP
#!/bin/sh
echo "\$@" >>"$work/thin_check.log"
exec /usr/sbin/thin_check "\$@"
WRAP
chmod +x "$work/thin_check"
check "vgchange -an" vgchange -qy -an vgt
check "no thin tables left" test -z "$(dmsetup table | grep -E ' thin(-pool)? ')"
check "vgchange -ay" vgchange -qy -ay --config "global { thin_check_executable = \"$work/thin_check\" }" vgt
check_match "lvm2 ran thin_check on the pool's metadata" 'pool_tmeta' "$(cat "$work/thin_check.log" 2>&1)"
check "activate the snapshot again" lvchange -qy -ay -K vgt/snap1
check "the files survived" all_of "mount -o ro /dev/vgt/thin1 $mnt" "cmp $work/a2 $mnt/a" "umount $mnt" \
	"mount -o ro /dev/vgt/snap1 $mnt" "cmp $work/a $mnt/a" "umount $mnt"
served "after reactivation"

# The metadata, through lvm2's read-only component activation.
check "deactivate the volumes" vgchange -qy -an vgt
if attempt "activate the metadata component" lvchange -qy -ay vgt/pool_tmeta; then
	meta_checks /dev/mapper/vgt-pool_tmeta "pool metadata lvm2 kept"
	check_eq "thin_dump: two devices" 2 "$(grep -c '<device ' <<<"$THIN_DUMP")"
	check "deactivate the component" lvchange -qy -an vgt/pool_tmeta
fi
check "lvremove the volumes and the pool" all_of "lvremove -qy vgt/snap1 vgt/thin1" "lvremove -qy vgt/pool"
check "vgremove, pvremove" all_of "vgremove -qy vgt" "pvremove -qy $DISK1 $DISK2"
check "no dm devices left" test -z "$(dmsetup ls | grep -v 'No devices found')"
[[ $THIN_IMPL == rs ]] && check "C dm_thin_pool never loaded" test ! -d /sys/module/dm_thin_pool
check "$THIN_MODULE unloads" unload_modules "$THIN_MODULE"
rm -rf "$work"
dm_reset
done_testing
