// SPDX-License-Identifier: GPL-2.0

//! The [`Target`] trait a dm-rs target implements, and the vtable that turns it
//! into a `struct target_type` for dm core.
//!
//! Only callbacks a target implements are set in the C structure (`#[vtable]`
//! gives `HAS_*` constants); a missing optional callback is a compile-time
//! error if called, never a runtime panic. Every field of `target_type` is
//! listed in [`TargetVTable::TEMPLATE`], so a field added to the C structure
//! fails our build instead of being silently NULL.
//!
//! Ownership: `ti->private` holds a [`Private`] box: the target, the devices
//! it got from its table (put after the target is dropped) and the shared
//! [`TargetHandle`] state (cut off from `ti` before `ti` goes away).

use super::args::ArgSet;
use super::bindings;
use super::bio::{per_bio_size, EndioBio, MapBio};
use super::device::{DeviceVisitor, DmDev, TableDevices};
use super::mapped_device::MappedDevice;
use super::registry::DevKey;
use super::status::{StatusType, StatusWriter};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::build_error;
use kernel::c_str;
use kernel::error::{Error, VTABLE_DEFAULT_ERROR};
use kernel::ffi::{c_char, c_int, c_uint, c_void};
use kernel::new_mutex;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, Mutex};
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum MapKind {
    Remapped,
    Submitted,
    Kill,
    Requeue,
}

/// What `map` did with its bio. Only the consuming methods of
/// [`MapBio`] make one, so `Submitted` always means the target owns the bio.
#[derive(Debug)]
#[must_use]
pub(crate) struct MapResult(MapKind);

