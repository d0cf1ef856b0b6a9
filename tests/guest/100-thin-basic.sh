#!/bin/bash
# dm-rs thin-pool and thin, the basics: a pool formats blank metadata, thin
# devices are created by message, written data reads back (first writes
# provision blocks, the rest of a partly written block reads as zeros,
# unprovisioned blocks read as zeros), status and table lines have
# upstream's shape, and after the pool is torn down thin_check accepts the
# metadata, thin_dump shows the mappings, a new pool reads the data back
# and the C dm-thin does too.
. "$(dirname "$0")/lib.sh"
dm_reset
meta=$DISK1 data=$DISK2
work=$(mktemp -d)
require "load dm-rs with the thin family under prefix rs-" modprobe dm_rs prefix=rs- targets=thin
require "the C dm-thin is not loaded" test ! -d /sys/module/dm_thin_pool
targets=$(dmsetup targets)
check_match "rs-thin-pool registered at 1.23.0" $'rs-thin-pool +v1\\.23\\.0' "$targets"
check_match "rs-thin registered at 1.23.0" $'rs-thin +v1\\.23\\.0' "$targets"

dd if=/dev/zero of=$meta bs=4096 count=16 oflag=direct status=none
# Old bytes where the pool will provision, so that zeroing shows.
tr '\0' '\377' </dev/zero | dd of=$data bs=1M count=16 iflag=fullblock oflag=direct status=none
data_sectors=$(sectors $data)
nr_blocks=$((data_sectors / 128))
pool_table="0 $data_sectors rs-thin-pool $meta $data 128 32"
require "create a pool on blank metadata" dmsetup create pool --table "$pool_table"
check_match "fresh pool status" \
	"^0 $data_sectors rs-thin-pool 0 [0-9]+/[0-9]+ 0/$nr_blocks - rw discard_passdown queue_if_no_space - [0-9]+ ?\$" \
	"$(dmsetup status pool)"
check_match "pool table line" "^0 $data_sectors rs-thin-pool [0-9]+:[0-9]+ [0-9]+:[0-9]+ 128 32 0 ?\$" \
	"$(dmsetup table pool)"
require "create_thin 1" dmsetup message pool 0 "create_thin 1"
check "create_thin 2" dmsetup message pool 0 "create_thin 2"
check_fails "create_thin 1 again is refused" dmsetup message pool 0 "create_thin 1"
log_mark
check_fails "create_thin with a bad id is refused" dmsetup message pool 0 "create_thin x1"
check_match "with upstream's warning" "Message received with invalid device id: x1" "$(dmesg_since_mark)"
check_fails "an unknown message is refused" dmsetup message pool 0 "frobnicate"
check "set_transaction_id 0 7" dmsetup message pool 0 "set_transaction_id 0 7"
check_fails "set_transaction_id with a wrong current id is refused" \
	dmsetup message pool 0 "set_transaction_id 0 8"
check_match "transaction id in status" "^0 $data_sectors rs-thin-pool 7 " "$(dmsetup status pool)"

thin_sectors=$((256 * 2048))
require "create thin device 1" dmsetup create thin1 --table "0 $thin_sectors rs-thin /dev/mapper/pool 1"
require "create thin device 2" dmsetup create thin2 --table "0 $thin_sectors rs-thin /dev/mapper/pool 2"
check "dm-rs serves them" bash -c "(( \$(cat /sys/module/dm_rs/refcnt) >= 3 )) && test ! -d /sys/module/dm_thin_pool"
check_match "thin status before any write" "^0 $thin_sectors rs-thin 0 - ?\$" "$(dmsetup status thin1)"
check_match "thin table line" "^0 $thin_sectors rs-thin [0-9]+:[0-9]+ 1 ?\$" "$(dmsetup table thin1)"

# 4 MiB of whole blocks at 1 MiB, then 4 KiB into the middle of the block at 8 MiB.
random_file "$work/a" $((4 << 20))
random_file "$work/b" 4096
check "write 4 MiB to thin 1" dd if="$work/a" of=/dev/mapper/thin1 bs=1M seek=1 oflag=direct conv=fsync status=none
check "write 4 KiB into a fresh block" dd if="$work/b" of=/dev/mapper/thin1 bs=4096 seek=$((8 * 256 + 1)) oflag=direct conv=fsync status=none
random_file "$work/c" $((1 << 20))
check "write 1 MiB to thin 2" dd if="$work/c" of=/dev/mapper/thin2 bs=1M seek=3 oflag=direct conv=fsync status=none
read_range /dev/mapper/thin1 $((1 << 20)) $((4 << 20)) "$work/a.back"
check "thin 1 reads back its 4 MiB" cmp "$work/a" "$work/a.back"
read_range /dev/mapper/thin1 $((8 << 20)) 65536 "$work/block"
{ head -c 4096 /dev/zero; cat "$work/b"; head -c $((65536 - 8192)) /dev/zero; } >"$work/block.want"
check "the rest of a partly written block reads as zeros" cmp "$work/block.want" "$work/block"
read_range /dev/mapper/thin2 $((3 << 20)) $((1 << 20)) "$work/c.back"
check "thin 2 reads back its 1 MiB" cmp "$work/c" "$work/c.back"
read_range /dev/mapper/thin1 $((100 << 20)) $((1 << 20)) "$work/hole"
check "an unprovisioned range reads as zeros" cmp <(head -c $((1 << 20)) /dev/zero) "$work/hole"
read_range /dev/mapper/thin2 0 $((1 << 20)) "$work/hole2"
check "thin 2 does not see thin 1's data" cmp <(head -c $((1 << 20)) /dev/zero) "$work/hole2"
# thin 1: 64 blocks at 16.., one at 128; thin 2: 16 blocks at 48..
check_match "thin 1 status: mapped sectors and highest mapped sector" \
	"^0 $thin_sectors rs-thin $((65 * 128)) $((129 * 128 - 1)) ?\$" "$(dmsetup status thin1)"
