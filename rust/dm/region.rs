// SPDX-License-Identifier: GPL-2.0

//! A range of sectors on a target's device, as kcopyd and dm-io address I/O
//! (`struct dm_io_region`).
//!
//! # Ownership
//!
//! A [`Region`] holds its own reference on its device's open file (the
//! [`DmDev`] it was built from), so a copy or I/O built from
//! regions keeps every device it touches open until it completes, even if the
//! table that opened the device is destroyed first. A `Region<&DmDev>`
//! borrows the device instead: for synchronous I/O, which ends before the
//! borrow does, and for a copy whose job keeps the device's owner alive
//! ([`KcopydClient::copy_within`](super::kcopyd::KcopydClient::copy_within)).
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h)

use super::bindings;
use super::device::{DevRef, DmDev};
use kernel::error::{code::EINVAL, Result};

mod sealed {
    /// Only this file's device holders (`as_raw` relies on what `bdev`
    /// promises).
    pub(crate) trait Sealed {}
}

/// How a [`Region`] holds its device: owned ([`DevRef`], a reference on the
/// device's open file) or borrowed (`&DmDev`, for I/O that ends before the
/// borrow does, or whose owner is kept alive by other means).
pub(crate) trait RegionDev: sealed::Sealed {
    /// The block device, valid while `self` is.
    fn bdev(&self) -> *mut kernel::bindings::block_device;
}

impl sealed::Sealed for DevRef {}
impl sealed::Sealed for &DmDev {}

impl RegionDev for DevRef {
    fn bdev(&self) -> *mut kernel::bindings::block_device {
        DevRef::bdev(self)
    }
}

impl RegionDev for &DmDev {
    fn bdev(&self) -> *mut kernel::bindings::block_device {
        DmDev::bdev(self)
    }
}

/// `count` sectors of a device starting at `sector`; the device held as
/// `D` (owned by default).
///
/// # Invariants
///
/// `count > 0` and the range ended inside the device when it was built.
#[derive(Clone)]
pub(crate) struct Region<D: RegionDev = DevRef> {
    dev: D,
    sector: u64,
    count: u64,
}

/// Checks a range of `dev`: non-empty and inside it.
fn check(dev: &DmDev, sector: u64, count: u64) -> Result {
    let end = sector.checked_add(count).ok_or(EINVAL)?;
    if count == 0 || end > dev.nr_sectors() {
        return Err(EINVAL);
    }
    Ok(())
}

impl Region {
    /// A region of `dev`; fails with `EINVAL` if it is empty or runs past the
    /// end of the device.
    pub(crate) fn new(dev: DmDev, sector: u64, count: u64) -> Result<Self> {
        check(&dev, sector, count)?;
        // INVARIANT: checked above.
        Ok(Region {
            dev: dev.into(),
            sector,
            count,
        })
    }
}

impl<'a> Region<&'a DmDev> {
    /// A region of `dev`, borrowed; checked as [`Region::new`].
    pub(crate) fn of(dev: &'a DmDev, sector: u64, count: u64) -> Result<Self> {
        check(dev, sector, count)?;
        // INVARIANT: checked above.
        Ok(Region { dev, sector, count })
    }

    /// The same region, holding its own reference on the device.
    pub(crate) fn to_counted(&self) -> Region {
        // INVARIANT: the same checked range.
        Region {
            dev: self.dev.clone().into(),
            sector: self.sector,
            count: self.count,
        }
    }
}

impl<D: RegionDev> Region<D> {
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
