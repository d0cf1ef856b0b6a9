// SPDX-License-Identifier: GPL-2.0

//! Snapshot I/O in flight to chunks without an exception (upstream's
//! tracked chunks): reads of the snapshot remapped to the origin, and
//! writes a merging snapshot sends to a COW chunk. Such a bio must finish
//! before the chunk underneath it changes: before an origin write released
//! by a finished copy overwrites the origin chunk, and before a merge copies
//! over it.
//!
//! Tracking happens in `map` and untracking in `end_io`, which may run in
//! interrupt context, so nothing here allocates: the table has a fixed
//! capacity, and a bio that finds it full is counted as "untracked
//! overflow", which makes every chunk look tracked until it finishes
//! (waiting longer, never too little).

use super::Chunk;
use crate::persistent_data::shim::PVec;
use crate::persistent_data::Result;

/// What a bio's per-bio data records about its tracking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tracked {
    /// Not tracked.
    #[default]
    No,
    /// Counted under its chunk.
    Chunk(Chunk),
    /// Counted in the overflow (the table was full).
    Overflow,
}

/// The chunks with snapshot I/O in flight, each with its count of bios.
pub struct TrackedChunks {
    /// Sorted by chunk; never grown past `limit`.
    entries: PVec<(Chunk, u32)>,
    limit: usize,
    /// Bios tracked while the table was full.
    overflow: u32,
}

impl TrackedChunks {
    /// An empty table with room for `limit` distinct chunks.
    pub fn new(limit: usize) -> Result<Self> {
        Ok(TrackedChunks {
            entries: PVec::try_with_capacity(limit)?,
            limit,
            overflow: 0,
        })
    }

    fn position(&self, chunk: Chunk) -> core::result::Result<usize, usize> {
        self.entries.binary_search_by_key(&chunk, |e| e.0)
    }

    /// Tracks one more bio on `chunk`; the result goes into its per-bio data
    /// for [`Self::untrack`].
    pub fn track(&mut self, chunk: Chunk) -> Tracked {
        match self.position(chunk) {
            Ok(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    if let Some(n) = e.1.checked_add(1) {
                        e.1 = n;
                        return Tracked::Chunk(chunk);
                    }
                }
            }
            // Below the capacity reserved at construction: no allocation.
            Err(i) if self.entries.len() < self.limit => {
                if self.entries.try_insert(i, (chunk, 1)).is_ok() {
                    return Tracked::Chunk(chunk);
                }
            }
            Err(_) => {}
        }
        self.overflow = self.overflow.saturating_add(1);
        Tracked::Overflow
    }

    /// The bio that [`Self::track`] returned `t` for has finished.
    pub fn untrack(&mut self, t: Tracked) {
        match t {
            Tracked::No => {}
            Tracked::Overflow => self.overflow = self.overflow.saturating_sub(1),
            Tracked::Chunk(chunk) => {
                let Ok(i) = self.position(chunk) else {
                    return;
                };
                let last = match self.entries.get_mut(i) {
                    Some(e) => {
                        e.1 = e.1.saturating_sub(1);
                        e.1 == 0
                    }
                    None => false,
                };
                if last {
                    let _ = self.entries.remove(i);
                }
            }
        }
    }

    /// True while some tracked bio may be on `chunk`.
    pub fn is_tracked(&self, chunk: Chunk) -> bool {
        self.overflow != 0 || self.position(chunk).is_ok()
    }

    /// True when no bio is tracked.
    pub fn is_empty(&self) -> bool {
        self.overflow == 0 && self.entries.is_empty()
    }
}
