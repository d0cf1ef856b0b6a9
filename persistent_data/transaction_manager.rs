// SPDX-License-Identifier: GPL-2.0

//! The transaction manager: copy-on-write shadowing over the block manager,
//! and commit.
//!
//! A transaction never overwrites a block the last commit references. To
//! change such a block it is *shadowed*: copied to a freshly allocated
//! block, with the original's reference dropped. Blocks allocated or
//! shadowed in this transaction (the shadow set) may be changed in place.
//! A commit writes and flushes every other block, only then writes the
//! superblock (the only in-place update), then flushes again, so a crash
//! at any moment leaves either the old or the new transaction on disk.
//!
//! The transaction manager owns the metadata space map (which stores its
//! own structures through this transaction manager; see
//! [`crate::persistent_data::space_map::metadata`]).
//!
//! Readers go through [`BlockReader`], implemented both by the transaction
//! manager and by its [`NonBlocking`] view (upstream's non-blocking clone),
//! which only reads cached blocks and queues the others for prefetch.
//!
//! **Poisoning.** A mutating operation that fails half way (say an insert
//! that shadowed part of a path, dropping the originals' references, then
//! ran out of space) leaves the transaction inconsistent, and its changes
//! cannot be undone piecemeal. Committing it would write under-counted
//! metadata: a block still in use could be handed out again. So such a
//! failure *poisons* the transaction: [`TransactionManager::pre_commit`],
//! [`TransactionManager::commit`] and every further change are refused
//! with [`Error::Poisoned`] until [`TransactionManager::abort`] throws the
//! transaction away and reopens the last commit. An operation that fails
//! before changing anything (a missing key, no free data block) leaves the
//! transaction usable. Callers wrap their own multi-step changes in
//! [`TransactionManager::mutate`] to get the same rule.

use crate::persistent_data::block_manager::{BlockManager, ReadRef, ValidatorRef, WriteBlock};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::shim::{PBox, PVec};
use crate::persistent_data::space_map::metadata::MetadataSm;
use crate::persistent_data::space_map::SM_ROOT_SIZE;
use core::sync::atomic::{AtomicU64, Ordering};

/// Read access to metadata blocks, blocking or not.
pub trait BlockReader {
    /// The block I/O underneath.
    type Io: BlockIo;
    /// Read-locks block `b`, checked with `v`.
    fn read_lock(&self, b: u64, v: ValidatorRef) -> Result<ReadRef<'_, Self::Io>>;
}

const PREFETCH_SLOTS: usize = 128;
const PREFETCH_EMPTY: u64 = u64::MAX;

/// Blocks a non-blocking reader missed, to be read in later. Lossy on hash
/// collisions, like upstream: it is only a hint.
struct PrefetchSet {
    /// `PREFETCH_SLOTS` slots, filled on the heap one by one: as an array
    /// built by value (1 KiB) it sat on the kernel stack of every open.
    slots: PVec<AtomicU64>,
}

impl PrefetchSet {
    fn new() -> Result<Self> {
        let mut slots = PVec::try_with_capacity(PREFETCH_SLOTS)?;
        for _ in 0..PREFETCH_SLOTS {
            slots.try_push(AtomicU64::new(PREFETCH_EMPTY))?;
        }
        Ok(PrefetchSet { slots })
    }

