# Shared helpers of the thin-pool/thin scenario tests (tests/guest/11x-*, 12x-*).
# Source it instead of lib.sh. The implementation under test is chosen by
# THIN_IMPL:
#   rs (default)  dm-rs, loaded as `dm_rs prefix=rs- targets=thin`: targets
#                 rs-thin-pool and rs-thin; the C dm_thin_pool must stay
#                 unloaded and every thin table must name the rs- targets,
#                 so a pass proves dm-rs served it.
#   c             upstream's dm_thin_pool (targets thin-pool and thin): the
#                 oracle the scenarios were proven against.
# Devices are dm-linear slices of the scratch disks, so a test can grow the
# data device by reloading its table. Data patterns are derived from
# (tag, 4 KiB block number), so every block written reads back distinct.
# shellcheck shell=bash
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

THIN_IMPL=${THIN_IMPL:-rs}
# thin_use c|rs: point POOL_TARGET/THIN_TARGET/THIN_MODULE at one
# implementation (tests that load both, like the interchange test).
thin_use() {
	case $1 in
	rs) POOL_TARGET=rs-thin-pool THIN_TARGET=rs-thin THIN_MODULE=dm_rs ;;
	c) POOL_TARGET=thin-pool THIN_TARGET=thin THIN_MODULE=dm_thin_pool ;;
	esac
}

THIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PDATA_CHECK=$THIN_ROOT/persistent_data/target/release/pdata-check
if [[ $THIN_IMPL != rs && $THIN_IMPL != c ]]; then
	echo "Bail out! THIN_IMPL must be rs or c, not '$THIN_IMPL'"
	exit 1
fi
thin_use "$THIN_IMPL"
diag "thin implementation under test: $THIN_IMPL ($POOL_TARGET, $THIN_TARGET)"

# thin_load: load the implementation under test (and dm-flakey etc. are left
# to the test). In rs mode the C module must be absent.
thin_load() {
	if [[ $THIN_IMPL == rs ]]; then
		require "C dm_thin_pool is not loaded" test ! -d /sys/module/dm_thin_pool
		require "load dm-rs thin (prefix=rs- targets=thin)" modprobe dm_rs prefix=rs- targets=thin
	else
		require "load C dm_thin_pool" modprobe dm_thin_pool
	fi
	require "$POOL_TARGET and $THIN_TARGET registered" thin_targets_registered "$POOL_TARGET" "$THIN_TARGET"
}

# thin_targets_registered NAME...: each is a registered target.
thin_targets_registered() {
	local t list
	list=$(dmsetup targets)
	for t in "$@"; do
		grep -Eq "^$t +v" <<<"$list" || {
			echo "$t not in: $list"
			return 1
		}
	done
}

# thin_check_served: the thin tables live now are served by the module under
# test: every thin-pool/thin line names our targets, the module holds them,
# and in rs mode the C module is absent.
thin_check_served() {
	local lines bad
	lines=$(dmsetup table | grep -E ' (rs-)?thin(-pool)? ')
	bad=$(grep -Ev " ($POOL_TARGET|$THIN_TARGET) " <<<"$lines")
	check_eq "every thin table line names $POOL_TARGET/$THIN_TARGET" "" "$bad"
	check_match "$THIN_MODULE holds the tables" '^[1-9][0-9]*$' "$(module_refcnt "$THIN_MODULE")"
	[[ $THIN_IMPL == rs ]] && check "C dm_thin_pool is not loaded" test ! -d /sys/module/dm_thin_pool
	true
}

# slice NAME DISK MIB_OFFSET MIB: /dev/mapper/NAME, a linear slice of DISK.
slice() {
	dmsetup create "$1" --table "0 $(($4 * 2048)) linear $2 $(($3 * 2048))"
}

