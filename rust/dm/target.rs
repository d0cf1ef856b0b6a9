// SPDX-License-Identifier: GPL-2.0

//! The [`Target`] trait a dm-rs target implements, and the vtable that turns it
//! into a `struct target_type` for dm core.
//!
//! Only callbacks a target implements are set in the C structure (`#[vtable]`
//! gives `HAS_*` constants); a missing optional callback is a compile-time
//! error if called, never a runtime panic.

use super::args::ArgSet;
use super::bindings;
use super::bio::Bio;
use super::device::{DeviceVisitor, DmDev};
use super::status::{StatusType, StatusWriter};
use core::marker::PhantomData;
use kernel::build_error;
use kernel::error::{Error, VTABLE_DEFAULT_ERROR};
use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::prelude::*;
use kernel::types::ForeignOwnable;

/// A failed constructor or message: the errno and the text for user space.
///
/// The text must be static: dm core keeps the `ti->error` pointer after `ctr`
/// returns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TargetError {
    pub(crate) err: Error,
    pub(crate) msg: &'static CStr,
}

impl TargetError {
    /// An error with its message.
    pub(crate) const fn new(err: Error, msg: &'static CStr) -> Self {
        Self { err, msg }
    }
}

/// Result of a constructor step.
pub(crate) type CtrResult<T> = core::result::Result<T, TargetError>;

/// What `map` did with a bio.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MapResult {
    /// The bio was remapped; dm core submits it.
    Remapped,
    /// The target took the bio and will complete or resubmit it later.
    Submitted,
    /// Fail the bio with an I/O error.
    Kill,
    /// Push the bio back to dm core for a retry.
    Requeue,
}

/// What `end_io` decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum EndioResult {
    /// Completion proceeds.
    Done,
    /// The target will complete the bio itself later.
    Incomplete,
    /// Push the bio back to dm core for a retry.
    Requeue,
}

/// The `struct dm_target` being constructed: what a target may read and set
/// while its `new` runs.
pub(crate) struct TargetCtx {
    // INVARIANT: a valid `dm_target` that dm core is constructing; we are in
    // its `ctr`, so nothing else accesses it concurrently.
    ti: *mut bindings::dm_target,
}

impl TargetCtx {
    /// First sector of the target in the mapped device.
    pub(crate) fn begin(&self) -> u64 {
        // SAFETY: `ti` is valid (type invariant).
        unsafe { (*self.ti).begin }
    }

    /// Length of the target in sectors.
    pub(crate) fn len(&self) -> u64 {
        // SAFETY: `ti` is valid (type invariant).
        unsafe { (*self.ti).len }
    }

    /// Opens a device named on the table line with the table's own mode
    /// (read-only tables open it read-only).
    pub(crate) fn get_device(&self, path: &CStr, error: &'static CStr) -> super::CtrResult<DmDev> {
        // SAFETY: `ti` is valid and has a table (type invariant).
        let mode = unsafe { bindings::dmrs_table_get_mode(self.ti) };
        DmDev::get(self.ti, path, mode).map_err(|err| TargetError::new(err, error))
    }

    /// Opens a device read-only, whatever the table's mode.
    pub(crate) fn get_device_read_only(
        &self,
        path: &CStr,
        error: &'static CStr,
    ) -> super::CtrResult<DmDev> {
        // SAFETY: a constant accessor with no preconditions.
        let mode = unsafe { bindings::dmrs_blk_open_read() };
        DmDev::get(self.ti, path, mode).map_err(|err| TargetError::new(err, error))
    }

    /// Number of empty flush bios dm core sends to `map` per flush.
    pub(crate) fn set_num_flush_bios(&self, n: u32) {
        // SAFETY: `ti` is valid and exclusively ours during `ctr` (type invariant).
        unsafe { (*self.ti).num_flush_bios = n };
    }

    /// Number of discard bios dm core sends to `map` per discard.
    pub(crate) fn set_num_discard_bios(&self, n: u32) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).num_discard_bios = n };
    }

    /// Bytes of per-bio data the target wants.
    pub(crate) fn set_per_io_data_size(&self, n: u32) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).per_io_data_size = n };
    }

    /// Splits bios so that none crosses a multiple of `sectors`.
    pub(crate) fn set_max_io_len(&self, sectors: u64) -> Result {
        // SAFETY: `ti` is valid (type invariant).
        let r = unsafe { bindings::dm_set_target_max_io_len(self.ti, sectors) };
        if r < 0 {
            Err(Error::from_errno(r))
        } else {
            Ok(())
        }
    }
}

