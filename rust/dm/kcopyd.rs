// SPDX-License-Identifier: GPL-2.0

//! A dm-kcopyd client: copies a region to up to eight others, or zeroes
//! regions, in the background, and calls a completion closure (what
//! thin-pool, cache and snapshot use to copy and zero blocks).
//!
//! # Ownership
//!
//! - A submitted job owns its completion closure and a [`Region`] (so a
//!   reference on the device's open file) for every device it touches: the
//!   devices stay open until the job completes, whatever happens to the
//!   table. A [`KcopydClient::copy_within`] job owns instead one `Arc` of
//!   the value whose devices it borrows, handed to the completion.
//! - The closure runs exactly once, on kcopyd's workqueue (process context,
//!   may sleep), and then the job's devices are released.
//! - Dropping the [`KcopydClient`] waits for every job it submitted to
//!   complete, callbacks included (`dm_kcopyd_client_destroy`). A job's closure
//!   must therefore not drop the last owner of its own client: that waits for
//!   itself (a deadlock).
//! - The client holds a [`ModuleRef`], so a leaked client with jobs in flight
//!   keeps dm-rs loaded.
//! - Submitting may sleep (kcopyd allocates with `GFP_NOIO` from a mempool,
//!   and so is the job's own slot): call it where sleeping is allowed.
//!
//! C header: [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h)

use super::bindings;
use super::device::DmDev;
use super::module_ref::ModuleRef;
use super::region::Region;
use core::ptr::NonNull;
use kernel::error::{
    code::{EINVAL, ENOMEM},
    Error,
};
use kernel::ffi::{c_int, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;

/// Most destinations one copy can write (`DM_KCOPYD_MAX_REGIONS`).
pub(crate) const MAX_DESTS: usize = bindings::DM_KCOPYD_MAX_REGIONS as usize;

/// How a copy or zero job ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct CopyResult {
    /// Reading the source failed.
    pub(crate) read_err: bool,
    /// Bit `i` set: writing destination `i` failed.
    pub(crate) write_err: u64,
}

impl CopyResult {
    /// Whether every read and write succeeded.
    pub(crate) fn is_ok(&self) -> bool {
        !self.read_err && self.write_err == 0
    }
}

/// What a job runs when it completes: a closure, or a type of the caller's
/// that hands itself back intact when the job cannot be submitted.
pub(crate) trait CopyDone: Send + 'static {
    /// Called once, with how the job ended.
    fn done(self, r: CopyResult);
}

impl<F: FnOnce(CopyResult) + Send + 'static> CopyDone for F {
    fn done(self, r: CopyResult) {
        self(r)
    }
}

/// A job's heap part: the completion and the regions it keeps open, in a
/// kmalloc'd slot of its own ([`JobSlot`]).
struct Job<F, D> {
    done: F,
    from: Option<Region>,
    to: D,
}

/// A [`KcopydClient::copy_within`] job: the devices' owner and the
/// completion.
struct OwnedJob<O: Send + Sync, F> {
    owner: Arc<O>,
    done: F,
}

/// A job's allocation: made and freed on every copy, so it goes to kmalloc
/// and kfree directly rather than through the `KBox` allocator (whose
/// `krealloc` path costs twice as much, for both). `GFP_NOIO`, as kcopyd's
/// own: copies are made on the I/O path.
///
/// # Invariants
///
/// `ptr` came from `__kmalloc_noprof` with room for a `T`, suitably aligned,
/// and holds an initialised `T` that this slot owns.
struct JobSlot<T> {
    ptr: NonNull<T>,
}

impl<T> JobSlot<T> {
    /// kmalloc aligns every object to at least `ARCH_SLAB_MINALIGN`.
    const ALIGNED: () = assert!(
        core::mem::align_of::<T>() <= kernel::bindings::ARCH_SLAB_MINALIGN
            && core::mem::size_of::<T>() != 0
    );

    /// A slot for a `T`, not yet filled (`None` if there is no memory):
    /// the value is then built in place ([`EmptySlot::fill`]), not on the
    /// stack and copied (a job with eight regions is ~500 bytes).
    fn alloc() -> Option<EmptySlot<T>> {
        let () = Self::ALIGNED;
        // SAFETY: a plain allocation of a non-zero size (checked above).
        let raw = unsafe {
            kernel::bindings::__kmalloc_noprof(core::mem::size_of::<T>(), bindings::DMRS_GFP_NOIO)
        };
        // INVARIANT: fresh, large enough and aligned for a `T` (kmalloc
        // aligns to `ARCH_SLAB_MINALIGN`, at least `T`'s alignment).
        NonNull::new(raw.cast::<T>()).map(|ptr| EmptySlot { ptr })
    }

    /// Gives up ownership, for kcopyd's `context`.
    fn into_raw(self) -> *mut c_void {
        let p = self.ptr.as_ptr().cast();
        core::mem::forget(self);
        p
    }

