// SPDX-License-Identifier: GPL-2.0

//! Pending exceptions: the chunks whose copy to the COW device is in
//! flight, and what waits on each (upstream's `dm_snap_pending_exception`
//! without the bios themselves: the waiting items are generic).
//!
//! Each pending exception gets a sequence number when it is created; copies
//! may finish in any order, but exceptions are handed out for commit
//! strictly in sequence order (upstream's `out_of_order_tree`), so the
//! store commits COW chunks in the order it allocated them and a crash
//! never leaves a hole behind a committed exception.
//!
//! The set stays small (bounded by the copies in flight), so it is one
//! vector sorted by origin chunk.

use super::Chunk;
use crate::persistent_data::shim::PVec;
use crate::persistent_data::{Error, Result};

/// Where a copy stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyState {
    /// Created; the copy has not been issued.
    Waiting,
    /// The copy (or a full-chunk write replacing it) is in flight.
    Started,
    /// The copy finished (`error` if it failed); waiting its turn to commit.
    Copied {
        /// The copy failed: the exception must be committed invalid.
        error: bool,
    },
    /// Handed to the store for commit.
    Committing,
}

/// One chunk being copied to the COW device, and its waiters.
pub struct Pending<W> {
    old: Chunk,
    new: Chunk,
    sequence: u64,
    state: CopyState,
    /// Writes to the snapshot itself, remapped to `new`, issued once the
    /// exception is complete.
    snapshot_waiters: Waiters<W>,
    /// Origin writes held until the copy is durable, then retried (they
    /// may need exceptions in other snapshots).
    origin_waiters: Waiters<W>,
}

/// The items waiting on one pending exception. Nearly always there is one
/// (the write that started the copy): it is kept inline, so a first write
/// costs no allocation; more go to a vector.
pub struct Waiters<W> {
    first: Option<W>,
    more: PVec<W>,
}

impl<W> Waiters<W> {
    const fn new() -> Self {
        Waiters {
            first: None,
            more: PVec::new(),
        }
    }

    /// Adds `w` after the others; on failure (no memory) `w` comes back.
    fn push(&mut self, w: W) -> core::result::Result<(), (Error, W)> {
        if self.first.is_none() {
            self.first = Some(w);
            return Ok(());
        }
        if let Err(e) = self.more.try_reserve(1) {
            return Err((e, w));
        }
        // Room was reserved just above, so this push cannot fail.
        let _ = self.more.try_push(w);
        Ok(())
    }

    /// Hands every waiter to `f`, the latest first.
    fn drain(self, f: &mut impl FnMut(W)) {
        let Waiters { first, mut more } = self;
        while let Some(w) = more.pop() {
            f(w);
        }
        if let Some(w) = first {
            f(w);
        }
    }

    /// Takes the last one added.
    pub fn pop(&mut self) -> Option<W> {
        self.more.pop().or_else(|| self.first.take())
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// True when none wait.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// In the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &W> {
        self.first.iter().chain(self.more.iter())
    }
}

impl<W> Pending<W> {
    /// Origin chunk being copied.
    pub fn old_chunk(&self) -> Chunk {
        self.old
    }

    /// COW chunk it is copied to.
    pub fn new_chunk(&self) -> Chunk {
        self.new
    }

    /// Where the copy stands.
    pub fn state(&self) -> CopyState {
        self.state
    }

    fn waiters(&mut self, kind: WaiterKind) -> &mut Waiters<W> {
        match kind {
            WaiterKind::Snapshot => &mut self.snapshot_waiters,
            WaiterKind::Origin => &mut self.origin_waiters,
        }
    }

    /// The waiters, snapshot writes first, origin writes second, in the
    /// order they arrived.
    pub fn into_waiters(self) -> (Waiters<W>, Waiters<W>) {
        (self.snapshot_waiters, self.origin_waiters)
    }

    /// Hands every waiter to `f`: snapshot writes first, then origin
    /// writes, each the latest first (as [`Waiters::pop`]). Consumes the
    /// lists as it goes, so nothing is left for their drops to look at.
    pub fn drain_waiters(self, mut f: impl FnMut(W)) {
        let Pending {
            snapshot_waiters,
            origin_waiters,
            ..
        } = self;
        snapshot_waiters.drain(&mut f);
        origin_waiters.drain(&mut f);
    }
}

