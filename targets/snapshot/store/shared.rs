// SPDX-License-Identifier: GPL-2.0

//! The shared exception store: one COW device holding the exceptions of up
//! to 64 snapshots of one origin, with writable snapshots, on the
//! persistent-data engine (shadowing transaction manager, space maps,
//! btree) so every commit is atomic.
//!
//! What it records ([`super::shared_superblock`] has the layout,
//! [`super::shared_index`] the index): the member snapshot ids, the ids
//! invalidated by a full device, and the exceptions, each one COW chunk
//! serving a set of ids for one origin chunk.
//!
//! How the plumbing drives it (every change becomes durable only with
//! [`SharedStore::commit`], which flushes the device before writing the
//! superblock, so data chunks copied before it are stable too):
//!
//! * origin write to chunk `c`: [`SharedStore::origin_copy_set`] says which
//!   ids need the old contents; [`SharedStore::reserve`] a chunk, copy the
//!   origin chunk to it, [`SharedStore::add_origin_exception`] for that
//!   set, commit, then let the origin write go.
//! * snapshot write: [`SharedStore::snapshot_write`] says whether to remap
//!   in place or copy (from a shared COW chunk or from the origin) to a
//!   reserved chunk first; after the copy
//!   [`SharedStore::add_snapshot_exception`], commit, then the write.
//! * a copy that failed: [`SharedStore::release`] its chunk.
//!
//! A reserved chunk is counted in the open transaction but taken out of
//! every commit until an exception holds it, so a crash never leaks it,
//! and no committed exception ever points at a chunk not yet copied.
//! Chunks freed in a transaction are not handed out again before it
//! commits (the space map allocates only chunks free in both the last
//! commit and the open transaction).
//!
//! Failure model: an error from the engine fails the store (every later
//! call returns `Invalid`, the snapshots report `Invalid`); what was last
//! committed stays on the device. Only running out of data chunks
//! (`NoSpace` from [`SharedStore::reserve`]) leaves it usable.

use super::exception_store::Usage;
use super::shared_area::MetadataArea;
use super::shared_index::{first_key, IdMask, SharedException, SnapId, MAX_IDS, VALUE_SIZE};
use super::shared_superblock::{
    is_blank, Layout, SharedSuperblock, INVALID_FLAG, SUPERBLOCK_LOCATION, SUPERBLOCK_VALIDATOR,
};
use super::{Chunk, ChunkSize};
use crate::persistent_data::block_manager::BlockManager;
use crate::persistent_data::btree::{self, PlainValues};
use crate::persistent_data::check::RefCounts;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{BlockIo, BLOCK_SECTORS};
use crate::persistent_data::shim::{PBox, PVec};
use crate::persistent_data::space_map::{DiskSpaceMap, MetadataSpaceMap, SpaceMap};
use crate::persistent_data::transaction_manager::TransactionManager;
use crate::persistent_data::validator::Validator;

/// Dirty metadata blocks the block manager holds before writing back.
const CACHE_BLOCKS: usize = 64;

/// What a write to a snapshot needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotWrite {
    /// The snapshot has its own copy: write this COW chunk in place.
    Remap(Chunk),
    /// The snapshot shares this COW chunk with others: copy it to a new
    /// chunk first.
    CopyCow(Chunk),
    /// The snapshot still sees the origin: copy the origin chunk first.
    CopyOrigin,
}

/// The engine objects (on the heap: they are large).
struct Engine<IO: BlockIo> {
    tm: TransactionManager<MetadataArea<IO>>,
    data_sm: DiskSpaceMap,
}

/// A shared store open on a COW device.
pub struct SharedStore<IO: BlockIo> {
    pd: PBox<Engine<IO>>,
    /// The open transaction's superblock fields.
    sb: SharedSuperblock,
    chunk: ChunkSize,
    dev_sectors: u64,
    /// Data chunks (space map block numbers) handed out by
    /// [`Self::reserve`] and not yet held by an exception.
    reserved: PVec<u64>,
    failed: bool,
}

