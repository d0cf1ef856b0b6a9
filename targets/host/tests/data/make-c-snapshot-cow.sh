#!/bin/bash
# Writes the fixture c-snapshot-cow.bin.xz: a COW device written by the C
# dm-snapshot (persistent store, 4 KiB chunks). Run once in a guest:
#   scripts/vm-run --disk 16M --disk 8M -- targets/host/tests/data/make-c-snapshot-cow.sh
# Origin chunks hold `(chunk, 0xA)` as le64 pairs before the writes. Origin
# writes (tag 0xB) to chunks (7 * i) % 1000 for i < 400 and 1200..1499 copy
# them out; snapshot writes (tag 0xC) to 2000 + 3 * i for i < 20 make
# exceptions holding the written data. snapshot_store.rs checks exactly that.
set -euo pipefail
cd "$(dirname "$0")"
origin=/dev/vdb cow=/dev/vdc
modprobe dm_snapshot
sectors=$(blockdev --getsz $origin)
python3 - "$origin" <<'PY'
import os, struct, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for c in range(4096):
    os.pwrite(fd, struct.pack('<QQ', c, 0xA) * 256, c * 4096)
os.fsync(fd); os.close(fd)
PY
dmsetup create fx-snap --table "0 $sectors snapshot $origin $cow P 8"
dmsetup create fx-origin --table "0 $sectors snapshot-origin $origin"
python3 - <<'PY'
import os, struct
def write(dev, chunks, tag):
    fd = os.open(dev, os.O_WRONLY)
    for c in chunks:
        os.pwrite(fd, struct.pack('<QQ', c, tag) * 256, c * 4096)
    os.fsync(fd); os.close(fd)
write('/dev/mapper/fx-origin', [(7 * i) % 1000 for i in range(400)] + list(range(1200, 1500)), 0xB)
write('/dev/mapper/fx-snap', [2000 + 3 * i for i in range(20)], 0xC)
PY
status=$(dmsetup status fx-snap)
echo "$status"
dmsetup remove fx-origin
dmsetup remove fx-snap
used=$(echo "$status" | awk '{split($4, a, "/"); print a[1]}')
dd if=$cow of=c-snapshot-cow.bin bs=512 count="$used" status=none
echo "$status" > c-snapshot-cow.status
xz -9 -f c-snapshot-cow.bin
ls -l c-snapshot-cow.bin.xz
