// SPDX-License-Identifier: GPL-2.0

//! Thin-pool metadata written through the engine the way
//! `dm-thin-metadata.c` writes it: format, open, create a thin device or a
//! snapshot, delete one, map, unmap and unmap ranges of blocks, commit, and
//! reserve or release a metadata snapshot by shadowing the superblock.
//!
//! Host-only (tests, the fuzz seed, `pdata-thin-image`): it gives the
//! engine realistic histories whose results `thin_check`, `pdata-check`
//! and the C dm-thin can judge. Device details are kept in core while they
//! change and written at commit, as upstream does; after a failed
//! operation the pool must be dropped and reopened (abort).

use std::collections::BTreeMap;
use std::prelude::rust_2021::*;

use super::thin::{off, DeviceDetails, THIN_MAGIC, THIN_SB_VALIDATOR};
use crate::block_manager::{le64_at, put_le32, put_le64, BlockManager};
use crate::btree::{self, PlainValues, ValueType};
use crate::error::{Error, Result};
use crate::io::{BlockIo, BLOCK_SECTORS};
use crate::space_map::{DiskSpaceMap, SpaceMap, SM_ROOT_SIZE};
use crate::transaction_manager::{with_runs, TransactionManager};

/// `THIN_VERSION`.
pub const THIN_VERSION: u32 = 2;
/// Bytes of an encoded [`DeviceDetails`].
pub const DETAILS_SIZE: usize = 24;

/// Bottom-level mapping values, `data_block << 24 | time`: each holds a
/// reference on its data block.
pub struct BlockTime<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for BlockTime<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        for c in v.chunks_exact(8) {
            self.0.inc(tm, le64_at(c, 0) >> 24)?;
        }
        Ok(())
    }
    fn dec(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        for c in v.chunks_exact(8) {
            self.0.dec(tm, le64_at(c, 0) >> 24)?;
        }
        Ok(())
    }
    /// The same data block is the same mapping, whatever its time stamp.
    fn equal(&self, a: &[u8], b: &[u8]) -> bool {
        le64_at(a, 0) >> 24 == le64_at(b, 0) >> 24
    }
}

/// Top-level values: device mapping tree roots. Dropping one deletes the
/// tree (upstream's `subtree_dec`).
pub struct DevTrees<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for DevTrees<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        with_runs(v, |b, e| tm.inc_range(b, e))
    }
    fn dec(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        for c in v.chunks_exact(8) {
            btree::del(tm, &mut BlockTime(self.0), le64_at(c, 0), 1)?;
        }
        Ok(())
    }
}

/// Packs a mapping value.
pub fn pack_block_time(data_block: u64, time: u32) -> u64 {
    (data_block << 24) | u64::from(time & 0xff_ffff)
}

impl DeviceDetails {
    /// Encodes to the 24 on-disk bytes.
    pub fn pack(&self) -> [u8; DETAILS_SIZE] {
        let mut d = [0u8; DETAILS_SIZE];
        put_le64(&mut d, 0, self.mapped_blocks);
        put_le64(&mut d, 8, self.transaction_id);
        put_le32(&mut d, 16, self.creation_time);
        put_le32(&mut d, 20, self.snapshotted_time);
        d
    }
}

/// Every mapping: device -> virtual block -> data block.
pub type Mappings = BTreeMap<u64, BTreeMap<u64, u64>>;

/// A device's details as kept in core (upstream's `dm_thin_device`).
struct Open {
    details: DeviceDetails,
    changed: bool,
}

/// Thin-pool metadata open for writing.
pub struct ThinPool<IO: BlockIo> {
    /// The transaction manager (and the metadata space map in it).
    pub tm: TransactionManager<IO>,
    /// The data space map.
    pub data: DiskSpaceMap,
    mapping_root: u64,
    details_root: u64,
    held_root: u64,
    time: u32,
    trans_id: u64,
    data_block_size: u32,
    metadata_nr_blocks: u64,
    /// Devices read or changed in this transaction.
    open: BTreeMap<u64, Open>,
}

