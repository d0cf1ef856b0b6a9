#!/bin/bash
# core
# rust/'s platform services run in the kernel through the test-only
# dmrs-services target (registered only with selftest=1): workqueues and
# delayed work, kcopyd copy/zero (bytes checked on the disks), dm-io
# synchronous and background reads/writes and a flush (bytes and the disk's
# flush counter checked), the rw_semaphore and mutex from work items, and the
# cross-target registry between two devices. A default load must not offer
# the target, and every object must be gone afterwards (the module unloads).
. "$(dirname "$0")/lib.sh"
dm_reset
work=$(mktemp -d)
size=$(sectors $DISK1)
# read_sectors DEV SECTOR COUNT OUT: straight from the disk (O_DIRECT).
read_sectors() {
	dd if="$1" of="$4" bs=64K skip=$(($2 * 512)) count=$(($3 * 512)) \
		iflag=direct,skip_bytes,count_bytes status=none
}

modprobe dm_rs
check "a default load does not register dmrs-services" \
	bash -c '! dmsetup targets | grep -q "^dmrs-services"'
check_fails "a default load refuses a dmrs-services table" \
	dmsetup create st-none --table "0 8 dmrs-services $DISK1"
rmmod dm_rs

require "load with selftest=1" modprobe dm_rs selftest=1
check_match "dmrs-services registered" '(^|'$'\n'')dmrs-services +v1\.0\.0' "$(dmsetup targets)"
require "create the self-test device" dmsetup create st --table "0 $size dmrs-services $DISK1 $DISK2"
check_eq "dm_rs serves it (one table reference)" 1 "$(module_refcnt dm_rs)"
msg() { dmsetup message st 0 "$@"; }
result() { dmsetup status st | cut -d' ' -f4-; }
check_fails "an unknown message fails" msg bogus

# Workqueues and delayed work.
check "wq: order, flush, re-queue, drain on destroy" msg wq
check_match "wq result" '^wq ok ordered=64 misordered=0 requeued=8 drained=64$' "$(result)"
check "delayed: fire, cancel, modify, periodic, drop while pending" msg delayed
check_match "delayed result" '^delayed ok fire_ms=[0-9]+ cancel=ok modify=ok periodic=[0-9]+ chained=[0-9]+$' "$(result)"
# The last check dropped a handle whose timer was due 1 s later: wait past
# that, so a timer firing into freed memory would show in the log.
sleep 2

# kcopyd: DISK1 sectors 2048.. hold random data.
random_file "$work/src" 1048576
dd if="$work/src" of=$DISK1 bs=1M seek=1 oflag=direct conv=notrunc status=none
check "kcopyd copy to one destination" msg kcopyd copy 2048 4096 2048
read_sectors $DISK2 4096 2048 "$work/copy"
check "kcopyd copied the bytes" cmp "$work/src" "$work/copy"
check "kcopyd copy to two destinations" msg kcopyd copy 2048 8192 12288 2048
read_sectors $DISK2 8192 2048 "$work/copy1"
read_sectors $DISK2 12288 2048 "$work/copy2"
check "first destination holds the bytes" cmp "$work/src" "$work/copy1"
check "second destination holds the bytes" cmp "$work/src" "$work/copy2"
check "kcopyd zero of the first half of a copy" msg kcopyd zero 8192 1024
read_sectors $DISK2 8192 2048 "$work/zeroed"
check "zeroed range reads zero" cmp -n 524288 /dev/zero "$work/zeroed"
check "the rest is untouched" cmp -i 524288 "$work/src" "$work/zeroed"
check "kcopyd client dropped with 64 jobs in flight waits for them" msg kcopyd drop 64 2048 16384
read_sectors $DISK2 16384 512 "$work/dropped"
check "all 64 jobs copied their bytes" cmp -n 262144 "$work/src" "$work/dropped"
# Refused before any I/O: EINVAL, not the EIO a failed copy would give.
check_match "a region past the end of the device is refused" 'Invalid argument' \
	"$(msg kcopyd copy $((size - 4)) 0 8 2>&1)"
check_match "an empty region is refused" 'Invalid argument' "$(msg kcopyd zero 0 0 2>&1)"

