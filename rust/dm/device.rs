// SPDX-License-Identifier: GPL-2.0

//! Underlying devices of a target (`dm_get_device`/`dm_put_device`).
//!
//! Ownership: the table owns every `dm_dev` a target opens. A target gets its
//! devices from [`TargetCtx::get_device`](super::TargetCtx::get_device) while
//! it is constructed; the vtable records each one and puts it with
//! `dm_put_device` after the target is dropped (or when `ctr` fails), while the
//! table is still alive. What the target keeps is a [`DmDev`]: a counted
//! reference on the device's open file, which keeps the block device valid for
//! as long as any clone of it lives, even past the table (a work item, a
//! registry entry, an in-flight copy). A [`DmDev`] never touches the `dm_dev`
//! or the table itself, so nothing can reach a freed table through it.

use super::bindings;
use kernel::c_str;
use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;
use kernel::str::CStr;

/// Length of `dm_dev::name` (`major:minor`, NUL-terminated).
const NAME_LEN: usize = 16;

/// A block device opened through a target's table.
///
/// Cloning takes another reference on the open file; dropping the last clone
/// releases it. Bios may be pointed at the device (see
/// [`MapBio::remap`](super::MapBio::remap)) while a clone is held.
///
/// # Invariants
///
/// `name` is NUL-terminated.
#[derive(Clone)]
pub(crate) struct DmDev {
    dev: DevRef,
    name: [u8; NAME_LEN],
}

impl DmDev {
    /// Takes a reference on the open file of `dev`.
    ///
    /// # Safety
    ///
    /// `dev` must be a valid `dm_dev` got with `dm_get_device` and not yet put.
    pub(super) unsafe fn from_dm_dev(dev: *mut bindings::dm_dev) -> Result<Self> {
        let mut name = [0u8; NAME_LEN];
        // SAFETY: `dev` is valid (function contract); dm core wrote `name` as
        // a NUL-terminated string of at most 16 bytes.
        let (file, bdev) = unsafe {
            for (dst, src) in name.iter_mut().zip((*dev).name.iter()) {
                *dst = *src;
            }
            if (*dev).bdev_file.is_null() {
                return Err(ENODEV);
            }
            (bindings::dmrs_get_file((*dev).bdev_file), (*dev).bdev)
        };
        // `get_file` returns its (non-null) argument.
        let file = core::ptr::NonNull::new(file).ok_or(ENODEV)?;
        if let Some(last) = name.last_mut() {
            *last = 0;
        }
        // INVARIANT: `get_file` gave us our own reference on the device's open
        // file; `bdev` is its block device.
        let dev = DevRef { file, bdev };
        // INVARIANT: `name` ends in NUL.
        Ok(Self { dev, name })
    }

    /// The device as `major:minor`, as status and table lines print it.
    pub(crate) fn name(&self) -> &CStr {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(0);
        CStr::from_bytes_with_nul(self.name.get(..=len).unwrap_or(b"\0")).unwrap_or(c_str!(""))
    }

    /// The block device, for bio remapping inside `rust/`.
    pub(super) fn bdev(&self) -> *mut kernel::bindings::block_device {
        self.dev.bdev
    }

    /// Discards `count` sectors at `sector` and waits (`blkdev_issue_discard`);
    /// `EOPNOTSUPP` if the device takes no discards. Sleeps: process
    /// context only.
    pub(crate) fn discard(&self, sector: u64, count: u64) -> Result {
        let end = sector.checked_add(count).ok_or(EINVAL)?;
        if count == 0 || end > self.nr_sectors() {
            return Err(EINVAL);
        }
        // SAFETY: no preconditions; debug kernels report atomic callers.
        unsafe { bindings::dmrs_might_sleep() };
        // SAFETY: the file reference we own keeps the block device valid,
        // and the range lies inside it (checked above).
        let r = unsafe { bindings::dmrs_bdev_discard(self.dev.bdev, sector, count) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }

    /// The largest discard the device takes, in sectors; 0 if it takes
    /// none (`bdev_max_discard_sectors`).
    pub(crate) fn max_discard_sectors(&self) -> u32 {
        // SAFETY: the file reference we own keeps the block device valid,
        // and with it its request queue (a disk's queue lives as long as the
        // disk); the queue's limits may be updated meanwhile, hence a
        // volatile read of the one field (the kernel reads it plainly).
        unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!(
                (*(*self.dev.bdev).bd_queue).limits.max_discard_sectors
            ))
        }
    }

    /// Size of the device in 512-byte sectors (`bdev_nr_sectors`, read in
    /// place: each chunk copy asks several times).
    pub(crate) fn nr_sectors(&self) -> u64 {
        // SAFETY: the file reference we own keeps the block device valid, so
        // the field is readable; a resize may change it meanwhile, hence a
        // volatile read (the kernel reads it plainly).
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.dev.bdev).bd_nr_sectors)) }
    }
}

/// A counted reference on a device's open file, without its name: what a
/// [`DmDev`] holds, and all an in-flight copy or I/O keeps (a
/// [`Region`](super::region::Region)): half the size of a [`DmDev`] and
/// never null, so that jobs holding up to eight of them stay small to
/// build and move.
///
/// # Invariants
///
/// `file` is a reference on an open block device file that this value owns
/// (released with `fput` exactly once, on drop), and `bdev` is that file's
/// block device.
pub(crate) struct DevRef {
    file: core::ptr::NonNull<kernel::bindings::file>,
    bdev: *mut kernel::bindings::block_device,
}

