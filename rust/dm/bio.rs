// SPDX-License-Identifier: GPL-2.0

//! Bios as a target sees them, with ownership in the types.
//!
//! * [`MapBio`]: the bio `map` is given. The target ends `map` by consuming
//!   it: [`MapBio::remap`] (dm core submits it), [`MapBio::kill`],
//!   [`MapBio::requeue`], or [`MapBio::hold`], which hands the bio to the
//!   target as a [`HeldBio`] together with the only `Submitted` result there
//!   is. Only here may a bio be split with [`MapBio::accept_partial`].
//! * [`EndioBio`]: the bio `end_io` is given; consumed by
//!   [`EndioBio::done`], [`EndioBio::requeue`] or [`EndioBio::hold`]
//!   (the `Incomplete` result), which gives a [`ReturnedBio`]: ended or
//!   requeued later, never resubmitted (its I/O used up its position).
//! * [`HeldBio`]: a bio the target owns until it completes it
//!   ([`HeldBio::end`]), resubmits it to a device ([`HeldBio::submit_to`]) or
//!   requeues it; each consumes the handle. Dropping a held bio without doing
//!   any of that ends it with an I/O error, so no bio is lost unless its
//!   handle is leaked (`mem::forget`, a reference cycle).
//! * [`Bio`]: read-only accessors, reached through any of the above.
//!
//! A target declares typed per-bio data ([`Target::PerBio`]): dm core
//! allocates it with every bio; the vtable initialises it to
//! `PerBio::default()` before `map` sees the bio (a zero-sized one, which
//! has no bytes to initialise, is not constructed).
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use super::bindings;
use super::device::DmDev;
use super::target::{EndioResult, MapResult, Target};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::prelude::*;
use kernel::types::Opaque;

/// Operation of a bio (`REQ_OP_*`). Flushes are not an operation in bio-based
/// dm: they are writes with [`Bio::is_preflush`] set (empty ones have no data).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BioOp {
    Read,
    Write,
    Discard,
    SecureErase,
    WriteZeroes,
    /// Zone management and driver-private operations.
    Other(u32),
}

/// A block layer completion status (`blk_status_t`); only the values below
/// can be made, so dm core never sees an unknown one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct BlkStatus(u8);

impl BlkStatus {
    // The values are checked against the C macros in rust/helpers/bio.c.
    /// Success.
    pub(crate) const OK: Self = Self(0);
    /// No space left (thin pools out of data space).
    pub(crate) const NO_SPACE: Self = Self(3);
    /// I/O error.
    pub(crate) const IO_ERROR: Self = Self(10);
    /// Ask dm core to requeue the bio (`BLK_STS_DM_REQUEUE`).
    pub(crate) const DM_REQUEUE: Self = Self(11);

    /// Whether this is success.
    pub(crate) fn is_ok(self) -> bool {
        self == Self::OK
    }

    /// A status dm core passed us; unknown values read as an I/O error.
    fn from_raw(raw: u8) -> Self {
        match raw {
            0 | 3 | 10 | 11 => Self(raw),
            _ => Self::IO_ERROR,
        }
    }
}

/// Read-only view of a `struct bio`.
///
/// # Invariants
///
/// A `&Bio` is only made from a live bio that the holder of the reference may
/// read (see the owning handles below).
#[repr(transparent)]
pub(crate) struct Bio(Opaque<kernel::bindings::bio>);