check_match "pool status counts the provisioned blocks" \
	"^0 $data_sectors rs-thin-pool 7 [0-9]+/[0-9]+ 81/$nr_blocks - rw " "$(dmsetup status pool)"


check "reserve_metadata_snap" dmsetup message pool 0 reserve_metadata_snap
check_match "the held root shows in the status" "^0 $data_sectors rs-thin-pool 7 [0-9]+/[0-9]+ 81/$nr_blocks [1-9][0-9]* rw " \
	"$(dmsetup status pool)"
check_match "thin_dump -m reads the metadata snapshot of the live pool" 'device dev_id="1" mapped_blocks="65"' \
	"$(thin_dump -m $meta 2>&1)"
check "release_metadata_snap" dmsetup message pool 0 release_metadata_snap
check_match "no held root any more" "^0 $data_sectors rs-thin-pool 7 [0-9]+/[0-9]+ 81/$nr_blocks - rw " "$(dmsetup status pool)"
check_fails "release_metadata_snap without one is refused" dmsetup message pool 0 release_metadata_snap

# Many concurrent writes of mixed sizes, several to one fresh block at a time.
check "create_thin 4" dmsetup message pool 0 "create_thin 4"
require "create thin device 4" dmsetup create thin4 --table "0 $thin_sectors rs-thin /dev/mapper/pool 4"
check "fio: concurrent random writes on fresh blocks read back verified" fio --name=v --filename=/dev/mapper/thin4 \
	--rw=randwrite --bsrange=4k-128k --size=16M --direct=1 --ioengine=libaio --iodepth=32 \
	--verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --randrepeat=1 --output=/dev/null
check "remove thin device 4" dmsetup remove thin4
check "delete thin 4" dmsetup message pool 0 "delete 4"
check_match "its blocks are free again" "^0 $data_sectors rs-thin-pool 7 [0-9]+/[0-9]+ 81/$nr_blocks " "$(dmsetup status pool)"

# A snapshot shares thin 1's blocks; writes to either break sharing.
check "snapshot thin 1 as 3" bash -c \
	"dmsetup suspend thin1 && dmsetup message pool 0 'create_snap 3 1' && dmsetup resume thin1"
require "create the snapshot device" dmsetup create snap3 --table "0 $thin_sectors rs-thin /dev/mapper/pool 3"
read_range /dev/mapper/snap3 $((1 << 20)) $((4 << 20)) "$work/snap"
check "the snapshot reads thin 1's data" cmp "$work/a" "$work/snap"
random_file "$work/d" 262144
check "overwrite 256 KiB of thin 1" dd if="$work/d" of=/dev/mapper/thin1 bs=64K seek=16 oflag=direct conv=fsync status=none
check "write 4 KiB into a shared block of thin 1" dd if="$work/b" of=/dev/mapper/thin1 bs=4096 seek=$((16 * 16 + 5 * 16 + 1)) oflag=direct conv=fsync status=none
cp "$work/a" "$work/a2"
dd if="$work/d" of="$work/a2" conv=notrunc status=none
dd if="$work/b" of="$work/a2" bs=4096 seek=$((5 * 16 + 1)) conv=notrunc status=none
read_range /dev/mapper/thin1 $((1 << 20)) $((4 << 20)) "$work/a2.back"
check "thin 1 reads its new data around an unshared block's old data" cmp "$work/a2" "$work/a2.back"
read_range /dev/mapper/snap3 $((1 << 20)) $((4 << 20)) "$work/snap.after"
check "the snapshot still reads the old data" cmp "$work/a" "$work/snap.after"
check_match "pool status: 5 more blocks (4 overwritten, 1 copied)" \
	"^0 $data_sectors rs-thin-pool 7 [0-9]+/[0-9]+ 86/$nr_blocks - rw " "$(dmsetup status pool)"
check "remove the snapshot device" dmsetup remove snap3
check "delete the snapshot" dmsetup message pool 0 "delete 3"