impl<IO: BlockIo> SharedStore<IO> {
    /// Opens the store on `io` (a device of `dev_sectors`), formatting it
    /// if block 0 is zeroed. A formatted store must have chunk size
    /// `chunk` (`Invalid` otherwise, as for a bad magic or version).
    #[inline(never)]
    pub fn open(io: IO, chunk: ChunkSize, dev_sectors: u64) -> Result<Self> {
        let found = {
            let b0 = io.read(SUPERBLOCK_LOCATION, None)?;
            if is_blank(&b0) {
                None
            } else {
                SUPERBLOCK_VALIDATOR.check(SUPERBLOCK_LOCATION, &b0)?;
                Some(SharedSuperblock::unpack(&b0[..])?)
            }
        };
        let (pd, sb) = match found {
            None => Self::format(io, chunk, dev_sectors)?,
            Some(sb) => {
                let chunk_sectors = u64::from(chunk.sectors());
                let end = sb.data_start.checked_add(sb.data_chunks);
                let fits = end
                    .and_then(|e| e.checked_mul(chunk_sectors))
                    .is_some_and(|s| s <= dev_sectors);
                if sb.chunk_sectors != chunk.sectors() || !fits {
                    return Err(Error::Invalid);
                }
                let bm = BlockManager::new(MetadataArea::new(io, sb.metadata_blocks), CACHE_BLOCKS);
                let tm = TransactionManager::open(bm, &sb.metadata_sm_root)?;
                let data_sm = DiskSpaceMap::open(&sb.data_sm_root)?;
                (PBox::try_new(Engine { tm, data_sm })?, sb)
            }
        };
        Ok(SharedStore {
            pd,
            sb,
            chunk,
            dev_sectors,
            reserved: PVec::new(),
            failed: false,
        })
    }

    /// A new, empty store.
    #[inline(never)]
    fn format(
        io: IO,
        chunk: ChunkSize,
        dev_sectors: u64,
    ) -> Result<(PBox<Engine<IO>>, SharedSuperblock)> {
        let layout = Layout::for_device(dev_sectors, chunk)?;
        let bm = BlockManager::new(MetadataArea::new(io, layout.metadata_blocks), CACHE_BLOCKS);
        if bm.nr_blocks() < layout.metadata_blocks {
            return Err(Error::NoSpace);
        }
        let mut tm = TransactionManager::create(bm, SUPERBLOCK_LOCATION)?;
        let data_sm = DiskSpaceMap::create(&mut tm, layout.data_chunks)?;
        let index_root = btree::empty(&mut tm, VALUE_SIZE)?;
        let mut pd = PBox::try_new(Engine { tm, data_sm })?;
        let mut sb = SharedSuperblock {
            chunk_sectors: chunk.sectors(),
            metadata_blocks: layout.metadata_blocks,
            data_start: layout.data_start,
            data_chunks: layout.data_chunks,
            index_root,
            ..SharedSuperblock::default()
        };
        pd.commit(&mut sb, &[])?;
        Ok((pd, sb))
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk
    }

    /// The layout fixed at format time.
    pub fn layout(&self) -> Layout {
        self.sb.layout()
    }

    /// The member ids (this transaction's).
    pub fn members(&self) -> IdMask {
        self.sb.members
    }

    /// True once an engine error failed the store.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// True once the store was marked invalid (`ES_INVALIDATE`) or failed.
    pub fn is_invalid(&self) -> bool {
        self.failed || self.sb.flags & INVALID_FLAG != 0
    }

    /// Members whose snapshot is valid: those origin writes copy for.
    pub fn live(&self) -> IdMask {
        if self.is_invalid() {
            return IdMask::EMPTY;
        }
        self.sb.members.without(self.sb.invalid_ids)
    }

    /// True if `id`'s snapshot is usable.
    pub fn is_valid(&self, id: SnapId) -> bool {
        self.live().has(id)
    }

    /// Runs a change: refused on a failed store; an error fails it,
    /// unless the engine says nothing changed (`NoSpace` of a full data
    /// space map).
    fn mutate<T>(
        &mut self,
        f: impl FnOnce(&mut Engine<IO>, &mut SharedSuperblock, &mut PVec<u64>) -> Result<T>,
    ) -> Result<T> {
        if self.failed {
            return Err(Error::Invalid);
        }
        let r = f(&mut self.pd, &mut self.sb, &mut self.reserved);
        if r.is_err() && (self.pd.tm.is_poisoned() || !matches!(r, Err(Error::NoSpace))) {
            self.failed = true;
        }
        r
    }