    /// Takes the value out and frees the slot.
    ///
    /// # Safety
    ///
    /// `p` came from [`Self::into_raw`] of a `JobSlot<T>`, and is used once.
    unsafe fn take(p: *mut c_void) -> T {
        // SAFETY: `p` holds an initialised `T` owned by the slot (type
        // invariant, function contract); it is read once, then the memory
        // is freed without dropping it again.
        unsafe {
            let value = p.cast::<T>().read();
            kernel::bindings::kfree(p);
            value
        }
    }
}

/// A [`JobSlot`]'s memory before its value is written.
///
/// # Invariants
///
/// `ptr` came from `__kmalloc_noprof` with room for a `T`, suitably aligned,
/// and holds no value yet; this owns the memory.
struct EmptySlot<T> {
    ptr: NonNull<T>,
}

impl<T> EmptySlot<T> {
    /// Writes `value` into the slot.
    #[inline(always)]
    fn fill(self, value: T) -> JobSlot<T> {
        let ptr = self.ptr;
        core::mem::forget(self);
        // SAFETY: the memory is ours, uninitialised, large enough and
        // aligned for a `T` (type invariant).
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: allocated by `__kmalloc_noprof` and now initialised.
        JobSlot { ptr }
    }
}

impl<T> Drop for EmptySlot<T> {
    fn drop(&mut self) {
        // SAFETY: kmalloc'd memory holding no value (type invariant).
        unsafe { kernel::bindings::kfree(self.ptr.as_ptr().cast()) };
    }
}

impl<T> Drop for JobSlot<T> {
    fn drop(&mut self) {
        // SAFETY: the slot owns an initialised `T` in kmalloc'd memory (type
        // invariant); it is dropped once and the memory freed after.
        unsafe {
            core::ptr::drop_in_place(self.ptr.as_ptr());
            kernel::bindings::kfree(self.ptr.as_ptr().cast());
        }
    }
}

/// The destinations of one job: 1 to [`MAX_DESTS`] regions of one length,
/// owned (the job keeps their devices open).
///
/// # Invariants
///
/// `regions[..len]` are `Some` and as long as each other; the rest `None`.
#[derive(Default)]
pub(crate) struct Dests {
    regions: [Option<Region>; MAX_DESTS],
    len: usize,
}

impl Dests {
    /// No destination yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds `r` as the next destination; handed back if there are already
    /// [`MAX_DESTS`] or it is not as long as the first.
    pub(crate) fn push(&mut self, r: Region) -> Result<(), Region> {
        if self.first().is_some_and(|f| f.count() != r.count()) {
            return Err(r);
        }
        match self.regions.get_mut(self.len) {
            Some(slot) => {
                // INVARIANT: the next slot, of the same length as the others.
                *slot = Some(r);
                self.len += 1;
                Ok(())
            }
            None => Err(r),
        }
    }

    fn first(&self) -> Option<&Region> {
        self.regions.first().and_then(Option::as_ref)
    }
}

mod sealed {
    /// Only this file's types may be destinations (`submit` relies on what
    /// their `first_count` promises).
    pub(crate) trait Sealed {}
}

impl sealed::Sealed for Dests {}
impl sealed::Sealed for Region {}

/// What a job's destinations are given as: one [`Region`] (cheap to hand
/// over), or [`Dests`]. Sealed: `first_count` is `Some` exactly when
/// `raw` fills at least one region, all of that length.
pub(crate) trait IntoDests: sealed::Sealed + Send + 'static {
    /// The length of the first destination; `None` if there is none.
    fn first_count(&self) -> Option<u64>;
    /// Fills the first regions of `out` with the C forms (valid while
    /// `self` is alive); returns how many.
    fn raw(&self, out: &mut [bindings::dm_io_region; MAX_DESTS]) -> u32;
}

impl IntoDests for Dests {
    fn first_count(&self) -> Option<u64> {
        self.first().map(Region::count)
    }

    fn raw(&self, out: &mut [bindings::dm_io_region; MAX_DESTS]) -> u32 {
        let mut n = 0;
        // The set slots come first (type invariant): counting them counts
        // the regions filled in.
        for (o, r) in out.iter_mut().zip(self.regions.iter().flatten()) {
            *o = r.as_raw();
            n += 1;
        }
        n
    }
}

impl IntoDests for Region {
    fn first_count(&self) -> Option<u64> {
        Some(self.count())
    }

    fn raw(&self, out: &mut [bindings::dm_io_region; MAX_DESTS]) -> u32 {
        match out.first_mut() {
            Some(o) => {
                *o = self.as_raw();
                1
            }
            None => 0,
        }
    }
}

