#!/bin/bash
# The snapshot constructor's store arguments against C dm-snapshot (the
# oracle), each line loaded on both: upstream's `<COW> <P|PO|N> <chunk>`
# with its case and option rules (P, p, PO, Po, N, n, N with an ignored
# option; Px, X, a chunk size not a power of 2 refused) must be accepted or
# refused alike, with the same message, and the same table and status
# lines. The generalised form `persistent 2 <COW> <chunk>` / `transient 2
# ...` comes from the shared exception store's patch series and is not in
# upstream 6.12: C refuses it (it reads the fifth word, the chunk size, as
# the number of feature arguments);
# dm-rs accepts it as the classic form and prints the classic table line,
# as upstream prints whatever was given.
. "$(dirname "$0")/snapshot-lib.sh"
dm_reset
modprobe dm_rs prefix=rs- targets=snapshot
modprobe dm_snapshot
work=$(mktemp -d)
size=8192 # origin and each COW device: 4 MiB

check_match "dm-rs registered rs-snapshot" "(^|"$'\n'")rs-snapshot " "$(dmsetup targets)"
check_match "C registered snapshot" "(^|"$'\n'")snapshot " "$(dmsetup targets)"
dmsetup create base --table "0 $size linear $DISK1 0"
dmsetup create c-cow --table "0 $size linear $DISK2 0"
dmsetup create rs-cow --table "0 $size linear $DISK2 $size"

# outcome TARGET COW ARGS: loads `TARGET base <ARGS with @ for COW>` as
# `t`; prints "ok <table after the origin> | <status>" or the
# constructor's error (dm core logs "<dev>: <target>: <error>"), the target
# name and device numbers made neutral.
outcome() {
	local target=$1 cow=$2 args=${3//@/$2}
	zero_header "$cow"
	log_mark
	if dmsetup create t --table "0 $size $target /dev/mapper/base $args" >/dev/null 2>&1; then
		echo "ok $(table_of t | sed 's/[0-9]*:[0-9]*/D/g') | $(status_of t)"
		dmsetup remove t
	else
		dmsetup remove t >/dev/null 2>&1
		dmesg_since_mark | grep -o "$target: .*" | sed "s/^$target: //" | tail -n 1
	fi
}
# same_as_c DESC ARGS: C and dm-rs agree on the line.
same_as_c() {
	local c rs
	c=$(outcome snapshot /dev/mapper/c-cow "$2")
	rs=$(outcome rs-snapshot /dev/mapper/rs-cow "$2")
	check_eq "$1: as C ($c)" "$c" "$rs"
}

same_as_c "P" "@ P 8"
same_as_c "lower-case p" "@ p 16"
same_as_c "PO" "@ PO 8"
same_as_c "Po (option case-blind)" "@ Po 8"
same_as_c "po" "@ po 32"
same_as_c "N" "@ N 8"
same_as_c "n" "@ n 8"
same_as_c "N with an option (ignored by the transient store)" "@ Nx 8"
same_as_c "P with an unknown option" "@ Px 8"
same_as_c "neither P nor N" "@ X 8"
same_as_c "chunk size not a power of 2" "@ P 12"
same_as_c "chunk size not a number" "@ P eight"
same_as_c "three arguments" "@ P"
same_as_c "a feature argument" "@ P 8 1 discard_zeroes_cow"

# The generalised form: C refuses it, dm-rs reads it as the classic form.
check_eq "C refuses 'persistent 2 <COW> <chunk>'" "Invalid number of feature arguments (-22)" \
	"$(outcome snapshot /dev/mapper/c-cow "persistent 2 @ 8")"
for form in "persistent 2 @ 8:@ P 8" "transient 2 @ 16:@ N 16"; do
	gen=${form%%:*} classic=${form#*:}
	check_eq "dm-rs takes '$gen' as '$classic' (table and status)" \
		"$(outcome rs-snapshot /dev/mapper/rs-cow "$classic")" "$(outcome rs-snapshot /dev/mapper/rs-cow "$gen")"
done
check_match "dm-rs refuses 'persistent 3 <COW> <chunk>'" "rs-snapshot: " \
	"$(log_mark; dmsetup create t --table "0 $size rs-snapshot /dev/mapper/base persistent 3 /dev/mapper/rs-cow 8" 2>&1; dmesg_since_mark)"
dmsetup remove t >/dev/null 2>&1
check_eq "no table left on either module" "0 0" "$(module_refcnt dm_rs) $(module_refcnt dm_snapshot)"
dm_reset

done_testing