/// A device-mapper target type.
///
/// dm core calls `map` on many CPUs at once, so every callback takes `&self`;
/// targets use their own locks for mutable state.
#[vtable]
pub(crate) trait Target: Sized + Send + Sync + 'static {
    /// The name upstream registers (dm-rs may add a prefix).
    const NAME: &'static CStr;
    /// A shorter name used instead of `NAME` when a prefix would make the
    /// name longer than dm's limit of 15 characters (`DM_MAX_TYPE_NAME`).
    const SHORT_NAME: &'static CStr = Self::NAME;
    /// The version reported to user space; lvm2 selects features by it.
    const VERSION: [u32; 3];
    /// `DM_TARGET_*` feature flags.
    const FEATURES: u64 = 0;

    /// Constructs a target from its table line.
    fn new(ti: &TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>>;

    /// Maps one bio.
    fn map(&self, bio: &Bio) -> MapResult;

    /// Sees a bio complete.
    fn end_io(&self, _bio: &Bio, _status: &mut u8) -> EndioResult {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called before the device is suspended.
    fn presuspend(&self) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called after the device was suspended and all I/O drained.
    fn postsuspend(&self) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called before resume; an error keeps the device suspended.
    fn preresume(&self) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called on resume.
    fn resume(&self) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Writes the INFO, TABLE or IMA status.
    fn status(&self, _ty: StatusType, _flags: u32, _out: &mut StatusWriter<'_>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Handles `dmsetup message`.
    fn message(&self, _args: &mut ArgSet<'_>, _out: &mut StatusWriter<'_>) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Reports every underlying device range to `visitor`.
    fn iterate_devices(&self, _visitor: &mut DeviceVisitor<'_>) -> c_int {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Adjusts the queue limits dm core computed from the devices.
    fn io_hints(&self, _limits: &mut kernel::bindings::queue_limits) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// The C entry points for target type `T`.
pub(crate) struct TargetVTable<T: Target>(PhantomData<T>);

impl<T: Target> TargetVTable<T> {
    /// # Safety
    ///
    /// `ti` was handed to us by dm core and its `ctr` completed, so `private`
    /// holds a `Pin<KBox<T>>` from `into_foreign` that `dtr` has not freed.
    unsafe fn target<'a>(ti: *mut bindings::dm_target) -> &'a T {
        // SAFETY: by the function's safety contract `private` came from
        // `into_foreign` and is still owned by the foreign side.
        let pinned = unsafe { <Pin<KBox<T>> as ForeignOwnable>::borrow((*ti).private) };
        pinned.get_ref()
    }

    /// # Safety
    ///
    /// Called by dm core with a target under construction and `argc` valid
    /// argument strings.
    unsafe extern "C" fn ctr_callback(
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
    ) -> c_int {
        // SAFETY: dm core passes `argc` valid strings that outlive `ctr`.
        let mut args = unsafe { ArgSet::from_raw(argc, argv) };
        // INVARIANT: dm core hands `ctr` a valid target it is constructing.
        let ctx = TargetCtx { ti };
        match T::new(&ctx, &mut args) {
            Ok(t) => {
                // SAFETY: `ti` is valid; `private` is ours to set in `ctr`.
                unsafe { (*ti).private = t.into_foreign() as *mut c_void };
                0
            }
            Err(e) => {
                // SAFETY: `ti` is valid; `error` is ours to set and the message
                // is static, as dm core keeps the pointer.
                unsafe { (*ti).error = e.msg.as_char_ptr() as *mut c_char };
                e.err.to_errno()
            }
        }
    }

    /// # Safety
    ///
    /// Called by dm core once, after a successful `ctr`, with no I/O in flight.
    unsafe extern "C" fn dtr_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ctr` stored a `Pin<KBox<T>>` in `private`; this is the one
        // place that takes it back, and no borrow is alive since no callback
        // runs concurrently with `dtr`.
        drop(unsafe { <Pin<KBox<T>> as ForeignOwnable>::from_foreign((*ti).private) });
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with a bio it owns.
    unsafe extern "C" fn map_callback(
        ti: *mut bindings::dm_target,
        bio: *mut kernel::bindings::bio,
    ) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        let t = unsafe { Self::target(ti) };
        // SAFETY: dm core passes a valid bio that we own until we return.
        let bio = unsafe { Bio::from_raw(bio) };
        (match t.map(bio) {
            MapResult::Remapped => bindings::DM_MAPIO_REMAPPED,
            MapResult::Submitted => bindings::DM_MAPIO_SUBMITTED,
            MapResult::Kill => bindings::DM_MAPIO_KILL,
            MapResult::Requeue => bindings::DM_MAPIO_REQUEUE,
        }) as c_int
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with a completing bio and a
    /// valid status pointer.
    unsafe extern "C" fn end_io_callback(
        ti: *mut bindings::dm_target,
        bio: *mut kernel::bindings::bio,
        error: *mut kernel::bindings::blk_status_t,
    ) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        let t = unsafe { Self::target(ti) };
        // SAFETY: dm core passes a valid bio it lends us for this call.
        let bio = unsafe { Bio::from_raw(bio) };
        // SAFETY: `error` is valid for writes during the call.
        let status = unsafe { &mut *error };
        (match t.end_io(bio, status) {
            EndioResult::Done => bindings::DM_ENDIO_DONE,
            EndioResult::Incomplete => bindings::DM_ENDIO_INCOMPLETE,
            EndioResult::Requeue => bindings::DM_ENDIO_REQUEUE,
        }) as c_int
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn presuspend_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        unsafe { Self::target(ti) }.presuspend()
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn postsuspend_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        unsafe { Self::target(ti) }.postsuspend()
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn preresume_callback(ti: *mut bindings::dm_target) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        match unsafe { Self::target(ti) }.preresume() {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn resume_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        unsafe { Self::target(ti) }.resume()
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with a result buffer of
    /// `maxlen` bytes.
    unsafe extern "C" fn status_callback(
        ti: *mut bindings::dm_target,
        ty: bindings::status_type_t,
        flags: c_uint,
        result: *mut c_char,
        maxlen: c_uint,
    ) {
        // SAFETY: `ti` is constructed (function contract).
        let t = unsafe { Self::target(ti) };
        // SAFETY: dm core gives us `maxlen` writable bytes at `result`.
        let buf = unsafe { slice_from_raw(result, maxlen) };
        let mut out = StatusWriter::new(buf);
        let ty = match ty {
            bindings::status_type_t_STATUSTYPE_INFO => StatusType::Info,
            bindings::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
            _ => StatusType::Ima,
        };
        t.status(ty, flags, &mut out);
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with `argc` valid strings
    /// and a result buffer of `maxlen` bytes.
    unsafe extern "C" fn message_callback(
        ti: *mut bindings::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        let t = unsafe { Self::target(ti) };
        // SAFETY: dm core passes `argc` valid strings for the call.
        let mut args = unsafe { ArgSet::from_raw(argc, argv) };
        // SAFETY: dm core gives us `maxlen` writable bytes at `result`.
        let buf = unsafe { slice_from_raw(result, maxlen) };
        let mut out = StatusWriter::new(buf);
        match t.message(&mut args, &mut out) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with a callout and its data.
    unsafe extern "C" fn iterate_devices_callback(
        ti: *mut bindings::dm_target,
        f: bindings::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        let t = unsafe { Self::target(ti) };
        // SAFETY: `ti`, `f` and `data` come from dm core for this call.
        let mut visitor = unsafe { DeviceVisitor::new(ti, f, data) };
        t.iterate_devices(&mut visitor)
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with valid limits.
    unsafe extern "C" fn io_hints_callback(
        ti: *mut bindings::dm_target,
        limits: *mut kernel::bindings::queue_limits,
    ) {
        // SAFETY: `ti` is constructed (function contract).
        let t = unsafe { Self::target(ti) };
        // SAFETY: dm core lends us the limits exclusively for the call.
        t.io_hints(unsafe { &mut *limits })
    }

    /// The `struct target_type` for `T`, without name and module, which the
    /// registration fills in.
    pub(crate) const TEMPLATE: bindings::target_type = bindings::target_type {
        features: T::FEATURES,
        name: core::ptr::null(),
        module: core::ptr::null_mut(),
        version: T::VERSION,
        ctr: Some(Self::ctr_callback),
        dtr: Some(Self::dtr_callback),
        map: Some(Self::map_callback),
        end_io: if T::HAS_END_IO {
            Some(Self::end_io_callback)
        } else {
            None
        },
        presuspend: if T::HAS_PRESUSPEND {
            Some(Self::presuspend_callback)
        } else {
            None
        },
        postsuspend: if T::HAS_POSTSUSPEND {
            Some(Self::postsuspend_callback)
        } else {
            None
        },
        preresume: if T::HAS_PRERESUME {
            Some(Self::preresume_callback)
        } else {
            None
        },
        resume: if T::HAS_RESUME {
            Some(Self::resume_callback)
        } else {
            None
        },
        status: if T::HAS_STATUS {
            Some(Self::status_callback)
        } else {
            None
        },
        message: if T::HAS_MESSAGE {
            Some(Self::message_callback)
        } else {
            None
        },
        iterate_devices: if T::HAS_ITERATE_DEVICES {
            Some(Self::iterate_devices_callback)
        } else {
            None
        },
        io_hints: if T::HAS_IO_HINTS {
            Some(Self::io_hints_callback)
        } else {
            None
        },
        // SAFETY: every remaining field is a nullable pointer or a list head
        // that dm core initialises on registration; all-zero is their "unset".
        ..unsafe { core::mem::zeroed() }
    };
}

/// # Safety
///
/// `ptr` must be null or valid for writes of `len` bytes for `'a`.
unsafe fn slice_from_raw<'a>(ptr: *mut c_char, len: c_uint) -> &'a mut [u8] {
    if ptr.is_null() || len == 0 {
        return &mut [];
    }
    // SAFETY: by the function's safety contract.
    unsafe { core::slice::from_raw_parts_mut(ptr.cast::<u8>(), len as usize) }
}
