// SPDX-License-Identifier: GPL-2.0

//! The two-level mapping tree's values: `[dev, vblock] -> block_time`.
//!
//! A bottom-level value packs a data block number (top 40 bits) and the
//! pool's time when it was mapped (low 24 bits), and holds one reference on
//! its data block in the data space map ([`BlockTime`]). A top-level value
//! is the root of a device's mapping tree and holds a reference on it;
//! dropping the last one deletes the tree ([`DevTrees`]).
//!
//! This file only needs the engine, so the engine's host tools (checker,
//! fuzz harness, tests) include it too: one copy of the thin value types.

use crate::persistent_data::btree::{self, ValueType};
use crate::persistent_data::endian::le64;
use crate::persistent_data::error::Result;
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::space_map::{DiskSpaceMap, SpaceMap};
use crate::persistent_data::transaction_manager::{with_runs, TransactionManager};

/// Bits of a mapping value holding the time stamp.
pub const TIME_BITS: u32 = 24;
/// Data block numbers must be below this (they get the top 40 bits).
pub const DATA_BLOCK_LIMIT: u64 = 1 << (64 - TIME_BITS);

const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Packs a mapping value. The time is taken modulo 2^24 (upstream lets a
/// larger time spill into the block number).
pub fn pack_block_time(data_block: u64, time: u32) -> u64 {
    (data_block << TIME_BITS) | (u64::from(time) & TIME_MASK)
}

/// Splits a mapping value into (data block, time).
pub fn unpack_block_time(v: u64) -> (u64, u32) {
    (v >> TIME_BITS, (v & TIME_MASK) as u32)
}

/// Calls `f(begin, end)` for each run of consecutive data blocks in a
/// packed array of mapping values (fewer space map calls, as upstream).
fn with_block_runs(values: &[u8], mut f: impl FnMut(u64, u64) -> Result<()>) -> Result<()> {
    let mut run: Option<(u64, u64)> = None;
    for c in values.chunks_exact(8) {
        let (b, _) = unpack_block_time(le64(c, 0)?);
        run = match run {
            Some((s, e)) if e == b => Some((s, e + 1)),
            Some((s, e)) => {
                f(s, e)?;
                Some((b, b + 1))
            }
            None => Some((b, b + 1)),
        };
    }
    match run {
        Some((s, e)) => f(s, e),
        None => Ok(()),
    }
}

/// Bottom-level mapping values: each holds a reference on its data block.
pub struct BlockTime<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for BlockTime<'_> {
    fn size(&self) -> usize {
        8
    }

    fn inc(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        with_block_runs(values, |b, e| self.0.inc_range(tm, b, e))
    }

    fn dec(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        with_block_runs(values, |b, e| self.0.dec_range(tm, b, e))
    }

    /// The same data block is the same mapping, whatever its time stamp.
    fn equal(&self, a: &[u8], b: &[u8]) -> bool {
        match (le64(a, 0), le64(b, 0)) {
            (Ok(a), Ok(b)) => a >> TIME_BITS == b >> TIME_BITS,
            _ => false,
        }
    }
}

/// Top-level values: the roots of the devices' mapping trees. Dropping one
/// drops a reference on the tree, deleting it (and its data references)
/// when that was the last.
pub struct DevTrees<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for DevTrees<'_> {
    fn size(&self) -> usize {
        8
    }

    fn inc(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        with_runs(values, |b, e| tm.inc_range(b, e))
    }

    fn dec(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        for c in values.chunks_exact(8) {
            btree::del(tm, &mut BlockTime(self.0), le64(c, 0)?, 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_time_packing() {
        let v = pack_block_time(0x12_3456_789a, 0xab_cdef);
        assert_eq!(v, 0x1234_5678_9aab_cdef);
        assert_eq!(unpack_block_time(v), (0x12_3456_789a, 0xab_cdef));
        // The time never spills into the block.
        assert_eq!(unpack_block_time(pack_block_time(5, 0x0100_0003)), (5, 3));
        assert_eq!(DATA_BLOCK_LIMIT, 1 << 40);
    }

    #[test]
    fn runs_of_data_blocks() {
        let vals: std::vec::Vec<u8> = [(7, 1), (8, 0), (9, 5), (3, 0), (4, 9), (10, 0)]
            .iter()
            .flat_map(|&(b, t)| pack_block_time(b, t).to_le_bytes())
            .collect();
        let mut runs = std::vec::Vec::new();
        with_block_runs(&vals, |b, e| {
            runs.push((b, e));
            Ok(())
        })
        .unwrap();
        assert_eq!(runs, [(7, 10), (3, 5), (10, 11)]);
    }
}