# slice_grow NAME DISK MIB_OFFSET MIB: reload NAME with a longer slice.
slice_grow() {
	dmsetup suspend "$1" &&
		dmsetup reload "$1" --table "0 $(($4 * 2048)) linear $2 $(($3 * 2048))" &&
		dmsetup resume "$1"
}

# make_meta [MIB=8] / make_data [MIB=64]: the metadata slice (zeroed header,
# so a new pool formats it) at the start of DISK1, and the data slice at the
# start of DISK2.
make_meta() {
	require "metadata device (${1:-8} MiB)" slice tmeta $DISK1 0 "${1:-8}"
	dd if=/dev/zero of=/dev/mapper/tmeta bs=4096 count=1 oflag=direct status=none
	META=/dev/mapper/tmeta
}
make_data() {
	require "data device (${1:-64} MiB)" slice tdata $DISK2 0 "${1:-64}"
	DATA=/dev/mapper/tdata
}

# pool_table META DATA BLOCK_SECTORS LOW_WATER [FEATURE...]
pool_table() {
	local meta=$1 data=$2 bs=$3 lw=$4
	shift 4
	local t="0 $(sectors "$data") $POOL_TARGET $meta $data $bs $lw"
	(($#)) && t+=" $# $*"
	echo "$t"
}

# pool_create NAME BLOCK_SECTORS LOW_WATER [FEATURE...]: a pool on $META/$DATA.
pool_create() {
	local name=$1
	shift
	dmsetup create "$name" --table "$(pool_table "$META" "$DATA" "$@")"
}

# pool_reload NAME BLOCK_SECTORS LOW_WATER [FEATURE...]: new table, same devices.
pool_reload() {
	local name=$1
	shift
	dmsetup suspend "$name" && dmsetup reload "$name" --table "$(pool_table "$META" "$DATA" "$@")" &&
		dmsetup resume "$name"
}

# thin_table POOL ID MIB [ORIGIN_DEV]
thin_table() {
	echo "0 $(($3 * 2048)) $THIN_TARGET /dev/mapper/$1 $2${4:+ $4}"
}

# thin_activate POOL ID NAME MIB [ORIGIN_DEV]: a table for an existing thin id.
thin_activate() {
	dmsetup create "$3" --table "$(thin_table "$1" "$2" "$4" "${5:-}")"
}

# thin_new POOL ID NAME MIB [ORIGIN_DEV]: create_thin, then activate it.
thin_new() {
	dmsetup message "$1" 0 "create_thin $2" && thin_activate "$@"
}

# snap_new POOL ID ORIGIN_ID [ORIGIN_NAME]: create_snap, suspending the
# active origin around it as upstream requires.
snap_new() {
	if [[ -n ${4:-} ]]; then
		dmsetup suspend "$4" || return
		dmsetup message "$1" 0 "create_snap $2 $3"
		local rc=$?
		dmsetup resume "$4" && return $rc
	else
		dmsetup message "$1" 0 "create_snap $2 $3"
	fi
}

# snap_activate POOL ID ORIGIN_ID ORIGIN_NAME NAME MIB: snapshot an active
# device and activate the snapshot.
snap_activate() {
	snap_new "$1" "$2" "$3" "$4" && thin_activate "$1" "$2" "$5" "$6"
}

# pattern TAG FIRST COUNT: COUNT 4 KiB blocks of text, block b (FIRST..)
# made of 64 records "TAG block b rec r", so no two blocks or records match.
pattern() {
	awk -v t="$1" -v f="$2" -v n="$3" \
		'BEGIN { for (b = f; b < f + n; b++) for (r = 0; r < 64; r++) printf "%-63s\n", t " block " b " rec " r }'
}

# pwrite DEV TAG FIRST COUNT [IO_KIB=4]: write the pattern at 4 KiB block FIRST
# with O_DIRECT writes of IO_KIB each (FIRST and COUNT multiples of it / 4).
pwrite() {
	local io=${5:-4}
	pattern "$2" "$3" "$4" | dd of="$1" bs=${io}K seek=$(($3 * 4 / io)) count=$(($4 * 4 / io)) \
		iflag=fullblock oflag=direct status=none
}

# pverify DEV TAG FIRST COUNT: the range holds that pattern, read with O_DIRECT.
pverify() {
	cmp <(pattern "$2" "$3" "$4") <(dd if="$1" bs=4K skip="$3" count="$4" iflag=direct status=none)
}

# zverify DEV FIRST COUNT: the 4 KiB blocks read zeros.
zverify() {
	cmp -n $(($3 * 4096)) <(dd if="$1" bs=4K skip="$2" count="$3" iflag=direct status=none) /dev/zero
}

# pool_status NAME: the status line without its "0 len target" head.
pool_status() { dmsetup status "$1" | cut -d' ' -f4-; }
# pool_field NAME N: field N (1 = transaction id) of the pool's status.
pool_field() { pool_status "$1" | cut -d' ' -f"$2"; }
# pool_used_data NAME: data blocks in use.
pool_used_data() { pool_field "$1" 3 | cut -d/ -f1; }
# thin_mapped NAME: sectors mapped, from the thin's status "<mapped> <highest>".
thin_mapped() { dmsetup status "$1" | cut -d' ' -f4; }

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < end)) || return 1
		sleep 0.2
	done
}