impl Bio {
    /// # Safety
    ///
    /// `ptr` must be a live bio readable for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut kernel::bindings::bio) -> &'a Self {
        // SAFETY: `Bio` is a transparent wrapper of `bio`; validity is the
        // caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn raw(&self) -> *mut kernel::bindings::bio {
        self.0.get()
    }

    /// First sector the bio addresses.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: the bio is live (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_sector }
    }

    /// Remaining size in bytes.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: the bio is live (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_size }
    }

    /// Remaining size in 512-byte sectors (`bio_sectors`).
    pub(crate) fn sectors(&self) -> u32 {
        self.size() >> 9
    }

    /// The operation's number (`bio_op`: the low `REQ_OP_BITS` of the
    /// flags), read in place: every bio asks, and a helper call costs more
    /// than the mask.
    fn op_number(&self) -> u32 {
        // SAFETY: the bio is live (type invariant).
        let opf = unsafe { (*self.raw()).bi_opf };
        opf & ((1u32 << kernel::bindings::REQ_OP_BITS) - 1)
    }

    /// The operation.
    pub(crate) fn op(&self) -> BioOp {
        match self.op_number() {
            kernel::bindings::req_op_REQ_OP_READ => BioOp::Read,
            kernel::bindings::req_op_REQ_OP_WRITE => BioOp::Write,
            kernel::bindings::req_op_REQ_OP_DISCARD => BioOp::Discard,
            kernel::bindings::req_op_REQ_OP_SECURE_ERASE => BioOp::SecureErase,
            kernel::bindings::req_op_REQ_OP_WRITE_ZEROES => BioOp::WriteZeroes,
            other => BioOp::Other(other),
        }
    }

    /// Whether the operation writes (data direction WRITE: `op_is_write`,
    /// the operation number's low bit).
    pub(crate) fn is_write(&self) -> bool {
        self.op_number() & 1 != 0
    }

    fn has_flag(&self, bit: u32) -> bool {
        // SAFETY: the bio is live (type invariant).
        let opf = unsafe { (*self.raw()).bi_opf };
        opf & (1u32 << bit) != 0
    }

    /// Whether the bio asks for a cache flush before it (`REQ_PREFLUSH`).
    pub(crate) fn is_preflush(&self) -> bool {
        self.has_flag(kernel::bindings::req_flag_bits___REQ_PREFLUSH)
    }

    /// Whether the bio is a flush with no data (what dm core sends a target
    /// `num_flush_bios` times per flush).
    pub(crate) fn is_empty_flush(&self) -> bool {
        self.is_preflush() && self.size() == 0
    }

    /// Whether the bio must reach stable storage (`REQ_FUA`).
    pub(crate) fn is_fua(&self) -> bool {
        self.has_flag(kernel::bindings::req_flag_bits___REQ_FUA)
    }

    /// Which of the duplicated flush/discard bios this is (0 for others).
    pub(crate) fn target_bio_nr(&self) -> u32 {
        // SAFETY: the bio is live and was cloned by dm core for a target
        // (every handle is made from such a bio).
        unsafe { bindings::dm_bio_get_target_bio_nr(self.raw()) }
    }
}

/// Bytes dm core reserves per bio for `T::PerBio`: its size rounded up to 8,
/// so the data (which sits right before dm core's 8-aligned per-bio header)
/// is 8-aligned.
pub(super) const fn per_bio_size<T: Target>() -> usize {
    assert!(core::mem::align_of::<T::PerBio>() <= 8);
    (core::mem::size_of::<T::PerBio>() + 7) & !7
}

/// The per-bio data of `bio`, for target `T`.
///
/// # Safety
///
/// `bio` must be a live clone that dm core made for a target of type `T`
/// (whose `per_io_data_size` is `per_bio_size::<T>()`).
unsafe fn per_bio_ptr<T: Target>(bio: *mut kernel::bindings::bio) -> *mut T::PerBio {
    // SAFETY: by the function contract dm core allocated `per_bio_size::<T>()`
    // bytes of per-bio data in front of `bio`.
    unsafe { bindings::dm_per_bio_data(bio, per_bio_size::<T>()) }.cast()
}

/// Marks a bio type as owning a dm clone bio of target `T` exclusively.
///
/// # Invariants
///
/// `ptr` is a live clone bio dm core made for a target of type `T`, whose
/// per-bio data was initialised, and that nobody else touches while this
/// handle exists.
pub(crate) struct Owned<T: Target> {
    ptr: NonNull<kernel::bindings::bio>,
    _t: PhantomData<T>,
}

impl<T: Target> Owned<T> {
    fn bio(&self) -> &Bio {
        // SAFETY: live and ours (type invariant).
        unsafe { Bio::from_raw(self.ptr.as_ptr()) }
    }

