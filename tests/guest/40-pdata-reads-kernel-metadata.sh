#!/bin/bash
# The metadata engine reads what upstream's C thin-pool writes, live: a pool
# with thin devices, snapshots, overwrites that break sharing, a deleted
# device and a held metadata snapshot is torn down, then checked by
# pdata-check (built from persistent_data/, the code dm-rs compiles in) and by
# thin_check. Both must accept it, and both must reject it once a btree
# node is damaged.
# Not in the debug core set: no dm-rs kernel code runs here (the C target
# writes, a host-built checker reads); it passes on the debug kernel too (--long).
. "$(dirname "$0")/lib.sh"
dm_reset
root=$(cd "$(dirname "$0")/../.." && pwd)
pdc=$root/persistent_data/target/release/pdata-check
require "pdata-check is built (scripts/test builds it; else cargo build --release in persistent_data)" test -x "$pdc"
require "load the C thin-pool" modprobe dm_thin_pool

meta=$DISK1 data=$DISK2
dd if=/dev/zero of=$meta bs=4096 count=1 oflag=direct status=none
# 64 KiB data blocks; a thin device of 128 MiB.
require "create C thin-pool" dmsetup create pool --table "0 $(sectors $data) thin-pool $meta $data 128 0"
thin_sectors=$((128 * 2048))
mkthin() { dmsetup message pool 0 "create_thin $1" && dmsetup create "thin$1" --table "0 $thin_sectors thin /dev/mapper/pool $1"; }
# write DEV MIB_OFFSET KIB: random bytes at a MiB offset (KIB a multiple of 4).
write() { dd if=/dev/urandom of="/dev/mapper/$1" bs=4K seek=$(($2 * 256)) count=$(($3 / 4)) oflag=direct status=none; }

require "create thin 0" mkthin 0
for off in 0 3 7 20 21 22 50 90 127; do write thin0 $off 512; done
# Scattered 4 KiB writes fill leaves unevenly.
for i in $(seq 0 97); do write thin0 $(((i * 37) % 128)) 4; done
check "snapshot thin 0 as 1" bash -c 'dmsetup suspend thin0 && dmsetup message pool 0 "create_snap 1 0" && dmsetup resume thin0'
check "activate snapshot" dmsetup create thin1 --table "0 $thin_sectors thin /dev/mapper/pool 1"
# Overwrites on both sides break sharing of some blocks only.
for off in 3 21 90; do write thin1 $off 256; done
for off in 7 50; do write thin0 $off 128; done
check "snapshot of the snapshot" bash -c 'dmsetup suspend thin1 && dmsetup message pool 0 "create_snap 2 1" && dmsetup resume thin1'
check "thin 3 created" mkthin 3
for off in 0 1 2 64; do write thin3 $off 1024; done
check "remove and delete thin 3" bash -c 'dmsetup remove thin3 && dmsetup message pool 0 "delete 3"'
check "reserve a metadata snapshot" dmsetup message pool 0 reserve_metadata_snap
for off in 30 31 100; do write thin0 $off 256; done
check "set transaction id" dmsetup message pool 0 "set_transaction_id 0 7"
status=$(dmsetup status pool)
check_match "pool reports a held metadata snapshot" '^0 [0-9]+ thin-pool 7 [0-9]+/[0-9]+ [0-9]+/[0-9]+ [0-9]+ ' "$status"
dmsetup remove thin1
dmsetup remove thin0
check "pool torn down (metadata committed)" dmsetup remove pool

check "thin_check accepts the kernel's metadata" thin_check $meta
out=$("$pdc" --thin $meta 2>&1)
rc=$?
check_eq "pdata-check accepts the kernel's metadata (exit 0)" 0 "$rc"
[[ $rc == 0 ]] || diag "$out"
check_eq "pdata-check reports nothing" "" "$(grep -v '^note:' <<<"$out")"

# Damage one btree node: flip a byte among the keys of the mapping tree's
# root, which the superblock names at offset 320 (LE u64).
mroot=$(od -An -t u8 -j 320 -N 8 $meta | tr -d ' ')
check_match "superblock names a mapping root" '^[1-9][0-9]*$' "$mroot"
printf '\xff' | dd of=$meta bs=1 seek=$((mroot * 4096 + 100)) conv=notrunc status=none
sync
out=$("$pdc" --thin $meta 2>&1)
rc=$?
check_eq "pdata-check rejects the damaged metadata (exit 1)" 1 "$rc"
check_match "and names the mapping tree" "mapping|btree|block $mroot" "$out"
check_fails "thin_check rejects it too" thin_check $meta

dm_reset
done_testing