/// A pending exception whose turn to commit has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyToCommit {
    /// Origin chunk.
    pub old: Chunk,
    /// COW chunk.
    pub new: Chunk,
    /// The copy succeeded (commit it valid).
    pub valid: bool,
}

/// What [`PendingExceptions::need`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Need<W> {
    /// A copy of the chunk was in flight already. The waiter joined it,
    /// or is `refused` (no memory to queue it).
    InFlight {
        /// The waiter, if it could not be queued.
        refused: Option<W>,
    },
    /// A copy to this COW chunk was recorded, started; the waiter waits on
    /// it. The caller issues the copy.
    Started(Chunk),
    /// No memory to record a copy; the waiter comes back.
    NotTracked(Option<W>),
    /// The allocation failed with this error; the waiter comes back.
    NotAllocated(Error, Option<W>),
}

/// Which list of a pending exception a waiter joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaiterKind {
    /// A write to the snapshot device.
    Snapshot,
    /// A write to the origin.
    Origin,
}

/// The pending exceptions of one snapshot.
pub struct PendingExceptions<W> {
    entries: PVec<Pending<W>>,
    next_sequence: u64,
}

impl<W> Default for PendingExceptions<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W> PendingExceptions<W> {
    /// No copies in flight.
    pub const fn new() -> Self {
        PendingExceptions {
            entries: PVec::new(),
            next_sequence: 0,
        }
    }

    fn position(&self, old: Chunk) -> core::result::Result<usize, usize> {
        self.entries.binary_search_by_key(&old, |p| p.old)
    }

    /// Copies in flight (or waiting to commit).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pending exception for origin chunk `old`.
    pub fn get(&self, old: Chunk) -> Option<&Pending<W>> {
        self.entries.get(self.position(old).ok()?)
    }

    /// Records a new pending exception (COW chunk `new` was just
    /// allocated for `old`); `Exists` if `old` already has one.
    pub fn insert(&mut self, old: Chunk, new: Chunk) -> Result {
        let i = match self.position(old) {
            Ok(_) => return Err(Error::Exists),
            Err(i) => i,
        };
        self.insert_at(i, old, new)
    }

    /// Records the pending exception of `old` at index `i`, where a search
    /// found it belongs.
    fn insert_at(&mut self, i: usize, old: Chunk, new: Chunk) -> Result {
        self.entries.try_insert(
            i,
            Pending {
                old,
                new,
                sequence: self.next_sequence,
                state: CopyState::Waiting,
                snapshot_waiters: Waiters::new(),
                origin_waiters: Waiters::new(),
            },
        )?;
        self.next_sequence += 1;
        Ok(())
    }

    /// Records a new pending exception for `old` with the COW chunk that
    /// `alloc` hands out, calling `alloc` only once nothing can keep the
    /// entry from being recorded: a chunk allocated and then not tracked
    /// would never be committed, and the store would wait for it. The
    /// outer `Err` (`Exists`, or `NoMem`) comes before `alloc` runs; the
    /// inner result is `alloc`'s.
    pub fn insert_with(
        &mut self,
        old: Chunk,
        alloc: impl FnOnce() -> Result<Chunk>,
    ) -> Result<Result<Chunk>> {
        let i = match self.position(old) {
            Ok(_) => return Err(Error::Exists),
            Err(i) => i,
        };
        self.entries.try_reserve(1)?;
        let new = match alloc() {
            Ok(new) => new,
            Err(e) => return Ok(Err(e)),
        };
        // Cannot fail: `i` is where `old` goes (nothing changed since the
        // search) and room was reserved.
        self.insert_at(i, old, new)?;
        Ok(Ok(new))
    }

