// SPDX-License-Identifier: GPL-2.0

//! One origin chunk copied to several snapshots at once: a single kcopyd job
//! reads the chunk once and writes it to every snapshot's COW device
//! (kcopyd takes up to eight destinations). Upstream starts one copy per
//! snapshot, reading the same origin chunk once for each.
//!
//! The job runs on one snapshot's kcopyd client (its owner); every other
//! snapshot in it joins it ([`SnapCore::join_copy`]) and its destructor
//! waits for the copies it joined ([`SnapCore::stop`]), so each snapshot's
//! commits are over before it is gone, as with its own client's jobs. Only
//! snapshots of one chunk size share a job (the source region is then the
//! same); the others copy on their own.

use super::exceptions::SnapCore;
use super::store::Chunk;
use crate::dm::kcopyd::{CopyDone, CopyResult, Dests, MAX_DESTS};
use core::mem::ManuallyDrop;
use kernel::sync::Arc;

/// One snapshot's part: the origin chunk goes to its COW chunk `new`.
struct Part {
    core: Arc<SnapCore>,
    new: Chunk,
}

/// Up to [`MAX_DESTS`] parts.
///
/// # Invariants
///
/// Only the first `len` slots may be set. The array's own drop (which
/// would look at all eight on every origin write) never runs: `Drop` takes
/// out the first `len`, and the rest hold nothing.
#[derive(Default)]
struct Parts {
    parts: ManuallyDrop<[Option<Part>; MAX_DESTS]>,
    len: usize,
}

impl Drop for Parts {
    fn drop(&mut self) {
        for slot in self.parts.iter_mut().take(self.len) {
            drop(slot.take());
        }
    }
}

impl Parts {
    /// Adds `p`; handed back when full.
    fn push(&mut self, p: Part) -> Result<(), Part> {
        match self.parts.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(p);
                self.len += 1;
                Ok(())
            }
            None => Err(p),
        }
    }

    /// The parts, in order (emptying `self`).
    fn take_all(&mut self) -> impl Iterator<Item = Part> {
        let n = core::mem::take(&mut self.len);
        core::mem::take(&mut *self.parts)
            .into_iter()
            .take(n)
            .flatten()
    }
}

/// The copies of one origin chunk, gathered while an origin write checks
/// each snapshot and started together by [`ChunkCopies::start`]. The first
/// is borrowed from the caller's snapshot list: a chunk copied to one
/// snapshot (the common case) takes no reference for it and builds no
/// array.
pub(crate) struct ChunkCopies<'a> {
    old: Chunk,
    first: Option<(&'a Arc<SnapCore>, Chunk)>,
    /// The copies after the first, at most `MAX_DESTS - 1`.
    rest: Option<Parts>,
}

impl<'a> ChunkCopies<'a> {
    /// No copy yet; built in place without touching the array.
    #[inline(always)]
    pub(crate) const fn new() -> Self {
        ChunkCopies {
            old: 0,
            first: None,
            rest: None,
        }
    }

    /// Adds the copy of origin chunk `old` to COW chunk `new` for `core`
    /// (its pending exception is started); handed back if it cannot share
    /// this job (another chunk size, or the job is full), for the caller
    /// to start on its own.
    #[inline(always)]
    pub(crate) fn add(
        &mut self,
        core: &'a Arc<SnapCore>,
        old: Chunk,
        new: Chunk,
    ) -> core::result::Result<(), Chunk> {
        let Some((first, _)) = self.first else {
            self.old = old;
            self.first = Some((core, new));
            return Ok(());
        };
        self.add_more(first, core, old, new)
    }

    /// [`Self::add`] after the first copy.
    #[inline(never)]
    fn add_more(
        &mut self,
        first: &Arc<SnapCore>,
        core: &Arc<SnapCore>,
        old: Chunk,
        new: Chunk,
    ) -> core::result::Result<(), Chunk> {
        if first.chunk.sectors() != core.chunk.sectors() || self.old != old {
            return Err(new);
        }
        let rest = self.rest.get_or_insert_with(Parts::default);
        if rest.len >= MAX_DESTS - 1 {
            return Err(new);
        }
        rest.push(Part {
            core: core.clone(),
            new,
        })
        .map_err(|p| p.new)
    }