impl<IO: BlockIo> ThinPool<IO> {
    /// Formats empty metadata on `bm`'s device (the metadata space map
    /// covers all of it) for a data device of `nr_data_blocks` blocks of
    /// `data_block_size` sectors, and commits it.
    pub fn format(bm: BlockManager<IO>, nr_data_blocks: u64, data_block_size: u32) -> Result<Self> {
        let mut tm = TransactionManager::create(bm, 0)?;
        let data = DiskSpaceMap::create(&mut tm, nr_data_blocks)?;
        let mapping_root = btree::empty(&mut tm, 8)?;
        let details_root = btree::empty(&mut tm, DETAILS_SIZE)?;
        let metadata_nr_blocks = tm.sm_nr_blocks();
        let mut pool = ThinPool {
            tm,
            data,
            mapping_root,
            details_root,
            held_root: 0,
            time: 0,
            trans_id: 0,
            data_block_size,
            metadata_nr_blocks,
            open: BTreeMap::new(),
        };
        pool.commit()?;
        Ok(pool)
    }

    /// Opens the metadata last committed on `bm`'s device.
    pub fn open(bm: BlockManager<IO>) -> Result<Self> {
        let sb = bm.read_copy(0, Some(&THIN_SB_VALIDATOR))?;
        let sbv = super::thin::ThinSuperblock::parse(&sb);
        if sbv.magic != THIN_MAGIC {
            return Err(Error::Invalid);
        }
        let tm = TransactionManager::open(bm, &sbv.meta_sm_raw)?;
        let data_root = sb
            .get(off::DATA_SM..off::DATA_SM + SM_ROOT_SIZE)
            .ok_or(Error::Invalid)?;
        let data = DiskSpaceMap::open(data_root)?;
        Ok(ThinPool {
            tm,
            data,
            mapping_root: sbv.mapping_root,
            details_root: sbv.details_root,
            held_root: sbv.held_root,
            time: sbv.time,
            trans_id: sbv.trans_id,
            data_block_size: sbv.data_block_size,
            metadata_nr_blocks: sbv.metadata_nr_blocks,
            open: BTreeMap::new(),
        })
    }

    /// Root of the two-level mapping tree.
    pub fn mapping_root(&self) -> u64 {
        self.mapping_root
    }

    /// Root of the device details tree.
    pub fn details_root(&self) -> u64 {
        self.details_root
    }

    /// The metadata snapshot's superblock copy (0: none).
    pub fn held_root(&self) -> u64 {
        self.held_root
    }

    /// The snapshot epoch (new mappings are stamped with it).
    pub fn time(&self) -> u32 {
        self.time
    }

    /// Sets the userspace transaction id stored at the next commit.
    pub fn set_transaction_id(&mut self, id: u64) {
        self.trans_id = id;
    }

    /// Data blocks.
    pub fn nr_data_blocks(&self) -> u64 {
        self.data.nr_blocks(&self.tm)
    }

    /// `dev`'s details, from core or the details tree; `NoData` if `dev`
    /// does not exist.
    fn device(&mut self, dev: u64) -> Result<&mut Open> {
        if !self.open.contains_key(&dev) {
            let mut v = [0u8; DETAILS_SIZE];
            btree::lookup(&self.tm, self.details_root, &[dev], &mut v)?;
            let o = Open {
                details: DeviceDetails::unpack(&v),
                changed: false,
            };
            self.open.insert(dev, o);
        }
        self.open.get_mut(&dev).ok_or(Error::Invalid)
    }

    /// `dev`'s details (with this transaction's changes).
    pub fn details(&mut self, dev: u64) -> Result<DeviceDetails> {
        Ok(self.device(dev)?.details)
    }

