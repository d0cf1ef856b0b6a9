// SPDX-License-Identifier: GPL-2.0

//! The table of completed exceptions: origin chunk -> COW chunk.
//!
//! As upstream's `dm_exception_table` with `DM_CHUNK_CONSECUTIVE_BITS`: an
//! entry is a run of consecutive origin chunks copied to consecutive COW
//! chunks, its length kept in the top 8 bits of the COW chunk number (so a
//! run holds up to 256 chunks and chunk numbers have 56 bits). Buckets hash
//! `chunk >> 8`, so a run never crosses a 256-chunk aligned group and every
//! chunk of a run lives in one bucket. A bucket is kept sorted by origin
//! chunk; a new exception extends the run just before it or just after it,
//! preferring the one before, in the order upstream tries them.

use super::Chunk;
use crate::persistent_data::shim::PVec;
use crate::persistent_data::{Error, Result};

/// Bits of a packed COW chunk that count the extra chunks of a run.
pub const CONSECUTIVE_BITS: u32 = 8;
/// Bits of a packed COW chunk that hold the chunk number.
pub const CHUNK_NUMBER_BITS: u32 = 56;
const NUMBER_MASK: u64 = (1 << CHUNK_NUMBER_BITS) - 1;
const MAX_EXTRA: u64 = (1 << CONSECUTIVE_BITS) - 1;
/// Chunks sharing a bucket (and the most a run can hold).
const GROUP_SHIFT: u32 = CONSECUTIVE_BITS;
/// Buckets of up to this many runs are scanned rather than bisected.
const SCAN_RUNS: usize = 4;

/// One exception: origin chunk `old` lives at COW chunk `new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Chunk of the origin.
    pub old: Chunk,
    /// Chunk of the COW device holding its copy.
    pub new: Chunk,
}

/// A run of consecutive exceptions: `old..old + len` maps to
/// `new..new + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First origin chunk.
    pub old: Chunk,
    /// First COW chunk.
    pub new: Chunk,
    /// Number of chunks, 1 to 256.
    pub len: u64,
}

/// A run as stored: the count of extra chunks packed above the COW chunk.
#[derive(Clone, Copy, Debug)]
struct Packed {
    old: Chunk,
    new_and_extra: u64,
}

impl Packed {
    fn new_chunk(self) -> Chunk {
        self.new_and_extra & NUMBER_MASK
    }

    fn extra(self) -> u64 {
        self.new_and_extra >> CHUNK_NUMBER_BITS
    }

    fn last_old(self) -> Chunk {
        self.old + self.extra()
    }

    fn contains(self, chunk: Chunk) -> bool {
        chunk >= self.old && chunk - self.old <= self.extra()
    }

    /// The COW chunk of `chunk`, which the run contains.
    fn map(self, chunk: Chunk) -> Chunk {
        // Below 2^56 plus at most 255: no overflow (and no panic, only a
        // wrong chunk, were it called for a chunk outside the run).
        self.new_chunk().wrapping_add(chunk.wrapping_sub(self.old))
    }

    fn unpack(self) -> Run {
        Run {
            old: self.old,
            new: self.new_chunk(),
            len: self.extra() + 1,
        }
    }
}

/// Completed exceptions, looked up by origin chunk.
pub struct ExceptionTable {
    buckets: PVec<PVec<Packed>>,
    mask: u64,
    chunks: u64,
}

/// Bytes a bucket costs (upstream budgets 2 MiB of bucket heads).
const BUCKET_BYTES: u64 = core::mem::size_of::<PVec<Packed>>() as u64;

impl ExceptionTable {
    /// Upstream's bucket count for a COW device of `cow_chunks` chunks:
    /// that many, at most 2 MiB worth of buckets, at least 64, rounded
    /// down to a power of two.
    pub fn buckets_for(cow_chunks: u64) -> usize {
        let max = (2 << 20) / BUCKET_BYTES;
        let n = cow_chunks.min(max).max(64);
        // A power of two not above `n` (n >= 64, so ilog2 is defined).
        let pow = 1u64 << n.ilog2();
        usize::try_from(pow).unwrap_or(64)
    }

    /// An empty table of `buckets` buckets (rounded down to a power of
    /// two, at least one).
    pub fn new(buckets: usize) -> Result<Self> {
        let n = if buckets == 0 {
            1
        } else {
            1usize << buckets.ilog2()
        };
        let mut v = PVec::try_with_capacity(n)?;
        for _ in 0..n {
            v.try_push(PVec::new())?;
        }
        Ok(ExceptionTable {
            buckets: v,
            mask: n as u64 - 1,
            chunks: 0,
        })
    }

    fn bucket_index(&self, chunk: Chunk) -> usize {
        // Masked to below the bucket count, which is a usize.
        ((chunk >> GROUP_SHIFT) & self.mask) as usize
    }

    fn bucket(&self, chunk: Chunk) -> &[Packed] {
        self.buckets
            .get(self.bucket_index(chunk))
            .map_or(&[], |b| &b[..])
    }

    /// Number of exceptions (chunks) in the table.
    pub fn len(&self) -> u64 {
        self.chunks
    }

    /// True when no chunk has an exception.
    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// The run holding origin chunk `chunk`, if any.
    pub fn lookup_run(&self, chunk: Chunk) -> Option<Run> {
        let p = self.find(chunk)?;
        p.contains(chunk).then(|| p.unpack())
    }

