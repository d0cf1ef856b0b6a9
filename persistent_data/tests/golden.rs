//! Golden tests: thin-pool metadata written by the Linux kernel (from
//! thin-provisioning-tools' fixtures) must read back exactly as `thin_dump`
//! printed it, and every reference count in both space maps must equal a
//! recount of the structures. Then we modify a kernel image with our code
//! and check it again.

use persistent_data::block_manager::{le32_at, le64_at, BlockManager, CsumValidator};
use persistent_data::btree;
use persistent_data::io::mem::MemIo;
use persistent_data::io::BlockIo;
use persistent_data::space_map::{DiskSpaceMap, MetadataSpaceMap, SpaceMap};
use persistent_data::transaction_manager::TransactionManager;
use persistent_data::{Error, Result};
use std::collections::BTreeMap;

const THIN_SB_XOR: u32 = 160774;
const THIN_MAGIC: u64 = 27022010;

static THIN_SB: CsumValidator = CsumValidator {
    name: "superblock",
    xor: THIN_SB_XOR,
    blocknr_offset: 8,
};

#[path = "common/testdata.rs"]
mod testdata;

use testdata::read as read_testdata;

/// Thin superblock fields we use (digest §3.2).
#[derive(Debug)]
struct ThinSb {
    time: u32,
    trans_id: u64,
    held_root: u64,
    data_sm_root: Vec<u8>,
    meta_sm_root: Vec<u8>,
    mapping_root: u64,
    details_root: u64,
    data_block_size: u32,
}

fn parse_sb(d: &[u8]) -> ThinSb {
    assert_eq!(le64_at(d, 32), THIN_MAGIC, "magic");
    ThinSb {
        time: le32_at(d, 44),
        trans_id: le64_at(d, 48),
        held_root: le64_at(d, 56),
        data_sm_root: d[64..96].to_vec(),
        meta_sm_root: d[192..224].to_vec(),
        mapping_root: le64_at(d, 320),
        details_root: le64_at(d, 328),
        data_block_size: le32_at(d, 336),
    }
}

#[path = "common/thin_dump.rs"]
mod thin_dump;

use thin_dump::{num, parse_dump, XmlDev};

// ---- reading the image with the engine ----

fn open_image(image: Vec<u8>) -> (MemIo, TransactionManager<MemIo>, ThinSb) {
    let io = MemIo::from_image(image);
    let bm = BlockManager::new(io.clone(), 256);
    let sb = parse_sb(&bm.read_copy(0, Some(&THIN_SB)).unwrap()[..]);
    let tm = TransactionManager::open(bm, &sb.meta_sm_root).unwrap();
    (io, tm, sb)
}

fn read_devices<IO: BlockIo>(
    tm: &TransactionManager<IO>,
    mapping_root: u64,
    details_root: u64,
) -> Result<BTreeMap<u64, XmlDev>> {
    let mut devs = BTreeMap::new();
    btree::walk(tm, details_root, &mut |dev, v| {
        devs.insert(
            dev,
            XmlDev {
                mapped_blocks: le64_at(v, 0),
                transaction: le64_at(v, 8),
                creation_time: le32_at(v, 16),
                snap_time: le32_at(v, 20),
                map: BTreeMap::new(),
            },
        );
        Ok(())
    })?;
    let mut roots = Vec::new();
    btree::walk(tm, mapping_root, &mut |dev, v| {
        roots.push((dev, le64_at(v, 0)));
        Ok(())
    })?;
    for (dev, root) in roots {
        let d = devs.get_mut(&dev).ok_or(Error::Invalid)?;
        btree::walk(tm, root, &mut |vb, v| {
            let bt = le64_at(v, 0);
            d.map.insert(vb, (bt >> 24, (bt & 0xff_ffff) as u32));
            Ok(())
        })?;
    }
    Ok(devs)
}

