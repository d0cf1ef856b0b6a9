#!/bin/bash
# core
# dm-rs loads and unloads cleanly; by default it registers only the target
# families it ships complete (thin: thin-pool and thin, as the drop-in for
# dm-thin-pool.ko, which also answers to its module aliases), never an
# incomplete one; a family registers all of its names or none; prefix=,
# targets= and selftest= work.
. "$(dirname "$0")/lib.sh"
dm_reset

for i in 1 2 3; do
	check "load #$i" modprobe dm_rs
	check "sysfs entry present #$i" test -d /sys/module/dm_rs
	check "unload #$i" rmmod dm_rs
done
check "sysfs entry gone after unload" test ! -d /sys/module/dm_rs

# A default load claims no name of an incomplete family: the C snapshot
# module (snapshot, snapshot-origin, snapshot-merge) still loads and serves.
modprobe dm_rs
check_eq "prefix defaults to empty" "" "$(cat /sys/module/dm_rs/parameters/prefix)"
check_eq "targets defaults to empty (complete families)" "" "$(cat /sys/module/dm_rs/parameters/targets)"
check_eq "selftest defaults to off" N "$(cat /sys/module/dm_rs/parameters/selftest)"
check "default load registers no snapshot-family name" bash -c '! dmsetup targets | grep -Eq "^(snapshot|snapshot-origin|snapshot-merge|dmrs-defer) "'
targets=$(dmsetup targets)
check_match "default load registers thin-pool with upstream's version" '(^|'$'\n'')thin-pool +v1\.23\.0' "$targets"
check_match "default load registers thin with upstream's version" '(^|'$'\n'')thin +v1\.23\.0' "$targets"
check_eq "module aliases dm-thin-pool and dm-thin" "dm-thin dm-thin-pool" "$(modinfo -F alias dm_rs | sort | xargs)"
check_fails "the C dm_thin_pool cannot load beside it (its names are taken)" modprobe dm_thin_pool
check "C dm-snapshot loads beside a default dm-rs" modprobe dm_snapshot
targets=$(dmsetup targets)
check_match "C snapshot registered" '(^|'$'\n'')snapshot +v1\.16\.0' "$targets"
check_match "C snapshot-merge registered" '(^|'$'\n'')snapshot-merge +v1\.5\.0' "$targets"
dmsetup create t-origin --table "0 $(sectors $DISK1) snapshot-origin $DISK1"
check_eq "origin served by the C module (dm_rs refcount stays 0)" 0 "$(module_refcnt dm_rs)"
dmsetup remove t-origin
check "no alias routes snapshot autoloading to dm-rs" bash -c '! modprobe -R dm-snapshot-origin 2>/dev/null | grep -qx dm_rs'
dm_reset

# targets= picks a family by its name or any member's name.
for sel in snapshot snapshot-origin all; do
	check "load with targets=$sel" modprobe dm_rs targets=$sel
	check_match "targets=$sel registers snapshot-origin with upstream's version" \
		'(^|'$'\n'')snapshot-origin +v1\.9\.0' "$(dmsetup targets)"
	rmmod dm_rs
done
check_match "registration logged" 'dm_rs: registered target snapshot-origin 1\.9\.0' "$(dmesg_since_start)"
check_fails "unknown name in targets= refuses the load" modprobe dm_rs targets=bogus
check_match "unknown name logged" 'unknown target or family in targets=: bogus' "$(dmesg_since_start)"

# A family whose names another module holds is skipped whole, never a
# failed load.
modprobe dm_snapshot
check "dm-rs loads although dm-snapshot holds the snapshot family" modprobe dm_rs targets=snapshot
check_match "skip is logged" 'snapshot family: a target name is registered by another module; skipping the family' "$(dmesg_since_start)"
dmsetup create t-origin --table "0 $(sectors $DISK1) snapshot-origin $DISK1"
check_eq "table served by the C module (dm_rs refcount stays 0)" 0 "$(module_refcnt dm_rs)"
dmsetup remove t-origin
dm_reset

# A prefix lets dm-rs run beside the C targets.
check "load with prefix=rs-" modprobe dm_rs prefix=rs- targets=snapshot
check_match "prefixed (short) name registered" 'rs-snap-origin +v1\.9\.0' "$(dmsetup targets)"
check "prefixed target usable" dmsetup create t-prefixed --table "0 $(sectors $DISK1) rs-snap-origin $DISK1"
check_eq "prefixed table line" "0 $(sectors $DISK1) rs-snap-origin $(printf '%d:%d' $((0x$(stat -c %t $DISK1))) $((0x$(stat -c %T $DISK1))))" "$(dmsetup table t-prefixed)"
check_eq "table holds a reference on dm_rs" 1 "$(module_refcnt dm_rs)"
check_fails "rmmod refused while a table uses dm-rs" rmmod dm_rs
dmsetup remove t-prefixed
check "C dm-snapshot loads beside prefixed dm-rs" modprobe dm_snapshot
check_match "C origin listed" '(^|'$'\n'')snapshot-origin +v1\.9\.0' "$(dmsetup targets)"
dm_reset

# A name longer than dm's 15-character limit is refused at load.
check_fails "over-long prefix refuses the load" modprobe dm_rs prefix=much-too-long- targets=snapshot
check_match "over-long prefix logged" 'prefix much-too-long- makes target snapshot-origin longer than 15 characters' "$(dmesg_since_start)"
check "load with prefix=x" modprobe dm_rs prefix=x targets=snapshot
check_match "one-character prefix also uses the short form" 'xsnap-origin +v1\.9\.0' "$(dmsetup targets)"
rmmod dm_rs

# Test-only targets exist only with selftest=1.
check "load with selftest=1" modprobe dm_rs selftest=1
check_match "self-test target registered" '(^|'$'\n'')dmrs-defer ' "$(dmsetup targets)"
rmmod dm_rs
check "module unloads" test ! -d /sys/module/dm_rs

done_testing