    /// The COW chunk holding origin chunk `chunk`, if it has an exception.
    pub fn lookup(&self, chunk: Chunk) -> Option<Chunk> {
        let p = self.find(chunk)?;
        p.contains(chunk).then(|| p.map(chunk))
    }

    /// The only run that may hold `chunk`: the last one of its bucket
    /// starting at or before it.
    #[inline]
    fn find(&self, chunk: Chunk) -> Option<Packed> {
        let b = self.bucket(chunk);
        // The last run starting at or before `chunk` is the only candidate.
        // A bucket mostly holds a run or two (a run covers up to its whole
        // 256-chunk group): scanning those is cheaper than a binary search,
        // which every origin write and snapshot read does per snapshot.
        if b.len() <= SCAN_RUNS {
            b.iter().rev().find(|p| p.old <= chunk).copied()
        } else {
            b.get(b.partition_point(|p| p.old <= chunk).checked_sub(1)?)
                .copied()
        }
    }

    /// Adds an exception, joining it to an adjacent run where it
    /// continues one. `Exists` if the chunk already has one, `Invalid` if
    /// a chunk number does not fit in 56 bits.
    pub fn insert(&mut self, e: Exception) -> Result {
        if e.old > NUMBER_MASK || e.new > NUMBER_MASK {
            return Err(Error::Invalid);
        }
        let index = self.bucket_index(e.old);
        let b = self.buckets.get_mut(index).ok_or(Error::Invalid)?;
        let i = b.partition_point(|p| p.old <= e.old);
        let group = e.old >> GROUP_SHIFT;
        if let Some(prev) = i.checked_sub(1).and_then(|j| b.get_mut(j)) {
            if prev.contains(e.old) {
                return Err(Error::Exists);
            }
            // Extend the run before: the chunk right after it, in both.
            if prev.last_old() + 1 == e.old
                && prev.new_chunk() + prev.extra() + 1 == e.new
                && prev.old >> GROUP_SHIFT == group
                && prev.extra() < MAX_EXTRA
            {
                prev.new_and_extra += 1 << CHUNK_NUMBER_BITS;
                self.chunks += 1;
                return Ok(());
            }
        }
        if let Some(next) = b.get_mut(i) {
            // Extend the run after: the chunk right before it, in both.
            if next.old == e.old + 1
                && next.new_chunk() == e.new + 1
                && next.old >> GROUP_SHIFT == group
                && next.extra() < MAX_EXTRA
            {
                next.old -= 1;
                next.new_and_extra += (1 << CHUNK_NUMBER_BITS) - 1;
                self.chunks += 1;
                return Ok(());
            }
        }
        b.try_insert(
            i,
            Packed {
                old: e.old,
                new_and_extra: e.new,
            },
        )?;
        self.chunks += 1;
        Ok(())
    }

    /// Removes origin chunk `old` from its run, as merging does: it must
    /// be the run's first or last chunk (merging works back from the most
    /// recent exception, so it always is). `NoData` if the chunk has no
    /// exception, `Invalid` if it sits inside a run.
    pub fn remove(&mut self, old: Chunk) -> Result {
        let index = self.bucket_index(old);
        let b = self.buckets.get_mut(index).ok_or(Error::Invalid)?;
        let i = b
            .partition_point(|p| p.old <= old)
            .checked_sub(1)
            .ok_or(Error::NoData)?;
        let p = b.get_mut(i).ok_or(Error::NoData)?;
        if !p.contains(old) {
            return Err(Error::NoData);
        }
        if p.extra() == 0 {
            b.remove(i);
        } else if old == p.old {
            p.old += 1;
            p.new_and_extra -= (1 << CHUNK_NUMBER_BITS) - 1;
        } else if old == p.last_old() {
            p.new_and_extra -= 1 << CHUNK_NUMBER_BITS;
        } else {
            return Err(Error::Invalid);
        }
        self.chunks -= 1;
        Ok(())
    }

    /// Removes the `len` chunks that end with origin chunk `last`, last
    /// first, as that many [`Self::remove`] calls would, a stored run at a
    /// time (merging forgets a whole merged run). On error, the chunk that
    /// failed: those after it are removed, it and those before are not.
    pub fn remove_back_from(
        &mut self,
        last: Chunk,
        len: u64,
    ) -> core::result::Result<(), (Error, Chunk)> {
        let mut c = last;
        let mut left = len;
        while left != 0 {
            let index = self.bucket_index(c);
            let b = self.buckets.get_mut(index).ok_or((Error::Invalid, c))?;
            let i = b
                .partition_point(|p| p.old <= c)
                .checked_sub(1)
                .ok_or((Error::NoData, c))?;
            let p = b.get_mut(i).ok_or((Error::NoData, c))?;
            if !p.contains(c) {
                return Err((Error::NoData, c));
            }
            let taken = if c == p.last_old() {
                // The run's tail, down to its first chunk at most.
                let k = left.min(c - p.old + 1);
                if k == p.extra() + 1 {
                    b.remove(i);
                } else {
                    p.new_and_extra -= k << CHUNK_NUMBER_BITS;
                }
                k
            } else if c == p.old {
                p.old += 1;
                p.new_and_extra -= (1 << CHUNK_NUMBER_BITS) - 1;
                1
            } else {
                return Err((Error::Invalid, c));
            };
            self.chunks -= taken;
            left -= taken;
            c = c.wrapping_sub(taken);
        }
        Ok(())
    }

    /// Every run, bucket by bucket (in no useful order across buckets).
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.iter().map(|p| p.unpack()))
    }
}
