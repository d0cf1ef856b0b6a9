// SPDX-License-Identifier: GPL-2.0

//! The metadata space map: reference counts of the metadata device itself.
//!
//! Its bitmaps, index block and ref-count btree are metadata blocks, changed
//! through the same transaction manager they account for. Changing them can
//! therefore allocate or free blocks, i.e. re-enter the space map. Nested
//! increments and decrements are queued (at most [`MAX_RECURSIVE_OPS`]) and
//! applied when the outermost operation finishes; counting queries add the
//! queued adjustments in.
//!
//! While the space map is being built (format, and growth into new space)
//! it runs a bootstrap allocator that hands out blocks linearly from a
//! cursor and only queues reference changes; the blocks it handed out are
//! then counted in one go.

use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::shim::PVec;
use crate::persistent_data::space_map::common::{self, LlCtx, LlDisk, MAX_METADATA_BLOCKS};
use crate::persistent_data::space_map::{SmRoot, SpaceMap, SM_ROOT_SIZE};
use crate::persistent_data::transaction_manager::TransactionManager;

/// Most reference changes that can be queued while recursing.
pub const MAX_RECURSIVE_OPS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BopKind {
    Inc,
    Dec,
}

#[derive(Clone, Copy, Debug)]
struct Bop {
    kind: BopKind,
    b: u64,
    e: u64,
}

/// A free-space threshold that fires once when crossed downwards.
#[derive(Default)]
struct Threshold {
    value: Option<u64>,
    current: Option<u64>,
    triggered: bool,
}

impl Threshold {
    fn below(&self, v: u64) -> bool {
        matches!(self.value, Some(t) if v <= t)
    }

    fn check(&mut self, v: u64) {
        let already = matches!(self.current, Some(c) if self.below(c));
        if self.below(v) && !already {
            self.triggered = true;
        }
        self.current = Some(v);
    }
}

/// State of the metadata space map (kept inside the transaction manager).
pub struct MetadataSm {
    pub(crate) ll: LlDisk,
    pub(crate) old_ll: LlDisk,
    begin: u64,
    recursion: u32,
    allocated_this_transaction: u64,
    /// Queued reference changes, in order.
    bops: PVec<Bop>,
    bootstrap: bool,
    threshold: Threshold,
}

impl MetadataSm {
    pub(crate) fn new() -> Result<Self> {
        Ok(MetadataSm {
            ll: LlDisk::new_meta()?,
            old_ll: LlDisk::new_meta()?,
            begin: 0,
            recursion: 0,
            allocated_this_transaction: 0,
            bops: PVec::try_with_capacity(16)?,
            bootstrap: false,
            threshold: Threshold::default(),
        })
    }

    fn adjustment(&self, b: u64) -> i64 {
        self.bops
            .iter()
            .filter(|op| b >= op.b && b < op.e)
            .map(|op| if op.kind == BopKind::Inc { 1 } else { -1 })
            .sum()
    }
}

impl<IO: BlockIo> LlCtx<IO> for TransactionManager<IO> {
    fn tm(&mut self) -> &mut TransactionManager<IO> {
        self
    }
    fn ll(&mut self) -> &mut LlDisk {
        &mut self.sm.ll
    }
    fn both(&self) -> (&TransactionManager<IO>, &LlDisk) {
        (self, &self.sm.ll)
    }
}

impl<IO: BlockIo> TransactionManager<IO> {
    fn push_bop(&mut self, kind: BopKind, b: u64, e: u64) -> Result<()> {
        if self.sm.bops.len() >= MAX_RECURSIVE_OPS {
            return Err(Error::NoMem);
        }
        self.changed();
        self.sm.bops.try_push(Bop { kind, b, e })
    }

    fn apply_bops(&mut self) -> Result<()> {
        // Applying one may queue more; keep going until none are left.
        while let Some(op) = self.sm.bops.first().copied() {
            match op.kind {
                BopKind::Inc => common::inc(self, op.b, op.e)?,
                BopKind::Dec => common::dec(self, op.b, op.e)?,
            };
            self.sm.bops.remove(0);
        }
        Ok(())
    }

    fn sm_in(&mut self) {
        self.sm.recursion += 1;
    }

    fn sm_out(&mut self) -> Result<()> {
        let r = match self.sm.recursion {
            0 => Err(Error::Invalid),
            1 => self.apply_bops(),
            _ => Ok(()),
        };
        self.sm.recursion = self.sm.recursion.saturating_sub(1);
        r
    }

    fn sm_apply(&mut self, kind: BopKind, b: u64, e: u64) -> Result<()> {
        if self.sm.bootstrap || self.sm.recursion > 0 {
            return self.push_bop(kind, b, e);
        }
        self.sm_in();
        let r = match kind {
            BopKind::Inc => common::inc(self, b, e),
            BopKind::Dec => common::dec(self, b, e),
        };
        let r2 = self.sm_out();
        r.and(r2)
    }