    /// Makes `id` a member (a snapshot of the origin as it is now), if it
    /// is not one; true if it was added. Durable with the next commit.
    pub fn join(&mut self, id: SnapId) -> Result<bool> {
        if self.failed {
            return Err(Error::Invalid);
        }
        if self.sb.members.has(id) {
            return Ok(false);
        }
        self.sb.members = self.sb.members.with(id.mask());
        self.sb.invalid_ids = self.sb.invalid_ids.without(id.mask());
        Ok(true)
    }

    /// Marks `id`'s snapshot invalid (it lost a chunk: the device is
    /// full). It keeps its membership and chunks until destroyed.
    pub fn invalidate_id(&mut self, id: SnapId) {
        if self.sb.members.has(id) {
            self.sb.invalid_ids = self.sb.invalid_ids.with(id.mask());
        }
    }

    /// Marks the whole store invalid (`ES_INVALIDATE`).
    pub fn invalidate_store(&mut self) {
        self.sb.flags |= INVALID_FLAG;
    }

    /// Calls `f` for each exception of origin chunk `old`, lowest key
    /// first, until it returns true.
    fn scan(&self, old: Chunk, f: &mut dyn FnMut(SharedException) -> Result<bool>) -> Result<()> {
        if self.failed {
            return Err(Error::Invalid);
        }
        let mut key = first_key(old)?;
        let end = key.saturating_add(u64::from(MAX_IDS));
        while key < end {
            let mut v = [0u8; VALUE_SIZE];
            let found = match btree::lookup_next(&self.pd.tm, self.sb.index_root, &[key], &mut v) {
                Ok(k) if k < end => k,
                Ok(_) | Err(Error::NoData) => break,
                Err(e) => return Err(e),
            };
            if f(SharedException::unpack(found, &v)?)? {
                break;
            }
            key = found.saturating_add(1);
        }
        Ok(())
    }

    /// `id`'s exception for origin chunk `old`, if it has one.
    pub fn find(&self, id: SnapId, old: Chunk) -> Result<Option<SharedException>> {
        let mut out = None;
        self.scan(old, &mut |e| {
            if e.share.has(id) {
                out = Some(e);
            }
            Ok(out.is_some())
        })?;
        Ok(out)
    }

    /// Where `id` reads origin chunk `old` from: `Some(cow chunk)`, or
    /// `None` for the origin.
    pub fn lookup(&self, id: SnapId, old: Chunk) -> Result<Option<Chunk>> {
        Ok(self.find(id, old)?.map(|e| e.cow))
    }

    /// The ids that have an exception for origin chunk `old`.
    pub fn sharers(&self, old: Chunk) -> Result<IdMask> {
        let mut m = IdMask::EMPTY;
        self.scan(old, &mut |e| {
            m = m.with(e.share);
            Ok(false)
        })?;
        Ok(m)
    }

    /// The ids a write to origin chunk `old` must copy the chunk for
    /// first: the valid members without an exception for it.
    pub fn origin_copy_set(&self, old: Chunk) -> Result<IdMask> {
        Ok(self.live().without(self.sharers(old)?))
    }

    /// Calls `f` for every exception, in origin chunk order.
    pub fn for_each_exception(&self, f: &mut dyn FnMut(SharedException) -> Result) -> Result {
        if self.failed {
            return Err(Error::Invalid);
        }
        btree::walk(&self.pd.tm, self.sb.index_root, &mut |k, v| {
            f(SharedException::unpack(k, v)?)
        })
    }

    /// What a write by `id` to origin chunk `old` needs.
    pub fn snapshot_write(&self, id: SnapId, old: Chunk) -> Result<SnapshotWrite> {
        if !self.is_valid(id) {
            return Err(Error::Invalid);
        }
        Ok(match self.find(id, old)? {
            Some(e) if e.share == id.mask() => SnapshotWrite::Remap(e.cow),
            Some(e) => SnapshotWrite::CopyCow(e.cow),
            None => SnapshotWrite::CopyOrigin,
        })
    }

    /// The space map block of device chunk `cow`, `Invalid` outside the
    /// data area.
    fn data_block(&self, cow: Chunk) -> Result<u64> {
        cow.checked_sub(self.sb.data_start)
            .filter(|&b| b < self.sb.data_chunks)
            .ok_or(Error::Invalid)
    }