    fn add(&self, b: u64) {
        let h = (b.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as usize % PREFETCH_SLOTS;
        if let Some(s) = self.slots.get(h) {
            let _ = s.compare_exchange(PREFETCH_EMPTY, b, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// A set of block numbers: open addressing with linear probing in a
/// power-of-two table kept at most half full, so lookups and insertions are
/// O(1) on average (a sorted vector made big transactions quadratic).
/// Growth is fallible; clearing keeps the table unless it is mostly empty
/// and large, so one huge transaction does not tax every later commit.
struct BlockSet {
    /// `EMPTY` or a member.
    slots: PVec<u64>,
    len: usize,
}

impl BlockSet {
    /// No block has this number (it is past any device's last block).
    const EMPTY: u64 = u64::MAX;
    const MIN_SLOTS: usize = 64;
    /// Tables larger than this are freed by `clear` when mostly unused.
    const KEEP_SLOTS: usize = 4096;

    const fn new() -> Self {
        BlockSet {
            slots: PVec::new(),
            len: 0,
        }
    }

    fn home(b: u64, mask: usize) -> usize {
        // Fibonacci hashing; the high half of the product is well mixed.
        (b.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
    }

    fn contains(&self, b: u64) -> bool {
        let mask = self.slots.len().wrapping_sub(1);
        if self.slots.is_empty() || b == Self::EMPTY {
            return false;
        }
        let mut i = Self::home(b, mask);
        loop {
            match self.slots.get(i) {
                Some(&x) if x == b => return true,
                Some(&x) if x != Self::EMPTY => i = (i + 1) & mask,
                _ => return false,
            }
        }
    }

    /// Places `b` (not a member, table has room) without growing.
    fn place(slots: &mut [u64], b: u64) -> bool {
        let mask = slots.len().wrapping_sub(1);
        let mut i = Self::home(b, mask);
        // At most half full, so an empty slot is always found.
        for _ in 0..slots.len() {
            match slots.get_mut(i) {
                Some(x) if *x == Self::EMPTY => {
                    *x = b;
                    return true;
                }
                Some(x) if *x == b => return false,
                _ => i = (i + 1) & mask,
            }
        }
        false
    }

    fn grow(&mut self) -> Result<()> {
        let n = self
            .slots
            .len()
            .checked_mul(2)
            .ok_or(Error::NoMem)?
            .max(Self::MIN_SLOTS);
        let mut slots = PVec::try_with_capacity(n)?;
        slots.try_resize(n, Self::EMPTY)?;
        for &b in self.slots.iter().filter(|&&b| b != Self::EMPTY) {
            Self::place(&mut slots, b);
        }
        self.slots = slots;
        Ok(())
    }

    /// Adds `b`; fails only for lack of memory (then `b` is not added).
    fn insert(&mut self, b: u64) -> Result<()> {
        if b == Self::EMPTY {
            return Err(Error::Invalid);
        }
        if self.len.saturating_add(1).saturating_mul(2) > self.slots.len() {
            if self.contains(b) {
                return Ok(());
            }
            self.grow()?;
        }
        if Self::place(&mut self.slots, b) {
            self.len += 1;
        }
        Ok(())
    }

    fn clear(&mut self) {
        if self.slots.len() > Self::KEEP_SLOTS && self.len.saturating_mul(8) < self.slots.len() {
            self.slots = PVec::new();
        } else {
            self.slots.iter_mut().for_each(|x| *x = Self::EMPTY);
        }
        self.len = 0;
    }
}

/// Copy-on-write transactions over a block manager.
pub struct TransactionManager<IO: BlockIo> {
    pub(crate) bm: BlockManager<IO>,
    /// On the heap, like the block manager's cache: the manager is returned
    /// and stored by value, and every copy of it on the way sits on the
    /// (kernel) stack.
    pub(crate) sm: PBox<MetadataSm>,
    /// Blocks allocated or shadowed in this transaction.
    shadows: BlockSet,
    prefetches: PrefetchSet,
    /// Changes made so far (write locks handed out, counts queued), to tell
    /// a failed operation that changed something from one that did not.
    changes: u64,
    /// A mutating operation failed half way: see the module documentation.
    poisoned: bool,
}

impl<IO: BlockIo> TransactionManager<IO> {
    fn new(bm: BlockManager<IO>) -> Result<Self> {
        Ok(TransactionManager {
            bm,
            sm: PBox::try_new(MetadataSm::new()?)?,
            shadows: BlockSet::new(),
            prefetches: PrefetchSet::new()?,
            changes: 0,
            poisoned: false,
        })
    }

    /// Formats a fresh metadata space map over the whole device (capped at
    /// the metadata space map's maximum); `sb_location` and the space map's
    /// own blocks get a reference count of one. Nothing is committed until
    /// the caller writes a superblock with [`Self::commit`].
    #[inline(never)]
    pub fn create(bm: BlockManager<IO>, sb_location: u64) -> Result<Self> {
        let mut tm = Self::new(bm)?;
        tm.sm_format(sb_location)?;
        Ok(tm)
    }

    /// Opens existing metadata whose space map root (as stored in the
    /// superblock) is `sm_root`.
    #[inline(never)]
    pub fn open(bm: BlockManager<IO>, sm_root: &[u8]) -> Result<Self> {
        let mut tm = Self::new(bm)?;
        tm.sm_open(sm_root)?;
        Ok(tm)
    }

    /// True once a mutating operation failed half way: commits and changes
    /// are refused until [`Self::abort`].
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check_usable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Notes a change to the transaction (see [`Self::mutate`]).
    pub(crate) fn changed(&mut self) {
        self.changes = self.changes.wrapping_add(1);
    }

    /// Runs `f`, an operation that changes the transaction. Refused with
    /// `Poisoned` on a poisoned transaction; if `f` fails after it changed
    /// anything, the transaction is poisoned. Operations nest.
    pub fn mutate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_usable()?;
        let before = self.changes;
        let r = f(self);
        if r.is_err() && self.changes != before {
            self.poisoned = true;
        }
        r
    }

    /// Throws the transaction away and reopens the last commit: every
    /// uncommitted change is dropped unwritten (write locks still out are
    /// forgotten; unlocking one later drops its changes), then `sm_root`
    /// is called to read the metadata space map root from the committed
    /// superblock (it sees the device as the last commit left it). Clears
    /// the poison; if reopening fails, the transaction stays poisoned and
    /// the abort can be retried.
    pub fn abort(
        &mut self,
        sm_root: impl FnOnce(&BlockManager<IO>) -> Result<[u8; SM_ROOT_SIZE]>,
    ) -> Result<()> {
        self.bm.discard_all();
        self.shadows.clear();
        self.poisoned = true;
        let root = sm_root(&self.bm)?;
        self.sm_open(&root)?;
        self.poisoned = false;
        Ok(())
    }

    /// The block manager.
    pub fn bm(&self) -> &BlockManager<IO> {
        &self.bm
    }

    /// The block manager, mutably (read-only switch, raw superblock locks).
    pub fn bm_mut(&mut self) -> &mut BlockManager<IO> {
        &mut self.bm
    }

    /// Tears the transaction manager down, keeping the block manager
    /// (dirty blocks included; [`Self::abort`] drops them instead).
    pub fn into_bm(self) -> BlockManager<IO> {
        self.bm
    }

    fn is_shadow(&self, b: u64) -> bool {
        self.shadows.contains(b)
    }

    /// Adds `b` to the shadow set. Fails only for lack of memory: an entry
    /// must not be lost, or re-locking the block in place later (as
    /// [`Self::write_lock_shadowed`] does) would be refused.
    fn insert_shadow(&mut self, b: u64) -> Result<()> {
        self.shadows.insert(b)
    }

    /// Read-locks `b`.
    pub fn read_lock(&self, b: u64, v: ValidatorRef) -> Result<ReadRef<'_, IO>> {
        self.bm.read_lock(b, Some(v))
    }

    /// Allocates a block (count 1), zeroes and write-locks it.
    pub fn new_block(&mut self, v: ValidatorRef) -> Result<WriteBlock> {
        self.mutate(|tm| {
            let b = tm.sm_new_block()?;
            tm.changed();
            // New blocks need no further shadowing this transaction. A
            // failure from here on poisons the transaction (`b` is counted
            // but unused), so nothing is rolled back by hand.
            tm.insert_shadow(b)?;
            tm.bm.write_lock_zero(b, Some(v))
        })
    }

    /// Write-locks a block that may be changed in this transaction: `orig`
    /// itself if it was already shadowed and is not shared, else a copy at
    /// a new location. The flag says whether `orig` was shared, in which
    /// case the caller must take a reference on everything the block
    /// points to (sharing is pushed down lazily).
    pub fn shadow_block(&mut self, orig: u64, v: ValidatorRef) -> Result<(WriteBlock, bool)> {
        self.mutate(|tm| {
            let inc_children = tm.sm_count_is_more_than_one(orig)?;
            if tm.is_shadow(orig) && !inc_children {
                tm.changed();
                return Ok((tm.bm.write_lock(orig, Some(v))?, false));
            }
            let orig_end = orig.checked_add(1).ok_or(Error::Invalid)?;
            // Copy first: if the original cannot be read, nothing changed.
            let copy = tm.bm.read_copy(orig, Some(v))?;
            let new = tm.sm_new_block()?;
            tm.changed();
            tm.insert_shadow(new)?;
            tm.sm_dec_range(orig, orig_end)?;
            let wb = tm.bm.write_lock_with(new, Some(v), copy)?;
            Ok((wb, inc_children))
        })
    }

    /// Write-locks `b` without shadowing. Only for blocks known to be in
    /// the shadow set (re-locking a block this transaction already owns).
    pub fn write_lock_shadowed(&mut self, b: u64, v: ValidatorRef) -> Result<WriteBlock> {
        self.mutate(|tm| {
            if !tm.is_shadow(b) {
                return Err(Error::Invalid);
            }
            tm.changed();
            tm.bm.write_lock(b, Some(v))
        })
    }

    /// Releases a write lock.
    pub fn unlock(&mut self, wb: WriteBlock) {
        self.bm.unlock(wb)
    }

    /// Takes a reference on `b`.
    pub fn inc(&mut self, b: u64) -> Result<()> {
        self.sm_inc_range(b, b.checked_add(1).ok_or(Error::Invalid)?)
    }

    /// Takes a reference on each block in `[b, e)`.
    pub fn inc_range(&mut self, b: u64, e: u64) -> Result<()> {
        self.sm_inc_range(b, e)
    }

    /// Drops a reference on `b`.
    pub fn dec(&mut self, b: u64) -> Result<()> {
        self.sm_dec_range(b, b.checked_add(1).ok_or(Error::Invalid)?)
    }

    /// Drops a reference on each block in `[b, e)`.
    pub fn dec_range(&mut self, b: u64, e: u64) -> Result<()> {
        self.sm_dec_range(b, e)
    }

    /// Reference count of `b`.
    pub fn ref_count(&self, b: u64) -> Result<u32> {
        self.sm_count(b)
    }

    /// True if `b` has more than one reference.
    pub fn block_is_shared(&self, b: u64) -> Result<bool> {
        self.sm_count_is_more_than_one(b)
    }

    /// Commits the metadata space map and flushes (the first of a
    /// commit's two flushes): everything but the superblock is then
    /// stable. Refused on a poisoned transaction; a failure poisons it.
    pub fn pre_commit(&mut self) -> Result<()> {
        self.check_usable()?;
        let r = self.sm_commit().and_then(|()| self.bm.flush());
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Ends the transaction with `sb`, the already updated superblock:
    /// writes it and flushes (the second flush). Should any other block
    /// have been written or dirtied since [`Self::pre_commit`], it is
    /// written and flushed first, so the superblock never reaches the disk
    /// before what it references. If that fails the superblock is not
    /// written.
    ///
    /// On a poisoned transaction `sb` is dropped unwritten and the commit
    /// refused with `Poisoned`; a failed commit poisons the transaction.
    pub fn commit(&mut self, sb: WriteBlock) -> Result<()> {
        if let Err(e) = self.check_usable() {
            // The refusal is what matters; the superblock's own earlier
            // changes (if any) belong to the poisoned transaction too.
            let _ = self.bm.discard(sb);
            return Err(e);
        }
        self.shadows.clear();
        let r = self.bm.flush_and_unlock(sb);
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// A view that only reads cached blocks (for lookups that must not
    /// sleep); misses return `WouldBlock` and are queued for prefetch.
    pub fn non_blocking(&self) -> NonBlocking<'_, IO> {
        NonBlocking { tm: self }
    }

    /// Starts reading the blocks non-blocking readers missed.
    pub fn issue_prefetches(&self) {
        for s in self.prefetches.slots.iter() {
            let b = s.swap(PREFETCH_EMPTY, Ordering::Relaxed);
            if b != PREFETCH_EMPTY {
                self.bm.prefetch(b);
            }
        }
    }
}

impl<IO: BlockIo> BlockReader for TransactionManager<IO> {
    type Io = IO;
    #[inline]
    fn read_lock(&self, b: u64, v: ValidatorRef) -> Result<ReadRef<'_, IO>> {
        self.bm.read_lock(b, Some(v))
    }
}

/// Calls `f(begin, end)` for each run of consecutive block numbers in a
/// packed array of little-endian u64 values.
pub fn with_runs(values_le: &[u8], mut f: impl FnMut(u64, u64) -> Result<()>) -> Result<()> {
    let mut run: Option<(u64, u64)> = None;
    for c in values_le.chunks_exact(8) {
        let b = u64::from_le_bytes(c.try_into().map_err(|_| Error::Invalid)?);
        run = match run {
            Some((s, e)) if e == b => Some((s, e.checked_add(1).ok_or(Error::Invalid)?)),
            Some((s, e)) => {
                f(s, e)?;
                Some((b, b.checked_add(1).ok_or(Error::Invalid)?))
            }
            None => Some((b, b.checked_add(1).ok_or(Error::Invalid)?)),
        };
    }
    if let Some((s, e)) = run {
        f(s, e)?;
    }
    Ok(())
}

/// Upstream's non-blocking clone: reads only what is cached, for the
/// lookups a target makes on its I/O path (thin's map function).
///
/// A read never waits for I/O and never allocates: a block that is not
/// cached, or is write-locked, is `WouldBlock`, and the block is queued for
/// [`TransactionManager::issue_prefetches`]. `WouldBlock` and `NoMem` mean
/// "defer the bio to the worker". Callers on an I/O path also run inside
/// `noio_scope` (`rust/dm/noio.rs`), so that anything that does allocate
/// cannot recurse into I/O on the device being served. The btree queries
/// ([`crate::persistent_data::btree::lookup`], `lookup_next`,
/// `find_lowest_key`/`find_highest_key`) allocate nothing; cursors and
/// walks do, and are not for the I/O path.
pub struct NonBlocking<'a, IO: BlockIo> {
    tm: &'a TransactionManager<IO>,
}

impl<IO: BlockIo> BlockReader for NonBlocking<'_, IO> {
    type Io = IO;
    fn read_lock(&self, b: u64, v: ValidatorRef) -> Result<ReadRef<'_, IO>> {
        let r = self.tm.bm.read_try_lock(b, Some(v));
        if let Err(Error::WouldBlock) = r {
            self.tm.prefetches.add(b);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::{BlockSet, TransactionManager};
    use crate::persistent_data::block_manager::BlockManager;
    use crate::persistent_data::btree::{self, PlainValues};
    use crate::persistent_data::check::{Mismatch, RefCounts};
    use crate::persistent_data::endian::le64;
    use crate::persistent_data::error::{Error, Result};
    use crate::persistent_data::io::mem::{IoEvent, MemIo};
    use crate::persistent_data::shim::PVec;
    use crate::persistent_data::space_map::MetadataSpaceMap;
    use crate::persistent_data::validator::test_validators::V1 as SB;

    /// A btree of u64 values and its superblock at block 0: the metadata
    /// space map root at 16, the tree's root at 48.
    struct Tiny {
        io: MemIo,
        tm: TransactionManager<MemIo>,
        root: u64,
    }

    impl Tiny {
        fn format(nr_blocks: u64) -> Tiny {
            let io = MemIo::new(nr_blocks);
            let mut tm = TransactionManager::create(BlockManager::new(io.clone(), 64), 0).unwrap();
            let root = btree::empty(&mut tm, 8).unwrap();
            let mut t = Tiny { io, tm, root };
            t.commit().unwrap();
            t
        }

        fn insert(&mut self, k: u64) -> Result<()> {
            self.root = btree::insert(
                &mut self.tm,
                &mut PlainValues(8),
                self.root,
                &[k],
                &k.to_le_bytes(),
            )?;
            Ok(())
        }

        fn commit(&mut self) -> Result<()> {
            self.tm.pre_commit()?;
            let mut sb = self.tm.bm_mut().write_lock_zero(0, Some(&SB))?;
            if let Err(e) = self.tm.sm_copy_root(&mut sb[16..48]) {
                self.tm.unlock(sb);
                return Err(e);
            }
            sb[48..56].copy_from_slice(&self.root.to_le_bytes());
            self.tm.commit(sb)
        }

        fn abort(&mut self) -> Result<()> {
            let mut root = 0;
            self.tm.abort(|bm| {
                let sb = bm.read_lock(0, Some(&SB))?;
                root = le64(&sb[..], 48)?;
                let mut sm = [0u8; 32];
                sm.copy_from_slice(&sb[16..48]);
                Ok(sm)
            })?;
            self.root = root;
            Ok(())
        }

        /// Differences between the metadata space map and a recount.
        fn recount(&self) -> PVec<Mismatch> {
            let mut rc = RefCounts::new(self.tm.sm_nr_blocks()).unwrap();
            rc.inc(0).unwrap();
            rc.count_metadata_sm(&self.tm, &self.tm.sm_root()).unwrap();
            rc.count_btree(&self.tm, self.root, 1, &mut |_, _| Ok(()))
                .unwrap();
            rc.verify(&self.tm, &MetadataSpaceMap).unwrap()
        }
    }

    #[test]
    fn a_half_done_operation_poisons_the_transaction_until_abort() {
        let mut t = Tiny::format(64);
        for k in 0..300 {
            t.insert(k * 7).unwrap();
        }
        t.commit().unwrap();
        let committed = t.root;
        // Failing before any change is harmless.
        assert_eq!(
            btree::remove(&mut t.tm, &mut PlainValues(8), t.root, &[1]),
            Err(Error::NoData)
        );
        assert!(!t.tm.is_poisoned());
        // Fill the device until an insert runs out of space half way (its
        // path is already shadowed, the originals' references dropped).
        let mut k = 1;
        let err = loop {
            if let Err(e) = t.insert(k) {
                break e;
            }
            k += 7;
        };
        assert_eq!(err, Error::NoSpace);
        assert!(t.tm.is_poisoned());
        assert_eq!(t.tm.pre_commit(), Err(Error::Poisoned));
        let sb = t.tm.bm_mut().write_lock_zero(0, Some(&SB)).unwrap();
        t.io.start_log();
        assert_eq!(t.tm.commit(sb), Err(Error::Poisoned));
        assert_eq!(t.io.take_log(), [], "a refused commit writes nothing");
        assert_eq!(t.insert(3), Err(Error::Poisoned));
        // Abort: back to the last commit, counts intact, usable again.
        t.abort().unwrap();
        assert!(!t.tm.is_poisoned());
        assert_eq!(t.root, committed);
        assert_eq!(t.recount()[..], []);
        let mut v = [0u8; 8];
        btree::lookup(&t.tm, t.root, &[7], &mut v).unwrap();
        assert_eq!(
            btree::lookup(&t.tm, t.root, &[1], &mut v),
            Err(Error::NoData)
        );
        t.insert(1).unwrap();
        t.commit().unwrap();
        assert_eq!(t.recount()[..], []);
        assert_eq!(t.tm.bm().leaked_write_locks(), 0);
    }

    #[test]
    fn non_blocking_lookups_never_read_the_device() {
        let mut t = Tiny::format(1024);
        for k in 0..3000 {
            t.insert(k).unwrap();
        }
        t.commit().unwrap();
        t.io.model_cache(true);
        t.io.drop_cache();
        let nb = t.tm.non_blocking();
        let mut v = [0u8; 8];
        let mut rounds = 0;
        loop {
            let reads = t.io.stats().reads;
            match btree::lookup(&nb, t.root, &[2999], &mut v) {
                Ok(()) => break,
                Err(e) => assert_eq!(e, Error::WouldBlock),
            }
            assert_eq!(t.io.stats().reads, reads, "a miss must not read");
            // The worker's part: read in what the lookup missed.
            t.tm.issue_prefetches();
            assert!(t.io.stats().reads > reads, "the miss was queued");
            rounds += 1;
            assert!(rounds < 4, "one round per level");
        }
        assert_eq!(u64::from_le_bytes(v), 2999);
        assert!(rounds >= 2);
    }

    #[test]
    fn a_commit_flushes_twice() {
        let mut t = Tiny::format(1024);
        for k in 0..2000 {
            t.insert(k * 13).unwrap();
        }
        t.io.start_log();
        t.commit().unwrap();
        let log = t.io.take_log();
        let flushes: std::vec::Vec<usize> = (0..log.len())
            .filter(|&i| log[i] == IoEvent::Flush)
            .collect();
        assert_eq!(flushes.len(), 2, "{log:?}");
        // Everything else, a flush, then the superblock alone, a flush.
        assert!(flushes[0] > 0);
        assert_eq!(log[flushes[0] + 1..], [IoEvent::Write(0), IoEvent::Flush]);
    }

    #[test]
    fn block_set_matches_a_model() {
        let mut set = BlockSet::new();
        let mut model = std::collections::BTreeSet::new();
        assert!(!set.contains(0));
        let mut x = 12345u64;
        for round in 0..3 {
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Clustered and sparse block numbers, with repeats.
                let b = if x % 3 == 0 { x % 5000 } else { x >> (x % 40) };
                set.insert(b).unwrap();
                model.insert(b);
            }
            assert_eq!(set.len, model.len());
            for &b in &model {
                assert!(set.contains(b));
            }
            for b in 5000..6000u64 {
                assert_eq!(set.contains(b), model.contains(&b), "round {round}");
            }
            assert!(!set.contains(u64::MAX));
            assert!(set.insert(u64::MAX).is_err());
            set.clear();
            model.clear();
            assert!(!set.contains(1));
        }
    }
}
