// SPDX-License-Identifier: GPL-2.0

//! The shared store's exceptions in core: what `map` decides on without
//! sleeping (the store's index needs metadata I/O). For each origin chunk
//! with exceptions, each exception's share mask and COW chunk: a snapshot
//! read finds its copy, a snapshot write whether its copy is its own, an
//! origin write which ids still need one. Filled from the store at open
//! ([`super::SharedStore::for_each_exception`]) and changed as the store
//! is, once each change is committed.

use super::shared_index::{IdMask, SharedException, SnapId};
use super::Chunk;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::shim::PVec;

/// Where a snapshot reads a chunk with an exception from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CowCopy {
    /// The COW chunk.
    pub cow: Chunk,
    /// True if no other snapshot shares it (a write goes there in place).
    pub own: bool,
}

/// The exceptions, hashed by origin chunk.
pub struct SharedTable {
    buckets: PVec<PVec<SharedException>>,
    mask: u64,
}

impl SharedTable {
    /// An empty table of `buckets` buckets (rounded down to a power of
    /// two, at least one).
    pub fn new(buckets: usize) -> Result<Self> {
        let n = 1usize << buckets.max(1).ilog2();
        let mut v = PVec::try_with_capacity(n)?;
        for _ in 0..n {
            v.try_push(PVec::new())?;
        }
        Ok(SharedTable {
            buckets: v,
            mask: (n as u64).wrapping_sub(1),
        })
    }

    fn bucket(&self, old: Chunk) -> &[SharedException] {
        // Masked to below the bucket count, a usize.
        let i = (old & self.mask) as usize;
        self.buckets.get(i).map_or(&[], |b| &b[..])
    }

    fn bucket_mut(&mut self, old: Chunk) -> Result<&mut PVec<SharedException>> {
        let i = (old & self.mask) as usize;
        self.buckets.get_mut(i).ok_or(Error::Invalid)
    }

    /// The ids with an exception for `old`.
    pub fn covered(&self, old: Chunk) -> IdMask {
        self.bucket(old)
            .iter()
            .filter(|e| e.old == old)
            .fold(IdMask::EMPTY, |m, e| m.with(e.share))
    }

    /// `id`'s copy of `old`, if it has one.
    pub fn lookup(&self, id: SnapId, old: Chunk) -> Option<CowCopy> {
        self.bucket(old)
            .iter()
            .find(|e| e.old == old && e.share.has(id))
            .map(|e| CowCopy {
                cow: e.cow,
                own: e.share == id.mask(),
            })
    }

    /// Makes room for one more exception of `old`, so that the next
    /// [`Self::insert`] of it cannot fail for memory (reserve before the
    /// store commits, not after).
    pub fn reserve(&mut self, old: Chunk) -> Result {
        self.bucket_mut(old)?.try_reserve(1)
    }

    /// Adds `e`: `Invalid` (nothing changed) if one of its ids already has
    /// an exception for the chunk or its mask is empty.
    pub fn insert(&mut self, e: SharedException) -> Result {
        if e.share.is_empty() || !e.share.and(self.covered(e.old)).is_empty() {
            return Err(Error::Invalid);
        }
        self.bucket_mut(e.old)?.try_push(e)
    }

    /// Takes `id` out of its exception for `old` (dropping the exception
    /// if nobody is left); true if it had one.
    pub fn leave(&mut self, id: SnapId, old: Chunk) -> bool {
        let Ok(b) = self.bucket_mut(old) else {
            return false;
        };
        let Some(k) = b.iter().position(|e| e.old == old && e.share.has(id)) else {
            return false;
        };
        Self::drop_ids(b, k, id.mask());
        true
    }

    /// Takes `ids` out of entry `k` of bucket `b`; removes it if empty.
    /// Returns true if it was removed.
    fn drop_ids(b: &mut PVec<SharedException>, k: usize, ids: IdMask) -> bool {
        let Some(e) = b.get_mut(k) else {
            return false;
        };
        e.share = e.share.without(ids);
        if e.share.is_empty() {
            b.remove(k);
            return true;
        }
        false
    }

    /// `id` has no exception any more (`ES_DESTROY`).
    pub fn forget(&mut self, id: SnapId) {
        for b in self.buckets.iter_mut() {
            let mut k = 0;
            while k < b.len() {
                if !Self::drop_ids(b, k, id.mask()) {
                    k += 1;
                }
            }
        }
    }
}
