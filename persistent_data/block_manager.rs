// SPDX-License-Identifier: GPL-2.0

//! The block manager: validated, locked access to 4 KiB metadata blocks
//! over a [`BlockIo`], with a small write-back cache.
//!
//! Locking model ("one writer or many readers"):
//!
//! * A read lock is a [`ReadRef`] borrowing the manager immutably, so no
//!   write lock can be taken or released while any read lock is alive: the
//!   borrow checker enforces it, at no runtime cost. Dropping it unlocks.
//! * A write lock is a [`WriteBlock`] that owns the block's buffer (moved
//!   out of the cache) so several can be held at once (a btree split holds
//!   three). It must be handed back with [`BlockManager::unlock`]; while it
//!   is out, reading or re-locking that block fails with [`Error::Busy`]
//!   (this is also how lock recursion is detected). A write block that is
//!   dropped instead of unlocked loses its changes and leaves the block
//!   locked until [`BlockManager::reset`]. That is a bug, and is counted:
//!   [`BlockManager::leaked_write_locks`] (tests assert it stays zero).
//!
//! Validators stamp a block when it is written out and check it when it is
//! read from the device. A cached block remembers its validator; locking it
//! with a different one is an error (`Invalid`), as in dm-bufio.
//!
//! Dirty blocks stay in the cache until evicted or flushed; checksums are
//! only computed then, so a node modified many times in a transaction is
//! checksummed once.

use crate::persistent_data::checksum::dm_checksum;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::shim::{PBox, PVec};
use core::ops::{Deref, DerefMut};

/// Checks a block read from disk and stamps one about to be written.
pub trait Validator: Sync {
    /// Name, for diagnostics.
    fn name(&self) -> &'static str;
    /// Verifies `data`, read from block `b`.
    fn check(&self, b: u64, data: &Block) -> Result<()>;
    /// Stamps `data` (location, checksum) before it is written to block `b`.
    fn prepare_for_write(&self, b: u64, data: &mut Block);
}

/// How validators are passed around: they are all statics.
pub type ValidatorRef = &'static dyn Validator;

/// Validators are told apart by identity: they are statics, so the same
/// validator is the same address. Two with the same name (say, the thin
/// and cache superblocks') are different. The name is compared too because
/// distinct zero-sized statics may share an address.
fn same_validator(a: Option<ValidatorRef>, b: Option<ValidatorRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        // Same address and vtable: the same static (the common, fast case).
        (Some(x), Some(y)) => {
            core::ptr::eq(x, y) || (core::ptr::addr_eq(x, y) && x.name() == y.name())
        }
        _ => false,
    }
}

