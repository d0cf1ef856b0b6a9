// SPDX-License-Identifier: GPL-2.0

//! The disk space map: reference counts for another device (thin's data
//! device), with its bitmaps, index btree and ref-count btree stored in the
//! metadata device.

use crate::persistent_data::btree;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::space_map::common::{self, DiskCtx, LlDisk, INDEX_VT, REF_COUNT_VT};
use crate::persistent_data::space_map::{SmRoot, SpaceMap};
use crate::persistent_data::transaction_manager::TransactionManager;

/// Space map for a device other than the metadata device.
pub struct DiskSpaceMap {
    ll: LlDisk,
    old_ll: LlDisk,
    begin: u64,
    allocated_this_transaction: i64,
}

impl DiskSpaceMap {
    /// Creates an empty space map of `nr_blocks` blocks and commits it.
    #[inline(never)]
    pub fn create<IO: BlockIo>(tm: &mut TransactionManager<IO>, nr_blocks: u64) -> Result<Self> {
        tm.mutate(|tm| {
            let mut ll = LlDisk::new_disk()?;
            ll.bitmap_root = btree::empty(tm, INDEX_VT.0)?;
            ll.ref_count_root = btree::empty(tm, REF_COUNT_VT.0)?;
            let mut sm = DiskSpaceMap {
                old_ll: ll.try_clone()?,
                ll,
                begin: 0,
                allocated_this_transaction: 0,
            };
            common::extend(&mut sm.ctx(tm), nr_blocks)?;
            SpaceMap::commit(&mut sm, tm)?;
            Ok(sm)
        })
    }

    /// Opens a space map from the root stored in a superblock.
    #[inline(never)]
    pub fn open(root: &[u8]) -> Result<Self> {
        let ll = common::open_disk(&SmRoot::unpack(root)?)?;
        Ok(DiskSpaceMap {
            old_ll: ll.try_clone()?,
            ll,
            begin: 0,
            allocated_this_transaction: 0,
        })
    }

    fn ctx<'a, IO: BlockIo>(&'a mut self, tm: &'a mut TransactionManager<IO>) -> DiskCtx<'a, IO> {
        DiskCtx {
            tm,
            ll: &mut self.ll,
        }
    }
}

impl<IO: BlockIo> SpaceMap<IO> for DiskSpaceMap {
    fn nr_blocks(&self, _tm: &TransactionManager<IO>) -> u64 {
        self.old_ll.nr_blocks
    }

    fn nr_free(&self, _tm: &TransactionManager<IO>) -> u64 {
        let committed = self
            .old_ll
            .nr_blocks
            .saturating_sub(self.old_ll.nr_allocated);
        if self.allocated_this_transaction >= 0 {
            committed.saturating_sub(self.allocated_this_transaction as u64)
        } else {
            committed.saturating_add(self.allocated_this_transaction.unsigned_abs())
        }
    }

    fn count(&self, tm: &TransactionManager<IO>, b: u64) -> Result<u32> {
        common::lookup(tm, &self.ll, b)
    }

    fn count_is_more_than_one(&self, tm: &TransactionManager<IO>, b: u64) -> Result<bool> {
        Ok(self.count(tm, b)? > 1)
    }

    fn set_count(&mut self, tm: &mut TransactionManager<IO>, b: u64, count: u32) -> Result<()> {
        tm.mutate(|tm| {
            let d = common::insert(&mut self.ctx(tm), b, count)?;
            self.allocated_this_transaction += d;
            Ok(())
        })
    }

    fn inc_range(&mut self, tm: &mut TransactionManager<IO>, b: u64, e: u64) -> Result<()> {
        tm.mutate(|tm| {
            let d = common::inc(&mut self.ctx(tm), b, e)?;
            self.allocated_this_transaction += d;
            Ok(())
        })
    }

    fn dec_range(&mut self, tm: &mut TransactionManager<IO>, b: u64, e: u64) -> Result<()> {
        tm.mutate(|tm| {
            let d = common::dec(&mut self.ctx(tm), b, e)?;
            self.allocated_this_transaction += d;
            Ok(())
        })
    }

    fn new_block(&mut self, tm: &mut TransactionManager<IO>) -> Result<u64> {
        tm.mutate(|tm| {
            let nr = self.ll.nr_blocks;
            // Both lls are ours here: index entries read on the way are cached.
            let (old, ll) = (&mut self.old_ll, &mut self.ll);
            let b = match common::find_common_free_block_in(&*tm, old, ll, self.begin, nr) {
                Err(Error::NoSpace) => {
                    common::find_common_free_block_in(&*tm, old, ll, 0, self.begin)
                }
                r => r,
            }?;
            self.begin = b + 1;
            self.inc_range(tm, b, b + 1)?;
            Ok(b)
        })
    }

    fn commit(&mut self, tm: &mut TransactionManager<IO>) -> Result<()> {
        tm.mutate(|tm| {
            common::commit(&mut self.ctx(tm))?;
            self.old_ll = self.ll.try_clone()?;
            self.allocated_this_transaction = 0;
            Ok(())
        })
    }

    fn extend(&mut self, tm: &mut TransactionManager<IO>, extra: u64) -> Result<()> {
        tm.mutate(|tm| common::extend(&mut self.ctx(tm), extra))
    }

    fn root(&self, _tm: &TransactionManager<IO>) -> SmRoot {
        self.ll.root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_data::block_manager::BlockManager;
    use crate::persistent_data::io::mem::MemIo;

    #[test]
    fn allocation_caches_index_entries() {
        let bm = BlockManager::new(MemIo::new(256), 64);
        let mut tm = TransactionManager::create(bm, 0).unwrap();
        let sm = DiskSpaceMap::create(&mut tm, 3 * common::ENTRIES_PER_BLOCK).unwrap();
        let mut root = [0u8; 32];
        SpaceMap::copy_root(&sm, &tm, &mut root).unwrap();
        let mut sm = DiskSpaceMap::open(&root).unwrap();
        assert_eq!(sm.ll.cached_ie(0), None);
        let b = sm.new_block(&mut tm).unwrap();
        assert_eq!(b, 0);
        // Read from the index btree once, then served from the cache, in
        // both the current and the committed view.
        assert!(sm.old_ll.cached_ie(0).is_some());
        let ie = sm.ll.cached_ie(0).unwrap();
        assert_eq!(ie.nr_free as u64, common::ENTRIES_PER_BLOCK - 1);
        assert_eq!(sm.ll.cached_ie(1), None);
        // Skipping a full bitmap's worth reaches the next index entry.
        sm.begin = common::ENTRIES_PER_BLOCK + 5;
        assert_eq!(
            sm.new_block(&mut tm).unwrap(),
            common::ENTRIES_PER_BLOCK + 5
        );
        assert!(sm.ll.cached_ie(1).is_some());
        assert_eq!(sm.count(&tm, b).unwrap(), 1);
    }
}
