#!/bin/bash
# core
# dm-rs loads and unloads cleanly; by default it registers the target
# families it ships complete (thin: thin-pool and thin, the drop-in for
# dm-thin-pool.ko; snapshot: snapshot-origin, snapshot and snapshot-merge,
# the drop-in for dm-snapshot.ko), answering to those modules' aliases,
# never an incomplete family; a family registers all of its names or none;
# prefix=, targets= and selftest= work.
. "$(dirname "$0")/lib.sh"
dm_reset

for i in 1 2 3; do
	check "load #$i" modprobe dm_rs
	check "sysfs entry present #$i" test -d /sys/module/dm_rs
	check "unload #$i" rmmod dm_rs
done
check "sysfs entry gone after unload" test ! -d /sys/module/dm_rs

# A default load registers every family dm-rs ships complete, as drop-ins
# for the C modules: thin (dm-thin-pool.ko) and snapshot (dm-snapshot.ko:
# snapshot-origin, snapshot, snapshot-merge), at upstream's versions, and
# answers to their module aliases (what dm core requests: "dm-<target>").
modprobe dm_rs
check_eq "prefix defaults to empty" "" "$(cat /sys/module/dm_rs/parameters/prefix)"
check_eq "targets defaults to empty (complete families)" "" "$(cat /sys/module/dm_rs/parameters/targets)"
check_eq "selftest defaults to off" N "$(cat /sys/module/dm_rs/parameters/selftest)"
check "default load registers no test-only target" bash -c '! dmsetup targets | grep -Eq "^dmrs-"'
targets=$(dmsetup targets)
check_match "default load registers thin-pool with upstream's version" '(^|'$'\n'')thin-pool +v1\.23\.0' "$targets"
check_match "default load registers thin with upstream's version" '(^|'$'\n'')thin +v1\.23\.0' "$targets"
check_match "default load registers snapshot-origin with upstream's version" '(^|'$'\n'')snapshot-origin +v1\.9\.0' "$targets"
check_match "default load registers snapshot with upstream's version" '(^|'$'\n'')snapshot +v1\.16\.0' "$targets"
check_match "default load registers snapshot-merge with upstream's version" '(^|'$'\n'')snapshot-merge +v1\.5\.0' "$targets"
check_eq "module aliases: dm-thin-pool's and dm-snapshot's" \
	"dm-snapshot dm-snapshot-merge dm-snapshot-origin dm-thin dm-thin-pool" "$(modinfo -F alias dm_rs | sort | xargs)"
for a in dm-snapshot-origin dm-snapshot-merge dm-thin; do
	check "modprobe resolves $a to dm_rs" bash -c "modprobe -R $a | grep -qx dm_rs"
done
check_fails "the C dm_thin_pool cannot load beside it (its names are taken)" modprobe dm_thin_pool
check_fails "the C dm_snapshot cannot load beside it (its names are taken)" modprobe dm_snapshot
dmsetup create t-origin --table "0 $(sectors $DISK1) snapshot-origin $DISK1"
check_eq "an unprefixed snapshot-origin is dm-rs's (its table holds dm_rs)" 1 "$(module_refcnt dm_rs)"
dmsetup remove t-origin
check_eq "dm_snapshot never loaded" missing "$(module_refcnt dm_snapshot)"
dm_reset

# targets= picks a family by its name or any member's name.
for sel in snapshot snapshot-origin all; do
	check "load with targets=$sel" modprobe dm_rs targets=$sel
	check_match "targets=$sel registers snapshot-origin with upstream's version" \
		'(^|'$'\n'')snapshot-origin +v1\.9\.0' "$(dmsetup targets)"
	rmmod dm_rs
done
check "load with targets=thin" modprobe dm_rs targets=thin
check "targets=thin registers no snapshot-family name" bash -c '! dmsetup targets | grep -Eq "^(snapshot|snapshot-origin|snapshot-merge) "'
rmmod dm_rs
check_match "registration logged" 'dm_rs: registered target snapshot-origin 1\.9\.0' "$(dmesg_since_start)"
check_fails "unknown name in targets= refuses the load" modprobe dm_rs targets=bogus
check_match "unknown name logged" 'unknown target or family in targets=: bogus' "$(dmesg_since_start)"

# A family whose names another module holds is skipped whole, never a
# failed load: with the C dm-snapshot loaded first, a default load still
# registers thin.
modprobe dm_snapshot
check "default dm-rs loads although dm-snapshot holds the snapshot family" modprobe dm_rs
check_match "skip is logged" 'snapshot family: a target name is registered by another module; skipping the family' "$(dmesg_since_start)"
check_match "thin still registered" '(^|'$'\n'')thin-pool +v1\.23\.0' "$(dmsetup targets)"
dmsetup create t-origin --table "0 $(sectors $DISK1) snapshot-origin $DISK1"
check_eq "table served by the C module (dm_rs refcount stays 0)" 0 "$(module_refcnt dm_rs)"
dmsetup remove t-origin
dm_reset

# A prefix lets dm-rs run beside the C targets: every name of a default
# load carries it.
check "load with prefix=rs-" modprobe dm_rs prefix=rs-
targets=$(dmsetup targets)
check_match "prefixed (short) name registered" 'rs-snap-origin +v1\.9\.0' "$targets"
check_match "rs-snapshot registered" '(^|'$'\n'')rs-snapshot +v1\.16\.0' "$targets"
check_match "rs-snap-merge registered" '(^|'$'\n'')rs-snap-merge +v1\.5\.0' "$targets"
check_match "rs-thin-pool registered" '(^|'$'\n'')rs-thin-pool +v1\.23\.0' "$targets"
check "no unprefixed name registered" bash -c '! dmsetup targets | grep -Eq "^(snapshot|snapshot-origin|snapshot-merge|thin-pool|thin) "'
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