    fn per_bio(&self) -> &T::PerBio {
        // SAFETY: the per-bio data was initialised and the bio is ours
        // (type invariant), so nobody writes it while we read.
        unsafe { &*per_bio_ptr::<T>(self.ptr.as_ptr()) }
    }

    fn per_bio_mut(&mut self) -> &mut T::PerBio {
        // SAFETY: as in `per_bio`, and `&mut self` makes the access exclusive.
        unsafe { &mut *per_bio_ptr::<T>(self.ptr.as_ptr()) }
    }

    fn remap(&mut self, dev: &DmDev, sector: u64) {
        let bio = self.ptr.as_ptr();
        // SAFETY: the bio is ours (type invariant); `dev` keeps its block
        // device valid, and dm core waits for this bio before the table (and
        // with it the target's devices) goes away. A bio taken back in
        // `end_io` still carries its failed status, which a successful
        // resubmission would not clear: it starts again from success.
        unsafe {
            bindings::dmrs_bio_set_dev(bio, dev.bdev());
            (*bio).bi_iter.bi_sector = sector;
            (*bio).bi_status = BlkStatus::OK.0;
        }
    }

    fn zero_fill(&mut self) -> Result {
        // Only a read's pages are ours to fill: a write's belong to the
        // submitter, and discards and write-zeroes carry no pages at all.
        if self.bio().op() != BioOp::Read || self.bio().size() == 0 {
            return Err(EINVAL);
        }
        // SAFETY: the bio is ours (type invariant) and a read with data, so
        // its pages are the destination of the read, ours to fill.
        unsafe { bindings::dmrs_zero_fill_bio(self.ptr.as_ptr()) };
        Ok(())
    }
}

/// The bio `map` was given. `map` must consume it (the type has no other way
/// to produce a [`MapResult`]).
pub(crate) struct MapBio<'a, T: Target> {
    inner: Owned<T>,
    // `map` borrows the bio from dm core only for the call.
    _call: PhantomData<&'a mut ()>,
}

impl<T: Target> MapBio<'_, T> {
    /// # Safety
    ///
    /// `ptr` is the bio dm core passed to `map` for a target of type `T`,
    /// with its per-bio data initialised; the handle lives only in that call.
    pub(super) unsafe fn new(ptr: NonNull<kernel::bindings::bio>) -> Self {
        // INVARIANT: by the function contract.
        Self {
            inner: Owned {
                ptr,
                _t: PhantomData,
            },
            _call: PhantomData,
        }
    }

    /// This target's data for the bio.
    pub(crate) fn per_bio(&self) -> &T::PerBio {
        self.inner.per_bio()
    }

    /// This target's data for the bio, to change.
    pub(crate) fn per_bio_mut(&mut self) -> &mut T::PerBio {
        self.inner.per_bio_mut()
    }

    /// Has dm core process only the first `sectors` now and send the rest to
    /// `map` again in another bio (`dm_accept_partial_bio`).
    ///
    /// Allowed for reads and writes with data, `1 <= sectors <= self.sectors()`,
    /// on non-zoned devices; anything else is refused with `EINVAL` (dm core
    /// would BUG, write a dead pointer or loop forever).
    pub(crate) fn accept_partial(&mut self, sectors: u32) -> Result {
        let bio = self.inner.bio();
        let data_op = matches!(bio.op(), BioOp::Read | BioOp::Write);
        if !data_op || bio.size() == 0 || sectors == 0 || sectors > bio.sectors() {
            return Err(EINVAL);
        }
        // SAFETY: the bio is live; `bi_bdev` is set for every dm clone.
        if unsafe { bindings::dmrs_bdev_is_zoned((*bio.raw()).bi_bdev) } {
            return Err(EINVAL);
        }
        // SAFETY: we are in `map` (this handle exists only there), so dm core's
        // `len_ptr` is live; the bio is a read or write with data, so it is
        // neither an empty flush (no `len_ptr`) nor a duplicated bio; and
        // `sectors` is within the bio.
        unsafe { bindings::dm_accept_partial_bio(self.inner.ptr.as_ptr(), sectors) };
        Ok(())
    }

    /// Points the bio at `sector` of `dev`; dm core submits it.
    pub(crate) fn remap(mut self, dev: &DmDev, sector: u64) -> MapResult {
        self.inner.remap(dev, sector);
        MapResult::remapped()
    }

    /// Fails the bio with an I/O error.
    pub(crate) fn kill(self) -> MapResult {
        MapResult::kill()
    }

    /// Hands the bio back to dm core (`DM_MAPIO_REQUEUE`): kept and mapped
    /// again after resume while a noflush suspend is in progress; otherwise
    /// dm core fails it.
    pub(crate) fn requeue(self) -> MapResult {
        MapResult::requeue()
    }

    /// Keeps the bio: the target now owns it and must end or resubmit it.
    pub(crate) fn hold(self) -> (HeldBio<T>, MapResult) {
        // INVARIANT: ownership moves from this handle to the held one.
        (HeldBio { inner: self.inner }, MapResult::submitted())
    }

    /// Ends the bio now with `status` (e.g. a read of a hole, zero-filled).
    pub(crate) fn end(self, status: BlkStatus) -> MapResult {
        self.hold().0.end(status);
        MapResult::submitted()
    }

    /// Zeroes the data of a read (a read served from nothing); `EINVAL` for
    /// anything but a read with data.
    pub(crate) fn zero_fill(&mut self) -> Result {
        self.inner.zero_fill()
    }
}

