#!/bin/bash
# The C dm-thin opens thin-pool metadata our engine wrote: pdata-thin-write
# (built from persistent_data/, the code dm-rs compiles in) writes a long
# random history to the metadata disk (snapshots of snapshots, overwrites,
# removals, deletes, ~150 commits, a held metadata snapshot) and a known
# pattern into every data block it mapped. The C thin-pool must report the
# space map counts and held root the engine wrote, and every block read
# through a C thin device must be its mapping's pattern (zeros where
# unmapped). Then the C target changes the metadata (writes, a snapshot, a
# delete, releasing our metadata snapshot and taking its own) and
# thin_check and pdata-check must still accept it, and untouched devices
# must still read back the same.
# Not in the debug core set: no dm-rs kernel code runs here (a host-built
# tool writes, the C target reads); it passes on the debug kernel too (--long).
. "$(dirname "$0")/lib.sh"
dm_reset
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/persistent_data/target/release
tool=$bin/pdata-thin-write pdc=$bin/pdata-check
require "pdata-thin-write and pdata-check are built (scripts/test builds them; else cargo build --release in persistent_data)" \
	test -x "$tool" -a -x "$pdc"
require "load the C thin-pool" modprobe dm_thin_pool
require "dm-rs is not loaded" test ! -d /sys/module/dm_rs

meta=$DISK1 data=$DISK2
work=$(mktemp -d)
maps=$work/maps
nr_data=$(($(sectors $data) / 128))
require "the engine writes thin metadata" bash -c "'$tool' metadata $meta $nr_data 41 >'$maps'"
require "patterns written to the mapped data blocks" "$tool" fill $data "$maps"
blockdev --flushbufs $meta
check "thin_check accepts the engine's metadata" thin_check $meta
check "pdata-check accepts it" "$pdc" --thin $meta

devices=$(awk '$1 == "device" { print $2 }' "$maps")
vblocks=$(awk '$1 == "device" { print $3; exit }' "$maps")
want=$(awk '$1 == "status" { print $2, $3, $4, $5 }' "$maps")
check_match "several devices, a metadata snapshot held" '^41 [0-9]+/[0-9]+ [0-9]+/[0-9]+ [1-9][0-9]*$' "$want"
dev_sectors=$((vblocks * 128))

pool_table="0 $(sectors $data) thin-pool $meta $data 128 0"
require "the C thin-pool opens the engine's metadata" dmsetup create pool --table "$pool_table"
status=$(dmsetup status pool)
check_eq "pool status: transaction id, metadata and data blocks used, held root as written" \
	"$want" "$(cut -d' ' -f4-7 <<<"$status")"
check_match "pool is read-write" '^0 [0-9]+ thin-pool [0-9]+ [0-9/]+ [0-9/]+ [0-9]+ rw ' "$status"
mkthin() { dmsetup create "thin$1" --table "0 $dev_sectors thin /dev/mapper/pool $1"; }
for d in $devices; do
	require "C thin device $d created" mkthin "$d"
done
check "the C thin module serves them (dm_thin_pool in use, dm-rs absent)" \
	bash -c "(( \$(cat /sys/module/dm_thin_pool/refcnt) > 0 )) && test ! -d /sys/module/dm_rs"
for d in $devices; do
	check "device $d reads back what the engine mapped" "$tool" verify "/dev/mapper/thin$d" "$d" "$maps"
done

# The C target changes the engine's metadata.
first=$(head -1 <<<"$devices")
last=$(tail -1 <<<"$devices")
snap_of=$(sed -n 2p <<<"$devices")
check "release the engine's metadata snapshot" dmsetup message pool 0 release_metadata_snap
check_match "no metadata snapshot held" '^0 [0-9]+ thin-pool [0-9]+ [0-9/]+ [0-9/]+ - ' "$(dmsetup status pool)"
check "overwrite 4 MiB of device $first" \
	dd if=/dev/urandom of="/dev/mapper/thin$first" bs=64K count=64 seek=$((vblocks / 3)) oflag=direct status=none
check "snapshot device $snap_of as 100" bash -c \
	"dmsetup suspend thin$snap_of && dmsetup message pool 0 'create_snap 100 $snap_of' && dmsetup resume thin$snap_of"
check "delete device $last" bash -c "dmsetup remove thin$last && dmsetup message pool 0 'delete $last'"
check "take a metadata snapshot" dmsetup message pool 0 reserve_metadata_snap
check "set transaction id" dmsetup message pool 0 "set_transaction_id 41 42"
check_match "the C target's metadata snapshot is held" '^0 [0-9]+ thin-pool 42 [0-9/]+ [0-9/]+ [1-9][0-9]* ' \
	"$(dmsetup status pool)"
dmsetup remove_all
check "pool torn down (metadata committed)" test ! -e /dev/mapper/pool
blockdev --flushbufs $meta
check "thin_check accepts the metadata the C target changed" thin_check $meta
out=$("$pdc" --thin $meta 2>&1)
rc=$?
check_eq "pdata-check accepts it too (exit 0)" 0 "$rc"
[[ $rc == 0 ]] || diag "$out"

# What the C target did not touch reads as before; the snapshot reads as
# its origin did.
require "the pool opens again" dmsetup create pool --table "$pool_table"
for d in $devices; do
	[[ $d == "$first" || $d == "$last" ]] && continue
	require "C thin device $d created again" mkthin "$d"
	check "device $d still reads back what the engine mapped" "$tool" verify "/dev/mapper/thin$d" "$d" "$maps"
done
require "snapshot 100 activated" mkthin 100
check "snapshot 100 reads what device $snap_of held" "$tool" verify /dev/mapper/thin100 "$snap_of" "$maps"
dmsetup remove_all

rm -rf "$work"
dm_reset
done_testing
