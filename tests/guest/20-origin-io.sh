#!/bin/bash
# snapshot-origin data path: bytes written through the dm device land on the
# origin and read back equal, at odd sizes and offsets and across suspend/resume
# under I/O; table and status lines match upstream's C target exactly.
. "$(dirname "$0")/lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
modprobe dm_snapshot
size=$(sectors $DISK1)
work=$(mktemp -d)

require "create rs-snap-origin device" dmsetup create rs-origin --table "0 $size rs-snap-origin $DISK1"
require "device node created" test -b /dev/mapper/rs-origin
check_eq "size is the origin's" "$size" "$(sectors /dev/mapper/rs-origin)"

# Writes through dm-rs, reads straight from the disk.
i=0
for spec in 0:4096 4096:1048576 512:512 1536:3584 7:1 1000000:12345 $((size * 512 - 8192)):8192 \
	$((size * 512 - 513)):513; do
	off=${spec%%:*} len=${spec##*:}
	i=$((i + 1))
	random_file "$work/in$i" "$len"
	dd if="$work/in$i" of=/dev/mapper/rs-origin bs=1M seek="$off" oflag=seek_bytes conv=notrunc,fsync status=none
	blockdev --flushbufs /dev/mapper/rs-origin
	read_range $DISK1 "$off" "$len" "$work/out$i"
	check "write $len bytes at byte $off reaches the origin" cmp "$work/in$i" "$work/out$i"
	read_range /dev/mapper/rs-origin "$off" "$len" "$work/back$i"
	check "read $len bytes at byte $off through dm-rs" cmp "$work/in$i" "$work/back$i"
done

# Direct I/O with many sizes through fio, verified.
check "fio randwrite+verify through dm-rs" fio --name=v --filename=/dev/mapper/rs-origin \
	--rw=randwrite --bsrange=512-256k --size=64M --direct=1 --ioengine=psync \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --randrepeat=1 --output=/dev/null

# Table and status lines, compared with the C target on the same device.
rs_table=$(dmsetup table rs-origin)
rs_status=$(dmsetup status rs-origin)
check_match "table line" "^0 $size rs-snap-origin [0-9]+:[0-9]+\$" "$rs_table"
check_match "status line" "^0 $size rs-snap-origin ?\$" "$rs_status"
require "create C origin" dmsetup create c-origin --table "0 $size snapshot-origin $DISK2"
c_table=$(dmsetup table c-origin)
c_status=$(dmsetup status c-origin)
disk2=$(printf '%d:%d' $((0x$(stat -c %t $DISK2))) $((0x$(stat -c %T $DISK2))))
check_eq "C table names the device as maj:min like ours" "0 $size snapshot-origin $disk2" "$c_table"
disk1=$(printf '%d:%d' $((0x$(stat -c %t $DISK1))) $((0x$(stat -c %T $DISK1))))
check_eq "our table equals C's form" "0 $size rs-snap-origin $disk1" "$rs_table"
check_eq "our status equals C's (minus name)" "${c_status/snapshot-origin/rs-snap-origin}" "$rs_status"
dmsetup remove c-origin

# Two origin targets in one table: like upstream, sectors are not offset.
half=$((size / 2))
require "create two-target table" dmsetup create rs-two --table "0 $half rs-snap-origin $DISK1
$half $half rs-snap-origin $DISK2"
random_file "$work/two" 65536
dd if="$work/two" of=/dev/mapper/rs-two bs=65536 seek=$((half * 512 / 65536 + 1)) oflag=direct status=none
read_range $DISK2 $(((half * 512 / 65536 + 1) * 65536)) 65536 "$work/two.out"
check "second target maps to its device at the same sector" cmp "$work/two" "$work/two.out"
dmsetup remove rs-two

# Suspend and resume while a writer runs; data written stays intact.
fio --name=bg --filename=/dev/mapper/rs-origin --rw=randwrite --bs=4k --size=32M \
	--direct=1 --ioengine=libaio --iodepth=8 --time_based --runtime=8 \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --output="$work/bg.out" &
bg=$!
sleep 1
cycles=0
for _ in $(seq 10); do
	dmsetup suspend rs-origin && dmsetup resume rs-origin && cycles=$((cycles + 1))
	sleep 0.3
done
check_eq "10 suspend/resume cycles under I/O" 10 "$cycles"
if wait $bg; then ok "writer finished and verified its data"; else
	not_ok "writer finished and verified its data"
	diag "$(cat "$work/bg.out")"
fi
check_match "device is live after the cycles" 'State: +ACTIVE' "$(dmsetup info rs-origin)"

# A flush through the target reaches the device: the disk's own flush counter
# grows (dm core completes a flush itself when the target asks for no flush bios).
check_eq "the origin disk has a volatile write cache (flushes matter)" "write back" \
	"$(cat /sys/block/$(basename $DISK1)/queue/write_cache)"
check_eq "the dm device has a write cache too (fsync sends it a flush)" "write back" \
	"$(cat /sys/block/"$(dmsetup info -c --noheadings -o blkdevname rs-origin)"/queue/write_cache)"
flushes=$(flush_count $DISK1)
check "fsync (flush) through dm-rs" dd if=/dev/zero of=/dev/mapper/rs-origin bs=4k count=1 conv=fsync status=none
after=$(flush_count $DISK1)
check "the flush reached the origin disk (its flush count grew)" test "$after" -gt "$flushes"
dmsetup remove rs-origin
rm -rf "$work"
done_testing