    /// Sets aside a free data chunk for a copy; `NoSpace` when there is
    /// none (the store stays usable).
    pub fn reserve(&mut self) -> Result<Chunk> {
        let start = self.sb.data_start;
        self.mutate(|pd, _, reserved| {
            let b = pd.data_sm.new_block(&mut pd.tm)?;
            reserved.try_push(b)?;
            b.checked_add(start).ok_or(Error::Invalid)
        })
    }

    /// Takes `cow` off the reserved list: `Invalid` if it is not on it.
    fn take_reserved(reserved: &mut PVec<u64>, b: u64) -> Result<()> {
        let i = reserved
            .iter()
            .position(|&r| r == b)
            .ok_or(Error::Invalid)?;
        reserved.remove(i);
        Ok(())
    }

    /// Gives back a reserved chunk whose copy failed.
    pub fn release(&mut self, cow: Chunk) -> Result {
        let b = self.data_block(cow)?;
        self.mutate(|pd, _, reserved| {
            Self::take_reserved(reserved, b)?;
            pd.data_sm.dec(&mut pd.tm, b)
        })
    }

    /// Records that reserved chunk `cow` now holds origin chunk `old`'s
    /// old contents for the ids in `share`, which must be members without
    /// an exception for `old` (`Invalid` otherwise, nothing changed).
    pub fn add_origin_exception(&mut self, old: Chunk, cow: Chunk, share: IdMask) -> Result {
        let b = self.data_block(cow)?;
        let members = self.sb.members;
        if share.is_empty()
            || !share.without(members).is_empty()
            || !share.and(self.sharers(old)?).is_empty()
            || !self.reserved.contains(&b)
        {
            return Err(Error::Invalid);
        }
        let e = SharedException { old, cow, share };
        self.mutate(|pd, sb, reserved| {
            sb.index_root = pd.insert(sb.index_root, &e)?;
            Self::take_reserved(reserved, b)
        })
    }

    /// Records that reserved chunk `cow` now holds `id`'s own copy of
    /// origin chunk `old` (copied from the origin or from the chunk `id`
    /// shared): `id` leaves the shared exception, if any, in the same
    /// transaction. `Invalid` if `id` already had its own copy.
    pub fn add_snapshot_exception(&mut self, id: SnapId, old: Chunk, cow: Chunk) -> Result {
        let b = self.data_block(cow)?;
        if !self.sb.members.has(id) || !self.reserved.contains(&b) {
            return Err(Error::Invalid);
        }
        let shared = self.find(id, old)?;
        if shared.is_some_and(|e| e.share == id.mask()) {
            return Err(Error::Invalid);
        }
        let own = SharedException {
            old,
            cow,
            share: id.mask(),
        };
        self.mutate(|pd, sb, reserved| {
            if let Some(e) = shared {
                sb.index_root = pd.leave(sb.index_root, &e, id, sb.data_start)?;
            }
            sb.index_root = pd.insert(sb.index_root, &own)?;
            Self::take_reserved(reserved, b)
        })
    }

    /// Takes `id` out of the store (`ES_DESTROY`): out of every
    /// exception (freeing the chunks nobody else uses) and out of the
    /// members. Durable with the next commit.
    pub fn destroy(&mut self, id: SnapId) -> Result {
        let mut mine = PVec::new();
        self.for_each_exception(&mut |e| {
            if e.share.has(id) {
                mine.try_push(e)?;
            }
            Ok(())
        })?;
        self.mutate(|pd, sb, _| {
            for e in mine.iter() {
                sb.index_root = pd.leave(sb.index_root, e, id, sb.data_start)?;
            }
            sb.members = sb.members.without(id.mask());
            sb.invalid_ids = sb.invalid_ids.without(id.mask());
            Ok(())
        })
    }

    /// Commits the transaction: everything written to the device before
    /// (copies included) is stable when it returns, then the superblock.
    pub fn commit(&mut self) -> Result {
        self.mutate(|pd, sb, reserved| pd.commit(sb, reserved))
    }

    /// How full the device is: the metadata area (to the first data
    /// chunk) and the data chunks in use or reserved, in sectors.
    pub fn usage(&self) -> Usage {
        let chunk = u64::from(self.chunk.sectors());
        let metadata = self.sb.data_start.saturating_mul(chunk);
        let used = (self.sb.data_chunks).saturating_sub(self.pd.data_sm.nr_free(&self.pd.tm));
        Usage {
            allocated: metadata.saturating_add(used.saturating_mul(chunk)),
            total: self.dev_sectors,
            metadata,
        }
    }