# dm-io on DISK2.
# pattern BYTE LENGTH FILE: LENGTH bytes of value BYTE.
pattern() { head -c "$2" /dev/zero | tr '\0' "\\$(printf '%03o' "$1")" >"$3"; }
random_file "$work/guard" 4096
dd if="$work/guard" of=$DISK2 bs=4096 seek=$((20472 / 8)) oflag=direct conv=notrunc status=none
check "dm-io synchronous write" msg dmio write 20480 1000 165
read_sectors $DISK2 20480 1000 "$work/w"
pattern 165 512000 "$work/p165"
check "it wrote 0xa5 over 1000 sectors" cmp "$work/w" "$work/p165"
check "dm-io FUA write" msg dmio fua 21480 8 90
read_sectors $DISK2 21480 8 "$work/f"
pattern 90 4096 "$work/p90"
check "it wrote 0x5a over 8 sectors" cmp "$work/f" "$work/p90"
read_sectors $DISK2 20472 8 "$work/before"
check "the sectors before the write are untouched" cmp "$work/guard" "$work/before"
pattern 60 512000 "$work/p60"
dd if="$work/p60" of=$DISK2 bs=512 seek=24576 oflag=direct conv=notrunc status=none
check "dm-io synchronous read sees 0x3c" msg dmio read 24576 1000 60
check_fails "a read expecting other bytes fails (the read checks)" msg dmio read 24576 1000 61
check "dm-io background write in 4 pieces" msg dmio awrite 28672 1001 77
read_sectors $DISK2 28672 1001 "$work/aw"
pattern 77 512512 "$work/p77"
check "it wrote 0x4d over 1001 sectors" cmp "$work/aw" "$work/p77"
check "dm-io background read in 4 pieces" msg dmio aread 28672 1001 77
check_fails "a background read expecting other bytes fails" msg dmio aread 28672 1001 78
check_match "all 4 pieces were submitted before the first wait" 'services dmio awrite: 4 pieces submitted before the first wait' "$(dmesg_since_start)"
disk2=$(basename $DISK2)
check_eq "$disk2 has a volatile write cache (flushes reach it)" "write back" "$(cat /sys/block/$disk2/queue/write_cache)"
before=$(flush_count $DISK2)
check "dm-io flush" msg dmio flush
after=$(flush_count $DISK2)
check "the flush reached $disk2 ($before -> $after)" test "$after" -gt "$before"

# Locks from work items.
check "rwsem: 4 writers and 4 readers as work items" msg rwsem
check_match "rwsem result" '^rwsem ok writes=8000 rounds=16000 torn=0$' "$(result)"

# Registry: a second device on the same disk finds what the first published.
require "create a second self-test device on $DISK1" dmsetup create st2 --table "0 $size dmrs-services $DISK1"
msg2() { dmsetup message st2 0 "$@"; }
result2() { dmsetup status st2 | cut -d' ' -f4-; }
check "registry insert/join/drop rules" msg registry rules
check "find before anything is published" msg2 registry find
check_eq "nothing found" "registry found none" "$(result2)"
check "publish tag 42" msg registry publish 42
check "the other device looks it up" msg2 registry find
check_eq "it finds tag 42" "registry found tag=42" "$(result2)"
check_fails "publishing twice from one device fails" msg registry publish 43
check_fails "the other device cannot take the same key" msg2 registry publish 5
check "unpublish" msg registry unpublish
check "look up after unpublish" msg2 registry find
check_eq "gone after unpublish" "registry found none" "$(result2)"
check "publish tag 44" msg registry publish 44
check "removing the publisher" dmsetup remove st
check "look up after the publisher was removed" msg2 registry find
check_eq "its entry went with it" "registry found none" "$(result2)"
check "remove the second device" dmsetup remove st2

# A copy in flight keeps its devices open after the table that started it is
# gone. Reads from "slow" wait 10 minutes, so the copy is surely still
# running while the table that started it (st3) is removed; then slow is
# reloaded without delay (suspending it releases the held reads) and st4
# waits for the copy.
require "load dm-delay" modprobe dm_delay
require "create a slow device over $DISK1" dmsetup create slow --table "0 $size delay $DISK1 0 600000"
require "create st3 copying from it" dmsetup create st3 --table "0 $size dmrs-services /dev/mapper/slow $DISK2"
require "create st4 on $DISK2" dmsetup create st4 --table "0 $size dmrs-services $DISK2"
check "st3 starts a copy and leaves it in flight" dmsetup message st3 0 kcopyd detach 2048 32768 2048
check "st4 takes it over" dmsetup message st4 0 kcopyd adopt
check "st3 is removed while its copy runs" dmsetup remove st3
check_match "the slow device is still open, held by the copy" 'busy' "$(dmsetup remove slow 2>&1)"
check "let the held reads go" bash -c "dmsetup load slow --table '0 $size delay $DISK1 0 0' &&
	dmsetup suspend slow && dmsetup resume slow"
check "st4 waits for the copy" dmsetup message st4 0 kcopyd collect
read_sectors $DISK2 32768 2048 "$work/late"
check "the copy finished with the right bytes" cmp "$work/src" "$work/late"
check "the slow device closes once the copy is done" dmsetup remove slow
check "remove st4" dmsetup remove st4
unload_modules dm_delay

check_match "results are logged" 'dm_rs: services: rwsem ok' "$(dmesg_since_start)"
# Queues, clients and registry entries hold module references: none leaked.
check_eq "no reference left on dm_rs" 0 "$(module_refcnt dm_rs)"
check "dm_rs unloads" rmmod dm_rs
rm -rf "$work"
done_testing