/// Reads a little-endian `u32` at `off`, or 0 if out of range.
pub fn le32_at(d: &[u8], off: usize) -> u32 {
    d.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// Reads a little-endian `u64` at `off`, or 0 if out of range.
pub fn le64_at(d: &[u8], off: usize) -> u64 {
    d.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Writes a little-endian `u32` at `off` (ignored if out of range).
pub fn put_le32(d: &mut [u8], off: usize, v: u32) {
    if let Some(s) = d.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes a little-endian `u64` at `off` (ignored if out of range).
pub fn put_le64(d: &mut [u8], off: usize, v: u64) {
    if let Some(s) = d.get_mut(off..off + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// The common validator shape: `csum` (le32) at offset 0 covering bytes
/// `4..4096` XORed with a salt, and the block's own location (le64) at
/// `blocknr_offset`.
pub struct CsumValidator {
    /// Validator name.
    pub name: &'static str,
    /// Checksum salt.
    pub xor: u32,
    /// Where the block records its own location.
    pub blocknr_offset: usize,
}

impl CsumValidator {
    fn csum(&self, data: &Block) -> u32 {
        dm_checksum(data.get(4..).unwrap_or(&[]), self.xor)
    }
}

impl Validator for CsumValidator {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, b: u64, data: &Block) -> Result<()> {
        // Location first: a misdirected write is a different failure from a
        // torn or corrupted one.
        if le64_at(data, self.blocknr_offset) != b {
            return Err(Error::BadBlockNumber);
        }
        if le32_at(data, 0) != self.csum(data) {
            return Err(Error::BadChecksum);
        }
        Ok(())
    }

    fn prepare_for_write(&self, b: u64, data: &mut Block) {
        put_le64(data, self.blocknr_offset, b);
        let c = self.csum(data);
        put_le32(data, 0, c);
    }
}

/// A read-locked block; dropping it releases the lock.
pub enum ReadRef<'a> {
    /// A block in the block manager's cache.
    Cached(&'a Block),
    /// A block just read from the device.
    Owned(PBox<Block>),
}

impl Deref for ReadRef<'_> {
    type Target = Block;
    fn deref(&self) -> &Block {
        match self {
            ReadRef::Cached(b) => b,
            ReadRef::Owned(b) => b,
        }
    }
}

/// A write-locked block. Hand it back with [`BlockManager::unlock`] (or the
/// transaction manager's `unlock`); dropping it instead is counted as a
/// leaked lock.
pub struct WriteBlock {
    loc: u64,
    data: PBox<Block>,
    validator: Option<ValidatorRef>,
    guard: LeakGuard,
}

/// Write locks dropped without being handed back: per thread on the host
/// (so parallel tests do not see each other's), module-wide in the kernel.
#[cfg(not(MODULE))]
mod leaks {
    use core::cell::Cell;

    std::thread_local! {
        static LEAKED: Cell<u64> = const { Cell::new(0) };
    }

    pub(super) fn count() -> u64 {
        LEAKED.with(|c| c.get())
    }

    pub(super) fn record() {
        LEAKED.with(|c| c.set(c.get().wrapping_add(1)));
    }
}

/// Write locks dropped without being handed back: per thread on the host
/// (so parallel tests do not see each other's), module-wide in the kernel.
#[cfg(MODULE)]
mod leaks {
    use core::sync::atomic::{AtomicU64, Ordering};

    static LEAKED: AtomicU64 = AtomicU64::new(0);

    pub(super) fn count() -> u64 {
        LEAKED.load(Ordering::Relaxed)
    }

    pub(super) fn record() {
        LEAKED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Part of every [`WriteBlock`]: dropping it (the write block going away
/// without an unlock) records a leaked lock. Never panics.
struct LeakGuard;

impl LeakGuard {
    /// The lock was handed back properly.
    fn release(self) {
        core::mem::forget(self);
    }
}

impl Drop for LeakGuard {
    fn drop(&mut self) {
        leaks::record();
    }
}

impl WriteBlock {
    /// The block's location.
    pub fn loc(&self) -> u64 {
        self.loc
    }
}

impl Deref for WriteBlock {
    type Target = Block;
    fn deref(&self) -> &Block {
        &self.data
    }
}

impl DerefMut for WriteBlock {
    fn deref_mut(&mut self) -> &mut Block {
        &mut self.data
    }
}

enum Fill {
    Read,
    Zero,
    Data(PBox<Block>),
}

struct Entry {
    b: u64,
    /// `None` while the block is write-locked (the buffer is in the
    /// `WriteBlock`).
    data: Option<PBox<Block>>,
    dirty: bool,
    validator: Option<ValidatorRef>,
    stamp: u64,
}

/// Default number of blocks the cache holds (4 MiB).
pub const DEFAULT_CACHE_BLOCKS: usize = 1024;

/// Validated, locked block access over a [`BlockIo`].
pub struct BlockManager<IO: BlockIo> {
    io: IO,
    /// Sorted by block number.
    entries: PVec<Entry>,
    capacity: usize,
    read_only: bool,
    clock: u64,
    /// An error from a write-back that had nobody to report to; returned by
    /// the next flush.
    deferred: Option<Error>,
    /// The leaked-lock count when this manager was created.
    leaks_at_start: u64,
    /// Scratch space for eviction (kept to avoid reallocating).
    scratch: PVec<u64>,
}

impl<IO: BlockIo> BlockManager<IO> {
    /// A block manager over `io` caching up to `cache_blocks` blocks.
    pub fn new(io: IO, cache_blocks: usize) -> Self {
        BlockManager {
            io,
            entries: PVec::new(),
            capacity: cache_blocks.max(8),
            read_only: false,
            clock: 0,
            deferred: None,
            leaks_at_start: leaks::count(),
            scratch: PVec::new(),
        }
    }

    /// The underlying device.
    pub fn io(&self) -> &IO {
        &self.io
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        BLOCK_SIZE
    }

    /// Number of blocks on the device.
    pub fn nr_blocks(&self) -> u64 {
        self.io.nr_blocks()
    }

    /// True in read-only mode.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Refuses write locks and flushes from now on.
    pub fn set_read_only(&mut self) {
        self.read_only = true;
    }

    /// Allows writes again.
    pub fn set_read_write(&mut self) {
        self.read_only = false;
    }

    /// Write locks dropped without [`Self::unlock`] (or [`Self::discard`])
    /// since this manager was created: always a bug (their changes are lost
    /// and the blocks stay locked). Counted per thread on the host; in the
    /// kernel module-wide, so other managers' leaks show up too.
    pub fn leaked_write_locks(&self) -> u64 {
        leaks::count().wrapping_sub(self.leaks_at_start)
    }

    /// Number of write locks currently held.
    pub fn nr_write_locks(&self) -> usize {
        self.entries.iter().filter(|e| e.data.is_none()).count()
    }

    fn find(&self, b: u64) -> core::result::Result<usize, usize> {
        self.entries.binary_search_by_key(&b, |e| e.b)
    }

    fn check_range(&self, b: u64) -> Result<()> {
        if b >= self.io.nr_blocks() {
            return Err(Error::Io);
        }
        Ok(())
    }

    fn lookup_cached(&self, b: u64, v: Option<ValidatorRef>) -> Result<Option<&Block>> {
        let Ok(i) = self.find(b) else {
            return Ok(None);
        };
        let e = self.entries.get(i).ok_or(Error::Invalid)?;
        let data = e.data.as_deref().ok_or(Error::Busy)?;
        if !same_validator(e.validator, v) {
            match (e.validator, v) {
                (None, Some(v)) => v.check(b, data)?,
                _ => return Err(Error::Invalid),
            }
        }
        Ok(Some(data))
    }

    fn read_new(&self, b: u64, v: Option<ValidatorRef>, try_only: bool) -> Result<PBox<Block>> {
        self.check_range(b)?;
        let mut data = PBox::<Block>::try_zeroed()?;
        if try_only {
            self.io.try_read(b, &mut data)?;
        } else {
            self.io.read(b, &mut data)?;
        }
        if let Some(v) = v {
            v.check(b, &data)?;
        }
        Ok(data)
    }

    /// Read-locks block `b`, checking it with `v` if it comes from disk.
    pub fn read_lock(&self, b: u64, v: Option<ValidatorRef>) -> Result<ReadRef<'_>> {
        if let Some(d) = self.lookup_cached(b, v)? {
            return Ok(ReadRef::Cached(d));
        }
        Ok(ReadRef::Owned(self.read_new(b, v, false)?))
    }

    /// Like [`Self::read_lock`] but never blocks: `WouldBlock` if the block
    /// would have to be read from the device or is write-locked (where a
    /// blocking reader would wait, as upstream's try-lock does).
    pub fn read_try_lock(&self, b: u64, v: Option<ValidatorRef>) -> Result<ReadRef<'_>> {
        match self.lookup_cached(b, v) {
            Ok(Some(d)) => return Ok(ReadRef::Cached(d)),
            Ok(None) => {}
            Err(Error::Busy) => return Err(Error::WouldBlock),
            Err(e) => return Err(e),
        }
        Ok(ReadRef::Owned(self.read_new(b, v, true)?))
    }

    fn write_back(io: &IO, e: &mut Entry) -> Result<()> {
        if let (true, Some(d)) = (e.dirty, e.data.as_deref_mut()) {
            if let Some(v) = e.validator {
                v.prepare_for_write(e.b, d);
            }
            io.write(e.b, d)?;
            e.dirty = false;
        }
        Ok(())
    }

    /// Eviction order: clean before dirty, then least recently used.
    fn evict_key(e: &Entry) -> u64 {
        (u64::from(e.dirty) << 63) | (e.stamp & (u64::MAX >> 1))
    }

    /// When the cache is full, evicts a batch of unlocked blocks (clean
    /// before dirty, least recently used first), writing back the dirty
    /// ones. One pass over the cache frees a sixteenth of it, so adding a
    /// block costs O(1) amortised instead of a scan each time.
    fn make_room(&mut self) -> Result<()> {
        if self.entries.len() < self.capacity {
            return Ok(());
        }
        let batch = (self.capacity / 16).max(1);
        self.scratch.clear();
        let keys = self
            .entries
            .iter()
            .filter(|e| e.data.is_some())
            .map(Self::evict_key);
        let threshold = match self
            .scratch
            .try_reserve(self.entries.len())
            .and_then(|()| keys.clone().try_for_each(|k| self.scratch.try_push(k)))
        {
            Ok(()) if self.scratch.len() > batch => {
                // The batch'th smallest key: everything up to it goes.
                let (_, kth, _) = self.scratch.select_nth_unstable(batch - 1);
                *kth
            }
            Ok(()) => u64::MAX,
            // No memory for the batch: evict just the single best victim.
            Err(_) => keys.min().unwrap_or(0),
        };
        let mut first = None;
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let evict = match self.entries.get_mut(i) {
                Some(e) if e.data.is_some() && Self::evict_key(e) <= threshold => {
                    match Self::write_back(&self.io, e) {
                        Ok(()) => true,
                        Err(err) => {
                            first.get_or_insert(err);
                            false
                        }
                    }
                }
                _ => false,
            };
            if !evict {
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        self.entries.truncate(kept);
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn lock_entry(&mut self, b: u64, v: Option<ValidatorRef>, fill: Fill) -> Result<WriteBlock> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_range(b)?;
        self.clock += 1;
        match self.find(b) {
            Ok(i) => {
                let e = self.entries.get_mut(i).ok_or(Error::Invalid)?;
                let mut data = e.data.take().ok_or(Error::Busy)?;
                if let Fill::Data(d) = fill {
                    data = d;
                } else if let Fill::Zero = fill {
                    data.fill(0);
                } else if !same_validator(e.validator, v) {
                    let r = match (e.validator, v, e.dirty) {
                        (_, Some(v), false) | (None, Some(v), true) => v.check(b, &data),
                        (_, None, false) => Ok(()),
                        _ => Err(Error::Invalid),
                    };
                    if let Err(err) = r {
                        e.data = Some(data);
                        return Err(err);
                    }
                }
                e.validator = v;
                Ok(WriteBlock {
                    loc: b,
                    data,
                    validator: v,
                    guard: LeakGuard,
                })
            }
            Err(_) => {
                let data = match fill {
                    Fill::Zero => PBox::<Block>::try_zeroed()?,
                    Fill::Read => self.read_new(b, v, false)?,
                    Fill::Data(d) => d,
                };
                self.make_room()?;
                // Reserve the slot now so that unlock cannot fail.
                let pos = self.find(b).err().ok_or(Error::Invalid)?;
                self.entries.try_insert(
                    pos,
                    Entry {
                        b,
                        data: None,
                        dirty: false,
                        validator: v,
                        stamp: self.clock,
                    },
                )?;
                Ok(WriteBlock {
                    loc: b,
                    data,
                    validator: v,
                    guard: LeakGuard,
                })
            }
        }
    }

    /// Write-locks block `b`, reading and checking it.
    pub fn write_lock(&mut self, b: u64, v: Option<ValidatorRef>) -> Result<WriteBlock> {
        self.lock_entry(b, v, Fill::Read)
    }

    /// Write-locks block `b` without reading it; the buffer is zeroed.
    pub fn write_lock_zero(&mut self, b: u64, v: Option<ValidatorRef>) -> Result<WriteBlock> {
        self.lock_entry(b, v, Fill::Zero)
    }

    /// Write-locks block `b` without reading it, taking `data` as its new
    /// contents (a shadow copy, without a second memcpy).
    pub fn write_lock_with(
        &mut self,
        b: u64,
        v: Option<ValidatorRef>,
        data: PBox<Block>,
    ) -> Result<WriteBlock> {
        self.lock_entry(b, v, Fill::Data(data))
    }

    /// A private copy of block `b`, checked with `v`.
    pub fn read_copy(&self, b: u64, v: Option<ValidatorRef>) -> Result<PBox<Block>> {
        match self.read_lock(b, v)? {
            ReadRef::Owned(d) => Ok(d),
            ReadRef::Cached(c) => {
                let mut d = PBox::<Block>::try_zeroed()?;
                d.copy_from_slice(c);
                Ok(d)
            }
        }
    }

    /// Releases a write lock; the block becomes dirty.
    pub fn unlock(&mut self, wb: WriteBlock) {
        let WriteBlock {
            loc,
            data,
            validator,
            guard,
        } = wb;
        guard.release();
        self.clock += 1;
        let stamp = self.clock;
        match self.find(loc) {
            Ok(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.data = Some(data);
                    e.dirty = true;
                    e.validator = validator;
                    e.stamp = stamp;
                }
            }
            Err(_) => {
                // Only after a reset dropped the slot: write it through.
                let mut e = Entry {
                    b: loc,
                    data: Some(data),
                    dirty: true,
                    validator,
                    stamp,
                };
                if let Err(err) = Self::write_back(&self.io, &mut e) {
                    self.deferred.get_or_insert(err);
                }
            }
        }
    }

    fn write_dirty(&mut self) -> Result<()> {
        let mut first = self.deferred.take();
        for e in self.entries.iter_mut() {
            if let Err(err) = Self::write_back(&self.io, e) {
                first.get_or_insert(err);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes every dirty block and makes them stable.
    pub fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.write_dirty()?;
        self.io.flush()
    }

    /// Commits with `sb` as the new superblock: writes and flushes every
    /// other dirty block first, and only then releases `sb`, writes it and
    /// flushes again. The device may reorder writes between flushes, so the
    /// superblock must never share a batch with the blocks it references.
    ///
    /// If the first flush fails, `sb`'s changes are dropped (and its cache
    /// entry with them, so a later read sees the device's copy): it is
    /// never written.
    pub fn flush_and_unlock(&mut self, sb: WriteBlock) -> Result<()> {
        if let Err(e) = self.flush() {
            self.discard(sb);
            return Err(e);
        }
        self.unlock(sb);
        self.flush()
    }

    /// Releases a write lock throwing its changes away: the block is
    /// dropped from the cache (its previous contents went into the lock),
    /// so the next lock reads it from the device again.
    pub fn discard(&mut self, wb: WriteBlock) {
        let WriteBlock { loc, guard, .. } = wb;
        guard.release();
        if let Ok(i) = self.find(loc) {
            if self.entries.get(i).is_some_and(|e| e.data.is_none()) {
                self.entries.remove(i);
            }
        }
    }

    /// Writes back dirty blocks (even when read-only, as dm-bufio does) and
    /// empties the cache, forgetting any write locks still out.
    pub fn reset(&mut self) -> Result<()> {
        let r = self.write_dirty();
        self.entries.clear();
        r
    }

    /// Hint that `b` will be needed soon.
    pub fn prefetch(&self, b: u64) {
        if self.find(b).is_err() {
            self.io.prefetch(b);
        }
    }
}

impl<IO: BlockIo> Drop for BlockManager<IO> {
    fn drop(&mut self) {
        // Like dm_bufio_client_destroy: dirty buffers are written back (but
        // not flushed). Nobody is left to hear about a failure.
        let _ = self.write_dirty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_data::io::mem::MemIo;

    static V1: CsumValidator = CsumValidator {
        name: "test1",
        xor: 42,
        blocknr_offset: 8,
    };
    static V2: CsumValidator = CsumValidator {
        name: "test2",
        xor: 43,
        blocknr_offset: 8,
    };

    fn bm(n: u64) -> (MemIo, BlockManager<MemIo>) {
        let io = MemIo::new(n);
        (io.clone(), BlockManager::new(io, 16))
    }

    #[test]
    fn write_flush_read_back_validated() {
        let (io, mut bm) = bm(32);
        let mut w = bm.write_lock_zero(3, Some(&V1)).unwrap();
        w[100] = 7;
        bm.unlock(w);
        bm.flush().unwrap();
        assert!(io.unflushed_blocks().is_empty());
        drop(bm);
        let bm = BlockManager::new(io.clone(), 16);
        let r = bm.read_lock(3, Some(&V1)).unwrap();
        assert_eq!(r[100], 7);
        assert_eq!(le64_at(&r[..], 8), 3);
        drop(r);
        assert_eq!(bm.read_lock(3, Some(&V2)).err(), Some(Error::BadChecksum));
        // Same contents at another location fail the location check first.
        let img = io.image();
        io.poke(5, 0, &img[3 * 4096..4 * 4096]);
        assert_eq!(
            bm.read_lock(5, Some(&V1)).err(),
            Some(Error::BadBlockNumber)
        );
    }

    #[test]
    fn lock_conflicts() {
        let (_io, mut bm) = bm(8);
        let w = bm.write_lock_zero(1, Some(&V1)).unwrap();
        assert_eq!(bm.read_lock(1, Some(&V1)).err(), Some(Error::Busy));
        assert_eq!(bm.write_lock(1, Some(&V1)).err(), Some(Error::Busy));
        assert_eq!(bm.nr_write_locks(), 1);
        bm.unlock(w);
        assert_eq!(bm.nr_write_locks(), 0);
        // The non-blocking reader would have to wait: WouldBlock, not Busy.
        let w = bm.write_lock(1, Some(&V1)).unwrap();
        assert_eq!(
            bm.read_try_lock(1, Some(&V1)).err(),
            Some(Error::WouldBlock)
        );
        bm.unlock(w);
        assert!(bm.read_try_lock(1, Some(&V1)).is_ok());
        // Validator mismatch on a cached dirty block.
        assert_eq!(bm.read_lock(1, Some(&V2)).err(), Some(Error::Invalid));
        assert!(bm.read_lock(1, Some(&V1)).is_ok());
    }

    #[test]
    fn validators_compared_by_identity_not_name() {
        // Same name as V1, another salt (like two targets' superblocks).
        static V1_TWIN: CsumValidator = CsumValidator {
            name: "test1",
            xor: 99,
            blocknr_offset: 8,
        };
        assert!(same_validator(Some(&V1), Some(&V1)));
        assert!(!same_validator(Some(&V1), Some(&V1_TWIN)));
        let (_io, mut bm) = bm(8);
        let w = bm.write_lock_zero(2, Some(&V1)).unwrap();
        bm.unlock(w);
        // A cached dirty block locked with a different validator.
        assert_eq!(bm.read_lock(2, Some(&V1_TWIN)).err(), Some(Error::Invalid));
        assert_eq!(bm.write_lock(2, Some(&V1_TWIN)).err(), Some(Error::Invalid));
        // Once clean, the twin checks it (and rejects V1's checksum).
        bm.flush().unwrap();
        assert_eq!(bm.read_lock(2, Some(&V1_TWIN)).err(), Some(Error::Invalid));
        assert_eq!(
            bm.write_lock(2, Some(&V1_TWIN)).err(),
            Some(Error::BadChecksum)
        );
        assert!(bm.read_lock(2, Some(&V1)).is_ok());
    }

    #[test]
    fn dropped_write_lock_is_counted() {
        let (_io, mut bm) = bm(8);
        let w = bm.write_lock_zero(1, None).unwrap();
        bm.unlock(w);
        let w = bm.write_lock(1, None).unwrap();
        bm.discard(w);
        assert_eq!(bm.leaked_write_locks(), 0);
        let w = bm.write_lock_zero(2, None).unwrap();
        drop(w);
        assert_eq!(bm.leaked_write_locks(), 1);
        assert_eq!(bm.read_lock(2, None).err(), Some(Error::Busy));
        // A new manager starts from zero.
        let (_io2, bm2) = super::tests::bm(8);
        assert_eq!(bm2.leaked_write_locks(), 0);
    }

    #[test]
    fn read_only_mode() {
        let (_io, mut bm) = bm(8);
        bm.set_read_only();
        assert!(bm.is_read_only());
        assert_eq!(bm.write_lock(1, None).err(), Some(Error::ReadOnly));
        assert_eq!(bm.write_lock_zero(1, None).err(), Some(Error::ReadOnly));
        assert_eq!(bm.flush().err(), Some(Error::ReadOnly));
        assert!(bm.read_lock(1, None).is_ok());
        bm.set_read_write();
        assert!(bm.flush().is_ok());
    }

    #[test]
    fn eviction_writes_back_and_out_of_range() {
        let (io, mut bm) = bm(64);
        for b in 0..40u64 {
            let mut w = bm.write_lock_zero(b, Some(&V1)).unwrap();
            w[64] = b as u8;
            bm.unlock(w);
        }
        assert!(bm.entries.len() <= 16);
        for b in 0..40u64 {
            assert_eq!(bm.read_lock(b, Some(&V1)).unwrap()[64], b as u8);
        }
        assert_eq!(bm.read_lock(64, None).err(), Some(Error::Io));
        bm.flush().unwrap();
        assert_eq!(io.unflushed_blocks().len(), 0);
    }

    #[test]
    fn flush_and_unlock_orders_superblock_last() {
        use crate::persistent_data::io::mem::IoEvent;
        let (io, mut bm) = bm(8);
        for b in [3, 1] {
            let w = bm.write_lock_zero(b, Some(&V1)).unwrap();
            bm.unlock(w);
        }
        let mut sb = bm.write_lock_zero(0, Some(&V2)).unwrap();
        sb[100] = 1;
        io.start_log();
        bm.flush_and_unlock(sb).unwrap();
        use IoEvent::*;
        assert_eq!(io.take_log(), [Write(1), Write(3), Flush, Write(0), Flush]);
        // A failed first flush never writes the superblock, and forgets
        // its changes.
        let w = bm.write_lock_zero(2, Some(&V1)).unwrap();
        bm.unlock(w);
        let mut sb = bm.write_lock(0, Some(&V2)).unwrap();
        sb[100] = 2;
        io.fail_flush(true);
        io.start_log();
        assert_eq!(bm.flush_and_unlock(sb).err(), Some(Error::Io));
        assert_eq!(io.take_log(), [Write(2)]);
        io.clear_faults();
        assert_eq!(bm.nr_write_locks(), 0);
        assert_eq!(bm.read_lock(0, Some(&V2)).unwrap()[100], 1);
    }

    #[test]
    fn try_lock_and_reset_and_faults() {
        let (io, mut bm) = bm(8);
        io.model_cache(true);
        assert_eq!(bm.read_try_lock(2, None).err(), Some(Error::WouldBlock));
        drop(bm.read_lock(2, None).unwrap());
        assert!(bm.read_try_lock(2, None).is_ok());
        let w = bm.write_lock_zero(4, Some(&V1)).unwrap();
        bm.unlock(w);
        io.fail_writes_after(Some(0));
        assert_eq!(bm.flush().err(), Some(Error::Io));
        io.clear_faults();
        bm.reset().unwrap();
        assert_eq!(bm.entries.len(), 0);
        assert!(bm.read_lock(4, Some(&V1)).is_ok());
    }
}
