#!/bin/bash
# Suspending the pool suspends its thins (upstream's pool presuspend: an
# internal noflush suspend of every thin device, undone when the pool
# resumes): while writers run on two thins, the suspended pool leaves both
# thins internally suspended and their writes waiting; a new table (new low
# water mark) is loaded into the suspended pool and resumed; the thins run
# again and every block reads back. A thin the user suspended stays
# suspended across the pool's suspend and resume; a pool without thins
# suspends and resumes. A thin removed while the pool is suspended goes at
# once.
. "$(dirname "$0")/thin-lib.sh"
dm_reset
thin_load
make_meta 4
make_data 128
require "pool: 64 KiB blocks" pool_create pool 128 0
require "thin 0 and 1 (32 MiB each)" all_of "thin_new pool 0 thin0 32" "thin_new pool 1 thin1 32"
thin_check_served

# state NAME: dmsetup's State line, e.g. "ACTIVE" or "ACTIVE (INTERNAL SUSPEND)".
state() { dmsetup info "$1" | sed -n 's/^State: *//p'; }
# inflight NAME: "reads writes" in flight in the device (started, not ended).
inflight() { tr -s ' ' <"$(sysfs_dev "/dev/mapper/$1")/inflight" | sed 's/^ //'; }
# written NAME: sectors written to a device (sysfs stat field 7), counted on completion.
written() { awk '{ print $7 }' "$(sysfs_dev "/dev/mapper/$1")/stat"; }

pwrite /dev/mapper/thin0 R 0 2048 4 &
w0=$!
pwrite /dev/mapper/thin1 S 0 4096 64 &
w1=$!
sleep 1
check "suspend the pool during writes" dmsetup suspend pool
check_eq "pool is suspended" SUSPENDED "$(state pool)"
before="$(written thin0) $(written thin1)"
sleep 2
# dmsetup does not show an internal suspend; it shows in the thins'
# accounting: their writes wait before entering the thin (none in flight),
# not inside it, remapped to the suspended pool.
check_eq "thin 0 is suspended: no bio in flight" "0 0" "$(inflight thin0)"
check_eq "thin 1 is suspended: no bio in flight" "0 0" "$(inflight thin1)"
check_eq "no thin write completes while the pool is suspended" "$before" "$(written thin0) $(written thin1)"
check "both writers still wait" all_of "kill -0 $w0" "kill -0 $w1"
check "load a new table (low water mark 32) into the suspended pool" \
	dmsetup reload pool --table "$(pool_table "$META" "$DATA" 128 32)"
check "resume the pool" dmsetup resume pool
check_eq "thin 0 active again" ACTIVE "$(state thin0)"
check_eq "thin 1 active again" ACTIVE "$(state thin1)"
for lw in 16 64; do
	check "reload the pool with low water mark $lw during writes" pool_reload pool 128 $lw
done
wait $w0
check_eq "the 4 KiB writer finished" 0 $?
wait $w1
check_eq "the 64 KiB writer finished" 0 $?
check_match "table line has the last low water mark" " 128 64( 0)? ?\$" "$(dmsetup table pool)"
check "thin 0 reads back" layout /dev/mapper/thin0 "R 0 2048" "zero 2048 6144"
check "thin 1 reads back" layout /dev/mapper/thin1 "S 0 4096" "zero 4096 4096"

# A thin suspended by the user stays so across the pool's suspend/resume.
check "suspend thin 1" dmsetup suspend thin1
check "suspend and resume the pool" all_of "dmsetup suspend pool" "dmsetup resume pool"
check_eq "thin 1 still suspended" SUSPENDED "$(state thin1)"
check_eq "thin 0 active" ACTIVE "$(state thin0)"
check "resume thin 1" dmsetup resume thin1
check_eq "thin 1 active" ACTIVE "$(state thin1)"
check "write after the resumes" pwrite /dev/mapper/thin1 S2 4096 256 64
check "thin 1 reads back" layout /dev/mapper/thin1 "S 0 4096" "S2 4096 256" "zero 4352 3840"

# No thins: the pool alone suspends and resumes.
check "remove the thins" all_of "dmsetup remove thin0" "dmsetup remove thin1"
check "suspend the pool without thins" dmsetup suspend pool
check_eq "pool is suspended" SUSPENDED "$(state pool)"
check "resume it" dmsetup resume pool
check_match "pool is rw" '^[0-9]+ [0-9/]+ [0-9/]+ - rw ' "$(pool_status pool)"
require "reactivate the thins" all_of "thin_activate pool 0 thin0 32" "thin_activate pool 1 thin1 32"
check "thin 0 reads back" layout /dev/mapper/thin0 "R 0 2048" "zero 2048 6144"
check "thin 1 reads back" layout /dev/mapper/thin1 "S 0 4096" "S2 4096 256" "zero 4352 3840"

# A thin removed while the pool keeps it suspended goes at once (upstream
# never resumes it), even with an inactive table loaded; the pool then
# resumes its other thins. A new thin table is refused meanwhile.
check "load an inactive table into thin 1" dmsetup load thin1 --table "$(thin_table pool 1 32)"
check "suspend the pool" dmsetup suspend pool
log_mark
check_fails "a thin table is refused while the pool is suspended" thin_activate pool 0 thin0b 32
dmsetup remove thin0b 2>/dev/null
check "logged: upstream's reason" logged "Unable to activate thin device while pool is suspended"
# (dmsetup's removal sleeps uninterruptibly while it waits: watched from
# here, and released by the resume below if it hangs.)
dmsetup remove thin1 &
rm_pid=$!
removed() { ! kill -0 "$rm_pid" 2>/dev/null; }
check "remove thin 1 while the pool is suspended (done within 30 s)" wait_for 30 removed
check "resume the pool" dmsetup resume pool
wait "$rm_pid"
check_eq "the removal succeeded" 0 $?
check_eq "thin 0 active" ACTIVE "$(state thin0)"
check "thin 0 reads and writes" all_of "layout /dev/mapper/thin0 'R 0 2048'" "pwrite /dev/mapper/thin0 R2 2048 16"
require "reactivate thin 1" thin_activate pool 1 thin1 32
check "thin 1 reads back" layout /dev/mapper/thin1 "S 0 4096" "S2 4096 256" "zero 4352 3840"
thin_finish