// SAFETY: a file reference may be taken, used and released on any thread, and
// the block device it pins is usable from any thread.
unsafe impl Send for DevRef {}
// SAFETY: `&DevRef` only reads immutable fields and hands the block device to
// thread-safe block layer calls.
unsafe impl Sync for DevRef {}

impl DevRef {
    /// The block device, for I/O addressed inside `rust/`.
    pub(super) fn bdev(&self) -> *mut kernel::bindings::block_device {
        self.bdev
    }
}

impl From<DmDev> for DevRef {
    /// Keeps `dev`'s file reference, without taking another.
    fn from(dev: DmDev) -> Self {
        dev.dev
    }
}

impl Clone for DevRef {
    fn clone(&self) -> Self {
        // SAFETY: `file` is a live reference we own (type invariant), so
        // taking another reference is allowed.
        unsafe { bindings::dmrs_get_file(self.file.as_ptr()) };
        // INVARIANT: the new value owns the reference just taken (on the
        // same file: `get_file` returns its argument).
        Self {
            file: self.file,
            bdev: self.bdev,
        }
    }
}

impl Drop for DevRef {
    fn drop(&mut self) {
        // SAFETY: we own one reference on `file` and release it once, here.
        unsafe { bindings::dmrs_fput(self.file.as_ptr()) };
    }
}

/// The devices a target got from its table, put when the target is gone.
///
/// # Invariants
///
/// Every pointer was returned by `dm_get_device(ti, ..)` for the `ti` this
/// list belongs to and has not been put.
pub(super) struct TableDevices {
    devs: KVec<*mut bindings::dm_dev>,
}

impl TableDevices {
    pub(super) const fn new() -> Self {
        Self { devs: KVec::new() }
    }

    /// Opens `path` for `ti` in `mode` and records it.
    ///
    /// # Safety
    ///
    /// `ti` must be a target in its constructor, the one this list belongs to.
    pub(super) unsafe fn get(
        &mut self,
        ti: *mut bindings::dm_target,
        path: &CStr,
        mode: kernel::bindings::blk_mode_t,
    ) -> Result<DmDev> {
        self.devs.reserve(1, GFP_KERNEL)?;
        let mut dev: *mut bindings::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is in its constructor (function contract), `path` is
        // NUL-terminated and `dev` is a valid out pointer.
        let r = unsafe { bindings::dm_get_device(ti, path.as_char_ptr(), mode, &mut dev) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        if dev.is_null() {
            return Err(ENODEV);
        }
        // Cannot fail: room was reserved above.
        self.devs.push(dev, GFP_KERNEL)?;
        // SAFETY: `dev` was just got and is recorded, so it is put only later.
        unsafe { DmDev::from_dm_dev(dev) }
    }

    /// The recorded `dm_dev` for `dev`'s block device, if it is one of ours.
    pub(super) fn find(&self, dev: &DmDev) -> Option<*mut bindings::dm_dev> {
        self.devs.iter().copied().find(|&d| {
            // SAFETY: recorded devices are valid until put (type invariant).
            unsafe { (*d).bdev == dev.bdev() }
        })
    }

    /// Puts every recorded device.
    ///
    /// # Safety
    ///
    /// `ti` must be the target the devices were got for, still alive, with no
    /// callback of it running.
    pub(super) unsafe fn put_all(&mut self, ti: *mut bindings::dm_target) {
        for &d in self.devs.iter() {
            // SAFETY: `d` was got for `ti` and is put exactly once, here
            // (function contract and type invariant).
            unsafe { bindings::dm_put_device(ti, d) };
        }
        self.devs = KVec::new();
    }
}

/// The callout of an `iterate_devices` call: a target reports each range of
/// each underlying device it uses.
pub(crate) struct DeviceVisitor<'a> {
    // INVARIANT: `ti`, `f` and `data` are what dm core passed to this
    // `iterate_devices` call, valid for `'a`; `devs` are `ti`'s devices.
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    devs: &'a TableDevices,
}

impl<'a> DeviceVisitor<'a> {
    /// # Safety
    ///
    /// The arguments must be those dm core passed to `iterate_devices`, `devs`
    /// the devices of `ti`, and the visitor must not outlive that call.
    pub(super) unsafe fn new(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
        devs: &'a TableDevices,
    ) -> Self {
        Self { ti, f, data, devs }
    }

    /// Reports `len` sectors of `dev` starting at `start`; a non-zero result
    /// means "stop iterating" and must be returned to dm core. A device that
    /// is not this target's own (a clone from another target) is skipped.
    pub(crate) fn visit(&mut self, dev: &DmDev, start: u64, len: u64) -> c_int {
        let Some(d) = self.devs.find(dev) else {
            return 0;
        };
        match self.f {
            // SAFETY: the callout and its data come from dm core for this call
            // and `d` is a device of this target, not yet put (type invariant).
            Some(f) => unsafe { f(self.ti, d, start, len, self.data) },
            None => 0,
        }
    }
}