impl<T: Target> core::ops::Deref for MapBio<'_, T> {
    type Target = Bio;
    fn deref(&self) -> &Bio {
        self.inner.bio()
    }
}

/// The bio `end_io` was given, with its completion status.
pub(crate) struct EndioBio<'a, T: Target> {
    inner: Owned<T>,
    // INVARIANT: valid for writes for `'a` (dm core's status variable).
    status: &'a mut u8,
}

impl<'a, T: Target> EndioBio<'a, T> {
    /// # Safety
    ///
    /// `ptr` is the bio dm core passed to `end_io` for a target of type `T`
    /// and `status` its status variable; the handle lives only in that call.
    pub(super) unsafe fn new(ptr: NonNull<kernel::bindings::bio>, status: &'a mut u8) -> Self {
        // INVARIANT: by the function contract.
        Self {
            inner: Owned {
                ptr,
                _t: PhantomData,
            },
            status,
        }
    }

    /// The completion status.
    pub(crate) fn status(&self) -> BlkStatus {
        BlkStatus::from_raw(*self.status)
    }

    /// This target's data for the bio.
    pub(crate) fn per_bio(&self) -> &T::PerBio {
        self.inner.per_bio()
    }

    /// This target's data for the bio, to change.
    pub(crate) fn per_bio_mut(&mut self) -> &mut T::PerBio {
        self.inner.per_bio_mut()
    }

    /// Lets completion proceed.
    pub(crate) fn done(self) -> EndioResult {
        EndioResult::done()
    }

    /// Lets completion proceed with another status.
    pub(crate) fn done_with(self, status: BlkStatus) -> EndioResult {
        *self.status = status.0;
        EndioResult::done()
    }

    /// Has dm core requeue the original bio (`DM_ENDIO_REQUEUE`): kept while
    /// a noflush suspend is in progress, failed otherwise.
    pub(crate) fn requeue(self) -> EndioResult {
        EndioResult::requeue()
    }

    /// Takes the bio back: completion stops here and the target owns the bio
    /// again, to end it later (which calls `end_io` again). It cannot be
    /// resubmitted: the completed I/O used up its position and size.
    pub(crate) fn hold(self) -> (ReturnedBio<T>, EndioResult) {
        let bio = self.inner.ptr.as_ptr();
        // SAFETY: the bio is ours (type invariant of `Owned`); the driver
        // below may leave a stale `bi_next` after completion, which must not
        // leak into a later completion.
        unsafe {
            (*bio).bi_status = *self.status;
            (*bio).bi_next = core::ptr::null_mut();
        }
        // INVARIANT: dm core does nothing more with the bio after
        // DM_ENDIO_INCOMPLETE; ownership moves to the returned handle.
        (ReturnedBio { inner: self.inner }, EndioResult::incomplete())
    }
}

