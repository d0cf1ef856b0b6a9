// SPDX-License-Identifier: GPL-2.0

//! Copy-on-write B+trees of u64 keys, byte-compatible with upstream
//! `dm-btree`.
//!
//! Trees are identified by their root block. Every update shadows the path
//! it changes and returns the new root; the caller stores it (in a
//! superblock, or in an upper-level tree). A tree may have several levels
//! of keys (`keys.len()`): the leaves of each upper level hold the roots of
//! the next level's trees, and only the bottom level holds the caller's
//! values.
//!
//! Values can hold references (to data blocks, to other trees): a
//! [`ValueType`] says how to take and drop them. When a shared node is
//! shadowed every value it holds gets a new reference; this is how a
//! snapshot (one extra reference on a root) is pushed down lazily.
//!
//! Insert adopts the caller's reference to the new value (it does not call
//! `inc`); overwriting drops the old value's reference unless the two are
//! `equal`.

mod del;
mod insert;
mod lookup;
pub mod node;
mod remove;
#[cfg(test)]
mod tests;
mod walk;

use crate::persistent_data::error::Result;
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::transaction_manager::{with_runs, TransactionManager};

pub use del::del;
pub use insert::{empty, insert, insert_notify};
pub(crate) use insert::{get_overwrite_leaf, get_overwrite_leaf_vt};
pub use lookup::{find_highest_key, find_lowest_key, lookup, lookup_next};
pub use remove::{remove, remove_leaves};
pub use walk::{walk, Cursor};

/// Deepest tree the engine walks (far beyond any real tree; it bounds the
/// work done on a corrupt, cyclic one).
pub const MAX_DEPTH: usize = 64;

/// How values of a tree hold references.
pub trait ValueType<IO: BlockIo> {
    /// Bytes per value.
    fn size(&self) -> usize;

    /// Takes a reference for each value in `values` (a packed array).
    fn inc(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        let _ = (tm, values);
        Ok(())
    }

    /// Drops a reference for each value in `values` (a packed array).
    fn dec(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        let _ = (tm, values);
        Ok(())
    }

    /// True if the two values refer to the same thing (an overwrite with an
    /// equal value keeps the old reference instead of dropping it).
    fn equal(&self, a: &[u8], b: &[u8]) -> bool {
        a == b
    }
}

/// Values that hold no references, of the given size.
#[derive(Clone, Copy, Debug)]
pub struct PlainValues(pub usize);

impl<IO: BlockIo> ValueType<IO> for PlainValues {
    fn size(&self) -> usize {
        self.0
    }
}

/// Little-endian u64 metadata block numbers holding a reference each
/// (upper levels of multi-level trees, and trees of tree roots whose
/// deletion is handled by the caller).
#[derive(Clone, Copy, Debug)]
pub struct BlockRefs;

impl<IO: BlockIo> ValueType<IO> for BlockRefs {
    fn size(&self) -> usize {
        8
    }

    fn inc(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        with_runs(values, |b, e| tm.inc_range(b, e))
    }

    fn dec(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        with_runs(values, |b, e| tm.dec_range(b, e))
    }
}
