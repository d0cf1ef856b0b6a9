// SPDX-License-Identifier: GPL-2.0

//! Registration of a target type with dm core, undone on drop.

use super::bindings;
use super::target::{Target, TargetVTable};
use core::marker::PhantomData;
use kernel::error::{
    code::{EBUSY, EINVAL},
    Error,
};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::types::Opaque;

/// Longest target type name user space can ask for: the ioctl's
/// `target_type` field holds 16 bytes including the NUL.
const MAX_TYPE_NAME_LEN: usize = bindings::DM_MAX_TYPE_NAME as usize - 1;

/// A registered target type.
///
/// # Invariants
///
/// `tt` is registered with dm core under `name` from creation until drop; its
/// heap location never changes while registered (dm core links it in a list).
pub(crate) struct Registration<T: Target> {
    tt: KBox<Opaque<bindings::target_type>>,
    name: CString,
    _t: PhantomData<T>,
}

// SAFETY: after registration dm core owns all access to `tt`; we only pass its
// address to `dm_unregister_target`, which may run on any thread.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `&Registration` exposes nothing but the name.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Registers `T` as `<prefix><T::NAME>`, or as `<prefix><T::SHORT_NAME>`
    /// when the former is too long for dm's ioctl interface.
    ///
    /// Returns `Ok(None)` if another module already holds the name: dm-rs then
    /// runs without that target rather than failing to load.
    pub(crate) fn register(module: &'static ThisModule, prefix: &CStr) -> Result<Option<Self>> {
        let full = prefix.len() + T::NAME.len();
        let base = if full <= MAX_TYPE_NAME_LEN {
            T::NAME
        } else {
            T::SHORT_NAME
        };
        if prefix.len() + base.len() > MAX_TYPE_NAME_LEN {
            pr_err!(
                "prefix {} makes target {} longer than {} characters\n",
                prefix,
                T::NAME,
                MAX_TYPE_NAME_LEN
            );
            return Err(EINVAL);
        }
        let name = CString::try_from_fmt(kernel::fmt!("{}{}", prefix, base))?;
        let mut tt = TargetVTable::<T>::TEMPLATE;
        tt.name = name.as_char_ptr();
        tt.module = module.as_ptr();
        let tt = KBox::new(Opaque::new(tt), GFP_KERNEL)?;
        // SAFETY: `tt` is a fully initialised target type on the heap; it stays
        // there, unmoved, until `drop` unregisters it; `name` outlives it too.
        let r = unsafe { bindings::dm_register_target(tt.get()) };
        if r == EBUSY.to_errno() {
            pr_info!(
                "target {} is registered by another module; skipping it\n",
                &*name
            );
            return Ok(None);
        }
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        pr_info!(
            "registered target {} {}.{}.{}\n",
            &*name,
            T::VERSION[0],
            T::VERSION[1],
            T::VERSION[2]
        );
        // INVARIANT: registered above; the box is never moved out of.
        Ok(Some(Self {
            tt,
            name,
            _t: PhantomData,
        }))
    }

    /// The registered name (with prefix).
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered since creation (type invariant); module exit runs
        // after dm core dropped every table using it (module refcount).
        unsafe { bindings::dm_unregister_target(self.tt.get()) };
    }
}
