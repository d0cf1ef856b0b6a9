// SPDX-License-Identifier: GPL-2.0

//! A counted reference on a mapped device and dm core's internal suspend
//! of one (`dm_internal_suspend_noflush` / `dm_internal_resume`): how a
//! thin-pool stops the I/O of its thins while it is itself suspended.
//!
//! Both are got from a [`TargetHandle`] (only while its target is alive)
//! and are independent of the table afterwards: the reference keeps the
//! `struct mapped_device` allocated (dm core's destroy waits for holders),
//! whatever happens to the table.
//!
//! [`TargetHandle`]: super::TargetHandle

use super::bindings;
use core::ptr::NonNull;

/// A holders reference (`dm_hold`) on a mapped device, put on drop.
pub(crate) struct MappedDevice {
    // INVARIANT: a mapped device on which this value owns one `holders`
    // reference, so dm core does not free it before `drop`.
    md: NonNull<bindings::mapped_device>,
}

// SAFETY: the reference is a counter that any thread may drop (`dm_put`
// only decrements it), and the methods use dm core's own locking.
unsafe impl Send for MappedDevice {}

impl MappedDevice {
    /// Takes a reference on the mapped device of `ti`'s table; `None` if
    /// the device is being freed.
    ///
    /// # Safety
    ///
    /// `ti` is a constructed target whose destructor has not finished, so
    /// its table and mapped device are valid for the call.
    pub(super) unsafe fn hold(ti: *mut bindings::dm_target) -> Option<Self> {
        // SAFETY: `ti` is live (function contract); the helper takes the
        // reference under dm core's lock that marks a device being freed.
        let md = NonNull::new(unsafe { bindings::dmrs_target_md_hold(ti) })?;
        // INVARIANT: the helper took one reference for us.
        Some(Self { md })
    }

    /// Suspends the device's I/O without flushing (dm core's internal,
    /// nesting suspend: bios the targets hold are requeued) and waits for
    /// its in-flight bios. Sleeps: call it in process context, holding no
    /// lock the device's I/O may need to complete, and never from a
    /// suspend callback of the device itself (its suspend lock is taken).
    pub(crate) fn internal_suspend_noflush(self) -> InternalSuspend {
        // SAFETY: `md` is valid while we hold the reference (type invariant).
        unsafe { bindings::dm_internal_suspend_noflush(self.md.as_ptr()) };
        // INVARIANT: the suspend above is counted once for this guard.
        InternalSuspend { md: Some(self) }
    }
}

impl Drop for MappedDevice {
    fn drop(&mut self) {
        // SAFETY: we own one reference (type invariant) and give it back.
        unsafe { bindings::dm_put(self.md.as_ptr()) };
    }
}

/// One internal suspend of a mapped device, resumed (`dm_internal_resume`)
/// when this is dropped: a resume is only possible for a suspend that
/// happened, once. Dropping sleeps, with the same rules as
/// [`MappedDevice::internal_suspend_noflush`].
pub(crate) struct InternalSuspend {
    // INVARIANT: while `Some`, the device's internal suspend count includes
    // one count taken by this guard and not yet given back. `None` only
    // once `abandon` gave the reference back without resuming.
    md: Option<MappedDevice>,
}

impl InternalSuspend {
    /// Gives the device reference back without resuming the device: for a
    /// device dm core is destroying (its destroy waits for the reference
    /// and frees the device suspended; upstream's thin-pool never resumes
    /// a thin removed while the pool is suspended either).
    pub(crate) fn abandon(mut self) {
        // The reference is put here; `drop` then finds nothing to resume.
        drop(self.md.take());
    }
}

impl Drop for InternalSuspend {
    fn drop(&mut self) {
        if let Some(md) = self.md.take() {
            // SAFETY: `md` is valid (held reference) and this guard's
            // suspend is still counted (type invariant), so the count is
            // non-zero; the reference is put after this, when `md` drops.
            unsafe { bindings::dm_internal_resume(md.md.as_ptr()) };
        }
    }
}