impl<T: Target> core::ops::Deref for EndioBio<'_, T> {
    type Target = Bio;
    fn deref(&self) -> &Bio {
        self.inner.bio()
    }
}

/// A bio the target took from `map` or `end_io` and owns until it ends,
/// resubmits or requeues it. Dropping it ends it with an I/O error.
pub(crate) struct HeldBio<T: Target> {
    inner: Owned<T>,
}

// SAFETY: a bio may be completed or submitted from any thread; the per-bio
// data moves with it, and `T::PerBio: Send`.
unsafe impl<T: Target> Send for HeldBio<T> {}
// SAFETY: `&HeldBio` only reads the bio and `T::PerBio: Sync`.
unsafe impl<T: Target> Sync for HeldBio<T> {}

impl<T: Target> HeldBio<T> {
    /// This target's data for the bio.
    pub(crate) fn per_bio(&self) -> &T::PerBio {
        self.inner.per_bio()
    }

    /// This target's data for the bio, to change.
    pub(crate) fn per_bio_mut(&mut self) -> &mut T::PerBio {
        self.inner.per_bio_mut()
    }

    /// Zeroes the data of a read; `EINVAL` for anything but a read with data.
    pub(crate) fn zero_fill(&mut self) -> Result {
        self.inner.zero_fill()
    }

    fn into_raw(self) -> *mut kernel::bindings::bio {
        let me = core::mem::ManuallyDrop::new(self);
        me.inner.ptr.as_ptr()
    }

    /// Ends the bio with `status`.
    pub(crate) fn end(self, status: BlkStatus) {
        let bio = self.into_raw();
        // SAFETY: we owned the bio (type invariant) and give it up here, once.
        unsafe { bindings::dmrs_bio_endio_status(bio, status.0) };
    }

    /// Ends the bio successfully.
    pub(crate) fn end_ok(self) {
        self.end(BlkStatus::OK)
    }

    /// Has dm core requeue the bio (kept while a noflush suspend is in
    /// progress, failed otherwise), as upstream targets do with held bios
    /// on suspend.
    pub(crate) fn requeue(self) {
        self.end(BlkStatus::DM_REQUEUE)
    }

    /// Points the bio at `sector` of `dev` and submits it
    /// (`dm_submit_bio_remap`); dm core completes the original when it ends.
    /// It may sleep (request allocation below): process context only, never
    /// from `end_io`.
    pub(crate) fn submit_to(mut self, dev: &DmDev, sector: u64) {
        // SAFETY: no preconditions; debug kernels report atomic callers.
        unsafe { bindings::dmrs_might_sleep() };
        self.inner.remap(dev, sector);
        let bio = self.into_raw();
        // SAFETY: we owned the dm clone (type invariant), remapped it to one
        // of our devices, and hand it to dm core here, once.
        unsafe { bindings::dm_submit_bio_remap(bio, core::ptr::null_mut()) };
    }
}

impl<T: Target> core::ops::Deref for HeldBio<T> {
    type Target = Bio;
    fn deref(&self) -> &Bio {
        self.inner.bio()
    }
}

impl<T: Target> Drop for HeldBio<T> {
    fn drop(&mut self) {
        // A held bio must never be lost: one dropped without an ending ends
        // in an I/O error rather than hanging its submitter (and suspend).
        // SAFETY: we own the bio (type invariant) and drop runs once.
        unsafe { bindings::dmrs_bio_endio_status(self.inner.ptr.as_ptr(), BlkStatus::IO_ERROR.0) };
    }
}

/// A bio `end_io` took back ([`EndioBio::hold`]): the target owns it until
/// it ends it again (which calls `end_io` again) or requeues it. Unlike a
/// [`HeldBio`] it cannot be resubmitted. Dropping it ends it with an I/O
/// error.
pub(crate) struct ReturnedBio<T: Target> {
    inner: Owned<T>,
}

// SAFETY: as for `HeldBio`.
unsafe impl<T: Target> Send for ReturnedBio<T> {}
// SAFETY: as for `HeldBio`.
unsafe impl<T: Target> Sync for ReturnedBio<T> {}