/// A kcopyd client; waits for its jobs on drop.
///
/// # Invariants
///
/// `kc` came from `dm_kcopyd_client_create` with `throttle` as its throttle
/// and is destroyed only in `drop`, before `_throttle` is freed.
pub(crate) struct KcopydClient {
    kc: NonNull<bindings::dm_kcopyd_client>,
    _throttle: KBox<Opaque<bindings::dm_kcopyd_throttle>>,
    _module: ModuleRef,
}

// SAFETY: kcopyd clients serialise their own state and may be used and
// destroyed from any thread.
unsafe impl Send for KcopydClient {}
// SAFETY: submitting jobs is thread-safe; `&self` offers nothing else.
unsafe impl Sync for KcopydClient {}

impl KcopydClient {
    /// Creates a client whose I/O may use at most `throttle_percent` of the
    /// time (1..=100; 100 means unthrottled, as upstream's default).
    pub(crate) fn new(throttle_percent: u32) -> Result<Self> {
        if !(1..=100).contains(&throttle_percent) {
            return Err(EINVAL);
        }
        let throttle = KBox::new(
            Opaque::new(bindings::dm_kcopyd_throttle {
                throttle: throttle_percent,
                ..Default::default()
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: `throttle` is initialised and lives on the heap until after
        // the client is destroyed (type invariant); kcopyd updates it under
        // its own lock.
        let kc = unsafe { bindings::dm_kcopyd_client_create(throttle.get()) };
        // SAFETY: only inspects the pointer value.
        let r = unsafe { bindings::dmrs_ptr_err_or_zero(kc.cast()) };
        if r != 0 {
            return Err(Error::from_errno(r as i32));
        }
        let kc = NonNull::new(kc).ok_or(ENOMEM)?;
        // INVARIANT: a fresh client using `throttle`.
        Ok(KcopydClient {
            kc,
            _throttle: throttle,
            _module: ModuleRef::new(),
        })
    }

    /// Copies `from` to every region of `to` (1..=8 regions, each as long as
    /// `from`), then calls `done`. On error nothing was submitted and `done`
    /// is handed back.
    pub(crate) fn copy<F>(&self, from: &Region, to: &[Region], done: F) -> Result<(), (Error, F)>
    where
        F: CopyDone,
    {
        match Self::dests(to) {
            Some(to) => self.copy_to(from.clone(), to, done),
            None => Err((EINVAL, done)),
        }
    }

    /// As [`Self::copy`], with the regions handed over (no clones): bit `i`
    /// of the result's `write_err` is `to`'s `i`-th region.
    pub(crate) fn copy_to<F, D>(&self, from: Region, to: D, done: F) -> Result<(), (Error, F)>
    where
        F: CopyDone,
        D: IntoDests,
    {
        self.submit(Some(from), to, done)
    }

    /// Copies between devices that `owner` keeps open: `regions` picks the
    /// source and the destination (as long as each other) from it, and the
    /// job holds `owner` (one reference, instead of one per device) until
    /// `done` gets it back with the result. On error nothing was submitted
    /// and `owner` and `done` are handed back. If `O` owns this client,
    /// `done` must not drop the last `Arc<O>` (the client's drop would wait
    /// for the job running it).
    pub(crate) fn copy_within<O, R, F>(
        &self,
        owner: Arc<O>,
        regions: R,
        done: F,
    ) -> Result<(), (Error, Arc<O>, F)>
    where
        O: Send + Sync + 'static,
        R: for<'a> FnOnce(&'a O) -> Result<(Region<&'a DmDev>, Region<&'a DmDev>)>,
        F: FnOnce(Arc<O>, CopyResult) + Send + 'static,
    {
        let (mut from, mut to) = match regions(&owner) {
            Ok((f, t)) if f.count() == t.count() => (f.as_raw(), t.as_raw()),
            Ok(_) => return Err((EINVAL, owner, done)),
            Err(e) => return Err((e, owner, done)),
        };
        let Some(slot) = JobSlot::<OwnedJob<O, F>>::alloc() else {
            return Err((ENOMEM, owner, done));
        };
        let job = slot.fill(OwnedJob { owner, done });
        let context = job.into_raw();
        // SAFETY: the client is live (type invariant); kcopyd copies the
        // regions before returning; one source and one destination of the
        // same non-zero length (`Region` invariant, checked above); their
        // devices are `DmDev`s borrowed from `*owner`, which the job keeps
        // alive (and, shared behind an `Arc`, never mutably reachable)
        // until `notify_within::<O, F>` takes the job back, which kcopyd
        // calls exactly once with `context`, a leaked
        // `JobSlot<OwnedJob<O, F>>`.
        unsafe {
            bindings::dm_kcopyd_copy(
                self.kc.as_ptr(),
                &mut from,
                1,
                &mut to,
                0,
                Some(notify_within::<O, F>),
                context,
            )
        };
        Ok(())
    }

    /// Zeroes every region of `to` (1..=8 regions of equal length), then calls
    /// `done`. On error nothing was submitted and `done` is handed back.
    pub(crate) fn zero<F>(&self, to: &[Region], done: F) -> Result<(), (Error, F)>
    where
        F: CopyDone,
    {
        match Self::dests(to) {
            Some(to) => self.submit(None, to, done),
            None => Err((EINVAL, done)),
        }
    }

    /// As [`Self::zero`], with the regions handed over (no clones).
    pub(crate) fn zero_to<F, D>(&self, to: D, done: F) -> Result<(), (Error, F)>
    where
        F: CopyDone,
        D: IntoDests,
    {
        self.submit(None, to, done)
    }

    /// `to` as owned destinations; `None` if there are too many or their
    /// lengths differ.
    fn dests(to: &[Region]) -> Option<Dests> {
        let mut d = Dests::new();
        for r in to {
            d.push(r.clone()).ok()?;
        }
        Some(d)
    }

    fn submit<F, D>(&self, from: Option<Region>, to: D, done: F) -> Result<(), (Error, F)>
    where
        F: CopyDone,
        D: IntoDests,
    {
        let Some(first) = to.first_count() else {
            return Err((EINVAL, done));
        };
        if from.as_ref().is_some_and(|f| f.count() != first) {
            return Err((EINVAL, done));
        }
        let Some(slot) = JobSlot::<Job<F, D>>::alloc() else {
            return Err((ENOMEM, done));
        };
        let job = slot.fill(Job { done, from, to });
        // SAFETY: read only: the slot holds an initialised job (type
        // invariant), which nothing else touches until kcopyd is told.
        let j = unsafe { job.ptr.as_ref() };
        let mut dests: [bindings::dm_io_region; MAX_DESTS] =
            core::array::from_fn(|_| Default::default());
        let n = j.to.raw(&mut dests);
        let mut source = j.from.as_ref().map(Region::as_raw);
        let context = job.into_raw();
        let kc = self.kc.as_ptr();
        // SAFETY: the client is live (type invariant); kcopyd copies the
        // region arrays before returning; `n` regions of `dests` are set,
        // at least one and each as long as the source (`first_count`
        // checked above; `IntoDests` is sealed); `context` is a leaked
        // `JobSlot<Job<F, D>>` that `notify::<F, D>` takes back, which
        // kcopyd calls exactly once; the regions' devices stay open in the
        // job until then.
        unsafe {
            match source.as_mut() {
                Some(src) => bindings::dm_kcopyd_copy(
                    kc,
                    src,
                    n,
                    dests.as_mut_ptr(),
                    0,
                    Some(notify::<F, D>),
                    context,
                ),
                None => bindings::dm_kcopyd_zero(
                    kc,
                    n,
                    dests.as_mut_ptr(),
                    0,
                    Some(notify::<F, D>),
                    context,
                ),
            }
        };
        Ok(())
    }
}

impl Drop for KcopydClient {
    fn drop(&mut self) {
        // SAFETY: the client is live and destroyed once, here; destruction
        // waits for every job, so no callback runs afterwards and `throttle`
        // (dropped after this) is no longer used.
        unsafe { bindings::dm_kcopyd_client_destroy(self.kc.as_ptr()) };
    }
}

/// # Safety
///
/// Called by kcopyd once per job with the `context` given at submission, a
/// leaked `JobSlot<Job<F, D>>`.
unsafe extern "C" fn notify<F: CopyDone, D: IntoDests>(
    read_err: c_int,
    write_err: c_ulong,
    context: *mut c_void,
) {
    // SAFETY: `context` came from `JobSlot::into_raw` in `submit` and kcopyd
    // hands it back exactly once (function contract).
    let job = unsafe { JobSlot::<Job<F, D>>::take(context) };
    let Job { done, from, to } = job;
    done.done(CopyResult {
        read_err: read_err != 0,
        write_err: write_err as u64,
    });
    // The regions, and so the devices, are released only now.
    drop(from);
    drop(to);
}

/// # Safety
///
/// Called by kcopyd once per job with the `context` given at submission, a
/// leaked `JobSlot<OwnedJob<O, F>>`.
unsafe extern "C" fn notify_within<O, F>(read_err: c_int, write_err: c_ulong, context: *mut c_void)
where
    O: Send + Sync + 'static,
    F: FnOnce(Arc<O>, CopyResult) + Send + 'static,
{
    // SAFETY: `context` came from `JobSlot::into_raw` in `copy_within` and
    // kcopyd hands it back exactly once (function contract).
    let job = unsafe { JobSlot::<OwnedJob<O, F>>::take(context) };
    // The owner, and so the devices, go with the completion.
    (job.done)(
        job.owner,
        CopyResult {
            read_err: read_err != 0,
            write_err: write_err as u64,
        },
    );
}
