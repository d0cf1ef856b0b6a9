// SPDX-License-Identifier: GPL-2.0

//! Data and metadata space: data block allocation and reference counts,
//! free counts, device growth, and the metadata low-water threshold.

use super::mapping::DATA_BLOCK_LIMIT;
use super::pool::{PoolHooks, PoolMetadata};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::space_map::common::MAX_METADATA_BLOCKS;
use crate::persistent_data::space_map::SpaceMap;

impl<IO: BlockIo, H: PoolHooks> PoolMetadata<IO, H> {
    /// Allocates a data block (reference count one, handed to
    /// [`Self::insert_block`]); `NoSpace` when the data device is full,
    /// which leaves the transaction usable (the engine says whether a
    /// failure changed anything: a full metadata device can fail the count
    /// update half way).
    pub fn alloc_data_block(&mut self) -> Result<u64> {
        self.mutate_engine(|pd| pd.data_sm.new_block(&mut pd.tm))
    }

    /// Takes a reference on each data block in `[b, e)`.
    pub fn inc_data_range(&mut self, b: u64, e: u64) -> Result<()> {
        self.mutate(|pd, _, _| pd.data_sm.inc_range(&mut pd.tm, b, e))
    }

    /// Drops a reference on each data block in `[b, e)`.
    pub fn dec_data_range(&mut self, b: u64, e: u64) -> Result<()> {
        self.mutate(|pd, _, _| pd.data_sm.dec_range(&mut pd.tm, b, e))
    }

    /// References held on data block `b` (0: free).
    pub fn data_block_count(&self, b: u64) -> Result<u32> {
        let pd = self.objects()?;
        pd.data_sm.count(&pd.tm, b)
    }

    /// True if more than one reference holds data block `b`.
    pub fn block_is_shared(&self, b: u64) -> Result<bool> {
        let pd = self.objects()?;
        Ok(pd.data_sm.count(&pd.tm, b)? > 1)
    }

    /// Free data blocks.
    pub fn free_data_blocks(&self) -> Result<u64> {
        let pd = self.objects()?;
        Ok(pd.data_sm.nr_free(&pd.tm))
    }

    /// Free metadata blocks, less the reserve kept for commits.
    pub fn free_metadata_blocks(&self) -> Result<u64> {
        let pd = self.objects()?;
        Ok(pd.tm.sm_nr_free().saturating_sub(self.metadata_reserve))
    }

    /// Data blocks the pool has (as last committed).
    pub fn data_dev_size(&self) -> Result<u64> {
        let pd = self.objects()?;
        Ok(pd.data_sm.nr_blocks(&pd.tm))
    }

    /// Metadata blocks the pool uses.
    pub fn metadata_dev_size(&self) -> Result<u64> {
        Ok(self.objects()?.tm.sm_nr_blocks())
    }

    /// Grows the data space to `new_count` blocks. Shrinking is refused
    /// (`Invalid`), as is more than a mapping can address. Sizes compare
    /// with this transaction's (upstream compares with the last commit's,
    /// so two resizes before a commit would add up).
    pub fn resize_data_dev(&mut self, new_count: u64) -> Result<()> {
        let pd = self.objects()?;
        let old = pd.data_sm.root(&pd.tm).nr_blocks;
        if new_count < old || new_count > DATA_BLOCK_LIMIT {
            return Err(Error::Invalid);
        }
        if new_count == old {
            return Ok(());
        }
        self.mutate(|pd, _, _| pd.data_sm.extend(&mut pd.tm, new_count - old))
    }

    /// Grows the metadata space to `new_count` blocks (at most the
    /// metadata device and the metadata space map's limit). Shrinking is
    /// refused (`Invalid`).
    pub fn resize_metadata_dev(&mut self, new_count: u64) -> Result<()> {
        let pd = self.objects()?;
        let old = pd.tm.sm_nr_blocks();
        if new_count < old || new_count > MAX_METADATA_BLOCKS || new_count > pd.tm.bm().nr_blocks()
        {
            return Err(Error::Invalid);
        }
        if new_count == old {
            return Ok(());
        }
        self.mutate(|pd, _, _| pd.tm.sm_extend(new_count - old))?;
        self.set_metadata_reserve();
        Ok(())
    }

    /// Calls the hooks' `metadata_low` once each time free metadata space
    /// falls to `threshold` blocks (kept across aborts).
    pub fn register_metadata_threshold(&mut self, threshold: u64) -> Result<()> {
        let pd = self.pd.as_deref_mut().ok_or(Error::Invalid)?;
        pd.tm.sm_register_threshold(threshold);
        self.threshold = Some(threshold);
        Ok(())
    }
}