    /// Starts the copies gathered (and forgets them): one kcopyd job for
    /// all of them, or each on its own snapshot's client (one part, or no
    /// job could be made). The results arrive in each snapshot's copy
    /// completion.
    #[inline]
    pub(crate) fn start(&mut self) {
        let Some((core, new)) = self.first.take() else {
            // Most origin writes copy nothing.
            return;
        };
        match self.rest.take() {
            // One snapshot to copy to: its own job, no array moved.
            None => core.start_copy(self.old, new),
            Some(rest) => Self::start_some(
                self.old,
                Part {
                    core: core.clone(),
                    new,
                },
                rest,
            ),
        }
    }

    // Out of line: its arrays stay off the caller's (`map`'s) frame.
    #[inline(never)]
    fn start_some(old: Chunk, first: Part, mut rest: Parts) {
        if rest.len == 0 {
            return first.core.start_copy(old, first.new);
        }
        let mut job = SharedCopy {
            old,
            parts: Parts::default(),
        };
        let mut to = Dests::new();
        let mut from = None;
        // At most `MAX_DESTS` in all (`rest` holds at most one fewer).
        for p in core::iter::once(first).chain(rest.take_all()) {
            // Ended by the copy's completion, whichever job it is in.
            p.core.copy_started();
            let placed = match &from {
                // The owner: the job runs on its client.
                None => p
                    .core
                    .copy_source(old)
                    .and_then(|f| Ok((p.core.copy_dest(p.new, f.count())?, f)))
                    .ok()
                    .and_then(|(d, f)| {
                        to.push(d).ok()?;
                        from = Some(f);
                        Some(())
                    })
                    .is_some(),
                // The others join it.
                Some(f) => match p.core.copy_dest(p.new, f.count()) {
                    Ok(d) if p.core.join_copy() => {
                        let pushed = to.push(d).is_ok();
                        if !pushed {
                            p.core.leave_copy();
                        }
                        pushed
                    }
                    _ => false,
                },
            };
            // `job` has room for every part given.
            let alone = if placed {
                job.parts.push(p).err()
            } else {
                Some(p)
            };
            if let Some(p) = alone {
                p.core.submit_copy(old, p.new);
            }
        }
        let (Some(from), Some(owner)) = (from, job.owner()) else {
            return;
        };
        if job.parts.len < 2 {
            // Nobody joined: the owner copies alone.
            return job.not_submitted();
        }
        if let Err((_, job)) = owner.copy(from, to, job) {
            job.not_submitted();
        }
    }
}

/// A submitted shared copy: the owner's part first, then the parts that
/// joined it, in the order of the job's destinations.
struct SharedCopy {
    old: Chunk,
    parts: Parts,
}

impl SharedCopy {
    fn owner(&self) -> Option<Arc<SnapCore>> {
        let first = self.parts.parts.first().and_then(Option::as_ref)?;
        Some(first.core.clone())
    }

    /// The job was not run: each part copies on its own (already counted
    /// as started; joins undone).
    fn not_submitted(mut self) {
        let old = self.old;
        for (i, p) in self.parts.take_all().enumerate() {
            p.core.submit_copy(old, p.new);
            if i > 0 {
                // After the copy is on its own way: the destructor waits
                // until then.
                p.core.leave_copy();
            }
        }
    }
}

impl CopyDone for SharedCopy {
    /// Each snapshot commits its exception with its own destination's
    /// result, here, one after the other (as one snapshot's completions
    /// run one at a time on its kcopyd client; handing the others to their
    /// own workers cost more than their commits under the benchmark). The
    /// owner goes last: the origin write parked on its copy then finds
    /// every other copy committed and needs no second retry.
    fn done(mut self, r: CopyResult) {
        let old = self.old;
        let n = self.parts.len;
        for i in (0..n).rev() {
            let Some(p) = self.parts.parts.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let ok = !r.read_err && (r.write_err >> i) & 1 == 0;
            p.core.copy_done(old, ok);
            if i > 0 {
                p.core.leave_copy();
            }
        }
    }
}