    pub(crate) fn sm_format(&mut self, sb: u64) -> Result<()> {
        self.sm.begin = sb.checked_add(1).ok_or(Error::Invalid)?;
        self.sm.bootstrap = true;
        let r = (|| {
            let wb = self.new_block(&common::INDEX_VALIDATOR)?;
            self.sm.ll.bitmap_root = wb.loc();
            self.unlock(wb);
            self.sm.ll.ref_count_root = crate::persistent_data::btree::empty(self, 4)?;
            let nr = self.bm.nr_blocks().min(MAX_METADATA_BLOCKS);
            common::extend(self, nr)
        })();
        self.sm.bootstrap = false;
        r?;
        // Count the superblock and everything the bootstrap handed out.
        let end = self.sm.begin;
        self.push_bop(BopKind::Inc, sb, end)?;
        self.apply_bops()?;
        self.sm_commit()
    }

    pub(crate) fn sm_open(&mut self, root: &[u8]) -> Result<()> {
        let root = SmRoot::unpack(root)?;
        let ll = common::open_meta(self, &root)?;
        self.sm.old_ll = ll.try_clone()?;
        self.sm.ll = ll;
        self.sm.begin = 0;
        self.sm.recursion = 0;
        self.sm.allocated_this_transaction = 0;
        self.sm.bops.clear();
        Ok(())
    }

    /// Metadata blocks covered.
    pub fn sm_nr_blocks(&self) -> u64 {
        self.sm.ll.nr_blocks
    }

    /// Metadata blocks still allocatable in this transaction.
    pub fn sm_nr_free(&self) -> u64 {
        if self.sm.bootstrap {
            return self.sm.ll.nr_blocks.saturating_sub(self.sm.begin);
        }
        self.sm
            .old_ll
            .nr_blocks
            .saturating_sub(self.sm.old_ll.nr_allocated)
            .saturating_sub(self.sm.allocated_this_transaction)
    }

    /// Reference count of metadata block `b`.
    pub fn sm_count(&self, b: u64) -> Result<u32> {
        if self.sm.bootstrap {
            return Ok(u32::from(b < self.sm.begin));
        }
        let c = i64::from(common::lookup(self, &self.sm.ll, b)?) + self.sm.adjustment(b);
        u32::try_from(c).map_err(|_| Error::Invalid)
    }

    /// True if metadata block `b` has more than one reference.
    pub fn sm_count_is_more_than_one(&self, b: u64) -> Result<bool> {
        if self.sm.bootstrap {
            return Ok(false);
        }
        let adj = self.sm.adjustment(b);
        if adj > 1 {
            return Ok(true);
        }
        let rc = common::lookup_bitmap(self, &self.sm.ll, b)?;
        // Overflowed counts are at least three: shared whatever is queued.
        Ok(rc == 3 || i64::from(rc) + adj > 1)
    }

    /// Sets metadata block `b`'s count (not while recursing).
    pub fn sm_set_count(&mut self, b: u64, count: u32) -> Result<()> {
        self.mutate(|tm| {
            if tm.sm.bootstrap || tm.sm.recursion > 0 {
                return Err(Error::Invalid);
            }
            tm.sm_in();
            let r = common::insert(tm, b, count);
            let r2 = tm.sm_out();
            r.and(r2)
        })
    }

    /// Increments the counts of `[b, e)`.
    pub fn sm_inc_range(&mut self, b: u64, e: u64) -> Result<()> {
        self.mutate(|tm| tm.sm_apply(BopKind::Inc, b, e))
    }

    /// Decrements the counts of `[b, e)`.
    pub fn sm_dec_range(&mut self, b: u64, e: u64) -> Result<()> {
        self.mutate(|tm| tm.sm_apply(BopKind::Dec, b, e))
    }

    /// Allocates a metadata block (count 1), next-fit from a cursor that
    /// wraps once; only blocks free in the committed view qualify.
    pub fn sm_new_block(&mut self) -> Result<u64> {
        self.mutate(Self::sm_new_block_inner)
    }

    fn sm_new_block_inner(&mut self) -> Result<u64> {
        if self.sm.bootstrap {
            // While formatting the ll does not cover anything yet.
            let limit = match self.sm.ll.nr_blocks {
                0 => self.bm.nr_blocks().min(MAX_METADATA_BLOCKS),
                n => n,
            };
            if self.sm.begin >= limit {
                return Err(Error::NoSpace);
            }
            let b = self.sm.begin;
            self.sm.begin += 1;
            return Ok(b);
        }
        let nr = self.sm.ll.nr_blocks;
        let begin = self.sm.begin;
        let found =
            match common::find_common_free_block(self, &self.sm.old_ll, &self.sm.ll, begin, nr) {
                Err(Error::NoSpace) => {
                    common::find_common_free_block(self, &self.sm.old_ll, &self.sm.ll, 0, begin)
                }
                r => r,
            };
        let b = found?;
        self.sm.begin = b + 1;
        self.sm_apply(BopKind::Inc, b, b + 1)?;
        self.sm.allocated_this_transaction += 1;
        let free = self.sm_nr_free();
        self.sm.threshold.check(free);
        Ok(b)
    }