impl<T: Target> ReturnedBio<T> {
    /// The status the bio completed with.
    pub(crate) fn status(&self) -> BlkStatus {
        // SAFETY: the bio is ours (type invariant of `Owned`); `hold` stored
        // the completion status in `bi_status`.
        BlkStatus::from_raw(unsafe { (*self.inner.ptr.as_ptr()).bi_status })
    }

    /// This target's data for the bio.
    pub(crate) fn per_bio(&self) -> &T::PerBio {
        self.inner.per_bio()
    }

    /// This target's data for the bio, to change.
    pub(crate) fn per_bio_mut(&mut self) -> &mut T::PerBio {
        self.inner.per_bio_mut()
    }

    /// Ends the bio (again) with `status`.
    pub(crate) fn end(self, status: BlkStatus) {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: we owned the bio (type invariant) and give it up here, once.
        unsafe { bindings::dmrs_bio_endio_status(me.inner.ptr.as_ptr(), status.0) };
    }

    /// Has dm core requeue the original bio (kept while a noflush suspend
    /// is in progress, failed otherwise).
    pub(crate) fn requeue(self) {
        self.end(BlkStatus::DM_REQUEUE)
    }
}

impl<T: Target> core::ops::Deref for ReturnedBio<T> {
    type Target = Bio;
    fn deref(&self) -> &Bio {
        self.inner.bio()
    }
}

impl<T: Target> Drop for ReturnedBio<T> {
    fn drop(&mut self) {
        // SAFETY: we own the bio (type invariant) and drop runs once.
        unsafe { bindings::dmrs_bio_endio_status(self.inner.ptr.as_ptr(), BlkStatus::IO_ERROR.0) };
    }
}

/// A bio handle a [`BioList`] can own: [`HeldBio`] or [`ReturnedBio`].
/// Sealed: only this file implements it, and its methods are `unsafe`, so
/// code outside `rust/` (which forbids `unsafe`) cannot call them.
pub(crate) trait ListedBio<T: Target>: Sized + sealed::Sealed {
    /// Gives up the handle; the caller now owns the bio.
    ///
    /// # Safety
    ///
    /// The caller must turn the result back into a handle with
    /// [`Self::from_owned`] (or the bio is never ended).
    #[doc(hidden)]
    unsafe fn into_owned(self) -> Owned<T>;
    /// Makes the handle back.
    ///
    /// # Safety
    ///
    /// `owned` must come from `into_owned` of the same handle type.
    #[doc(hidden)]
    unsafe fn from_owned(owned: Owned<T>) -> Self;
}

mod sealed {
    pub(crate) trait Sealed {}
}

impl<T: Target> sealed::Sealed for HeldBio<T> {}
impl<T: Target> sealed::Sealed for ReturnedBio<T> {}

impl<T: Target> ListedBio<T> for HeldBio<T> {
    unsafe fn into_owned(self) -> Owned<T> {
        let me = core::mem::ManuallyDrop::new(self);
        // INVARIANT: the bio moves from this handle to the returned owner.
        Owned {
            ptr: me.inner.ptr,
            _t: PhantomData,
        }
    }
    unsafe fn from_owned(owned: Owned<T>) -> Self {
        HeldBio { inner: owned }
    }
}

impl<T: Target> ListedBio<T> for ReturnedBio<T> {
    unsafe fn into_owned(self) -> Owned<T> {
        let me = core::mem::ManuallyDrop::new(self);
        // INVARIANT: the bio moves from this handle to the returned owner.
        Owned {
            ptr: me.inner.ptr,
            _t: PhantomData,
        }
    }
    unsafe fn from_owned(owned: Owned<T>) -> Self {
        ReturnedBio { inner: owned }
    }
}

/// A FIFO list of owned bios (linked through `bi_next`, like `struct
/// bio_list`): [`HeldBio`]s by default, or [`ReturnedBio`]s. Dropping a
/// non-empty list ends its bios with I/O errors.
///
/// # Invariants
///
/// `head..tail` is a `bi_next` chain of bios that this list owns as `B`s
/// (tail's `bi_next` is NULL); both are NULL when empty.
pub(crate) struct BioList<T: Target, B: ListedBio<T> = HeldBio<T>> {
    head: *mut kernel::bindings::bio,
    tail: *mut kernel::bindings::bio,
    _t: PhantomData<(T, B)>,
}