impl MapResult {
    pub(super) fn remapped() -> Self {
        Self(MapKind::Remapped)
    }
    pub(super) fn submitted() -> Self {
        Self(MapKind::Submitted)
    }
    pub(super) fn kill() -> Self {
        Self(MapKind::Kill)
    }
    pub(super) fn requeue() -> Self {
        Self(MapKind::Requeue)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EndioKind {
    Done,
    Incomplete,
    Requeue,
}

/// What `end_io` decided. Only the consuming methods of [`EndioBio`] make
/// one, so `Incomplete` always means the target took the bio back.
#[derive(Debug)]
#[must_use]
pub(crate) struct EndioResult(EndioKind);

impl EndioResult {
    pub(super) fn done() -> Self {
        Self(EndioKind::Done)
    }
    pub(super) fn incomplete() -> Self {
        Self(EndioKind::Incomplete)
    }
    pub(super) fn requeue() -> Self {
        Self(EndioKind::Requeue)
    }
}

/// A `*mut dm_target` that may cross threads inside [`TargetHandle`].
struct TiPtr(*mut bindings::dm_target);

// SAFETY: the pointer is only dereferenced under the handle's mutex, while it
// is known valid (see `TargetHandle`).
unsafe impl Send for TiPtr {}

/// A handle on a live target for what runs outside dm core's callbacks (a
/// worker, a timer): table events, suspend state, the device's name.
///
/// Cloning is cheap. After the target's destructor every call is inert (no
/// event; `None`; `suspended()` true, `noflush_suspending()` false), so a
/// handle kept anywhere can never reach a freed table.
/// Calls sleep (a mutex): not for interrupt context.
#[derive(Clone)]
pub(crate) struct TargetHandle {
    // INVARIANT: while `Some`, the pointer is a constructed target whose
    // destructor has not finished; the vtable sets `None` in `dtr` before
    // dm core frees the target.
    ti: Arc<Mutex<Option<TiPtr>>>,
}

impl TargetHandle {
    fn new(ti: *mut bindings::dm_target) -> Result<Self> {
        Ok(Self {
            ti: Arc::pin_init(
                new_mutex!(Some(TiPtr(ti)), "dm_rs::TargetHandle"),
                GFP_KERNEL,
            )?,
        })
    }

    fn detach(&self) {
        *self.ti.lock() = None;
    }

    fn with<R>(&self, f: impl FnOnce(*mut bindings::dm_target) -> R) -> Option<R> {
        // A mutex: debug kernels report a call from `end_io` or a lock.
        // SAFETY: no preconditions.
        unsafe { bindings::dmrs_might_sleep() };
        let guard = self.ti.lock();
        guard.as_ref().map(|p| f(p.0))
    }

    /// Raises a dm event on the table (`dm_table_event`): user space waiting
    /// with `dmsetup wait` / lvm2's dmeventd wakes up.
    pub(crate) fn table_event(&self) {
        // SAFETY: `ti` is live while the handle holds it (type invariant),
        // and we are in process context (the mutex).
        self.with(|ti| unsafe { bindings::dmrs_target_table_event(ti) });
    }

    /// Whether the mapped device is suspended (`dm_suspended`).
    pub(crate) fn suspended(&self) -> bool {
        // SAFETY: `ti` is live (type invariant).
        self.with(|ti| unsafe { bindings::dm_suspended(ti) } != 0)
            .unwrap_or(true)
    }

    /// Whether a noflush suspend is in progress (`dm_noflush_suspending`):
    /// held bios should then be requeued rather than failed.
    pub(crate) fn noflush_suspending(&self) -> bool {
        // SAFETY: `ti` is live (type invariant).
        self.with(|ti| unsafe { bindings::dm_noflush_suspending(ti) } != 0)
            .unwrap_or(false)
    }

    /// A reference on the target's mapped device, valid however long it is
    /// kept (dm core's destroy waits for it); `None` once the target is
    /// gone or its device is being freed. The handle's lock is not held
    /// afterwards, so the device may be suspended with it.
    pub(crate) fn mapped_device(&self) -> Option<MappedDevice> {
        // SAFETY: `ti` is live while the handle holds it (type invariant).
        self.with(|ti| unsafe { MappedDevice::hold(ti) }).flatten()
    }

    /// The mapped device as dm core names it in log lines (`major:minor`,
    /// `dm_device_name`).
    pub(crate) fn device_name(&self) -> Option<CString> {
        let mut buf = [0u8; 128];
        // SAFETY: `ti` is live (type invariant); `buf` is writable for its
        // length and the helper NUL-terminates within it.
        self.with(|ti| unsafe {
            bindings::dmrs_target_md_name(ti, buf.as_mut_ptr().cast(), buf.len())
        })?;
        let len = buf.iter().position(|&b| b == 0)?;
        let name = CStr::from_bytes_with_nul(buf.get(..=len)?).ok()?;
        CString::try_from_fmt(kernel::fmt!("{}", name)).ok()
    }
}

/// The `struct dm_target` being constructed: what a target may read and set
/// while its `new` runs.
pub(crate) struct TargetCtx {
    // INVARIANT: a valid `dm_target` that dm core is constructing; we are in
    // its `ctr`, so nothing else accesses it concurrently.
    ti: *mut bindings::dm_target,
    devs: TableDevices,
    handle: TargetHandle,
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

    /// Opens a device named on the table line with the table's own mode.
    /// The table keeps it open until after the target is dropped.
    pub(crate) fn get_device(&mut self, path: &CStr, error: &'static CStr) -> CtrResult<DmDev> {
        // SAFETY: `ti` is valid and has a table (type invariant).
        let mode = unsafe { bindings::dmrs_table_get_mode(self.ti) };
        // SAFETY: `ti` is in its constructor and `devs` is its list.
        unsafe { self.devs.get(self.ti, path, mode) }.map_err(|err| TargetError::new(err, error))
    }

    /// Opens a device named on the table line for reading only (upstream's
    /// `BLK_OPEN_READ`: e.g. thin's external origin, which is never
    /// written). The table keeps it open until after the target is dropped.
    pub(crate) fn get_device_read_only(
        &mut self,
        path: &CStr,
        error: &'static CStr,
    ) -> CtrResult<DmDev> {
        // SAFETY: no preconditions; returns a constant.
        let mode = unsafe { bindings::dmrs_blk_open_read() };
        // SAFETY: `ti` is in its constructor and `devs` is its list.
        unsafe { self.devs.get(self.ti, path, mode) }.map_err(|err| TargetError::new(err, error))
    }

    /// The registry key of the mapped device this target's table belongs
    /// to: what a device opened from another table line naming this one
    /// (`DevKey::of`) compares equal to (a thin finds its pool by it).
    pub(crate) fn md_dev_key(&self) -> DevKey {
        // SAFETY: `ti` is valid and has a table, which belongs to a live
        // mapped device while its targets are constructed (type invariant);
        // the helper only reads the device's `dev_t`.
        DevKey::from_raw(unsafe { bindings::dmrs_target_md_devt(self.ti) })
    }

    /// A handle on this target for workers and timers.
    pub(crate) fn handle(&self) -> TargetHandle {
        self.handle.clone()
    }

    /// Number of empty flush bios dm core sends to `map` per flush.
    pub(crate) fn set_num_flush_bios(&mut self, n: u32) {
        // SAFETY: `ti` is valid and exclusively ours during `ctr` (type invariant).
        unsafe { (*self.ti).num_flush_bios = n };
    }

    /// Number of discard bios dm core sends to `map` per discard.
    pub(crate) fn set_num_discard_bios(&mut self, n: u32) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).num_discard_bios = n };
    }

    /// Number of write-zeroes bios dm core sends to `map` per request.
    pub(crate) fn set_num_write_zeroes_bios(&mut self, n: u32) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).num_write_zeroes_bios = n };
    }

    /// Receive flushes even if no underlying device needs them.
    pub(crate) fn set_flush_supported(&mut self, on: bool) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).set_flush_supported(on) };
    }

    /// Receive discards even if no underlying device supports them.
    pub(crate) fn set_discards_supported(&mut self, on: bool) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).set_discards_supported(on) };
    }

    /// Split discards on `max_discard_sectors` boundaries.
    pub(crate) fn set_max_discard_granularity(&mut self, on: bool) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).set_max_discard_granularity(on) };
    }

    /// dm core caps the swap-out bios in flight through this target, so
    /// that swapping to it cannot use up the memory its own I/O needs.
    pub(crate) fn set_limit_swap_bios(&mut self, on: bool) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).set_limit_swap_bios(on) };
    }

    /// The target resubmits held bios with [`HeldBio::submit_to`]
    /// (`dm_submit_bio_remap`), so dm core accounts them when they are.
    ///
    /// [`HeldBio::submit_to`]: super::HeldBio::submit_to
    pub(crate) fn set_accounts_remapped_io(&mut self, on: bool) {
        // SAFETY: as in `set_num_flush_bios`.
        unsafe { (*self.ti).set_accounts_remapped_io(on) };
    }

    /// Splits bios so that none crosses a multiple of `sectors`.
    pub(crate) fn set_max_io_len(&mut self, sectors: u64) -> Result {
        // SAFETY: `ti` is valid (type invariant).
        let r = unsafe { bindings::dm_set_target_max_io_len(self.ti, sectors) };
        if r < 0 {
            Err(Error::from_errno(r))
        } else {
            Ok(())
        }
    }
}