# meta_checks META [DESC [PDATA_NOTE]]: the metadata device (pool removed)
# passes thin_check with nothing leaked or repaired, thin_dump reads it, and
# pdata-check (persistent_data's checker) accepts it. Leaves thin_dump's XML
# in $THIN_DUMP. With PDATA_NOTE, pdata-check's verdict is only shown, with
# the note (a known disagreement between it and thin_check), not counted.
meta_checks() {
	local meta=$1 what=${2:-metadata} note=${3:-} out rc
	blockdev --flushbufs "$meta"
	out=$(thin_check "$meta" 2>&1)
	rc=$?
	check_eq "thin_check accepts the $what (exit 0)" 0 "$rc"
	check_eq "thin_check reports nothing leaked or wrong" "" \
		"$(grep -Ei 'leak|error|bad|missing|corrupt|fail' <<<"$out")"
	[[ $rc == 0 ]] || diag "$out"
	THIN_DUMP=$(thin_dump "$meta" 2>&1)
	check_match "thin_dump reads the $what" '^<superblock ' "$THIN_DUMP"
	if [[ ! -x $PDATA_CHECK ]]; then
		not_ok "pdata-check is built ($PDATA_CHECK; scripts/test builds it, else cargo build --release in persistent_data)"
		return
	fi
	out=$("$PDATA_CHECK" --thin "$meta" 2>&1)
	rc=$?
	out="$rc:$(grep -v '^note:' <<<"$out")"
	if [[ -n $note ]]; then
		diag "pdata-check on the $what, not counted ($note): exit ${out%%:*}" "${out#*:}"
	else
		check_eq "pdata-check accepts the $what (exit 0, nothing reported)" "0:" "$out"
	fi
}

# dump_mapped DEV_ID: data blocks thin_dump's $THIN_DUMP maps for that device.
dump_mapped() {
	sed -n "s/.*<device dev_id=\"$1\" mapped_blocks=\"\([0-9]*\)\".*/\1/p" <<<"$THIN_DUMP"
}

# thin_teardown: remove every dm device built on the pool (thins, pool), then
# the pool's own slices stay for meta_checks.
thin_teardown() {
	local d
	for d in $(dmsetup table | awk -v t="$THIN_TARGET" '$4 == t { sub(":", "", $1); print $1 }'); do
		dmsetup remove "$d"
	done
	for d in $(dmsetup table | awk -v t="$POOL_TARGET" '$4 == t { sub(":", "", $1); print $1 }'); do
		dmsetup remove "$d"
	done
	! dmsetup table | grep -Eq " ($POOL_TARGET|$THIN_TARGET) "
}