    /// What a write to origin chunk `old` needs, in one search (upstream's
    /// lookup, allocation and insert of a pending exception, and its
    /// `bio_list_add`): a copy in flight is joined; otherwise one is
    /// recorded, already started, with the COW chunk `alloc` hands out
    /// (called, as in [`Self::insert_with`], only once the entry can be
    /// recorded). `waiter`, if given, waits on that copy; it comes back
    /// where it could not.
    pub fn need(
        &mut self,
        old: Chunk,
        waiter: Option<(WaiterKind, W)>,
        alloc: impl FnOnce() -> Result<Chunk>,
    ) -> Need<W> {
        let i = match self.position(old) {
            Ok(i) => {
                let Some(p) = self.entries.get_mut(i) else {
                    return Need::InFlight {
                        refused: waiter.map(|(_, w)| w),
                    };
                };
                let refused = waiter.and_then(|(kind, w)| p.waiters(kind).push(w).err());
                return Need::InFlight {
                    refused: refused.map(|(_, w)| w),
                };
            }
            Err(i) => i,
        };
        if self.entries.try_reserve(1).is_err() {
            return Need::NotTracked(waiter.map(|(_, w)| w));
        }
        let new = match alloc() {
            Ok(new) => new,
            Err(e) => return Need::NotAllocated(e, waiter.map(|(_, w)| w)),
        };
        let p = Pending {
            old,
            new,
            sequence: self.next_sequence,
            state: CopyState::Started,
            snapshot_waiters: Waiters::new(),
            origin_waiters: Waiters::new(),
        };
        // Cannot fail: `i` is where `old` goes (nothing changed since the
        // search) and room was reserved.
        if self.entries.try_insert(i, p).is_err() {
            return Need::NotTracked(waiter.map(|(_, w)| w));
        }
        self.next_sequence += 1;
        if let Some((kind, w)) = waiter {
            match self.entries.get_mut(i) {
                // The first waiter of a list is kept inline: no
                // allocation.
                Some(p) => p.waiters(kind).first = Some(w),
                // (Cannot happen: the entry was inserted at `i`.)
                None => return Need::InFlight { refused: Some(w) },
            }
        }
        Need::Started(new)
    }

    /// Queues `w` on chunk `old`'s pending exception. On failure (no such
    /// exception, or no memory) `w` comes back with the error, for the
    /// caller to fail it.
    pub fn add_waiter(
        &mut self,
        old: Chunk,
        kind: WaiterKind,
        w: W,
    ) -> core::result::Result<(), (Error, W)> {
        let Some(p) = self
            .position(old)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        else {
            return Err((Error::NoData, w));
        };
        p.waiters(kind).push(w)
    }

    /// Marks the copy of `old` issued; false if it was not waiting (it
    /// was already started, or there is no such exception), so that
    /// exactly one caller starts each copy.
    pub fn start(&mut self, old: Chunk) -> bool {
        match self
            .position(old)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            Some(p) if p.state == CopyState::Waiting => {
                p.state = CopyState::Started;
                true
            }
            _ => false,
        }
    }

    /// Records that the copy of `old` finished; `NoData` if it was not in
    /// flight.
    pub fn copied(&mut self, old: Chunk, error: bool) -> Result {
        let p = self
            .position(old)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
            .ok_or(Error::NoData)?;
        if p.state != CopyState::Started {
            return Err(Error::NoData);
        }
        p.state = CopyState::Copied { error };
        Ok(())
    }

    /// The next exception to commit: the oldest one not yet handed out,
    /// if its copy is done. It is marked `Committing`.
    pub fn next_ready(&mut self) -> Option<ReadyToCommit> {
        let p = self
            .entries
            .iter_mut()
            .filter(|p| p.state != CopyState::Committing)
            .min_by_key(|p| p.sequence)?;
        let CopyState::Copied { error } = p.state else {
            return None;
        };
        p.state = CopyState::Committing;
        Some(ReadyToCommit {
            old: p.old,
            new: p.new,
            valid: !error,
        })
    }

    /// Whether [`Self::next_ready`] would hand out an exception now.
    pub fn has_ready(&self) -> bool {
        self.entries
            .iter()
            .filter(|p| p.state != CopyState::Committing)
            .min_by_key(|p| p.sequence)
            .is_some_and(|p| matches!(p.state, CopyState::Copied { .. }))
    }

    /// Removes the pending exception of `old` (its commit completed, or it
    /// is abandoned), handing back its waiters.
    pub fn remove(&mut self, old: Chunk) -> Option<Pending<W>> {
        self.entries.remove(self.position(old).ok()?)
    }
}
