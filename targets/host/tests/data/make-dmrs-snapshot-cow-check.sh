#!/bin/bash
# Has the C dm-snapshot read the COW device dm-rs wrote
# (dmrs-snapshot-cow.bin.xz, see dm_rs_cow_image in snapshot_store.rs) and
# append to it. Run once in a guest:
#   scripts/vm-run --disk 16M --disk 8M -- targets/host/tests/data/make-dmrs-snapshot-cow-check.sh
# The origin is given the data the snapshot was taken of (`(chunk, 0xA)`
# le64 pairs), then the copied chunks are overwritten (tag 0xB) behind the
# snapshot's back: reads of the snapshot must still show 0xA, or 0xC for
# the chunks written through the snapshot. Writes dmrs-snapshot-cow.c-check
# (C's status line, the read result) and dmrs-then-c-cow.bin.xz (the COW
# after C copied out origin chunks 4000 and 4001).
set -euo pipefail
cd "$(dirname "$0")"
origin=/dev/vdb cow=/dev/vdc
modprobe dm_snapshot
sectors=$(blockdev --getsz $origin)
xz -dc dmrs-snapshot-cow.bin.xz | dd of=$cow bs=1M conv=fsync status=none
python3 - "$origin" <<'PY'
import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for c in range(4096):
    os.pwrite(fd, struct.pack('<QQ', c, 0xA) * 256, c * 4096)
for c in [(11 * i) % 1500 for i in range(300)] + list(range(3000, 3300)):
    os.pwrite(fd, struct.pack('<QQ', c, 0xB) * 256, c * 4096)
os.fsync(fd); os.close(fd)
PY
dmsetup create fx-snap --table "0 $sectors snapshot $origin $cow P 8"
status=$(dmsetup status fx-snap)
result=$(python3 - <<'PY'
import os, struct
written = {2000 + 5 * i for i in range(20)}
fd = os.open('/dev/mapper/fx-snap', os.O_RDONLY)
bad = [c for c in range(4096)
       if os.pread(fd, 4096, c * 4096) != struct.pack('<QQ', c, 0xC if c in written else 0xA) * 256]
print('snapshot reads: 4096 chunks as expected' if not bad else f'snapshot reads: mismatched chunks {bad[:20]}')
PY
)
echo "$status"; echo "$result"
printf '%s\n%s\n' "$status" "$result" > dmrs-snapshot-cow.c-check
dmsetup create fx-origin --table "0 $sectors snapshot-origin $origin"
python3 - <<'PY'
import os, struct
fd = os.open('/dev/mapper/fx-origin', os.O_WRONLY)
for c in (4000, 4001):
    os.pwrite(fd, struct.pack('<QQ', c, 0xB) * 256, c * 4096)
os.fsync(fd); os.close(fd)
PY
status=$(dmsetup status fx-snap)
echo "$status"
dmsetup remove fx-origin
dmsetup remove fx-snap
used=$(echo "$status" | awk '{split($4, a, "/"); print a[1]}')
dd if=$cow of=dmrs-then-c-cow.bin bs=512 count="$used" status=none
xz -9 -f dmrs-then-c-cow.bin
ls -l dmrs-then-c-cow.bin.xz
