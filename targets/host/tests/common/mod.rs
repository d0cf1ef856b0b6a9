//! Shared by the thin metadata tests: pools on memory devices, what a
//! commit left on disk read straight from the trees, and the checkers.

#![allow(dead_code)]

pub mod model;
pub mod tools;

// Shared with persistent_data's tests: the thinp-testdata images and a
// reader of thin_dump's XML.
#[path = "../../../../persistent_data/tests/common/testdata.rs"]
pub mod testdata;
#[path = "../../../../persistent_data/tests/common/thin_dump.rs"]
pub mod thin_dump;

pub use dm_rs_targets_host::persistent_data;
pub use dm_rs_targets_host::thin_metadata::superblock::{Superblock, SUPERBLOCK_VALIDATOR};
pub use dm_rs_targets_host::thin_metadata::*;
pub use persistent_data::block_manager::BlockManager;
pub use persistent_data::io::mem::MemIo;
pub use persistent_data::Error;

use dm_rs_targets_host::thin_metadata::mapping::unpack_block_time;
use persistent_data::btree;
use persistent_data::checker;
use persistent_data::transaction_manager::TransactionManager;
use std::collections::BTreeMap;

/// Data block size used by the tests (64 KiB).
pub const DBS: u32 = 128;

/// A block manager with the smallest cache, so transactions write back
/// mid-way as they would under memory pressure.
pub fn bm(io: &MemIo) -> BlockManager<MemIo> {
    BlockManager::new(io.clone(), 8)
}

pub fn options(format: bool) -> OpenOptions {
    OpenOptions {
        data_block_size: DBS,
        format,
        read_only_device: false,
    }
}

/// Opens the pool on `io` (no formatting).
pub fn open(io: &MemIo) -> Result<PoolMetadata<MemIo>, Error> {
    PoolMetadata::open(bm(io), options(false), NoHooks)
}

/// A freshly formatted pool of `nr_meta` metadata and `nr_data` data
/// blocks, committed.
pub fn format(nr_meta: u64, nr_data: u64) -> (MemIo, PoolMetadata<MemIo>) {
    let io = MemIo::new(nr_meta);
    let mut p = PoolMetadata::open(bm(&io), options(true), NoHooks).unwrap();
    p.resize_data_dev(nr_data).unwrap();
    p.commit().unwrap();
    (io, p)
}

/// A device's mappings: `vblock -> (data block, time)`.
pub type Map = BTreeMap<u64, (u64, u32)>;

/// One device as stored: its details and mappings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dev {
    pub details: DeviceDetails,
    pub map: Map,
}

/// Devices by id.
pub type Devs = BTreeMap<u64, Dev>;

/// What the last commit on an image holds, read with the engine only.
#[derive(Debug)]
pub struct Committed {
    pub sb: Superblock,
    pub devs: Devs,
    /// The metadata snapshot's devices, if one is held.
    pub held: Option<Devs>,
}

fn read_devs(tm: &TransactionManager<MemIo>, mapping: u64, details: u64) -> Devs {
    let mut devs = Devs::new();
    btree::walk(tm, details, &mut |dev, v| {
        devs.entry(dev).or_default().details = DeviceDetails::unpack(v).unwrap();
        Ok(())
    })
    .unwrap();
    let mut roots = Vec::new();
    btree::walk(tm, mapping, &mut |dev, v| {
        roots.push((dev, u64::from_le_bytes(v.try_into().unwrap())));
        Ok(())
    })
    .unwrap();
    for (dev, root) in roots {
        let d = devs
            .get_mut(&dev)
            .unwrap_or_else(|| panic!("device {dev}: a mapping tree but no details"));
        btree::walk(tm, root, &mut |vb, v| {
            d.map.insert(
                vb,
                unpack_block_time(u64::from_le_bytes(v.try_into().unwrap())),
            );
            Ok(())
        })
        .unwrap();
    }
    devs
}

/// Reads the committed state of `image`.
pub fn committed(image: Vec<u8>) -> Committed {
    let bm = BlockManager::new(MemIo::from_image(image), 64);
    let sb = {
        let d = bm.read_lock(0, Some(&SUPERBLOCK_VALIDATOR)).unwrap();
        Superblock::unpack(&d[..]).unwrap()
    };
    let tm = TransactionManager::open(bm, &sb.metadata_sm_root).unwrap();
    let devs = read_devs(&tm, sb.mapping_root, sb.details_root);
    let held = (sb.held_root != 0).then(|| {
        let copy = {
            let d = tm.read_lock(sb.held_root, &SUPERBLOCK_VALIDATOR).unwrap();
            Superblock::unpack(&d[..]).unwrap()
        };
        read_devs(&tm, copy.mapping_root, copy.details_root)
    });
    Committed { sb, devs, held }
}

/// persistent_data's checker (`pdata-check`) on `image`: panics unless
/// it finds neither damage nor a leaked block.
pub fn pdata_check(image: &[u8]) {
    let report = checker::thin::check(MemIo::from_image(image.to_vec()));
    assert!(
        report.is_clean(),
        "pdata-check: {} errors, {} leaks:\n{:#?}",
        report.errors(),
        report.leaks(),
        &report.problems[..report.problems.len().min(20)]
    );
}

/// Both checkers on `image`.
pub fn check_all(image: &[u8]) {
    pdata_check(image);
    tools::thin_check(image);
}

/// Every mapping of `td` the pool reports in `[0, end)`, enumerated with
/// `find_mapped_range` and checked block by block with `find_block`.
pub fn pool_map<H: PoolHooks>(
    p: &PoolMetadata<MemIo, H>,
    td: &ThinDevice,
    end: u64,
) -> BTreeMap<u64, LookupResult> {
    let mut out = BTreeMap::new();
    let mut begin = 0;
    loop {
        let r = match p.find_mapped_range(td, begin, end) {
            Ok(r) => r,
            Err(Error::NoData) => break,
            Err(e) => panic!("find_mapped_range: {e}"),
        };
        assert!(
            r.thin_begin >= begin && r.thin_end > r.thin_begin && r.thin_end <= end,
            "{r:?}"
        );
        for (i, vb) in (r.thin_begin..r.thin_end).enumerate() {
            let l = p.find_block(td, vb, true).unwrap();
            assert_eq!(l.block, r.pool_begin + i as u64, "{r:?} at {vb}");
            assert_eq!(l.shared, r.maybe_shared, "{r:?} at {vb}");
            out.insert(vb, l);
        }
        begin = r.thin_end;
    }
    out
}

/// Checks through the pool API that device `id` holds exactly `d`: its
/// details, every mapping (and whether it is shared), its highest block.
pub fn check_device<H: PoolHooks>(p: &mut PoolMetadata<MemIo, H>, id: u64, d: &Dev) {
    let td = p
        .open_thin_device(id)
        .unwrap_or_else(|e| panic!("device {id}: {e}"));
    assert_eq!(p.device_details(&td), Ok(d.details), "device {id}");
    let end = d.map.keys().next_back().map_or(1000, |&k| k + 1000);
    let got = pool_map(p, &td, end);
    let want: BTreeMap<u64, LookupResult> = d
        .map
        .iter()
        .map(|(&vb, &(block, time))| {
            let shared = d.details.snapshotted_time > time;
            (vb, LookupResult { block, shared })
        })
        .collect();
    assert!(
        got == want,
        "device {id}: {} mappings read, {} expected",
        got.len(),
        want.len()
    );
    let highest = d.map.keys().next_back().copied().ok_or(Error::NoData);
    assert_eq!(p.highest_mapped_block(&td), highest, "device {id}");
    p.close_thin_device(td);
}