/// The queue limits dm core computed from the underlying devices, lent to
/// `io_hints` to adjust. Sizes are in bytes unless a name says sectors.
pub(crate) struct QueueLimits<'a> {
    lim: &'a mut kernel::bindings::queue_limits,
}

impl QueueLimits<'_> {
    /// Largest I/O in sectors the device accepts.
    pub(crate) fn max_sectors(&self) -> u32 {
        self.lim.max_sectors
    }
    /// Lowers the largest I/O, in sectors (never below what the block
    /// layer's validation accepts: callers pass a nonzero value no larger
    /// than the stacked one).
    pub(crate) fn set_max_sectors(&mut self, sectors: u32) {
        if sectors != 0 && sectors <= self.lim.max_sectors {
            self.lim.max_sectors = sectors;
        }
    }
    /// Preferred minimum I/O size.
    pub(crate) fn io_min(&self) -> u32 {
        self.lim.io_min
    }
    /// Sets the preferred minimum I/O size.
    pub(crate) fn set_io_min(&mut self, bytes: u32) {
        self.lim.io_min = bytes;
    }
    /// Optimal I/O size.
    pub(crate) fn io_opt(&self) -> u32 {
        self.lim.io_opt
    }
    /// Sets the optimal I/O size.
    pub(crate) fn set_io_opt(&mut self, bytes: u32) {
        self.lim.io_opt = bytes;
    }
    /// Largest discard the hardware below takes, in sectors (0: none).
    pub(crate) fn max_hw_discard_sectors(&self) -> u32 {
        self.lim.max_hw_discard_sectors
    }
    /// Sets the largest discard, in sectors; 0 turns discards off.
    pub(crate) fn set_max_hw_discard_sectors(&mut self, sectors: u32) {
        self.lim.max_hw_discard_sectors = sectors;
    }
    /// Sets the discard granularity.
    pub(crate) fn set_discard_granularity(&mut self, bytes: u32) {
        self.lim.discard_granularity = bytes;
    }
    /// Sets the largest write-zeroes request, in sectors; 0 turns it off.
    pub(crate) fn set_max_write_zeroes_sectors(&mut self, sectors: u32) {
        self.lim.max_write_zeroes_sectors = sectors;
    }
}

