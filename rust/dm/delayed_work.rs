// SPDX-License-Identifier: GPL-2.0

//! Delayed work on a [`WorkQueue`]: a handler that runs on the queue after a
//! delay, for thin-pool's periodic commit and its `no_space_timeout`. The 6.12
//! kernel crate has no delayed work; this wraps `struct delayed_work`.
//!
//! # Ownership
//!
//! - A [`DelayedWork`] handle owns the `delayed_work`, the handler's data and
//!   an `Arc` of the queue, in one pinned allocation. Queueing never transfers
//!   ownership: the handler borrows its data (`&Delayed<T>`) for one call.
//! - Dropping the handle disables the work and waits for a running handler
//!   (`disable_delayed_work_sync`), so a pending timer or a handler that
//!   re-arms itself can never touch freed memory, and the queue, held by the
//!   handle, outlives every timer aimed at it.
//! - [`DelayedWork::cancel_sync`] (for suspend) waits for a running handler and
//!   wins against one re-arming itself. It and dropping the handle must not be
//!   done by the handler itself: that waits for itself (lockdep reports it).
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use super::sync::lock_class_ptr;
use super::workqueue::WorkQueue;
use core::ops::Deref;
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::{Arc, LockClassKey};
use kernel::time::Jiffies;
use kernel::types::Opaque;

/// Creates a [`DelayedWork`] with lock classes of its own for this call site.
///
/// `new_delayed_work!(queue, data)` or `new_delayed_work!(queue, data, "name")`.
macro_rules! new_delayed_work {
    ($queue:expr, $data:expr $(, $name:literal)?) => {
        $crate::dm::delayed_work::DelayedWork::new(
            $queue,
            $data,
            ::kernel::optional_name!($($name)?),
            ::kernel::static_lock_class!(),
            ::kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_delayed_work;

/// What a [`DelayedWork`] runs when its delay expires.
pub(crate) trait DelayedWorkItem: Send + Sync + Sized + 'static {
    /// Runs on the queue, in process context. May re-arm the work with
    /// [`Delayed::queue`] or [`Delayed::modify`].
    fn run(this: &Delayed<Self>);
}

/// The pinned part of a [`DelayedWork`]: what its handler sees.
///
/// # Invariants
///
/// `dwork` was initialised with [`Self::run_callback`] as its function and is
/// queued only on `queue`; it is disabled and idle before `Delayed` is freed.
#[repr(C)]
#[pin_data]
pub(crate) struct Delayed<T> {
    // First field: the `work_struct` a work function receives is at the
    // start of `delayed_work`, so it is also the address of `Delayed`.
    #[pin]
    dwork: Opaque<bindings::delayed_work>,
    queue: Arc<WorkQueue>,
    #[pin]
    data: T,
}

// `run_callback` turns the `work_struct` pointer into `Delayed` by this.
const _: () = assert!(core::mem::offset_of!(bindings::delayed_work, work) == 0);

// SAFETY: the C part is usable from any thread; `T` is `Send + Sync` by the
// trait bound wherever `Delayed` is built.
unsafe impl<T: Send + Sync> Send for Delayed<T> {}
// SAFETY: `&Delayed` offers the thread-safe queue operations and `&T`.
unsafe impl<T: Send + Sync> Sync for Delayed<T> {}

impl<T: DelayedWorkItem> Delayed<T> {
    fn raw(&self) -> *mut bindings::delayed_work {
        self.dwork.get()
    }

    /// Queues the work to run after `delay` jiffies; `false` if it was
    /// already pending (the earlier deadline stays).
    pub(crate) fn queue(&self, delay: Jiffies) -> bool {
        // SAFETY: `dwork` is initialised and pinned, and `queue` is live
        // while `self` is (type invariant).
        unsafe {
            bindings::queue_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as i32,
                self.queue.as_ptr(),
                self.raw(),
                delay,
            )
        }
    }

    /// Queues the work to run after `delay` jiffies, moving the deadline if it
    /// is already pending; `true` if it was pending.
    pub(crate) fn modify(&self, delay: Jiffies) -> bool {
        // SAFETY: as in `queue`.
        unsafe {
            bindings::mod_delayed_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as i32,
                self.queue.as_ptr(),
                self.raw(),
                delay,
            )
        }
    }

    /// Cancels a pending run without waiting for one in progress; `true` if
    /// it was pending.
    pub(crate) fn cancel(&self) -> bool {
        // SAFETY: `dwork` is initialised (type invariant).
        unsafe { bindings::cancel_delayed_work(self.raw()) }
    }

    /// The queue the work runs on, for queueing other work from the handler.
    pub(crate) fn workqueue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    /// # Safety
    ///
    /// Called by the workqueue with the `work_struct` of a `Delayed<T>`
    /// initialised by [`DelayedWork::new`], which is alive until its handle
    /// has disabled the work and waited for this call.
    unsafe extern "C" fn run_callback(work: *mut bindings::work_struct) {
        // SAFETY: `work` is the first byte of `dwork`, the first field of a
        // `repr(C)` `Delayed<T>` that stays alive during the call (function
        // contract); only shared references to it exist.
        let this = unsafe { &*work.cast::<Delayed<T>>() };
        T::run(this);
    }
}

