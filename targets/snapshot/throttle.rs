// SPDX-License-Identifier: GPL-2.0

//! A snapshot's limit on chunk copies in flight (upstream's
//! `snapshot_cow_threshold`; the accounting is [`CopyCount`] and
//! [`CopyThrottle`]): writes to
//! the snapshot and writes to its origin that arrive while more copies than
//! the threshold are in flight are held, parked here, and mapped again from
//! the completion of the copy whose end brings the count back (upstream
//! sleeps in `map` instead). Nothing stays parked once no copy is in
//! flight: the end that brings the count to 0 (or anything at or under the
//! threshold) releases every parked write. Writes through `snapshot-merge` and origin
//! writes retried after a copy are not limited, as upstream.

use super::exceptions::SnapCore;
use super::origin::Origin;
use super::origins;
use super::snap::{self, Snapshot};
use super::store::Parked;
use crate::dm::noio::noio_scope;
use crate::dm::{params, BioList, HeldBio};
use kernel::prelude::*;
use kernel::sync::Arc;

/// A write parked on the limit.
pub(crate) enum ThrottledBio {
    /// To the snapshot.
    Snapshot(HeldBio<Snapshot>),
    /// To its origin, through `snapshot-origin`.
    Origin(HeldBio<Origin>),
}

/// The writes parked on one snapshot's limit (no allocation: bio lists).
#[derive(Default)]
pub(crate) struct Throttled {
    snapshot: BioList<Snapshot>,
    origin: BioList<Origin>,
}

impl Parked for Throttled {
    type Item = ThrottledBio;

    fn park(&mut self, item: ThrottledBio) {
        match item {
            ThrottledBio::Snapshot(b) => self.snapshot.push(b),
            ThrottledBio::Origin(b) => self.origin.push(b),
        }
    }

    fn is_empty(&self) -> bool {
        self.snapshot.is_empty() && self.origin.is_empty()
    }
}

/// The threshold now (the parameter is writable at run time).
fn threshold() -> usize {
    params::snapshot_cow_threshold() as usize
}

impl SnapCore {
    /// A copy (or chunk zeroing) is being issued.
    pub(super) fn copy_started(&self) {
        self.copies.start();
    }

    /// A copy (or zeroing) counted by [`Self::copy_started`] finished: the
    /// writes parked on the limit are mapped again once it allows, here
    /// (the copy's completion, a worker: process context, no snapshot lock
    /// held), as the origin writes a committed copy releases are.
    pub(super) fn copy_ended(self: &Arc<Self>) {
        match self.copies.end_with(threshold) {
            Ok(false) => {}
            Ok(true) => {
                let released = self.throttle.lock().release(&self.copies, threshold());
                if let Some(parked) = released {
                    self.remap_throttled(parked);
                }
            }
            Err(()) => pr_warn!("snapshot: a copy ended that was never counted\n"),
        }
    }

    /// True if writes may have to wait: a look at the count without the
    /// lock (a copy ending meanwhile only has [`Self::throttle`] take the
    /// lock for nothing).
    #[inline]
    pub(crate) fn over_limit(&self) -> bool {
        // No copy in flight (most writes): no need to read the parameter.
        let copies = self.copies.in_progress();
        copies != 0 && copies > threshold()
    }

    /// Parks `bio` (made a [`ThrottledBio`] by `into`) if the snapshot has
    /// too many copies in flight; otherwise hands it back to be mapped now.
    /// Never sleeps on the limit (called from `map`).
    #[inline]
    pub(crate) fn throttle<B>(
        &self,
        bio: B,
        into: impl FnOnce(B) -> ThrottledBio,
    ) -> Result<(), B> {
        if !self.over_limit() {
            return Err(bio);
        }
        self.throttle
            .lock()
            .park(&self.copies, bio, threshold(), into)
    }

    /// Maps every bio of `parked` again: each is checked against the limit
    /// once more.
    fn remap_throttled(self: &Arc<Self>, parked: Throttled) {
        let Throttled { snapshot, origin } = parked;
        // From a copy's completion: no allocation may recurse into I/O.
        noio_scope(|| {
            for b in snapshot {
                snap::write_again(self, b);
            }
            for b in origin {
                origins::origin_write_again(&self.origin, b);
            }
        })
    }
}