/// `DM_TARGET_*` flags for [`Target::FEATURES`] (include/linux/device-mapper.h).
pub(crate) mod features {
    /// The target must be the only one in its table.
    pub(crate) const SINGLETON: u64 = 0x1;
    /// The target may not be loaded in a read-only table.
    pub(crate) const ALWAYS_WRITEABLE: u64 = 0x2;
    /// A table reload may not change the target type.
    pub(crate) const IMMUTABLE: u64 = 0x4;
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

    /// Data dm core keeps with every bio of this target (`dm_per_bio_data`),
    /// reset to `Default` before `map`. Plain data (`Copy`): nothing in it is
    /// ever dropped. `()` for none.
    type PerBio: Default + Copy + Send + Sync + 'static;

    /// Constructs a target from its table line.
    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>>;

    /// Maps one bio; consumes it (see [`MapBio`]).
    fn map(&self, bio: MapBio<'_, Self>) -> MapResult;

    /// Sees a bio complete; consumes it (see [`EndioBio`]).
    fn end_io(&self, _bio: EndioBio<'_, Self>) -> EndioResult {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called before the device is suspended.
    fn presuspend(&self) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Called when a suspend is abandoned after `presuspend`.
    fn presuspend_undo(&self) {
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

    /// Handles `dmsetup message`; what it writes to `out` is returned to user
    /// space.
    fn message(&self, _args: &mut ArgSet<'_>, _out: &mut StatusWriter<'_>) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Reports every underlying device range to `visitor`.
    fn iterate_devices(&self, _visitor: &mut DeviceVisitor<'_>) -> c_int {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Adjusts the queue limits dm core computed from the devices.
    fn io_hints(&self, _limits: &mut QueueLimits<'_>) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// What `ti->private` owns for a constructed target.
struct Private<T: Target> {
    target: Pin<KBox<T>>,
    devs: TableDevices,
    handle: TargetHandle,
}

/// The C entry points for target type `T`.
pub(crate) struct TargetVTable<T: Target>(PhantomData<T>);

impl<T: Target> TargetVTable<T> {
    /// Per-bio bytes for `T`, checked (alignment) at compile time.
    const PER_BIO_SIZE: usize = per_bio_size::<T>();

    /// # Safety
    ///
    /// `ti` was handed to us by dm core and its `ctr` completed, so `private`
    /// holds a `KBox<Private<T>>` from `into_foreign`, or NULL once `dtr` has
    /// taken it back.
    unsafe fn private<'a>(ti: *mut bindings::dm_target) -> Option<&'a Private<T>> {
        // SAFETY: `ti` is valid (function contract).
        let p = unsafe { (*ti).private };
        if p.is_null() {
            // `dtr` is running: the target is being dropped.
            return None;
        }
        // SAFETY: by the function's safety contract a non-null `private` came
        // from `into_foreign` and is still owned by the foreign side.
        Some(unsafe { <KBox<Private<T>> as ForeignOwnable>::borrow(p) })
    }

    /// # Safety
    ///
    /// As for [`Self::private`].
    unsafe fn target<'a>(ti: *mut bindings::dm_target) -> Option<&'a T> {
        // SAFETY: as the caller promises.
        unsafe { Self::private(ti) }.map(|p| p.target.as_ref().get_ref())
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
        let fail = move |e: TargetError| {
            // SAFETY: `ti` is valid; `error` is ours to set and the message
            // is static, as dm core keeps the pointer.
            unsafe { (*ti).error = e.msg.as_char_ptr() as *mut c_char };
            e.err.to_errno()
        };
        let handle = match TargetHandle::new(ti) {
            Ok(h) => h,
            Err(err) => return fail(TargetError::new(err, c_str!("Cannot allocate target"))),
        };
        // SAFETY: `ti` is valid and ours during `ctr`. The size fits: it is a
        // small type's size rounded to 8.
        unsafe { (*ti).per_io_data_size = Self::PER_BIO_SIZE as c_uint };
        // INVARIANT: dm core hands `ctr` a valid target it is constructing.
        let mut ctx = TargetCtx {
            ti,
            devs: TableDevices::new(),
            handle,
        };
        let result = T::new(&mut ctx, &mut args).and_then(|target| {
            KBox::new(
                Private {
                    target,
                    devs: TableDevices::new(),
                    handle: ctx.handle.clone(),
                },
                GFP_KERNEL,
            )
            .map_err(|_| TargetError::new(ENOMEM, c_str!("Cannot allocate target")))
        });
        match result {
            Ok(mut private) => {
                private.devs = core::mem::replace(&mut ctx.devs, TableDevices::new());
                // SAFETY: `ti` is valid; `private` is ours to set in `ctr`.
                unsafe { (*ti).private = private.into_foreign() as *mut c_void };
                0
            }
            Err(e) => {
                ctx.handle.detach();
                // SAFETY: the devices were got for `ti` in this `ctr`, and the
                // failed target (which held clones only) is gone.
                unsafe { ctx.devs.put_all(ti) };
                fail(e)
            }
        }
    }

    /// # Safety
    ///
    /// Called by dm core once, after a successful `ctr`, with no I/O in flight.
    unsafe extern "C" fn dtr_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ctr` stored a `KBox<Private<T>>` in `private`; this is the
        // one place that takes it back, and no borrow is alive since no
        // callback runs concurrently with `dtr`.
        let private = unsafe { <KBox<Private<T>> as ForeignOwnable>::from_foreign((*ti).private) };
        // SAFETY: `ti` is valid; from here on callbacks see no target (see
        // `private`), should a dying target end a bio it still holds.
        unsafe { (*ti).private = core::ptr::null_mut() };
        let Private {
            target,
            mut devs,
            handle,
        } = KBox::into_inner(private);
        // The target goes first: its workers may still use the handle and
        // its devices while they stop.
        drop(target);
        handle.detach();
        // SAFETY: the devices were got for `ti`, which is alive until `dtr`
        // returns; the target that used them is gone.
        unsafe { devs.put_all(ti) };
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with a bio it owns.
    unsafe extern "C" fn map_callback(
        ti: *mut bindings::dm_target,
        bio: *mut kernel::bindings::bio,
    ) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        let (Some(t), Some(bio)) = (unsafe { Self::target(ti) }, NonNull::new(bio)) else {
            return bindings::DM_MAPIO_KILL as c_int;
        };
        // A zero-sized `PerBio` needs no initialising (and no call to find it).
        if Self::PER_BIO_SIZE != 0 {
            // SAFETY: dm core allocated `PER_BIO_SIZE` bytes of per-bio data
            // for this clone (set in `ctr`), suitably aligned; we initialise
            // it before anything reads it.
            unsafe {
                bindings::dm_per_bio_data(bio.as_ptr(), Self::PER_BIO_SIZE)
                    .cast::<T::PerBio>()
                    .write(T::PerBio::default())
            };
        }
        // SAFETY: the bio was given to this `map` call for a `T` target, its
        // per-bio data is initialised, and the handle cannot outlive the call
        // except through `MapBio::hold`, which transfers ownership.
        let bio = unsafe { MapBio::<T>::new(bio) };
        let result = t.map(bio);
        (match result.0 {
            MapKind::Remapped => bindings::DM_MAPIO_REMAPPED,
            MapKind::Submitted => bindings::DM_MAPIO_SUBMITTED,
            MapKind::Kill => bindings::DM_MAPIO_KILL,
            MapKind::Requeue => bindings::DM_MAPIO_REQUEUE,
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
        let (Some(t), Some(bio), Some(status)) = (t, NonNull::new(bio), NonNull::new(error)) else {
            return bindings::DM_ENDIO_DONE as c_int;
        };
        // SAFETY: dm core lends the status variable for the call.
        let status = unsafe { &mut *status.as_ptr() };
        // SAFETY: the bio went through our `map`, so its per-bio data is
        // initialised; it is ours until `end_io` returns, or for good after
        // `EndioBio::hold` (DM_ENDIO_INCOMPLETE).
        let bio = unsafe { EndioBio::<T>::new(bio, status) };
        (match t.end_io(bio).0 {
            EndioKind::Done => bindings::DM_ENDIO_DONE,
            EndioKind::Incomplete => bindings::DM_ENDIO_INCOMPLETE,
            EndioKind::Requeue => bindings::DM_ENDIO_REQUEUE,
        }) as c_int
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn presuspend_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        if let Some(t) = unsafe { Self::target(ti) } {
            t.presuspend()
        }
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn presuspend_undo_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        if let Some(t) = unsafe { Self::target(ti) } {
            t.presuspend_undo()
        }
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn postsuspend_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        if let Some(t) = unsafe { Self::target(ti) } {
            t.postsuspend()
        }
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn preresume_callback(ti: *mut bindings::dm_target) -> c_int {
        // SAFETY: `ti` is constructed (function contract).
        match unsafe { Self::target(ti) }.map(|t| t.preresume()) {
            Some(Ok(())) => 0,
            Some(Err(e)) => e.to_errno(),
            None => ENXIO.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn resume_callback(ti: *mut bindings::dm_target) {
        // SAFETY: `ti` is constructed (function contract).
        if let Some(t) = unsafe { Self::target(ti) } {
            t.resume()
        }
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
        // SAFETY: dm core gives us `maxlen` writable bytes at `result`.
        let buf = unsafe { slice_from_raw(result, maxlen) };
        let mut out = StatusWriter::new(buf);
        // SAFETY: `ti` is constructed (function contract).
        let Some(t) = (unsafe { Self::target(ti) }) else {
            return;
        };
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
        let Some(t) = (unsafe { Self::target(ti) }) else {
            return ENXIO.to_errno();
        };
        // SAFETY: dm core passes `argc` valid strings for the call.
        let mut args = unsafe { ArgSet::from_raw(argc, argv) };
        // SAFETY: dm core gives us `maxlen` writable bytes at `result`.
        let buf = unsafe { slice_from_raw(result, maxlen) };
        let mut out = StatusWriter::new(buf);
        match t.message(&mut args, &mut out) {
            // dm-ioctl copies the result buffer back only when we return 1.
            Ok(()) if !out.is_empty() => 1,
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
        let Some(private) = (unsafe { Self::private(ti) }) else {
            return 0;
        };
        // SAFETY: `ti`, `f` and `data` come from dm core for this call and
        // `devs` are `ti`'s devices; the visitor lives only in this call.
        let mut visitor = unsafe { DeviceVisitor::new(ti, f, data, &private.devs) };
        private.target.iterate_devices(&mut visitor)
    }

    /// # Safety
    ///
    /// Called by dm core for a constructed target with valid limits.
    unsafe extern "C" fn io_hints_callback(
        ti: *mut bindings::dm_target,
        limits: *mut kernel::bindings::queue_limits,
    ) {
        // SAFETY: `ti` is constructed (function contract).
        let (Some(t), Some(mut lim)) = (unsafe { Self::target(ti) }, NonNull::new(limits)) else {
            return;
        };
        // SAFETY: dm core lends us the limits exclusively for the call.
        let lim = unsafe { lim.as_mut() };
        t.io_hints(&mut QueueLimits { lim })
    }

    /// The `struct target_type` for `T`, without name and module, which the
    /// registration fills in. Every field is listed: a field added to the C
    /// structure is a build error here, never a silent NULL.
    pub(crate) const TEMPLATE: bindings::target_type = bindings::target_type {
        features: T::FEATURES,
        name: core::ptr::null(),
        module: core::ptr::null_mut(),
        version: T::VERSION,
        ctr: Some(Self::ctr_callback),
        dtr: Some(Self::dtr_callback),
        map: Some(Self::map_callback),
        // Request-based dm only.
        clone_and_map_rq: None,
        release_clone_rq: None,
        end_io: if T::HAS_END_IO {
            Some(Self::end_io_callback)
        } else {
            None
        },
        // Request-based dm only.
        rq_end_io: None,
        presuspend: if T::HAS_PRESUSPEND {
            Some(Self::presuspend_callback)
        } else {
            None
        },
        presuspend_undo: if T::HAS_PRESUSPEND_UNDO {
            Some(Self::presuspend_undo_callback)
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
        // Our targets are not ioctl pass-throughs, zoned, busy-polled or DAX.
        prepare_ioctl: None,
        report_zones: None,
        busy: None,
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
        direct_access: None,
        dax_zero_page_range: None,
        dax_recovery_write: None,
        // dm core links registered types through this; unlinked until then.
        list: kernel::bindings::list_head {
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
        },
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
