// SPDX-License-Identifier: GPL-2.0

//! The block manager: validated, locked access to 4 KiB metadata blocks
//! over a [`BlockIo`] cache, plus the transaction's dirty blocks.
//!
//! Clean blocks live only in the I/O layer's cache (dm-bufio in the
//! kernel). A read lock on one is a [`ReadRef::Held`]: it holds the
//! cache's own buffer until dropped, so a read neither allocates nor
//! copies, and the cache checks the block with its validator once, not on
//! every read. The block manager itself keeps only *dirty* blocks (changed
//! in this transaction and not yet written back), so no block is cached
//! twice; a read lock on one borrows it ([`ReadRef::Dirty`]).
//!
//! Locking model ("one writer or many readers"):
//!
//! * A read lock borrows the manager immutably, so no write lock can be
//!   taken or released while any read lock is alive: the borrow checker
//!   enforces it, at no runtime cost. Dropping it unlocks.
//! * A write lock is a [`WriteBlock`] that owns the block's buffer (moved
//!   out of the dirty set, or copied from the cache) so several can be
//!   held at once (a btree split holds three). It must be handed back with
//!   [`BlockManager::unlock`]; while it is out, reading or re-locking that
//!   block fails with [`Error::Busy`] (this is also how lock recursion is
//!   detected). A write block that is dropped instead of unlocked loses its
//!   changes and leaves the block locked until [`BlockManager::discard_all`].
//!   That is a bug, and is counted: [`BlockManager::leaked_write_locks`]
//!   (tests assert it stays zero).
//!
//! Dirty blocks are stamped by their validator (location, checksum) only
//! when written back to the cache, on eviction or flush, so a node modified
//! many times in a transaction is checksummed once. A dirty block
//! remembers its validator; locking it with a different one is an error
//! (`Invalid`), as in upstream's block manager.

use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::shim::{PBox, PVec};
use core::ops::{Deref, DerefMut};

#[cfg(not(MODULE))]
pub use crate::persistent_data::endian::host::{le32_at, le64_at, put_le32, put_le64};
pub use crate::persistent_data::validator::{CsumValidator, Validator, ValidatorRef};

/// `same_validator` for optional validators (`None`: raw access).
fn same(a: Option<ValidatorRef>, b: Option<ValidatorRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => crate::persistent_data::validator::same_validator(x, y),
        _ => false,
    }
}

