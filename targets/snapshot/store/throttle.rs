// SPDX-License-Identifier: GPL-2.0

//! The limit on one snapshot's chunk copies in flight (upstream's
//! `in_progress`, `snapshot_cow_threshold`, `wait_for_in_progress`): while
//! more copies than the threshold are in flight, writes that could start
//! another one (every write to the snapshot, every write to its origin)
//! are parked instead of mapped; when a copy finishes and the count is back
//! at or under the threshold, every parked write is handed back to be
//! mapped again.
//!
//! Upstream sleeps in `map`; here nothing sleeps: the caller keeps the
//! parked writes in `Q` (a list of bios) and maps them again from a worker.
//!
//! The count is [`CopyCount`], atomics read and changed without a lock (a
//! copy's start and end cost no lock pair); the parked writes are
//! [`CopyThrottle`], under one lock the caller holds. A write parks only
//! after announcing it ([`CopyCount`]'s flag) and then seeing the count
//! over the threshold; an end lowers the count and then looks at the flag.
//! Both are sequentially consistent, so of a parking write and an end that
//! brings the count to the threshold, at least one sees the other: the
//! write does not park, or the end takes the lock and hands it back.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Where parked writes wait: a queue the throttle only fills and empties.
pub trait Parked: Default {
    /// One parked write.
    type Item;
    /// Adds `item`.
    fn park(&mut self, item: Self::Item);
    /// True when it holds none.
    fn is_empty(&self) -> bool;
}

/// A snapshot's copies in flight (and chunk zeroings), counted without a
/// lock.
#[derive(Default)]
pub struct CopyCount {
    copies: AtomicUsize,
    /// Set by a write about to park, cleared once nothing is parked: while
    /// clear, an end needs no lock.
    parking: AtomicBool,
}

impl CopyCount {
    /// No copies in flight.
    pub const fn new() -> Self {
        CopyCount {
            copies: AtomicUsize::new(0),
            parking: AtomicBool::new(false),
        }
    }

    /// Copies in flight now.
    pub fn in_progress(&self) -> usize {
        self.copies.load(SeqCst)
    }

    /// True while a write must wait (upstream: `in_progress > threshold`).
    pub fn over(&self, threshold: usize) -> bool {
        self.in_progress() > threshold
    }

    /// A copy was issued (`account_start_copy`).
    pub fn start(&self) {
        // Never near `usize::MAX`: every copy holds memory.
        self.copies.fetch_add(1, SeqCst);
    }

    /// A copy finished (`account_end_copy`). `Ok(true)` if writes may be
    /// parked and the count is now at or under `threshold`: the caller then
    /// takes its lock and asks [`CopyThrottle::release`] for them. `Err` if
    /// no copy was in flight (the count stays 0).
    pub fn end(&self, threshold: usize) -> Result<bool, ()> {
        self.end_with(|| threshold)
    }

    /// [`Self::end`] with the threshold read only when some write may be
    /// parked (most ends).
    #[inline]
    pub fn end_with(&self, threshold: impl FnOnce() -> usize) -> Result<bool, ()> {
        let before = self
            .copies
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .map_err(|_| ())?;
        // Lowered first, then the flag: see the module's comment.
        Ok(self.parking.load(SeqCst) && before - 1 <= threshold())
    }
}

/// The writes parked on a snapshot's limit; the caller holds one lock over
/// it.
#[derive(Default)]
pub struct CopyThrottle<Q> {
    parked: Q,
}

impl<Q: Parked> CopyThrottle<Q> {
    /// Nothing parked.
    pub fn new() -> Self {
        CopyThrottle {
            parked: Q::default(),
        }
    }

    /// Parks `write` (as `into` makes it a queue item) if a write must wait
    /// now (`count` over `threshold`); otherwise hands it back, to be
    /// mapped at once.
    pub fn park<T>(
        &mut self,
        count: &CopyCount,
        write: T,
        threshold: usize,
        into: impl FnOnce(T) -> Q::Item,
    ) -> Result<(), T> {
        // Announced before the count is read: see the module's comment.
        count.parking.store(true, SeqCst);
        if !count.over(threshold) {
            if self.parked.is_empty() {
                // Nothing parked: ends need not look.
                count.parking.store(false, SeqCst);
            }
            return Err(write);
        }
        self.parked.park(into(write));
        Ok(())
    }

    /// The parked writes (all of them: each is checked again when mapped),
    /// if the count is at or under `threshold` now and some are parked;
    /// called when [`CopyCount::end`] says so.
    pub fn release(&mut self, count: &CopyCount, threshold: usize) -> Option<Q> {
        if count.over(threshold) {
            return None;
        }
        // Parked writes set the flag again under the caller's lock.
        count.parking.store(false, SeqCst);
        if self.parked.is_empty() {
            return None;
        }
        Some(core::mem::take(&mut self.parked))
    }

    /// Every parked write, whatever the count (the snapshot is going away).
    pub fn take_parked(&mut self) -> Q {
        core::mem::take(&mut self.parked)
    }
}