impl<T> Deref for Delayed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

/// Owner of a delayed work item; disables it and waits for it on drop.
pub(crate) struct DelayedWork<T: DelayedWorkItem> {
    inner: Pin<KBox<Delayed<T>>>,
}

impl<T: DelayedWorkItem> DelayedWork<T> {
    /// A delayed work item running `T::run` on `queue` with `data` (a value
    /// or a pin-initialiser, so it may hold locks); use
    /// [`new_delayed_work!`], which supplies the lock classes.
    pub(crate) fn new(
        queue: Arc<WorkQueue>,
        data: impl PinInit<T, Error>,
        name: &'static CStr,
        work_key: &'static LockClassKey,
        timer_key: &'static LockClassKey,
    ) -> Result<Self> {
        let work_key = lock_class_ptr(work_key);
        let timer_key = lock_class_ptr(timer_key);
        let init = try_pin_init!(Delayed {
            // SAFETY: `slot` is valid for writes; the work and timer are set
            // up as `INIT_DELAYED_WORK` does, with static names and keys.
            dwork <- Opaque::ffi_init(|slot: *mut bindings::delayed_work| unsafe {
                bindings::init_work_with_key(
                    core::ptr::addr_of_mut!((*slot).work),
                    Some(Delayed::<T>::run_callback),
                    false,
                    name.as_char_ptr(),
                    work_key,
                );
                bindings::init_timer_key(
                    core::ptr::addr_of_mut!((*slot).timer),
                    Some(bindings::delayed_work_timer_fn),
                    bindings::TIMER_IRQSAFE,
                    name.as_char_ptr(),
                    timer_key,
                );
            }),
            queue,
            data <- data,
        }? Error);
        // INVARIANT: initialised with `run_callback`; only `Delayed`'s
        // methods queue it, always on `queue`; `drop` disables it.
        Ok(DelayedWork {
            inner: KBox::pin_init(init, GFP_KERNEL)?,
        })
    }

    /// Cancels a pending run and waits for one in progress (which cannot
    /// re-arm meanwhile); `true` if it was pending. The work can be queued
    /// again afterwards. Must not be called from the handler.
    pub(crate) fn cancel_sync(&self) -> bool {
        // SAFETY: `dwork` is initialised (type invariant of `Delayed`).
        unsafe { bindings::cancel_delayed_work_sync(self.inner.raw()) }
    }
}

impl<T: DelayedWorkItem> Deref for DelayedWork<T> {
    type Target = Delayed<T>;

    fn deref(&self) -> &Delayed<T> {
        &self.inner
    }
}

impl<T: DelayedWorkItem> Drop for DelayedWork<T> {
    fn drop(&mut self) {
        // SAFETY: `dwork` is initialised. Once this returns the work is
        // disabled (queueing fails), its timer is stopped and no handler is
        // running, so the allocation can be freed (`Delayed`'s invariant).
        unsafe { bindings::disable_delayed_work_sync(self.inner.raw()) };
    }
}
