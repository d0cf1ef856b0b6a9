// SPDX-License-Identifier: GPL-2.0

//! A range of sectors on a target's device, as kcopyd and dm-io address I/O
//! (`struct dm_io_region`).
//!
//! # Ownership
//!
//! A [`Region`] holds its own reference on its device's open file (the
//! [`DmDev`] it was built from), so a copy or I/O built from
//! regions keeps every device it touches open until it completes, even if the
//! table that opened the device is destroyed first.
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h)

use super::bindings;
use super::device::{DevRef, DmDev};
use kernel::error::{code::EINVAL, Result};

/// `count` sectors of `dev` starting at `sector`.
///
/// # Invariants
///
/// `count > 0` and the range ended inside the device when it was built.
#[derive(Clone)]
pub(crate) struct Region {
    dev: DevRef,
    sector: u64,
    count: u64,
}

impl Region {
    /// A region of `dev`; fails with `EINVAL` if it is empty or runs past the
    /// end of the device.
    pub(crate) fn new(dev: DmDev, sector: u64, count: u64) -> Result<Self> {
        let end = sector.checked_add(count).ok_or(EINVAL)?;
        if count == 0 || end > dev.nr_sectors() {
            return Err(EINVAL);
        }
        // INVARIANT: checked above.
        Ok(Region {
            dev: dev.into(),
            sector,
            count,
        })
    }

    /// Length in sectors (never zero).
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Length in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.count << 9
    }

    /// The C form; valid while `self` (and so the device) is alive.
    pub(super) fn as_raw(&self) -> bindings::dm_io_region {
        bindings::dm_io_region {
            bdev: self.dev.bdev(),
            sector: self.sector,
            count: self.count,
        }
    }
}