/// Checks the whole image with the checker (`pdata-check`'s library: every
/// checksum, every tree, a recount of all references compared with both
/// space maps), then compares the engine's own count lookups with that
/// recount.
fn check_counts(io: &MemIo, tm: &TransactionManager<MemIo>, data_sm: &DiskSpaceMap) {
    let c = persistent_data::checker::thin::check_full(io.clone());
    assert!(
        c.report.is_clean(),
        "checker: {:?}",
        &c.report.problems[..c.report.problems.len().min(10)]
    );
    let (meta, data) = (c.meta.unwrap(), c.data.unwrap());
    let mm = meta.verify(tm, &MetadataSpaceMap).unwrap();
    assert!(
        mm.is_empty(),
        "metadata mismatches {:?}",
        &mm[..mm.len().min(10)]
    );
    let dm = data.verify(tm, data_sm).unwrap();
    assert!(
        dm.is_empty(),
        "data mismatches {:?}",
        &dm[..dm.len().min(10)]
    );
}

fn golden(image: &str, xml: &str) {
    let img = read_testdata(image);
    let dump = parse_dump(&String::from_utf8(read_testdata(xml)).unwrap());
    let (io, tm, sb) = open_image(img);
    let data_sm = DiskSpaceMap::open(&sb.data_sm_root).unwrap();
    assert_eq!(sb.time, num::<u32>(&dump.attrs, "time"));
    assert_eq!(sb.trans_id, num::<u64>(&dump.attrs, "transaction"));
    assert_eq!(
        sb.data_block_size,
        num::<u32>(&dump.attrs, "data_block_size")
    );
    assert_eq!(
        data_sm.nr_blocks(&tm),
        num::<u64>(&dump.attrs, "nr_data_blocks")
    );
    let devs = read_devices(&tm, sb.mapping_root, sb.details_root).unwrap();
    assert_eq!(devs.len(), dump.devs.len());
    for (id, want) in &dump.devs {
        let got = &devs[id];
        assert_eq!(got.mapped_blocks, want.mapped_blocks, "dev {id}");
        assert_eq!(got.transaction, want.transaction, "dev {id}");
        assert_eq!(got.creation_time, want.creation_time, "dev {id}");
        assert_eq!(got.snap_time, want.snap_time, "dev {id}");
        assert_eq!(got.map.len(), want.map.len(), "dev {id}");
        assert!(got.map == want.map, "dev {id} mappings differ");
        // Point lookups through the 2-level tree agree with the walk.
        for (vb, (b, t)) in want.map.iter().step_by(97) {
            let mut v = [0u8; 8];
            btree::lookup(&tm, sb.mapping_root, &[*id, *vb], &mut v).unwrap();
            assert_eq!(u64::from_le_bytes(v), (b << 24) | u64::from(*t));
        }
        let mut keys = [0u64; 2];
        let n = btree::find_highest_key(&tm, sb.mapping_root, &mut keys).unwrap();
        assert!(n >= 1);
    }
    check_counts(&io, &tm, &data_sm);
}

#[test]
fn golden_tmeta() {
    golden("tmeta.bin.xz", "tmeta.flat.xml.xz");
}

#[test]
fn golden_tmeta_xml_with_defs() {
    golden("tmeta.bin.xz", "tmeta.xml.xz");
}

#[test]
fn golden_with_metadata_snap() {
    golden(
        "tmeta_with_metadata_snap.bin.xz",
        "tmeta_with_metadata_snap.xml.xz",
    );
    // The held root: a superblock copy with wiped space map roots.
    let (_io, tm, sb) = open_image(read_testdata("tmeta_with_metadata_snap.bin.xz"));
    assert_ne!(sb.held_root, 0);
    let held = tm.bm().read_copy(sb.held_root, Some(&THIN_SB)).unwrap();
    assert!(held[64..320].iter().all(|&b| b == 0));
    let want = parse_dump(
        &String::from_utf8(read_testdata("tmeta_with_metadata_snap.metasnap.xml.xz")).unwrap(),
    );
    let devs = read_devices(&tm, le64_at(&held[..], 320), le64_at(&held[..], 328)).unwrap();
    assert_eq!(devs.len(), want.devs.len());
    for (id, w) in &want.devs {
        assert!(devs[id].map == w.map, "metasnap dev {id}");
    }
}