# Discard on thin 2: 32 KiB into its first block up to the end of its data.
check "discard most of thin 2's data" blkdiscard -o $(((3 << 20) + 32768)) -l $(((1 << 20) - 32768)) /dev/mapper/thin2
check_match "thin 2 keeps only the partly discarded block" "^0 $thin_sectors rs-thin 128 $((49 * 128 - 1)) ?\$" \
	"$(dmsetup status thin2)"
read_range /dev/mapper/thin2 $((3 << 20)) 65536 "$work/c.first"
check "the partly discarded block keeps its data" cmp <(head -c 65536 "$work/c") "$work/c.first"
read_range /dev/mapper/thin2 $(((3 << 20) + 65536)) $(((1 << 20) - 65536)) "$work/c.rest"
check "the discarded blocks read as zeros" cmp <(head -c $(((1 << 20) - 65536)) /dev/zero) "$work/c.rest"

check "remove the thins" dmsetup remove thin1 thin2
check "delete thin 2" dmsetup message pool 0 "delete 2"
check "remove the pool" dmsetup remove pool
check "thin_check accepts dm-rs's metadata" thin_check $meta
dump=$(thin_dump $meta)
check_match "thin_dump: transaction 7, device 1 with 65 mapped blocks" \
	'transaction="7".*device dev_id="1" mapped_blocks="65"' "$(tr '\n' ' ' <<<"$dump")"
check_match "thin_dump: the overwritten run of mappings" 'range_mapping origin_begin="16" data_begin="[0-9]+" length="4"' "$dump"
check_eq "thin_dump: thin 2 is gone" "" "$(grep 'dev_id="2"' <<<"$dump")"

require "reopen the pool" dmsetup create pool --table "$pool_table"
require "reopen thin 1" dmsetup create thin1 --table "0 $thin_sectors rs-thin /dev/mapper/pool 1"
read_range /dev/mapper/thin1 $((1 << 20)) $((4 << 20)) "$work/a.again"
check "thin 1 reads back its data after the pool was reloaded" cmp "$work/a2" "$work/a.again"
read_range /dev/mapper/thin1 $((8 << 20)) 65536 "$work/block.again"
check "and the partly written block" cmp "$work/block.want" "$work/block.again"
check "tear down" dmsetup remove thin1 pool

# Out of data space: a 2 MiB data device (32 blocks) on a loop device.
truncate -s 8M "$work/m.img"
truncate -s 2M "$work/d.img"
lm=$(losetup -f --show "$work/m.img") ld=$(losetup -f --show "$work/d.img")
small="0 4096 rs-thin-pool $lm $ld 128 4"
require "create a small pool failing I/O when out of space" dmsetup create small --table "$small 1 error_if_no_space"
check "create_thin 1 on it" dmsetup message small 0 "create_thin 1"
require "thin on the small pool" dmsetup create sthin --table "0 $thin_sectors rs-thin /dev/mapper/small 1"
check_fails "writing 3 MiB fails" dd if=/dev/zero of=/dev/mapper/sthin bs=1M count=3 oflag=direct status=none
check_match "the pool is out of data space" "rs-thin-pool 0 [0-9]+/[0-9]+ 32/32 - out_of_data_space discard_passdown error_if_no_space " \
	"$(dmsetup status small)"
echo 0 >/sys/module/dm_rs/parameters/no_space_timeout # queue for ever (slow guests)
check "switch to queueing" bash -c "dmsetup suspend sthin && dmsetup reload small --table '$small' && dmsetup suspend small && dmsetup resume small && dmsetup resume sthin"
dd if=/dev/urandom of=/dev/mapper/sthin bs=64K seek=40 count=4 oflag=direct conv=fsync status=none &
writer=$!
sleep 3
check "a write out of space waits" kill -0 $writer
check_match "queueing" "out_of_data_space discard_passdown queue_if_no_space " "$(dmsetup status small)"
truncate -s 4M "$work/d.img"
losetup -c "$ld"
check "grow the data device" bash -c "dmsetup reload small --table '0 8192 rs-thin-pool $lm $ld 128 4' && dmsetup suspend --noflush small && dmsetup resume small"
wait $writer
check_eq "the queued write completes (exit 0)" 0 $?
check_match "back in write mode with room" "rs-thin-pool 0 [0-9]+/[0-9]+ 3[0-9]/64 - rw " "$(dmsetup status small)"
check "remove the small pool" dmsetup remove sthin small
losetup -d "$lm" "$ld"
check "unload dm-rs" rmmod dm_rs

require "load the C dm-thin" modprobe dm_thin_pool
require "the C thin-pool opens dm-rs's metadata" dmsetup create cpool --table "0 $data_sectors thin-pool $meta $data 128 32"
require "the C thin opens device 1" dmsetup create cthin1 --table "0 $thin_sectors thin /dev/mapper/cpool 1"
read_range /dev/mapper/cthin1 $((1 << 20)) $((4 << 20)) "$work/a.c"
check "the C thin reads the data dm-rs wrote" cmp "$work/a2" "$work/a.c"
check "tear down the C pool" dmsetup remove cthin1 cpool
check "thin_check still accepts the metadata" thin_check $meta
done_testing