// SAFETY: the list owns its bios, which are `Send` (see `HeldBio`,
// `ReturnedBio`).
unsafe impl<T: Target, B: ListedBio<T>> Send for BioList<T, B> {}
// SAFETY: `&BioList` exposes only whether it is empty and a read-only walk
// of `bi_next` along the bios it owns.
unsafe impl<T: Target, B: ListedBio<T>> Sync for BioList<T, B> {}

impl<T: Target, B: ListedBio<T>> Default for BioList<T, B> {
    fn default() -> Self {
        Self::new()
    }
}

/// Links `next` after `bio`.
///
/// # Safety
///
/// The caller owns `bio` (a list member or one being added), which is not
/// queued in the block layer, so `bi_next` is free for its lists.
unsafe fn set_next(bio: *mut kernel::bindings::bio, next: *mut kernel::bindings::bio) {
    // SAFETY: by the function's contract (a plain field, written in place).
    unsafe { (*bio).bi_next = next };
}

impl<T: Target, B: ListedBio<T>> BioList<T, B> {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            _t: PhantomData,
        }
    }

    /// Number of bios on the list, counted along the chain (for status
    /// lines: the lists on the I/O paths keep no count, to stay small).
    pub(crate) fn count_bios(&self) -> usize {
        let mut n = 0;
        let mut bio = self.head;
        while !bio.is_null() {
            n += 1;
            // SAFETY: `bio` is a member of the chain, which the list owns
            // (type invariant); only its `bi_next` is read.
            bio = unsafe { (*bio).bi_next };
        }
        n
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Appends `bio`.
    pub(crate) fn push(&mut self, bio: B) {
        // SAFETY: the list keeps the bio and gives it back as a `B` in
        // `pop` (type invariant).
        let raw = unsafe { bio.into_owned() }.ptr.as_ptr();
        // SAFETY: we own `raw` now, and `tail` (a list member, type
        // invariant); neither is queued in the block layer.
        unsafe {
            set_next(raw, core::ptr::null_mut());
            if self.tail.is_null() {
                self.head = raw;
            } else {
                set_next(self.tail, raw);
            }
        }
        // INVARIANT: `raw` joins the chain at the tail, owned by the list.
        self.tail = raw;
    }

    /// Takes the first bio.
    pub(crate) fn pop(&mut self) -> Option<B> {
        let head = NonNull::new(self.head)?;
        // SAFETY: `head` is a bio this list owns (type invariant).
        self.head = unsafe { (*head.as_ptr()).bi_next };
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        // SAFETY: the list owns `head` (type invariant).
        unsafe { set_next(head.as_ptr(), core::ptr::null_mut()) };
        // INVARIANT: the list owned `head` as a `B`; ownership moves out.
        // SAFETY: `head` was pushed as a `B` (type invariant).
        Some(unsafe {
            B::from_owned(Owned {
                ptr: head,
                _t: PhantomData,
            })
        })
    }

    /// Takes the whole list, leaving this one empty.
    pub(crate) fn take_all(&mut self) -> Self {
        core::mem::take(self)
    }
}

impl<T: Target, B: ListedBio<T>> Iterator for BioList<T, B> {
    type Item = B;
    fn next(&mut self) -> Option<B> {
        self.pop()
    }
}

impl<T: Target, B: ListedBio<T>> Drop for BioList<T, B> {
    // Inline: the I/O paths drop empty lists, and the check is cheaper
    // than the call.
    #[inline(always)]
    fn drop(&mut self) {
        if !self.is_empty() {
            self.drop_bios();
        }
    }
}

impl<T: Target, B: ListedBio<T>> BioList<T, B> {
    /// Drops every bio still listed (each ends as its type's drop says).
    #[cold]
    #[inline(never)]
    fn drop_bios(&mut self) {
        while let Some(bio) = self.pop() {
            drop(bio);
        }
    }
}