    /// Writes the space map's index out and makes the current counts the
    /// committed view.
    pub fn sm_commit(&mut self) -> Result<()> {
        self.mutate(|tm| {
            if tm.sm.bootstrap {
                return Ok(());
            }
            common::commit(tm)?;
            tm.sm.old_ll = tm.sm.ll.try_clone()?;
            tm.sm.allocated_this_transaction = 0;
            Ok(())
        })
    }

    /// Grows the metadata space map by `extra` blocks.
    pub fn sm_extend(&mut self, extra: u64) -> Result<()> {
        self.mutate(|tm| tm.sm_extend_inner(extra))
    }

    fn sm_extend_inner(&mut self, extra: u64) -> Result<()> {
        let mut old_len = self.sm.ll.nr_blocks;
        let new_len = old_len.checked_add(extra).ok_or(Error::Invalid)?;
        if new_len > MAX_METADATA_BLOCKS {
            return Err(Error::Invalid);
        }
        // Allocate the new structures from the new space only, then count
        // them, repeating until counting allocates nothing more.
        self.changed();
        self.sm.begin = old_len;
        self.sm.bootstrap = true;
        let r = (|| {
            common::extend(self, extra)?;
            loop {
                let end = self.sm.begin;
                self.push_bop(BopKind::Inc, old_len, end)?;
                old_len = end;
                self.apply_bops()?;
                common::commit(self)?;
                if old_len == self.sm.begin {
                    return Ok(());
                }
            }
        })();
        self.sm.bootstrap = false;
        r
    }

    /// The metadata space map root for the superblock.
    pub fn sm_root(&self) -> SmRoot {
        self.sm.ll.root()
    }

    /// Encodes the root into `out` (at least 32 bytes).
    pub fn sm_copy_root(&self, out: &mut [u8]) -> Result<()> {
        if out.len() < SM_ROOT_SIZE {
            return Err(Error::NoSpace);
        }
        self.sm.ll.root().pack(out)
    }

    /// Sets the low-free-space threshold (in blocks).
    pub fn sm_register_threshold(&mut self, threshold: u64) {
        self.sm.threshold = Threshold {
            value: Some(threshold),
            ..Threshold::default()
        };
    }

    /// True once after free metadata space dropped to the threshold (the
    /// caller raises its event then).
    pub fn sm_take_threshold_event(&mut self) -> bool {
        core::mem::take(&mut self.sm.threshold.triggered)
    }
}

/// A [`SpaceMap`] handle on the transaction manager's metadata space map.
pub struct MetadataSpaceMap;

impl<IO: BlockIo> SpaceMap<IO> for MetadataSpaceMap {
    fn nr_blocks(&self, tm: &TransactionManager<IO>) -> u64 {
        tm.sm_nr_blocks()
    }
    fn nr_free(&self, tm: &TransactionManager<IO>) -> u64 {
        tm.sm_nr_free()
    }
    fn count(&self, tm: &TransactionManager<IO>, b: u64) -> Result<u32> {
        tm.sm_count(b)
    }
    fn count_is_more_than_one(&self, tm: &TransactionManager<IO>, b: u64) -> Result<bool> {
        tm.sm_count_is_more_than_one(b)
    }
    fn set_count(&mut self, tm: &mut TransactionManager<IO>, b: u64, count: u32) -> Result<()> {
        tm.sm_set_count(b, count)
    }
    fn inc_range(&mut self, tm: &mut TransactionManager<IO>, b: u64, e: u64) -> Result<()> {
        tm.sm_inc_range(b, e)
    }
    fn dec_range(&mut self, tm: &mut TransactionManager<IO>, b: u64, e: u64) -> Result<()> {
        tm.sm_dec_range(b, e)
    }
    fn new_block(&mut self, tm: &mut TransactionManager<IO>) -> Result<u64> {
        tm.sm_new_block()
    }
    fn commit(&mut self, tm: &mut TransactionManager<IO>) -> Result<()> {
        tm.sm_commit()
    }
    fn extend(&mut self, tm: &mut TransactionManager<IO>, extra: u64) -> Result<()> {
        tm.sm_extend(extra)
    }
    fn root(&self, tm: &TransactionManager<IO>) -> SmRoot {
        tm.sm_root()
    }
}