    /// True if `dev` exists.
    pub fn exists(&mut self, dev: u64) -> Result<bool> {
        match self.device(dev) {
            Ok(_) => Ok(true),
            Err(Error::NoData) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn add_device(&mut self, dev: u64, mapped_blocks: u64) {
        let details = DeviceDetails {
            mapped_blocks,
            transaction_id: self.trans_id,
            creation_time: self.time,
            snapshotted_time: self.time,
        };
        self.open.insert(
            dev,
            Open {
                details,
                changed: true,
            },
        );
    }

    /// Creates thin device `dev` with no mappings; `Busy` if it exists.
    pub fn create_thin(&mut self, dev: u64) -> Result<()> {
        if self.exists(dev)? {
            return Err(Error::Busy);
        }
        let root = btree::empty(&mut self.tm, 8)?;
        self.set_dev_root(dev, root)?;
        self.add_device(dev, 0);
        Ok(())
    }

    /// `dev`'s mapping tree.
    fn dev_root(&self, dev: u64) -> Result<u64> {
        let mut v = [0u8; 8];
        btree::lookup(&self.tm, self.mapping_root, &[dev], &mut v)?;
        Ok(u64::from_le_bytes(v))
    }

    /// Takes `dev` out of the top level, dropping the reference on its
    /// mapping tree that the entry held.
    fn remove_dev_root(&mut self, dev: u64) -> Result<()> {
        self.mapping_root = btree::remove(
            &mut self.tm,
            &mut DevTrees(&mut self.data),
            self.mapping_root,
            &[dev],
        )?;
        Ok(())
    }

    /// Stores `root` (adopting the caller's reference) as `dev`'s mapping
    /// tree in the top level.
    fn set_dev_root(&mut self, dev: u64, root: u64) -> Result<()> {
        self.mapping_root = btree::insert(
            &mut self.tm,
            &mut DevTrees(&mut self.data),
            self.mapping_root,
            &[dev],
            &root.to_le_bytes(),
        )?;
        Ok(())
    }

    /// Creates `dev` as a snapshot of `origin`: one more reference on the
    /// origin's mapping tree, shared until either side writes.
    pub fn create_snap(&mut self, dev: u64, origin: u64) -> Result<()> {
        if self.exists(dev)? {
            return Err(Error::Busy);
        }
        let mapped = self.device(origin)?.details.mapped_blocks;
        let root = self.dev_root(origin)?;
        self.tm.inc(root)?;
        self.set_dev_root(dev, root)?;
        self.time = self.time.wrapping_add(1);
        self.add_device(dev, mapped);
        let time = self.time;
        let o = self.device(origin)?;
        o.details.snapshotted_time = time;
        o.changed = true;
        Ok(())
    }

    /// Deletes `dev`: its details and its reference on its mapping tree.
    pub fn delete(&mut self, dev: u64) -> Result<()> {
        self.device(dev)?;
        self.open.remove(&dev);
        // A device created in this transaction has no details on disk yet
        // (dm-thin commits after every message, so it never meets one).
        match btree::remove(
            &mut self.tm,
            &mut PlainValues(DETAILS_SIZE),
            self.details_root,
            &[dev],
        ) {
            Ok(root) => self.details_root = root,
            Err(Error::NoData) => {}
            Err(e) => return Err(e),
        }
        self.remove_dev_root(dev)?;
        Ok(())
    }

    /// Allocates a data block (count one, adopted by [`Self::insert`]).
    pub fn alloc_data_block(&mut self) -> Result<u64> {
        self.data.new_block(&mut self.tm)
    }

    /// Maps `dev`'s block `vb` to `data_block`, adopting the caller's
    /// reference on it; an older mapping's block loses one.
    pub fn insert(&mut self, dev: u64, vb: u64, data_block: u64) -> Result<()> {
        self.device(dev)?;
        let v = pack_block_time(data_block, self.time);
        let (root, inserted) = btree::insert_notify(
            &mut self.tm,
            &mut BlockTime(&mut self.data),
            self.mapping_root,
            &[dev, vb],
            &v.to_le_bytes(),
        )?;
        self.mapping_root = root;
        let o = self.device(dev)?;
        o.changed = true;
        if inserted {
            o.details.mapped_blocks += 1;
        }
        Ok(())
    }

    /// Maps `dev`'s block `vb` to a newly allocated data block; returns it.
    pub fn map(&mut self, dev: u64, vb: u64) -> Result<u64> {
        let b = self.alloc_data_block()?;
        self.insert(dev, vb, b)?;
        Ok(b)
    }

    /// Unmaps `dev`'s block `vb`; `NoData` if it was not mapped.
    pub fn remove(&mut self, dev: u64, vb: u64) -> Result<()> {
        self.device(dev)?;
        self.mapping_root = btree::remove(
            &mut self.tm,
            &mut BlockTime(&mut self.data),
            self.mapping_root,
            &[dev, vb],
        )?;
        let o = self.device(dev)?;
        o.details.mapped_blocks = o.details.mapped_blocks.saturating_sub(1);
        o.changed = true;
        Ok(())
    }

    /// Unmaps every block of `dev` in `[begin, end)`, as upstream's
    /// `__remove_range` does (the device's tree is taken out of the top
    /// level, trimmed run by run, and put back); returns how many went.
    pub fn remove_range(&mut self, dev: u64, mut begin: u64, end: u64) -> Result<u64> {
        self.device(dev)?;
        let mut root = self.dev_root(dev)?;
        self.tm.inc(root)?;
        self.remove_dev_root(dev)?;
        let mut total = 0u64;
        let mut v = [0u8; 8];
        while begin < end {
            begin = match btree::lookup_next(&self.tm, root, &[begin], &mut v) {
                Ok(k) => k,
                Err(Error::NoData) => break,
                Err(e) => return Err(e),
            };
            if begin >= end {
                break;
            }
            let (r, n) = btree::remove_leaves(
                &mut self.tm,
                &mut BlockTime(&mut self.data),
                root,
                &[begin],
                end,
            )?;
            root = r;
            total += u64::from(n);
        }
        let o = self.device(dev)?;
        o.details.mapped_blocks = o.details.mapped_blocks.saturating_sub(total);
        o.changed = true;
        self.set_dev_root(dev, root)?;
        Ok(total)
    }

    /// The data block `dev`'s block `vb` maps to, with its time stamp.
    pub fn lookup(&self, dev: u64, vb: u64) -> Result<Option<(u64, u32)>> {
        let mut v = [0u8; 8];
        match btree::lookup(&self.tm, self.mapping_root, &[dev, vb], &mut v) {
            Ok(()) => Ok(Some(super::thin::unpack_block_time(u64::from_le_bytes(v)))),
            Err(Error::NoData) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every mapping of the live trees.
    pub fn mappings(&self) -> Result<Mappings> {
        mappings_of(&self.tm, self.mapping_root)
    }

    /// Writes the changed device details, commits both space maps and
    /// writes the superblock (upstream's `__commit_transaction`).
    pub fn commit(&mut self) -> Result<()> {
        self.commit_inner(true)
    }

    /// [`Self::commit`] without `pre_commit`'s flush, so every block of
    /// the transaction is still dirty when the transaction manager gets
    /// the superblock (tests of its write ordering).
    pub fn commit_without_pre_flush(&mut self) -> Result<()> {
        self.commit_inner(false)
    }

    fn commit_inner(&mut self, pre_flush: bool) -> Result<()> {
        for (&dev, o) in self.open.iter_mut().filter(|(_, o)| o.changed) {
            self.details_root = btree::insert(
                &mut self.tm,
                &mut PlainValues(DETAILS_SIZE),
                self.details_root,
                &[dev],
                &o.details.pack(),
            )?;
            o.changed = false;
        }
        self.data.commit(&mut self.tm)?;
        if pre_flush {
            self.tm.pre_commit()?;
        } else {
            self.tm.sm_commit()?;
        }
        let mut sb = self
            .tm
            .bm_mut()
            .write_lock_zero(0, Some(&THIN_SB_VALIDATOR))?;
        let r = (|| {
            put_le64(&mut sb[..], off::MAGIC, THIN_MAGIC);
            put_le32(&mut sb[..], off::VERSION, THIN_VERSION);
            put_le32(&mut sb[..], off::TIME, self.time);
            put_le64(&mut sb[..], off::TRANS_ID, self.trans_id);
            put_le64(&mut sb[..], off::HELD_ROOT, self.held_root);
            let d = sb
                .get_mut(off::DATA_SM..off::DATA_SM + SM_ROOT_SIZE)
                .ok_or(Error::Invalid)?;
            self.data.copy_root(&self.tm, d)?;
            let m = sb
                .get_mut(off::META_SM..off::META_SM + SM_ROOT_SIZE)
                .ok_or(Error::Invalid)?;
            self.tm.sm_copy_root(m)?;
            put_le64(&mut sb[..], off::MAPPING_ROOT, self.mapping_root);
            put_le64(&mut sb[..], off::DETAILS_ROOT, self.details_root);
            put_le32(&mut sb[..], off::DATA_BLOCK_SIZE, self.data_block_size);
            put_le32(&mut sb[..], off::META_BLOCK_SIZE, BLOCK_SECTORS);
            put_le64(&mut sb[..], off::META_NR_BLOCKS, self.metadata_nr_blocks);
            Ok(())
        })();
        if let Err(e) = r {
            self.tm.unlock(sb);
            return Err(e);
        }
        self.tm.commit(sb)
    }

    /// Takes a metadata snapshot as upstream's `__reserve_metadata_snap`
    /// does: commits, then shadows the superblock (one extra reference on
    /// block 0 makes the shadow a copy), clears the copy's space map roots
    /// and takes a reference on its two tree roots. The copy's location
    /// becomes `held_root` at the next commit. `Busy` if one is held.
    pub fn reserve_metadata_snap(&mut self) -> Result<u64> {
        self.commit()?;
        self.tm.inc(0)?;
        let (mut copy, copied) = self.tm.shadow_block(0, &THIN_SB_VALIDATOR)?;
        let held = copy.loc();
        if !copied {
            // Block 0 was not shared after all: nothing was copied.
            self.tm.unlock(copy);
            self.tm.dec(0)?;
            return Err(Error::Invalid);
        }
        if le64_at(&copy[..], off::HELD_ROOT) != 0 {
            self.tm.unlock(copy);
            self.tm.dec(held)?;
            return Err(Error::Busy);
        }
        // The copy is not a pool of its own: no space maps.
        for o in (0..SM_ROOT_SIZE).step_by(8) {
            put_le64(&mut copy[..], off::DATA_SM + o, 0);
            put_le64(&mut copy[..], off::META_SM + o, 0);
        }
        let (mapping, details) = (
            le64_at(&copy[..], off::MAPPING_ROOT),
            le64_at(&copy[..], off::DETAILS_ROOT),
        );
        self.tm.unlock(copy);
        self.tm.inc(mapping)?;
        self.tm.inc(details)?;
        self.held_root = held;
        Ok(held)
    }

    /// Drops the metadata snapshot (upstream's `__release_metadata_snap`):
    /// its trees lose the reference it held, then its superblock copy is
    /// freed. `Invalid` if none is held.
    pub fn release_metadata_snap(&mut self) -> Result<()> {
        let held = core::mem::take(&mut self.held_root);
        if held == 0 {
            return Err(Error::Invalid);
        }
        let (mapping, details) = {
            let copy = self.tm.read_lock(held, &THIN_SB_VALIDATOR)?;
            (
                le64_at(&copy[..], off::MAPPING_ROOT),
                le64_at(&copy[..], off::DETAILS_ROOT),
            )
        };
        btree::del(&mut self.tm, &mut BlockTime(&mut self.data), mapping, 2)?;
        btree::del(&mut self.tm, &mut PlainValues(DETAILS_SIZE), details, 1)?;
        self.tm.dec(held)
    }

    /// The mappings the metadata snapshot holds.
    pub fn held_mappings(&self) -> Result<Mappings> {
        if self.held_root == 0 {
            return Err(Error::NoData);
        }
        let mapping = {
            let copy = self.tm.read_lock(self.held_root, &THIN_SB_VALIDATOR)?;
            le64_at(&copy[..], off::MAPPING_ROOT)
        };
        mappings_of(&self.tm, mapping)
    }
}

/// Every mapping under the two-level mapping tree at `root`.
pub fn mappings_of<IO: BlockIo>(tm: &TransactionManager<IO>, root: u64) -> Result<Mappings> {
    let mut devs = Vec::new();
    btree::walk(tm, root, &mut |dev, v| {
        devs.push((dev, le64_at(v, 0)));
        Ok(())
    })?;
    let mut m = Mappings::new();
    for (dev, r) in devs {
        let mut e = BTreeMap::new();
        btree::walk(tm, r, &mut |vb, v| {
            e.insert(vb, le64_at(v, 0) >> 24);
            Ok(())
        })?;
        m.insert(dev, e);
    }
    Ok(m)
}
