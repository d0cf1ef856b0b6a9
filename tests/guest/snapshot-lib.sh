# Shared helpers of the snapshot tests (tests/guest/13x-*). Source it
# instead of lib.sh; the helpers that read devices use "$work" (a scratch
# directory the test makes) for their temporary file.
# shellcheck shell=bash
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# put FILE DEV BYTE-OFFSET: one O_DIRECT write.
put() {
	dd if="$1" of="$2" bs="$(stat -c %s "$1")" count=1 seek="$3" oflag=direct,seek_bytes \
		conv=notrunc status=none
}
# patch EXPECTED FILE BYTE-OFFSET: the same write applied to an expected image.
patch() { dd if="$2" of="$1" bs=1M seek="$3" oflag=seek_bytes conv=notrunc status=none; }
# same DEV EXPECTED: the device's bytes (read with O_DIRECT) are EXPECTED's.
same() {
	dd if="$1" of="$work/read" bs=1M iflag=direct status=none && cmp "$work/read" "$2"
}
# zero_header DEV: a new persistent store (userspace zeroes its first chunk).
zero_header() { dd if=/dev/zero of="$1" bs=4096 count=1 oflag=direct status=none; }

# reorigin P: suspend and resume the origin, as lvm2 does around creating a
# snapshot (the C origin learns its snapshots' chunk size on resume and
# splits writes by it from then on).
reorigin() { dmsetup suspend $1origin && dmsetup resume $1origin; }
# status_of DEV / table_of DEV: the target's part of the status / table line.
status_of() { dmsetup status "$1" | cut -d' ' -f4-; }
table_of() { dmsetup table "$1" | cut -d' ' -f4-; }