/// A read-locked block; dropping it releases the lock.
pub enum ReadRef<'a, IO: BlockIo + 'a> {
    /// A dirty block of this transaction, in the block manager.
    Dirty(&'a Block),
    /// A clean block held in the I/O layer's cache.
    Held(IO::Held<'a>),
}

impl<IO: BlockIo> Deref for ReadRef<'_, IO> {
    type Target = Block;
    #[inline]
    fn deref(&self) -> &Block {
        match self {
            ReadRef::Dirty(b) => b,
            ReadRef::Held(b) => b,
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
    /// The block manager's epoch when locked: a lock from before a
    /// [`BlockManager::discard_all`] belongs to a discarded transaction.
    epoch: u64,
    /// The block was already dirty when locked (its earlier changes are in
    /// `data` and nowhere else).
    was_dirty: bool,
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

/// A dirty or write-locked block.
struct Entry {
    b: u64,
    /// `None` while the block is write-locked (the buffer is in the
    /// `WriteBlock`); otherwise the block's unwritten contents.
    data: Option<PBox<Block>>,
    validator: Option<ValidatorRef>,
    stamp: u64,
}

/// Default number of dirty blocks held before the oldest are written back
/// to the cache (4 MiB).
pub const DEFAULT_CACHE_BLOCKS: usize = 1024;

/// Validated, locked block access over a [`BlockIo`].
pub struct BlockManager<IO: BlockIo> {
    io: IO,
    /// Dirty and write-locked blocks, sorted by block number.
    entries: PVec<Entry>,
    capacity: usize,
    read_only: bool,
    clock: u64,
    epoch: u64,
    /// Blocks were written to the cache since its last flush.
    unflushed: bool,
    /// An error from a write-back that had nobody to report to; returned by
    /// the next flush.
    deferred: Option<Error>,
    /// The leaked-lock count when this manager was created.
    leaks_at_start: u64,
    /// Scratch space for eviction (kept to avoid reallocating).
    scratch: PVec<u64>,
}

impl<IO: BlockIo> BlockManager<IO> {
    /// A block manager over `io` holding up to `cache_blocks` dirty blocks
    /// before writing the oldest back.
    pub fn new(io: IO, cache_blocks: usize) -> Self {
        BlockManager {
            io,
            entries: PVec::new(),
            capacity: cache_blocks.max(8),
            read_only: false,
            clock: 0,
            epoch: 0,
            unflushed: false,
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

    /// Number of dirty (changed, not yet written back) blocks.
    pub fn nr_dirty(&self) -> usize {
        self.entries.iter().filter(|e| e.data.is_some()).count()
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

    /// Block `b` if it is dirty, checked against `v`.
    #[inline]
    fn lookup_dirty(&self, b: u64, v: Option<ValidatorRef>) -> Result<Option<&Block>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let Ok(i) = self.find(b) else {
            return Ok(None);
        };
        let e = self.entries.get(i).ok_or(Error::Invalid)?;
        let data = e.data.as_deref().ok_or(Error::Busy)?;
        if !same(e.validator, v) {
            match (e.validator, v) {
                (None, Some(v)) => v.check(b, data)?,
                _ => return Err(Error::Invalid),
            }
        }
        Ok(Some(data))
    }

    /// Read-locks block `b`, checked with `v` (once per cached copy).
    #[inline]
    pub fn read_lock(&self, b: u64, v: Option<ValidatorRef>) -> Result<ReadRef<'_, IO>> {
        if let Some(d) = self.lookup_dirty(b, v)? {
            return Ok(ReadRef::Dirty(d));
        }
        Ok(ReadRef::Held(self.io.read(b, v)?))
    }

    /// Like [`Self::read_lock`] but never waits for I/O and never
    /// allocates: `WouldBlock` if the block is not cached or is
    /// write-locked (where a blocking reader would wait, as upstream's
    /// try-lock does).
    pub fn read_try_lock(&self, b: u64, v: Option<ValidatorRef>) -> Result<ReadRef<'_, IO>> {
        match self.lookup_dirty(b, v) {
            Ok(Some(d)) => return Ok(ReadRef::Dirty(d)),
            Ok(None) => {}
            Err(Error::Busy) => return Err(Error::WouldBlock),
            Err(e) => return Err(e),
        }
        Ok(ReadRef::Held(self.io.try_read(b, v)?))
    }

    /// A private copy of block `b`, checked with `v`.
    pub fn read_copy(&self, b: u64, v: Option<ValidatorRef>) -> Result<PBox<Block>> {
        PBox::try_copy_of(&*self.read_lock(b, v)?)
    }

    /// Stamps a dirty block and hands it to the cache.
    fn write_back(io: &mut IO, unflushed: &mut bool, e: &mut Entry) -> Result<()> {
        if let Some(d) = e.data.as_deref_mut() {
            if let Some(v) = e.validator {
                v.prepare_for_write(e.b, d)?;
            }
            *unflushed = true;
            io.write(e.b, d, e.validator)?;
        }
        Ok(())
    }

    /// Writes back every dirty block whose key is at most `threshold` and
    /// drops it from the dirty set; blocks that fail to write stay dirty.
    /// Returns the first error.
    fn write_back_upto(&mut self, threshold: u64) -> Result<()> {
        let mut first = None;
        let mut kept = 0;
        for i in 0..self.entries.len() {
            let written = match self.entries.get_mut(i) {
                Some(e) if e.data.is_some() && e.stamp <= threshold => {
                    match Self::write_back(&mut self.io, &mut self.unflushed, e) {
                        Ok(()) => true,
                        Err(err) => {
                            first.get_or_insert(err);
                            false
                        }
                    }
                }
                _ => false,
            };
            if !written {
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

    /// When the dirty set is full, writes back a batch of the least
    /// recently used unlocked blocks (a sixteenth of the set), so adding a
    /// block costs O(1) amortised instead of a scan each time.
    fn make_room(&mut self) -> Result<()> {
        if self.entries.len() < self.capacity {
            return Ok(());
        }
        let batch = (self.capacity / 16).max(1);
        self.scratch.clear();
        let stamps = self
            .entries
            .iter()
            .filter(|e| e.data.is_some())
            .map(|e| e.stamp);
        let threshold = match self
            .scratch
            .try_reserve(self.entries.len())
            .and_then(|()| stamps.clone().try_for_each(|k| self.scratch.try_push(k)))
        {
            Ok(()) if self.scratch.len() > batch => {
                // The batch'th oldest stamp: everything up to it goes.
                let (_, kth, _) = self.scratch.select_nth_unstable(batch - 1);
                *kth
            }
            Ok(()) => u64::MAX,
            // No memory for the batch: write back just the oldest block.
            Err(_) => stamps.min().unwrap_or(0),
        };
        self.write_back_upto(threshold)
    }

    fn lock_entry(&mut self, b: u64, v: Option<ValidatorRef>, fill: Fill) -> Result<WriteBlock> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_range(b)?;
        self.clock += 1;
        let epoch = self.epoch;
        match self.find(b) {
            Ok(i) => {
                let e = self.entries.get_mut(i).ok_or(Error::Invalid)?;
                let mut data = e.data.take().ok_or(Error::Busy)?;
                match fill {
                    Fill::Data(d) => data = d,
                    Fill::Zero => data.fill(0),
                    Fill::Read if !same(e.validator, v) => {
                        let r = match (e.validator, v) {
                            (None, Some(v)) => v.check(b, &data),
                            _ => Err(Error::Invalid),
                        };
                        if let Err(err) = r {
                            e.data = Some(data);
                            return Err(err);
                        }
                    }
                    Fill::Read => {}
                }
                e.validator = v;
                Ok(WriteBlock {
                    loc: b,
                    data,
                    validator: v,
                    epoch,
                    was_dirty: true,
                    guard: LeakGuard,
                })
            }
            Err(_) => {
                let data = match fill {
                    Fill::Zero => PBox::<Block>::try_zeroed()?,
                    Fill::Read => self.read_copy(b, v)?,
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
                        validator: v,
                        stamp: self.clock,
                    },
                )?;
                Ok(WriteBlock {
                    loc: b,
                    data,
                    validator: v,
                    epoch,
                    was_dirty: false,
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

    /// Releases a write lock; the block becomes dirty. A lock taken before
    /// [`Self::discard_all`] belongs to a discarded transaction: its
    /// changes are dropped.
    pub fn unlock(&mut self, wb: WriteBlock) {
        let WriteBlock {
            loc,
            data,
            validator,
            epoch,
            guard,
            ..
        } = wb;
        guard.release();
        if epoch != self.epoch {
            return;
        }
        self.clock += 1;
        let stamp = self.clock;
        let slot = self
            .find(loc)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .filter(|e| e.data.is_none());
        match slot {
            Some(e) => {
                e.data = Some(data);
                e.validator = validator;
                e.stamp = stamp;
            }
            None => {
                // Not reachable: the slot was reserved when the block was
                // locked and only `discard_all` (a new epoch) drops it.
                self.deferred.get_or_insert(Error::Invalid);
            }
        }
    }

    /// Releases a write lock throwing its changes away: the block reverts to
    /// what the cache holds. If it was already dirty when locked, those
    /// earlier unwritten changes are lost too: then `Invalid` (the caller's
    /// transaction is damaged).
    pub fn discard(&mut self, wb: WriteBlock) -> Result<()> {
        let WriteBlock {
            loc,
            epoch,
            was_dirty,
            guard,
            ..
        } = wb;
        guard.release();
        if epoch != self.epoch {
            return Ok(());
        }
        if let Ok(i) = self.find(loc) {
            if self.entries.get(i).is_some_and(|e| e.data.is_none()) {
                self.entries.remove(i);
            }
        }
        if was_dirty {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    /// Writes back every dirty block and empties the dirty set (write
    /// locks stay).
    fn write_dirty(&mut self) -> Result<()> {
        let r = self.write_back_upto(u64::MAX);
        match self.deferred.take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    /// Writes every dirty block and makes them stable.
    pub fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.write_dirty()?;
        self.io.flush()?;
        self.unflushed = false;
        Ok(())
    }

    /// Commits with `sb` as the new superblock: every other block must be
    /// stable before `sb` is written, since the device may reorder writes
    /// between flushes. Normally the caller flushed them already (the
    /// transaction manager's `pre_commit`); then this writes `sb` and
    /// flushes once, two flushes per commit as upstream. If anything was
    /// written or dirtied since, it is written and flushed first.
    ///
    /// `sb` is never written if anything before it fails: its changes are
    /// dropped. `Busy` if another write lock is still held (its block
    /// would miss the commit).
    pub fn flush_and_unlock(&mut self, sb: WriteBlock) -> Result<()> {
        let loc = sb.loc;
        let others = self.entries.iter().filter(|e| e.b != loc);
        let locked = others.clone().any(|e| e.data.is_none());
        let dirty = others.clone().any(|e| e.data.is_some());
        let pre = if self.read_only {
            Err(Error::ReadOnly)
        } else if locked {
            Err(Error::Busy)
        } else if dirty || self.unflushed || self.deferred.is_some() {
            self.flush()
        } else {
            Ok(())
        };
        if let Err(e) = pre {
            // The superblock's own earlier changes (if any) go too; the
            // error reported is the one that stopped the commit.
            let _ = self.discard(sb);
            return Err(e);
        }
        self.unlock(sb);
        let r = self.flush();
        if r.is_err() {
            // A failed commit's superblock must not reach the disk later
            // (when the manager is dropped, say): if its write failed it is
            // still dirty, and goes. dm-bufio does not retry a failed
            // write either.
            if let Ok(i) = self.find(loc) {
                if self.entries.get(i).is_some_and(|e| e.data.is_some()) {
                    self.entries.remove(i);
                }
            }
        }
        r
    }

    /// Drops every dirty block without writing it and forgets the write
    /// locks still out (unlocking one later drops its changes), then the
    /// device's clean cached blocks: the transaction is thrown away and
    /// reads see the device, i.e. the last commit. Used to abort.
    pub fn discard_all(&mut self) {
        self.entries.clear();
        self.io.drop_clean();
        self.epoch = self.epoch.wrapping_add(1);
        self.deferred = None;
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
        // Like dm_bufio_client_destroy: dirty blocks are written back (but
        // not flushed). Nobody is left to hear about a failure.
        let _ = self.write_dirty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_data::io::mem::{IoEvent, MemIo};
    use crate::persistent_data::validator::test_validators::{V1, V1_TWIN, V2};
    use core::sync::atomic::{AtomicU64, Ordering};

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
        io.drop_cache();
        let bm = BlockManager::new(io.clone(), 16);
        let r = bm.read_lock(3, Some(&V1)).unwrap();
        assert_eq!(r[100], 7);
        assert_eq!(le64_at(&r[..], 8), 3);
        drop(r);
        // Checked by V1 already; V2 checks it too, and finds V1's checksum.
        assert_eq!(bm.read_lock(3, Some(&V2)).err(), Some(Error::BadChecksum));
        assert!(bm.read_lock(3, Some(&V1)).is_ok());
        // Same contents at another location fail the location check first.
        let img = io.image();
        io.poke(5, 0, &img[3 * 4096..4 * 4096]);
        assert_eq!(
            bm.read_lock(5, Some(&V1)).err(),
            Some(Error::BadBlockNumber)
        );
    }

    /// V1, counting its checks.
    struct Counting(AtomicU64);

    impl Validator for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn check(&self, b: u64, data: &Block) -> Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            V1.check(b, data)
        }
        fn prepare_for_write(&self, b: u64, data: &mut Block) -> Result<()> {
            V1.prepare_for_write(b, data)
        }
    }

    #[test]
    fn clean_reads_are_checked_once_and_never_copied() {
        static COUNTING: Counting = Counting(AtomicU64::new(0));
        let checks = || COUNTING.0.load(Ordering::Relaxed);
        let (io, mut bm) = bm(8);
        let mut w = bm.write_lock_zero(2, Some(&COUNTING)).unwrap();
        w[64] = 9;
        bm.unlock(w);
        bm.flush().unwrap();
        io.drop_cache();
        let loads = io.stats().reads;
        let first = bm.read_lock(2, Some(&COUNTING)).unwrap();
        assert_eq!((checks(), io.stats().reads), (1, loads + 1));
        let second = bm.read_lock(2, Some(&COUNTING)).unwrap();
        // Neither loaded nor checked again, and the very same buffer.
        assert_eq!((checks(), io.stats().reads), (1, loads + 1));
        assert!(core::ptr::eq(&*first, &*second));
        assert!(matches!(second, ReadRef::Held(_)));
        drop((first, second));
        // A block written back is recorded as checked: no check either.
        let w = bm.write_lock(2, Some(&COUNTING)).unwrap();
        bm.unlock(w);
        bm.flush().unwrap();
        assert_eq!(bm.read_lock(2, Some(&COUNTING)).unwrap()[64], 9);
        assert_eq!(checks(), 1);
    }

    #[test]
    fn only_dirty_blocks_are_kept() {
        let (_io, mut bm) = bm(8);
        let w = bm.write_lock_zero(1, Some(&V1)).unwrap();
        bm.unlock(w);
        assert_eq!(bm.nr_dirty(), 1);
        assert!(matches!(
            bm.read_lock(1, Some(&V1)).unwrap(),
            ReadRef::Dirty(_)
        ));
        bm.flush().unwrap();
        assert_eq!(bm.nr_dirty(), 0);
        assert!(bm.entries.is_empty());
        assert!(matches!(
            bm.read_lock(1, Some(&V1)).unwrap(),
            ReadRef::Held(_)
        ));
        assert!(bm.entries.is_empty(), "reads never enter the dirty set");
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
        // Validator mismatch on a dirty block.
        assert_eq!(bm.read_lock(1, Some(&V2)).err(), Some(Error::Invalid));
        assert!(bm.read_lock(1, Some(&V1)).is_ok());
    }

    #[test]
    fn validators_compared_by_identity_not_name() {
        let (io, mut bm) = bm(8);
        let w = bm.write_lock_zero(2, Some(&V1)).unwrap();
        bm.unlock(w);
        // A dirty block locked with a different validator.
        assert_eq!(bm.read_lock(2, Some(&V1_TWIN)).err(), Some(Error::Invalid));
        assert_eq!(bm.write_lock(2, Some(&V1_TWIN)).err(), Some(Error::Invalid));
        // Written back, the cache records V1 as its checker: the twin is
        // not trusted on that account, it checks (and rejects) V1's stamp.
        bm.flush().unwrap();
        assert_eq!(
            bm.read_lock(2, Some(&V1_TWIN)).err(),
            Some(Error::BadChecksum)
        );
        assert_eq!(
            bm.write_lock(2, Some(&V1_TWIN)).err(),
            Some(Error::BadChecksum)
        );
        io.drop_cache();
        assert!(bm.read_lock(2, Some(&V1)).is_ok());
    }

    #[test]
    fn dropped_write_lock_is_counted() {
        let (_io, mut bm) = bm(8);
        let w = bm.write_lock_zero(1, None).unwrap();
        bm.unlock(w);
        bm.flush().unwrap();
        let w = bm.write_lock(1, None).unwrap();
        bm.discard(w).unwrap();
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
    fn discarding_a_dirty_block_reports_the_lost_changes() {
        let (_io, mut bm) = bm(8);
        let mut w = bm.write_lock_zero(1, Some(&V1)).unwrap();
        w[100] = 1;
        bm.unlock(w);
        let mut w = bm.write_lock(1, Some(&V1)).unwrap();
        w[100] = 2;
        assert_eq!(bm.discard(w), Err(Error::Invalid));
        assert_eq!(bm.nr_dirty(), 0);
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
        // The oldest went first.
        assert!(bm.find(0).is_err() && bm.find(39).is_ok());
        for b in 0..40u64 {
            assert_eq!(bm.read_lock(b, Some(&V1)).unwrap()[64], b as u8);
        }
        assert_eq!(bm.read_lock(64, None).err(), Some(Error::Io));
        assert_eq!(bm.write_lock_zero(64, None).err(), Some(Error::Io));
        bm.flush().unwrap();
        assert_eq!(io.unflushed_blocks().len(), 0);
    }

    #[test]
    fn flush_and_unlock_orders_superblock_last() {
        use IoEvent::*;
        let (io, mut bm) = bm(8);
        for b in [3, 1] {
            let w = bm.write_lock_zero(b, Some(&V1)).unwrap();
            bm.unlock(w);
        }
        let mut sb = bm.write_lock_zero(0, Some(&V2)).unwrap();
        sb[100] = 1;
        io.start_log();
        bm.flush_and_unlock(sb).unwrap();
        assert_eq!(io.take_log(), [Write(1), Write(3), Flush, Write(0), Flush]);
        // Everything flushed beforehand: the superblock and one flush.
        let w = bm.write_lock_zero(4, Some(&V1)).unwrap();
        bm.unlock(w);
        bm.flush().unwrap();
        let sb = bm.write_lock(0, Some(&V2)).unwrap();
        io.start_log();
        bm.flush_and_unlock(sb).unwrap();
        assert_eq!(io.take_log(), [Write(0), Flush]);
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
        // Another write lock still out: refused, nothing written.
        let w = bm.write_lock(2, Some(&V1)).unwrap();
        let sb = bm.write_lock(0, Some(&V2)).unwrap();
        io.start_log();
        assert_eq!(bm.flush_and_unlock(sb).err(), Some(Error::Busy));
        assert_eq!(io.take_log(), []);
        bm.unlock(w);
    }

    #[test]
    fn try_lock_discard_all_and_faults() {
        let (io, mut bm) = bm(8);
        io.model_cache(true);
        assert_eq!(bm.read_try_lock(2, None).err(), Some(Error::WouldBlock));
        drop(bm.read_lock(2, None).unwrap());
        assert!(bm.read_try_lock(2, None).is_ok());
        // A prefetched block is readable without I/O.
        assert_eq!(bm.read_try_lock(3, None).err(), Some(Error::WouldBlock));
        bm.prefetch(3);
        assert!(bm.read_try_lock(3, None).is_ok());
        let w = bm.write_lock_zero(4, Some(&V1)).unwrap();
        bm.unlock(w);
        io.fail_writes_after(Some(0));
        assert_eq!(bm.flush().err(), Some(Error::Io));
        io.clear_faults();
        // The dirty block survived the failed flush; discarding drops it.
        assert_eq!(bm.nr_dirty(), 1);
        let late = bm.write_lock_zero(5, Some(&V1)).unwrap();
        bm.discard_all();
        assert_eq!(bm.entries.len(), 0);
        // A lock from before the discard is dropped, not written back.
        bm.unlock(late);
        assert_eq!(bm.nr_dirty(), 0);
        assert_eq!(bm.leaked_write_locks(), 0);
        assert_eq!(
            bm.read_lock(4, Some(&V1)).err(),
            Some(Error::BadBlockNumber)
        );
    }
}
