// SPDX-License-Identifier: GPL-2.0

//! Reference recounting: walks the structures reachable from a set of roots
//! and counts how often each block is referenced, so space map counts can
//! be checked (no leaks, no premature frees). Used by tests and debugging.

use crate::persistent_data::block_manager::ReadRef;
use crate::persistent_data::btree::node::{self, header, BTREE_NODE_VALIDATOR};
use crate::persistent_data::btree::MAX_DEPTH;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::shim::PVec;
use crate::persistent_data::space_map::common::{
    self, IndexEntry, ENTRIES_PER_BLOCK, INDEX_ENTRY_SIZE,
};
use crate::persistent_data::space_map::{SmRoot, SpaceMap};
use crate::persistent_data::transaction_manager::{BlockReader, TransactionManager};

/// Expected reference counts of a range of blocks.
pub struct RefCounts {
    counts: PVec<u32>,
}

/// A block whose space map count differs from the recount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The block.
    pub block: u64,
    /// References found by walking.
    pub expected: u32,
    /// Count the space map holds.
    pub actual: u32,
}

impl RefCounts {
    /// All-zero counts for `nr_blocks` blocks.
    pub fn new(nr_blocks: u64) -> Result<Self> {
        let mut counts = PVec::new();
        counts.try_resize(usize::try_from(nr_blocks).map_err(|_| Error::NoMem)?, 0)?;
        Ok(RefCounts { counts })
    }

    /// Count of `b`.
    pub fn get(&self, b: u64) -> u32 {
        usize::try_from(b)
            .ok()
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Adds a reference to `b`; true if it is the first.
    pub fn inc(&mut self, b: u64) -> Result<bool> {
        let c = usize::try_from(b)
            .ok()
            .and_then(|i| self.counts.get_mut(i))
            .ok_or(Error::Invalid)?;
        *c = c.checked_add(1).ok_or(Error::Invalid)?;
        Ok(*c == 1)
    }

    /// Adds a reference to each block in `[b, e)`.
    pub fn inc_range(&mut self, b: u64, e: u64) -> Result<()> {
        for x in b..e {
            self.inc(x)?;
        }
        Ok(())
    }

    /// Counts one reference to the btree at `root` (`levels` key levels)
    /// and, on first visit, everything below it; bottom-level leaf values
    /// are passed to `values` once per distinct leaf.
    ///
    /// Iterative, with the path on the heap (at most [`MAX_DEPTH`] nodes):
    /// a corrupt tree cannot exhaust the stack, and a cycle ends at the
    /// first node visited twice (each node is descended into only once).
    pub fn count_btree<R: BlockReader>(
        &mut self,
        r: &R,
        root: u64,
        levels: usize,
        values: &mut dyn FnMut(&mut Self, &[u8]) -> Result<()>,
    ) -> Result<()> {
        struct Frame<'a, R: BlockReader + 'a> {
            node: ReadRef<'a, R::Io>,
            /// Level of the children (internal: same; leaf: one down).
            next_level: usize,
            next: usize,
        }
        let mut path: PVec<Frame<'_, R>> = PVec::new();
        let mut pending = Some((root, 0usize));
        loop {
            if let Some((b, level)) = pending.take() {
                if self.inc(b)? {
                    if path.len() >= MAX_DEPTH {
                        return Err(Error::Invalid);
                    }
                    let node = r.read_lock(b, &BTREE_NODE_VALIDATOR)?;
                    let h = header(&node[..])?;
                    if h.is_internal() || level + 1 < levels {
                        let next_level = if h.is_internal() { level } else { level + 1 };
                        path.try_push(Frame {
                            node,
                            next_level,
                            next: 0,
                        })?;
                    } else {
                        values(self, node::values(&node[..])?)?;
                    }
                }
            }
            let Some(top) = path.last_mut() else {
                return Ok(());
            };
            let i = top.next;
            if i >= node::nr_entries(&top.node[..])? {
                path.pop();
                continue;
            }
            top.next += 1;
            pending = Some((node::value64(&top.node[..], i)?, top.next_level));
        }
    }

    /// Counts the metadata space map's own blocks (index block, bitmaps,
    /// ref-count tree) given its root.
    pub fn count_metadata_sm<R: BlockReader>(&mut self, r: &R, root: &SmRoot) -> Result<()> {
        let ll = common::open_meta(r, root)?;
        self.inc(ll.bitmap_root)?;
        for i in 0..root.nr_blocks.div_ceil(ENTRIES_PER_BLOCK) {
            self.inc(common::load_ie(r, &ll, i)?.blocknr)?;
        }
        self.count_btree(r, root.ref_count_root, 1, &mut |_, _| Ok(()))
    }

    /// Counts the metadata blocks of a disk space map given its root.
    pub fn count_disk_sm<R: BlockReader>(&mut self, r: &R, root: &SmRoot) -> Result<()> {
        self.count_btree(r, root.bitmap_root, 1, &mut |rc, vals| {
            for c in vals.chunks_exact(INDEX_ENTRY_SIZE) {
                rc.inc(IndexEntry::unpack(c)?.blocknr)?;
            }
            Ok(())
        })?;
        self.count_btree(r, root.ref_count_root, 1, &mut |_, _| Ok(()))
    }

    /// Compares against a space map's counts; returns the differences.
    pub fn verify<IO: BlockIo, S: SpaceMap<IO>>(
        &self,
        tm: &TransactionManager<IO>,
        sm: &S,
    ) -> Result<PVec<Mismatch>> {
        let mut out = PVec::new();
        let nr = sm.nr_blocks(tm);
        let mut allocated = 0u64;
        for b in 0..nr {
            let actual = sm.count(tm, b)?;
            let expected = self.get(b);
            if actual != 0 {
                allocated += 1;
            }
            if actual != expected {
                out.try_push(Mismatch {
                    block: b,
                    expected,
                    actual,
                })?;
            }
        }
        if allocated != sm.root(tm).nr_allocated {
            out.try_push(Mismatch {
                block: u64::MAX,
                expected: allocated as u32,
                actual: sm.root(tm).nr_allocated as u32,
            })?;
        }
        Ok(out)
    }
}
