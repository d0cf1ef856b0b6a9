// SPDX-License-Identifier: GPL-2.0

//! Which snapshot ids have an exception for each origin chunk, in core:
//! what an origin write decides on in `map` without sleeping (the store's
//! index needs metadata I/O). Filled from the store at open and kept in
//! step with each exception added or removed.

use super::shared_index::IdMask;
use super::Chunk;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::shim::PVec;

/// Origin chunks with at least one exception, each with its ids.
pub struct CoveredChunks {
    buckets: PVec<PVec<(Chunk, IdMask)>>,
    mask: u64,
}

impl CoveredChunks {
    /// An empty record of `buckets` buckets (rounded down to a power of
    /// two, at least one).
    pub fn new(buckets: usize) -> Result<Self> {
        let n = 1usize << buckets.max(1).ilog2();
        let mut v = PVec::try_with_capacity(n)?;
        for _ in 0..n {
            v.try_push(PVec::new())?;
        }
        Ok(CoveredChunks {
            buckets: v,
            mask: n as u64 - 1,
        })
    }

    fn index(&self, old: Chunk) -> usize {
        // Masked to below the bucket count, a usize.
        (old & self.mask) as usize
    }

    /// The ids with an exception for `old`.
    pub fn get(&self, old: Chunk) -> IdMask {
        self.buckets
            .get(self.index(old))
            .and_then(|b| b.iter().find(|(c, _)| *c == old))
            .map_or(IdMask::EMPTY, |&(_, m)| m)
    }

    /// `ids` now have an exception for `old`.
    pub fn add(&mut self, old: Chunk, ids: IdMask) -> Result {
        let i = self.index(old);
        let b = self.buckets.get_mut(i).ok_or(Error::Invalid)?;
        match b.iter_mut().find(|(c, _)| *c == old) {
            Some((_, m)) => *m = m.with(ids),
            None if !ids.is_empty() => b.try_push((old, ids))?,
            None => {}
        }
        Ok(())
    }

    /// `ids` no longer have an exception for `old`.
    pub fn remove(&mut self, old: Chunk, ids: IdMask) {
        let i = self.index(old);
        let Some(b) = self.buckets.get_mut(i) else {
            return;
        };
        if let Some(k) = b.iter().position(|(c, _)| *c == old) {
            let left = b.get(k).map_or(IdMask::EMPTY, |&(_, m)| m.without(ids));
            match b.get_mut(k) {
                Some(e) if !left.is_empty() => e.1 = left,
                _ => {
                    b.remove(k);
                }
            }
        }
    }

    /// `id` has no exception any more (`ES_DESTROY`).
    pub fn forget(&mut self, id: IdMask) {
        for b in self.buckets.iter_mut() {
            let mut k = 0;
            while let Some(e) = b.get_mut(k) {
                e.1 = e.1.without(id);
                if e.1.is_empty() {
                    b.remove(k);
                } else {
                    k += 1;
                }
            }
        }
    }
}
