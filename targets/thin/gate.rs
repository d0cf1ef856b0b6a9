// SPDX-License-Identifier: GPL-2.0

//! The pool's I/O gate: the cell lock on virtual blocks and the two
//! deferred sets (upstream's bio prison, `all_io_ds` and `shared_read_ds`),
//! kept together because `map` checks a cell and counts a bio in one step.
//!
//! Every bio sent to the data device is counted until it completes
//! ([`IoEntries`], kept in its per-bio data). Work that changes what a data
//! block is for waits until the I/O counted before it has finished:
//! - a discard unmaps (and frees, and passes down) its blocks only after
//!   all I/O counted before it ([`IoGate::after_all_io`]);
//! - breaking sharing remaps a virtual block off a shared data block only
//!   after the reads of shared blocks counted before it
//!   ([`IoGate::after_shared_reads`]), so the old block cannot be freed
//!   and reused under them.
//!
//! A bio is counted either while its virtual block's cell is held (the
//! worker) or, in `map`, only if no cell locks its block at that moment
//! ([`IoGate::enter_mapped`]), checked in one step after the lookup while
//! `map` still holds the metadata read lock. The worker takes the cell
//! before it queues such work and changes a mapping only under the write
//! lock, so a `map` bio is either counted ahead of the work (and waited
//! for), or sees the cell and goes to the worker, or finds the new mapping.
//!
//! No locking here: the pool keeps the gate under a spinlock taken with
//! interrupts off (`map` must not sleep, `end_io` may run in interrupt
//! context). Nothing here allocates after [`IoGate::try_new`].

use super::prison::{
    CellHandle, CellKey, DeferredEntry, DeferredSet, DetainError, Detained, Prison, StaleCell,
};
use crate::persistent_data::error::Result;

/// The counts a bio holds while it is in flight to the data device; give
/// them back with [`IoGate::exit`] when it completes. The default holds
/// nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoEntries {
    all_io: Option<DeferredEntry>,
    shared_read: Option<DeferredEntry>,
}

impl IoEntries {
    /// Whether nothing is counted (no lock needed to give it back).
    pub fn is_empty(&self) -> bool {
        self.all_io.is_none() && self.shared_read.is_none()
    }
}

/// What [`IoGate::exit`] made ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Work waiting for all I/O may run ([`IoGate::pop_all_io_ready`]).
    pub all_io: bool,
    /// Work waiting for shared reads may run
    /// ([`IoGate::pop_shared_ready`]).
    pub shared: bool,
}

impl Ready {
    /// Whether anything is ready.
    pub fn any(&self) -> bool {
        self.all_io || self.shared
    }
}

/// Cells on virtual blocks holding items `T`, and work `W` waiting for all
/// I/O (the tokens waiting for shared reads are plain numbers).
pub struct IoGate<T, W> {
    prison: Prison<T>,
    all_io: DeferredSet<W>,
    shared_read: DeferredSet<u64>,
}

impl<T, W> IoGate<T, W> {
    /// A gate for `max_cells` held cells and `max_queued` items waiting in
    /// them. Each waiting work item holds a cell, so the deferred sets get
    /// room for `max_cells` each and never refuse work.
    pub fn try_new(max_cells: u32, max_queued: u32) -> Result<Self> {
        Ok(Self {
            prison: Prison::try_new(max_cells, max_queued)?,
            all_io: DeferredSet::try_new(max_cells)?,
            shared_read: DeferredSet::try_new(max_cells)?,
        })
    }

    /// See [`Prison::detain`].
    pub fn detain(
        &mut self,
        key: &CellKey,
        item: T,
    ) -> core::result::Result<Detained<T>, DetainError<T>> {
        self.prison.detain(key, item)
    }

    /// See [`Prison::release`].
    pub fn release(
        &mut self,
        handle: CellHandle,
        f: impl FnMut(T),
    ) -> core::result::Result<(), StaleCell> {
        self.prison.release(handle, f)
    }

    /// Whether a held cell locks some block of `key`.
    pub fn is_locked(&self, key: &CellKey) -> bool {
        self.prison.is_locked(key)
    }

    /// `map`'s way in, after the lookup: counts a bio to virtual block
    /// `key` (`shared_read` for a read of a shared data block) unless a
    /// cell locks it (then `None`: the bio goes to the worker).
    pub fn enter_mapped(&mut self, key: &CellKey, shared_read: bool) -> Option<IoEntries> {
        if self.prison.is_locked(key) {
            return None;
        }
        Some(self.enter(shared_read))
    }

    /// Counts a bio whose virtual block's cell the caller holds (the
    /// worker); `shared_read` for a read of a shared data block.
    pub fn enter(&mut self, shared_read: bool) -> IoEntries {
        IoEntries {
            all_io: Some(self.all_io.inc()),
            shared_read: shared_read.then(|| self.shared_read.inc()),
        }
    }

    /// A counted bio completed (or was not issued after all): gives back
    /// its counts, leaving `entries` empty, so a second call does nothing.
    pub fn exit(&mut self, entries: &mut IoEntries) -> Ready {
        let mut ready = Ready::default();
        if let Some(e) = entries.shared_read.take() {
            ready.shared = self.shared_read.finish(e);
        }
        if let Some(e) = entries.all_io.take() {
            ready.all_io = self.all_io.finish(e);
        }
        ready
    }

    /// Queues `work` behind all I/O counted so far. `Ok(Some(work))`:
    /// nothing is in flight, run it now; `Ok(None)`: it comes back from
    /// [`Self::pop_all_io_ready`] later; `Err(work)`: no room.
    pub fn after_all_io(&mut self, work: W) -> core::result::Result<Option<W>, W> {
        self.all_io.add_work(work)
    }

    /// Takes work whose earlier I/O has all finished.
    pub fn pop_all_io_ready(&mut self) -> Option<W> {
        self.all_io.pop_ready()
    }

    /// Queues `token` behind the shared reads counted so far. `Ok(true)`:
    /// none in flight, go ahead; `Ok(false)`: the token comes back from
    /// [`Self::pop_shared_ready`] later; `Err(())`: no room.
    pub fn after_shared_reads(&mut self, token: u64) -> core::result::Result<bool, ()> {
        match self.shared_read.add_work(token) {
            Ok(Some(_)) => Ok(true),
            Ok(None) => Ok(false),
            Err(_) => Err(()),
        }
    }

    /// Takes a token whose earlier shared reads have all finished.
    pub fn pop_shared_ready(&mut self) -> Option<u64> {
        self.shared_read.pop_ready()
    }
}
