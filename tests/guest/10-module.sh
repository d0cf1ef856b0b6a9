#!/bin/bash
# core
# dm-rs loads and unloads cleanly, registers its targets with upstream's names
# and versions, honours prefix= and targets=, and skips names another module holds.
. "$(dirname "$0")/lib.sh"
dm_reset

for i in 1 2 3; do
	check "load #$i" modprobe dm_rs
	check "sysfs entry present #$i" test -d /sys/module/dm_rs
	check "unload #$i" rmmod dm_rs
done
check "sysfs entry gone after unload" test ! -d /sys/module/dm_rs

modprobe dm_rs
targets=$(dmsetup targets)
check_match "snapshot-origin registered with upstream's version" \
	'(^|'$'\n'')snapshot-origin +v1\.9\.0' "$targets"
check_eq "prefix defaults to empty" "" "$(cat /sys/module/dm_rs/parameters/prefix)"
check_eq "targets defaults to all" "all" "$(cat /sys/module/dm_rs/parameters/targets)"
check_match "registration logged" 'dm_rs: registered target snapshot-origin 1\.9\.0' "$(dmesg_since_start)"
rmmod dm_rs

# A prefix lets dm-rs run beside the C targets.
check "load with prefix=rs-" modprobe dm_rs prefix=rs-
targets=$(dmsetup targets)
check_match "prefixed (short) name registered" 'rs-snap-origin +v1\.9\.0' "$targets"
check "prefixed target usable" dmsetup create t-prefixed --table "0 $(sectors $DISK1) rs-snap-origin $DISK1"
check_eq "prefixed table line" "0 $(sectors $DISK1) rs-snap-origin $(printf '%d:%d' $((0x$(stat -c %t $DISK1))) $((0x$(stat -c %T $DISK1))))" "$(dmsetup table t-prefixed)"
dmsetup remove t-prefixed
check "plain name left free" bash -c '! dmsetup targets | grep -q "^snapshot-origin "'
check "C dm-snapshot loads beside prefixed dm-rs" modprobe dm_snapshot
targets=$(dmsetup targets)
check_match "both origins listed" 'rs-snap-origin' "$targets"
check_match "C origin listed" '(^|'$'\n'')snapshot-origin +v1\.9\.0' "$targets"
dm_reset

# A name taken by another module is skipped, never a failed load.
modprobe dm_snapshot
check "dm-rs loads although dm-snapshot holds snapshot-origin" modprobe dm_rs
check_match "skip is logged" 'snapshot-origin is registered by another module; skipping' "$(dmesg_since_start)"
dmsetup create t-origin --table "0 $(sectors $DISK1) snapshot-origin $DISK1"
check_eq "table served by the C module (dm_rs refcount stays 0)" 0 "$(module_refcnt dm_rs)"
dmsetup remove t-origin
dm_reset

# A name longer than dm's 15-character limit is refused at load.
check_fails "over-long prefix refuses the load" modprobe dm_rs prefix=much-too-long-
check_match "over-long prefix logged" 'prefix much-too-long- makes target snapshot-origin longer than 15 characters' "$(dmesg_since_start)"
# Any prefix pushes snapshot-origin (15 characters) over the limit.
check "load with prefix=x" modprobe dm_rs prefix=x
check_match "one-character prefix also uses the short form" 'xsnap-origin +v1\.9\.0' "$(dmsetup targets)"
rmmod dm_rs

# targets= selects what registers.
check "load with targets=snapshot-origin" modprobe dm_rs targets=snapshot-origin
check_match "selected target present" 'snapshot-origin' "$(dmsetup targets)"
rmmod dm_rs
check_fails "unknown name in targets= refuses the load" modprobe dm_rs targets=bogus
check_match "unknown target logged" 'unknown target in targets=: bogus' "$(dmesg_since_start)"
check "module loads again afterwards" modprobe dm_rs

# A live table pins the module.
dmsetup create t-origin --table "0 $(sectors $DISK1) snapshot-origin $DISK1"
check_eq "table holds a reference on dm_rs" 1 "$(module_refcnt dm_rs)"
check_fails "rmmod refused while a table uses dm-rs" rmmod dm_rs
dmsetup remove t-origin
check "rmmod after removing the device" rmmod dm_rs

# dm core autoloads dm-rs through its alias when the C module is not wanted.
check "alias dm-snapshot-origin is known to modprobe" bash -c 'modprobe -R dm-snapshot-origin | grep -qx dm_rs'

done_testing
