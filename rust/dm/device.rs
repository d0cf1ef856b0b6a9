// SPDX-License-Identifier: GPL-2.0

//! Underlying devices of a target (`dm_get_device`/`dm_put_device`).

use super::bindings;
use kernel::error::{Error, Result};
use kernel::ffi::{c_int, c_void};
use kernel::str::CStr;

/// A device opened by a target through its table; closed on drop.
pub(crate) struct DmDev {
    // INVARIANT: `dev` was returned by `dm_get_device(ti, ..)` and has not been
    // put; `ti` is the target that owns it and outlives this value (targets
    // drop their devices in `dtr`, before dm core frees `ti`).
    ti: *mut bindings::dm_target,
    dev: *mut bindings::dm_dev,
}

// SAFETY: `dm_dev` is reference-counted by dm core and may be used and put
// from any thread.
unsafe impl Send for DmDev {}
// SAFETY: every `&self` method only reads immutable fields of `dm_dev`.
unsafe impl Sync for DmDev {}

impl DmDev {
    /// Opens `path` (a device path or `major:minor`) for target `ti`.
    pub(crate) fn get(
        ti: *mut bindings::dm_target,
        path: &CStr,
        mode: kernel::bindings::blk_mode_t,
    ) -> Result<Self> {
        let mut dev: *mut bindings::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is a target in its constructor (callers are
        // `TargetCtx` methods), `path` is NUL-terminated and `dev` is a valid
        // out pointer.
        let r = unsafe { bindings::dm_get_device(ti, path.as_char_ptr(), mode, &mut dev) };
        if r != 0 || dev.is_null() {
            return Err(Error::from_errno(if r != 0 { r } else { -22 }));
        }
        // INVARIANT: `dev` came from `dm_get_device(ti, ..)`.
        Ok(Self { ti, dev })
    }

    /// The device as `major:minor`, as status lines print it.
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: `dev` is valid (type invariant); dm core writes `name` as a
        // NUL-terminated string in `dm_get_device` and never changes it.
        unsafe { CStr::from_char_ptr((*self.dev).name.as_ptr()) }
    }

    /// The block device, for bio remapping.
    pub(crate) fn bdev(&self) -> *mut kernel::bindings::block_device {
        // SAFETY: `dev` is valid (type invariant).
        unsafe { (*self.dev).bdev }
    }

    /// Size of the device in 512-byte sectors.
    pub(crate) fn nr_sectors(&self) -> u64 {
        // SAFETY: the block device stays open while we hold the `dm_dev`.
        unsafe { bindings::dmrs_bdev_nr_sectors(self.bdev()) }
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::dm_dev {
        self.dev
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        // SAFETY: by the type invariant `dev` was got for `ti`, which is still
        // alive, and is put exactly once, here.
        unsafe { bindings::dm_put_device(self.ti, self.dev) };
    }
}

/// The callout of an `iterate_devices` call: a target reports each range of
/// each underlying device it uses.
pub(crate) struct DeviceVisitor<'a> {
    // INVARIANT: `ti`, `f` and `data` are what dm core passed to this
    // `iterate_devices` call, valid for `'a`.
    ti: *mut bindings::dm_target,
    f: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
    _p: core::marker::PhantomData<&'a ()>,
}

impl DeviceVisitor<'_> {
    /// # Safety
    ///
    /// The arguments must be those dm core passed to `iterate_devices`, and
    /// the visitor must not outlive that call.
    pub(crate) unsafe fn new(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> Self {
        Self {
            ti,
            f,
            data,
            _p: core::marker::PhantomData,
        }
    }

    /// Reports `len` sectors of `dev` starting at `start`; a non-zero result
    /// means "stop iterating" and must be returned to dm core.
    pub(crate) fn visit(&mut self, dev: &DmDev, start: u64, len: u64) -> c_int {
        match self.f {
            // SAFETY: the callout and its data come from dm core for this call
            // (type invariant) and `dev` is a device of this target.
            Some(f) => unsafe { f(self.ti, dev.as_raw(), start, len, self.data) },
            None => 0,
        }
    }
}
