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
//! The caller holds one lock over [`CopyThrottle`], so a write parks only
//! while the count is over the threshold and no copy's end can miss it.

/// Where parked writes wait: a queue the throttle only fills and empties.
pub trait Parked: Default {
    /// One parked write.
    type Item;
    /// Adds `item`.
    fn park(&mut self, item: Self::Item);
    /// True when it holds none.
    fn is_empty(&self) -> bool;
}

/// A snapshot's copies in flight and the writes parked on them.
#[derive(Default)]
pub struct CopyThrottle<Q> {
    in_progress: usize,
    parked: Q,
}

impl<Q: Parked> CopyThrottle<Q> {
    /// No copies in flight, nothing parked.
    pub fn new() -> Self {
        CopyThrottle {
            in_progress: 0,
            parked: Q::default(),
        }
    }

    /// Copies (and chunk zeroings) in flight.
    pub fn in_progress(&self) -> usize {
        self.in_progress
    }

    /// True while a write must wait (upstream: `in_progress > threshold`).
    pub fn over(&self, threshold: usize) -> bool {
        self.in_progress > threshold
    }

    /// A copy was issued (`account_start_copy`).
    pub fn start(&mut self) {
        self.in_progress = self.in_progress.saturating_add(1);
    }

    /// A copy finished (`account_end_copy`): the parked writes, if the
    /// count is now at or under `threshold` and some are parked (all of
    /// them: each is checked again when mapped). `Err` if no copy was in
    /// flight (the count stays 0).
    pub fn end(&mut self, threshold: usize) -> Result<Option<Q>, ()> {
        self.in_progress = self.in_progress.checked_sub(1).ok_or(())?;
        if self.over(threshold) || self.parked.is_empty() {
            return Ok(None);
        }
        Ok(Some(core::mem::take(&mut self.parked)))
    }

    /// Parks `write` (as `into` makes it a queue item) if a write must wait
    /// now; otherwise hands it back, to be mapped at once.
    pub fn park<T>(
        &mut self,
        write: T,
        threshold: usize,
        into: impl FnOnce(T) -> Q::Item,
    ) -> Result<(), T> {
        if !self.over(threshold) {
            return Err(write);
        }
        self.parked.park(into(write));
        Ok(())
    }

    /// Every parked write, whatever the count (the snapshot is going away).
    pub fn take_parked(&mut self) -> Q {
        core::mem::take(&mut self.parked)
    }
}