# thin_finish [CMD...]: tear down, check the metadata (THIN_PDATA_NOTE, if
# set, is meta_checks' PDATA_NOTE), run CMD (more checks of $THIN_DUMP), check the module unloads (it was still usable and nothing
# kept a reference), reset dm, end the TAP stream.
thin_finish() {
	check "thin devices and pool removed" thin_teardown
	meta_checks "$META" metadata "${THIN_PDATA_NOTE:-}"
	(($#)) && "$@"
	check "$THIN_MODULE unloads" unload_modules "$THIN_MODULE"
	dm_reset
	[[ -d /sys/module/brd ]] && rmmod brd
	done_testing
}

# logged TEXT: the kernel log since log_mark holds TEXT (fixed string).
logged() { dmesg_since_mark | grep -qF -- "$1"; }

# refused_table DESC ERROR TABLE: creating a device with TABLE fails and the
# kernel log shows ERROR (upstream's ti->error text, after "<target>: ").
refused_table() {
	log_mark
	check_fails "$1: refused" dmsetup create tbad --table "$3"
	check "$1: logs '$2'" logged "$2"
}

# refused_message DESC POOL MESSAGE ERROR: the message fails and the log shows
# ERROR (upstream's warning text).
refused_message() {
	log_mark
	check_fails "$1: refused" dmsetup message "$2" 0 "$3"
	check "$1: logs '$4'" logged "$4"
}

# all_of "CMD ARGS" ...: runs each command line in turn; fails at the first
# that fails (several checks of one step under one TAP line).
all_of() {
	local c
	for c in "$@"; do
		eval "$c" || {
			echo "failed: $c"
			return 1
		}
	done
}

# layout DEV "TAG FIRST COUNT"...: each range of 4 KiB blocks holds TAG's
# pattern (TAG "zero": zeros); names the first range that differs.
layout() {
	local dev=$1 s t f n
	shift
	for s in "$@"; do
		read -r t f n <<<"$s"
		if [[ $t == zero ]]; then zverify "$dev" "$f" "$n"; else pverify "$dev" "$t" "$f" "$n"; fi >/dev/null 2>&1 ||
			{
				echo "$dev: range '$s' differs"
				return 1
			}
	done
}

# sysfs_dev DEV: DEV's directory in sysfs (dm nodes here are no symlinks).
sysfs_dev() { echo "/sys/dev/block/$((0x$(stat -c %t "$1"))):$((0x$(stat -c %T "$1")))"; }

# discard_ios DEV: discard requests DEV has completed (field 12 of its stat).
discard_ios() { awk '{ print $12 }' "$(sysfs_dev "$1")/stat"; }

# ram_data MIB: the data device as a linear table over a brd RAM disk:
# unlike the scratch disks it takes discards, and dm counts them in its stat.
ram_data() {
	[[ -d /sys/module/brd ]] && rmmod brd
	require "RAM disk data device (${1} MiB)" all_of "modprobe brd rd_nr=1 rd_size=$(($1 * 1024))" \
		"dmsetup create tdata --table '0 $(($1 * 2048)) linear /dev/ram0 0'"
	DATA=/dev/mapper/tdata
}

# The module parameters of the implementation (no_space_timeout).
THIN_PARAMS=/sys/module/$THIN_MODULE/parameters

# pool_events NAME: the device's dm event counter.
pool_events() { dmsetup info -c --noheadings -o events "$1" | tr -d ' '; }

# data_grow MIB [FEATURE...]: grow the data slice to MIB and reload the pool
# (64 KiB blocks, low water 8) onto it, without flushing queued I/O (as lvm2
# does when it extends a full pool).
data_grow() {
	local mib=$1
	shift
	slice_grow tdata $DISK2 0 "$mib" &&
		dmsetup suspend --noflush pool &&
		dmsetup reload pool --table "$(pool_table "$META" "$DATA" 128 8 "$@")" &&
		dmsetup resume pool
}
