//! Shared by the host tests: thin pools in memory (the engine driven as
//! dm-thin drives it, through `checker::thin_writer`), and a full check of
//! one after a commit: the checker's walk and recount of the image, both
//! space maps' `nr_free` against that recount, and the engine's own count
//! lookups on a sample of blocks.

#![allow(dead_code)]

use persistent_data::block_manager::{BlockManager, CsumValidator};
use persistent_data::btree::ValueType;
use persistent_data::check::RefCounts;
use persistent_data::checker::thin::check_full;
use persistent_data::checker::thin_writer::ThinPool;
use persistent_data::io::mem::MemIo;
use persistent_data::io::BlockIo;
use persistent_data::space_map::{DiskSpaceMap, SpaceMap};
use persistent_data::transaction_manager::{with_runs, TransactionManager};
use persistent_data::Result;

#[allow(unused_imports)]
pub use persistent_data::checker::thin_writer::Mappings;

/// A thin pool on a memory device.
pub type Pool = ThinPool<MemIo>;

/// Blocks the block manager caches unless a test says otherwise.
pub const CACHE_BLOCKS: usize = 64;

/// A fresh pool of `nr_meta` metadata blocks and `nr_data` 64 KiB data
/// blocks, committed.
pub fn format(nr_meta: u64, nr_data: u64) -> (MemIo, Pool) {
    format_cached(nr_meta, nr_data, CACHE_BLOCKS)
}

/// [`format`] with a block manager caching `cache` blocks (a small cache
/// writes blocks back in the middle of operations).
pub fn format_cached(nr_meta: u64, nr_data: u64, cache: usize) -> (MemIo, Pool) {
    let io = MemIo::new(nr_meta);
    let p = ThinPool::format(BlockManager::new(io.clone(), cache), nr_data, 128).unwrap();
    (io, p)
}

/// The pool last committed on `io`.
pub fn open(io: &MemIo) -> Result<Pool> {
    open_cached(io, CACHE_BLOCKS)
}

/// [`open`] with a block manager caching `cache` blocks.
pub fn open_cached(io: &MemIo, cache: usize) -> Result<Pool> {
    ThinPool::open(BlockManager::new(io.clone(), cache))
}

/// Drops `p` (its block manager writes back what it still caches, without
/// a flush, as dm-bufio does) and opens what `io` holds.
pub fn reopen(io: &MemIo, p: Pool) -> Pool {
    drop(p);
    open(io).expect("reopen")
}

/// The expected reference counts of a committed pool.
pub struct Recount {
    pub meta: RefCounts,
    pub data: RefCounts,
    pub nr_meta: u64,
    pub nr_data: u64,
}

impl Recount {
    /// Metadata blocks in use.
    pub fn meta_in_use(&self) -> Vec<u64> {
        (0..self.nr_meta)
            .filter(|&b| self.meta.get(b) > 0)
            .collect()
    }

    /// Data blocks in use.
    pub fn data_in_use(&self) -> u64 {
        (0..self.nr_data).filter(|&b| self.data.get(b) > 0).count() as u64
    }
}

/// Checks `p` right after a commit or open (its in-core state is what
/// `io` holds): the checker finds nothing, each space map's `nr_free`
/// equals its size minus the blocks the recount finds in use, and the
/// engine's count lookups agree with the recount (on a sample: every such
/// lookup reads and checksums blocks).
pub fn check(io: &MemIo, p: &Pool) -> std::result::Result<Recount, String> {
    let c = check_full(io.clone());
    if !c.report.is_clean() {
        let n = c.report.problems.len().min(10);
        return Err(format!("checker: {:?}", &c.report.problems[..n]));
    }
    let (Some(meta), Some(data)) = (c.meta, c.data) else {
        return Err("checker: no recount".into());
    };
    let r = Recount {
        meta,
        data,
        nr_meta: p.tm.sm_nr_blocks(),
        nr_data: p.nr_data_blocks(),
    };
    let meta_free = r.nr_meta - r.meta_in_use().len() as u64;
    if p.tm.sm_nr_free() != meta_free {
        return Err(format!(
            "metadata nr_free {} but the recount leaves {meta_free} free",
            p.tm.sm_nr_free()
        ));
    }
    let data_free = r.nr_data - r.data_in_use();
    if p.data.nr_free(&p.tm) != data_free {
        return Err(format!(
            "data nr_free {} but the recount leaves {data_free} free",
            p.data.nr_free(&p.tm)
        ));
    }
    for b in sample(r.nr_meta) {
        let c = p.tm.ref_count(b).map_err(|e| format!("count {b}: {e}"))?;
        if c != r.meta.get(b) {
            return Err(format!(
                "metadata block {b}: engine counts {c}, recount {}",
                r.meta.get(b)
            ));
        }
    }
    for b in sample(r.nr_data) {
        let c = p
            .data
            .count(&p.tm, b)
            .map_err(|e| format!("count {b}: {e}"))?;
        if c != r.data.get(b) {
            return Err(format!(
                "data block {b}: engine counts {c}, recount {}",
                r.data.get(b)
            ));
        }
    }
    if p.tm.bm().nr_write_locks() != 0 {
        return Err("write locks leaked".into());
    }
    if p.tm.bm().leaked_write_locks() != 0 {
        return Err("write locks dropped without unlock".into());
    }
    Ok(r)
}

/// About a hundred blocks of `0..n`: the first 32, then evenly spread.
fn sample(n: u64) -> impl Iterator<Item = u64> {
    (0..n.min(32)).chain((32..n).step_by((n / 64).max(1) as usize))
}

// ---- for tests with their own superblock (tests/array_bitset.rs) ----

pub static SB_VALIDATOR: CsumValidator = CsumValidator {
    name: "test_superblock",
    xor: 0x5eed,
    blocknr_offset: 8,
};

/// Data block values: each holds a reference in the data space map.
pub struct DataRefs<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for DataRefs<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        with_runs(v, |b, e| self.0.inc_range(tm, b, e))
    }
    fn dec(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        with_runs(v, |b, e| self.0.dec_range(tm, b, e))
    }
}