#[test]
fn golden_with_deleted_snapshot() {
    golden(
        "tmeta_with_deleted_snapshot.bin.xz",
        "tmeta_with_deleted_snapshot.xml",
    );
}

#[test]
fn golden_with_empty_roots() {
    golden(
        "tmeta_with_empty_roots.bin.xz",
        "tmeta_with_empty_roots.flat.xml",
    );
}

#[test]
fn golden_with_shared_internals_and_leaves() {
    golden(
        "tmeta_with_shared_internals_and_leaves.bin.xz",
        "tmeta_with_shared_internals_and_leaves.flat.xml",
    );
}

/// Corrupted images must produce errors, never panics.
#[test]
fn corrupted_images_error_cleanly() {
    for name in [
        "tmeta_with_corrupted_metadata_snap.bin.xz",
        "corrupted_tmeta_with_metadata_snap.bin.xz",
        "tmeta_device_id_reuse_with_corrupted_thins.bin.xz",
    ] {
        let img = read_testdata(name);
        let io = MemIo::from_image(img);
        let bm = BlockManager::new(io.clone(), 64);
        let Ok(sbd) = bm.read_copy(0, Some(&THIN_SB)) else {
            continue;
        };
        let sb = parse_sb(&sbd[..]);
        let Ok(tm) = TransactionManager::open(bm, &sb.meta_sm_root) else {
            continue;
        };
        let mut errors = 0;
        let mut roots = vec![(sb.mapping_root, sb.details_root)];
        if sb.held_root != 0 {
            match tm.bm().read_copy(sb.held_root, Some(&THIN_SB)) {
                Ok(h) => roots.push((le64_at(&h[..], 320), le64_at(&h[..], 328))),
                Err(_) => errors += 1,
            }
        }
        for (m, d) in roots {
            if read_devices(&tm, m, d).is_err() {
                errors += 1;
            }
        }
        // Also sweep the space map over every block.
        for b in 0..tm.sm_nr_blocks() {
            if tm.sm_count(b).is_err() {
                errors += 1;
                break;
            }
        }
        assert!(
            errors > 0 || name.starts_with("tmeta_device"),
            "{name}: no error found"
        );
    }
}

use persistent_data::checker::thin_writer::ThinPool;

/// Writes to kernel metadata with our engine as thin does (remaps,
/// unmaps, a snapshot, a device delete), commits, reopens and rechecks.
#[test]
fn modify_kernel_image_and_recheck() {
    let io = MemIo::from_image(read_testdata("tmeta.bin.xz"));
    let mut pool = ThinPool::open(BlockManager::new(io.clone(), 256)).unwrap();
    let mut devs = pool.mappings().unwrap();
    let dev = *devs.keys().next().unwrap();
    let vbs: Vec<u64> = devs[&dev].keys().copied().take(3000).collect();
    // Unmap a third, remap a third to fresh blocks.
    for (i, vb) in vbs.iter().enumerate() {
        if i % 3 == 0 {
            pool.remove(dev, *vb).unwrap();
            devs.get_mut(&dev).unwrap().remove(vb);
        } else if i % 3 == 1 {
            let b = pool.map(dev, *vb).unwrap();
            devs.get_mut(&dev).unwrap().insert(*vb, b);
        }
    }
    // Snapshot `dev` as a new id, delete the last device.
    pool.create_snap(1000, dev).unwrap();
    devs.insert(1000, devs[&dev].clone());
    let last = *devs.keys().rfind(|&&d| d != 1000).unwrap();
    pool.delete(last).unwrap();
    devs.remove(&last);
    pool.commit().unwrap();
    drop(pool);
    io.crash(|_| false);
    let (io, tm, sb) = open_image(io.image());
    let data = DiskSpaceMap::open(&sb.data_sm_root).unwrap();
    let got = read_devices(&tm, sb.mapping_root, sb.details_root).unwrap();
    assert_eq!(got.len(), devs.len());
    for (d, m) in &devs {
        let g: BTreeMap<u64, u64> = got[d].map.iter().map(|(&k, &(b, _))| (k, b)).collect();
        assert_eq!(&g, m, "device {d}");
    }
    check_counts(&io, &tm, &data);
}
