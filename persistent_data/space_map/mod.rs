// SPDX-License-Identifier: GPL-2.0

//! Space maps: per-block reference counts with allocation.
//!
//! * [`metadata`]: the metadata device's own space map, stored through the
//!   very transaction manager that uses it (and so recursive); it lives
//!   inside [`TransactionManager`] and is reached through its `sm_*`
//!   methods or the [`MetadataSpaceMap`] handle.
//! * [`disk`]: a space map for another device (thin's data device), whose
//!   structures live in the metadata device.
//! * [`common`]: the on-disk structures and low-level operations both share.
//!
//! Allocation rule: a block freed in this transaction is never handed out
//! again before the next commit, because the last commit may still use it.

pub mod common;
pub mod disk;
pub mod metadata;

use crate::persistent_data::endian::{le64, set_le64};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::transaction_manager::TransactionManager;

pub use disk::DiskSpaceMap;
pub use metadata::MetadataSpaceMap;

/// Size of an encoded space map root.
pub const SM_ROOT_SIZE: usize = 32;

/// The 32-byte little-endian space map root a superblock stores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmRoot {
    /// Blocks covered.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Metadata: the index block. Disk: root of the index btree.
    pub bitmap_root: u64,
    /// Root of the btree of counts above two.
    pub ref_count_root: u64,
}

impl SmRoot {
    /// Decodes a root; `Invalid` if `d` is too short.
    pub fn unpack(d: &[u8]) -> Result<SmRoot> {
        if d.len() < SM_ROOT_SIZE {
            return Err(Error::Invalid);
        }
        Ok(SmRoot {
            nr_blocks: le64(d, 0)?,
            nr_allocated: le64(d, 8)?,
            bitmap_root: le64(d, 16)?,
            ref_count_root: le64(d, 24)?,
        })
    }

    /// Encodes into the first 32 bytes of `d`; `NoSpace` if too short.
    pub fn pack(&self, d: &mut [u8]) -> Result<()> {
        if d.len() < SM_ROOT_SIZE {
            return Err(Error::NoSpace);
        }
        set_le64(d, 0, self.nr_blocks)?;
        set_le64(d, 8, self.nr_allocated)?;
        set_le64(d, 16, self.bitmap_root)?;
        set_le64(d, 24, self.ref_count_root)
    }
}

/// The space map interface (`dm_sm_*`). The transaction manager is passed
/// in because every space map keeps its structures in metadata blocks.
pub trait SpaceMap<IO: BlockIo> {
    /// Blocks covered.
    fn nr_blocks(&self, tm: &TransactionManager<IO>) -> u64;
    /// Blocks that can still be allocated in this transaction.
    fn nr_free(&self, tm: &TransactionManager<IO>) -> u64;
    /// Reference count of `b`.
    fn count(&self, tm: &TransactionManager<IO>, b: u64) -> Result<u32>;
    /// True if `b`'s count is above one (may err on the side of true).
    fn count_is_more_than_one(&self, tm: &TransactionManager<IO>, b: u64) -> Result<bool>;
    /// Sets `b`'s count.
    fn set_count(&mut self, tm: &mut TransactionManager<IO>, b: u64, count: u32) -> Result<()>;
    /// Increments every count in `[b, e)`.
    fn inc_range(&mut self, tm: &mut TransactionManager<IO>, b: u64, e: u64) -> Result<()>;
    /// Decrements every count in `[b, e)`; `Invalid` on a zero count.
    fn dec_range(&mut self, tm: &mut TransactionManager<IO>, b: u64, e: u64) -> Result<()>;
    /// Allocates a block free in both this and the committed transaction.
    fn new_block(&mut self, tm: &mut TransactionManager<IO>) -> Result<u64>;
    /// Writes out the space map's structures (before the superblock).
    fn commit(&mut self, tm: &mut TransactionManager<IO>) -> Result<()>;
    /// Grows by `extra` blocks (space maps never shrink).
    fn extend(&mut self, tm: &mut TransactionManager<IO>, extra: u64) -> Result<()>;
    /// The root to store in a superblock.
    fn root(&self, tm: &TransactionManager<IO>) -> SmRoot;

    /// Increments `b`'s count.
    fn inc(&mut self, tm: &mut TransactionManager<IO>, b: u64) -> Result<()> {
        self.inc_range(tm, b, b.checked_add(1).ok_or(Error::Invalid)?)
    }
    /// Decrements `b`'s count.
    fn dec(&mut self, tm: &mut TransactionManager<IO>, b: u64) -> Result<()> {
        self.dec_range(tm, b, b.checked_add(1).ok_or(Error::Invalid)?)
    }
    /// Encodes the root into `out` (at least [`SM_ROOT_SIZE`] bytes).
    fn copy_root(&self, tm: &TransactionManager<IO>, out: &mut [u8]) -> Result<()> {
        self.root(tm).pack(out)
    }
}