    /// Recounts every reference from the superblock's roots (call right
    /// after open: the data space map's in-core index is only written out
    /// by a commit, and a commit takes the reserved chunks again): each exception holds one data chunk,
    /// nothing else holds any, and the metadata space map matches the
    /// blocks reachable. `Invalid` on any mismatch.
    pub fn check(&self) -> Result {
        let tm = &self.pd.tm;
        let mut meta = RefCounts::new(tm.sm_nr_blocks())?;
        let mut data = RefCounts::new(self.sb.data_chunks)?;
        meta.inc(SUPERBLOCK_LOCATION)?;
        meta.count_metadata_sm(tm, &tm.sm_root())?;
        meta.count_disk_sm(tm, &self.pd.data_sm.root(tm))?;
        meta.count_btree(tm, self.sb.index_root, 1, &mut |_, _| Ok(()))?;
        for &b in self.reserved.iter() {
            data.inc(b)?;
        }
        let start = self.sb.data_start;
        btree::walk(tm, self.sb.index_root, &mut |k, v| {
            let e = SharedException::unpack(k, v)?;
            let b = e.cow.checked_sub(start).ok_or(Error::Invalid)?;
            if e.share.is_empty() || !e.share.without(self.sb.members).is_empty() {
                return Err(Error::Invalid);
            }
            data.inc(b).map(|_| ())
        })?;
        let mm = meta.verify(tm, &MetadataSpaceMap)?;
        let dm = data.verify(tm, &self.pd.data_sm)?;
        let bad = mm.len() + dm.len();
        if bad != 0 {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    /// Metadata blocks in 512-byte sectors (for diagnostics).
    pub fn metadata_sectors(&self) -> u64 {
        self.sb.metadata_blocks.saturating_mul(BLOCK_SECTORS.into())
    }
}

impl<IO: BlockIo> Engine<IO> {
    /// Inserts `e`; returns the new root.
    fn insert(&mut self, root: u64, e: &SharedException) -> Result<u64> {
        let mut vt = PlainValues(VALUE_SIZE);
        btree::insert(&mut self.tm, &mut vt, root, &[e.key()?], &e.value()?)
    }

    /// Takes `id` out of exception `e` (re-keyed if `id` was its lowest
    /// id), freeing its chunk if no id is left; returns the new root.
    fn leave(
        &mut self,
        root: u64,
        e: &SharedException,
        id: SnapId,
        data_start: Chunk,
    ) -> Result<u64> {
        let mut vt = PlainValues(VALUE_SIZE);
        let root = btree::remove(&mut self.tm, &mut vt, root, &[e.key()?])?;
        let rest = SharedException {
            share: e.share.without(id.mask()),
            ..*e
        };
        if rest.share.is_empty() {
            let b = rest.cow.checked_sub(data_start).ok_or(Error::Invalid)?;
            self.data_sm.dec(&mut self.tm, b)?;
            return Ok(root);
        }
        self.insert(root, &rest)
    }

    /// Commits with the superblock fields `sb` (roots filled in here):
    /// the reserved chunks are left out of the commit and taken again
    /// after it.
    fn commit(&mut self, sb: &mut SharedSuperblock, reserved: &[u64]) -> Result {
        for &b in reserved {
            self.data_sm.dec(&mut self.tm, b)?;
        }
        self.data_sm.commit(&mut self.tm)?;
        self.tm.pre_commit()?;
        self.data_sm.copy_root(&self.tm, &mut sb.data_sm_root)?;
        self.tm.sm_copy_root(&mut sb.metadata_sm_root)?;
        let mut wb = self
            .tm
            .bm_mut()
            .write_lock_zero(SUPERBLOCK_LOCATION, Some(&SUPERBLOCK_VALIDATOR))?;
        if let Err(e) = sb.pack(&mut wb[..]) {
            let _ = self.tm.bm_mut().discard(wb);
            return Err(e);
        }
        self.tm.commit(wb)?;
        for &b in reserved {
            self.data_sm.inc(&mut self.tm, b)?;
        }
        Ok(())
    }
}
