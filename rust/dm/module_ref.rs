// SPDX-License-Identifier: GPL-2.0

//! A counted reference on dm-rs itself (`__module_get`/`module_put`).
//!
//! Workqueues, kcopyd and dm-io clients make the kernel call back into our
//! code later (work functions, completion callbacks). Each holds a
//! [`ModuleRef`], so the module cannot be unloaded while one exists: if safe
//! code leaks such an object (`mem::forget`, an `Arc` cycle), the module stays
//! loaded instead of the kernel calling into unloaded code.
//!
//! C header: [`include/linux/module.h`](srctree/include/linux/module.h)

use kernel::bindings;

/// One reference on this module, dropped with the value.
pub(crate) struct ModuleRef(());

impl ModuleRef {
    /// Takes a reference on this module.
    pub(crate) fn new() -> Self {
        // SAFETY: we are running code of this module, so it is live (its
        // init is running, or a caller such as a target already holds a
        // reference); taking one more reference is always allowed then.
        unsafe { bindings::__module_get(crate::THIS_MODULE.as_ptr()) };
        ModuleRef(())
    }
}

impl Drop for ModuleRef {
    fn drop(&mut self) {
        // SAFETY: releases the reference `new` took, exactly once.
        unsafe { bindings::module_put(crate::THIS_MODULE.as_ptr()) };
    }
}
