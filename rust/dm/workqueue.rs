// SPDX-License-Identifier: GPL-2.0

//! A workqueue of the target's own, allocated with `WQ_MEM_RECLAIM` so it has
//! a rescuer thread and makes progress under memory pressure (upstream's
//! thin-pool, cache and snapshot stores each allocate one).
//!
//! Work items are the 6.12 kernel crate's: a type embeds a
//! [`kernel::workqueue::Work`] field declared with `impl_has_work!`,
//! implements [`kernel::workqueue::WorkItem`], and is queued as an `Arc` or a
//! pinned `KBox` through [`WorkQueue`]'s `Deref` to
//! [`kernel::workqueue::Queue`] (`enqueue`, `try_spawn`). Delayed work is in
//! [`super::delayed_work`].
//!
//! # Ownership
//!
//! - A queued item is owned by the queue (it holds the item's `Arc` reference
//!   or `KBox`) until its `run` takes it back; items are `'static`, so nothing
//!   they point to can be freed under them.
//! - Dropping the [`WorkQueue`] destroys it: `destroy_workqueue` first runs
//!   every queued item to completion, including items they queue from their
//!   own `run`. Nothing queued on it can outlive it.
//! - Delayed work holds an `Arc` of the queue, so a pending timer never refers
//!   to a destroyed queue.
//! - The queue holds a [`ModuleRef`]: a leaked queue keeps dm-rs loaded rather
//!   than running unloaded code.
//! - The last reference must not be dropped, nor [`WorkQueue::flush`] called,
//!   by a work item running on this queue: it would wait for itself (a
//!   deadlock that lockdep reports). A target keeps one reference and drops it
//!   in its destructor.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use super::bindings;
use super::module_ref::ModuleRef;
use core::ops::Deref;
use core::ptr::NonNull;
use kernel::error::{code::ENOMEM, Result};
use kernel::str::CStr;
use kernel::workqueue::Queue;

/// How many items of a [`WorkQueue`] may run at once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Concurrency {
    /// One at a time, in queueing order (`alloc_ordered_workqueue`), as
    /// thin-pool's worker uses.
    Ordered,
    /// Up to this many per CPU; 0 is the kernel's default.
    PerCpu(u16),
}

/// A `WQ_MEM_RECLAIM` workqueue, destroyed (after draining) on drop.
///
/// # Invariants
///
/// `wq` came from `alloc_workqueue` and is destroyed only in `drop`.
pub(crate) struct WorkQueue {
    wq: NonNull<kernel::bindings::workqueue_struct>,
    _module: ModuleRef,
}

// SAFETY: a workqueue may be used and destroyed from any thread.
unsafe impl Send for WorkQueue {}
// SAFETY: queueing and flushing are thread-safe; `&self` offers nothing else.
unsafe impl Sync for WorkQueue {}

impl WorkQueue {
    /// Allocates a queue named `name` (the kernel copies the name).
    pub(crate) fn new(name: &CStr, concurrency: Concurrency) -> Result<Self> {
        let (ordered, max_active) = match concurrency {
            Concurrency::Ordered => (true, 1),
            Concurrency::PerCpu(n) => (false, i32::from(n)),
        };
        // SAFETY: `name` is NUL-terminated; the helper only formats it into
        // the queue's own name buffer.
        let wq = unsafe { bindings::dmrs_alloc_workqueue(name.as_char_ptr(), ordered, max_active) };
        let wq = NonNull::new(wq).ok_or(ENOMEM)?;
        // INVARIANT: a queue fresh from `alloc_workqueue`.
        Ok(WorkQueue {
            wq,
            _module: ModuleRef::new(),
        })
    }

    /// Waits until every item queued before the call has finished.
    pub(crate) fn flush(&self) {
        // SAFETY: the queue is live (type invariant).
        unsafe { kernel::bindings::__flush_workqueue(self.wq.as_ptr()) };
    }

    pub(super) fn as_ptr(&self) -> *mut kernel::bindings::workqueue_struct {
        self.wq.as_ptr()
    }
}

impl Deref for WorkQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: the queue is live until `drop`, which needs `&mut self`, so
        // it outlives the returned borrow (type invariant).
        unsafe { Queue::from_raw(self.wq.as_ptr()) }
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // SAFETY: the queue is live and destroyed exactly once, here (type
        // invariant). `destroy_workqueue` drains it first; no delayed work
        // can be pending on it, as each holds an `Arc` of this queue.
        unsafe { kernel::bindings::destroy_workqueue(self.wq.as_ptr()) };
    }
}
