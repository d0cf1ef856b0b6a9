// SPDX-License-Identifier: GPL-2.0

//! A thin device's external origin (`thin <pool dev> <dev id> <origin dev>`):
//! a read-only device its unprovisioned blocks read, up to the origin's
//! end (zeros past it). It belongs to the thin's table line, not to the
//! metadata: a snapshot of such a thin names the origin on its own line.

use super::origin_span::{origin_copy_len, unprovisioned_read, UnprovisionedRead};
use super::thin_target::ThinTarget;
use crate::dm::ratelimit::dm_err_limit;
use crate::dm::{BlkStatus, DmDev, HeldBio, MapBio, MapResult};
use core::sync::atomic::{AtomicU64, Ordering};

/// The origin device and its length.
pub(crate) struct ExternalOrigin {
    dev: DmDev,
    /// Length in sectors, as upstream read again on every resume: no bio
    /// is in flight then, so a bio sees one length from `map` to its end.
    sectors: AtomicU64,
}

impl ExternalOrigin {
    pub(crate) fn new(dev: DmDev) -> Self {
        let sectors = AtomicU64::new(dev.nr_sectors());
        ExternalOrigin { dev, sectors }
    }

    /// The device, for the table line.
    pub(crate) fn dev(&self) -> &DmDev {
        &self.dev
    }

    /// Reads the origin's length again (the thin is resuming).
    pub(crate) fn refresh_size(&self) {
        self.sectors.store(self.dev.nr_sectors(), Ordering::Relaxed);
    }

    fn sectors(&self) -> u64 {
        self.sectors.load(Ordering::Relaxed)
    }

    /// In `map`, for any read: one crossing the origin's end is cut there
    /// (dm core maps the rest as another bio), so no read the worker sees
    /// is partly on the origin. Upstream shortens the bio instead.
    pub(crate) fn cut_read(&self, bio: &mut MapBio<'_, ThinTarget>, virt: u64) {
        if let UnprovisionedRead::Crosses(n) =
            unprovisioned_read(virt, bio.sectors(), self.sectors())
        {
            // Refused only for what is no read with data on a plain device;
            // the worker then fails the read rather than guess.
            let _ = bio.accept_partial(n);
        }
    }

    /// A read of an unprovisioned block in `map`: remapped to the origin or
    /// zero-filled, never waiting.
    pub(crate) fn map_read(&self, mut bio: MapBio<'_, ThinTarget>, virt: u64) -> MapResult {
        match unprovisioned_read(virt, bio.sectors(), self.sectors()) {
            UnprovisionedRead::Origin => bio.remap(&self.dev, virt),
            UnprovisionedRead::Zeros => match bio.zero_fill() {
                Ok(()) => bio.end(BlkStatus::OK),
                Err(_) => bio.kill(),
            },
            UnprovisionedRead::Crosses(_) => {
                dm_err_limit!("thin: a read crossing the external origin's end was not cut\n");
                bio.kill()
            }
        }
    }

    /// A read of an unprovisioned block in the worker.
    pub(crate) fn read(&self, mut bio: HeldBio<ThinTarget>, virt: u64) {
        match unprovisioned_read(virt, bio.sectors(), self.sectors()) {
            UnprovisionedRead::Origin => bio.submit_to(&self.dev, virt),
            UnprovisionedRead::Zeros => match bio.zero_fill() {
                Ok(()) => bio.end_ok(),
                Err(_) => bio.end(BlkStatus::IO_ERROR),
            },
            UnprovisionedRead::Crosses(_) => {
                dm_err_limit!("thin: a read crossing the external origin's end was not cut\n");
                bio.end(BlkStatus::IO_ERROR)
            }
        }
    }

    /// Where a new data block for `vblock` is copied from: the origin's
    /// part of the block (the origin, first sector, length), if it has any.
    pub(crate) fn copy_source(&self, vblock: u64, block_size: u64) -> Option<(&DmDev, u64, u64)> {
        let len = origin_copy_len(vblock, block_size, self.sectors());
        (len > 0).then(|| (&self.dev, vblock.saturating_mul(block_size), len))
    }
}
