// SPDX-License-Identifier: GPL-2.0

//! Registration of target types with dm core, undone on drop, by family.
//!
//! A family is the set of target types that work together and that user space
//! loads as one module upstream: thin-pool and thin; snapshot, snapshot-origin
//! and snapshot-merge; cache and its policies. It registers all of its names
//! or none: half a family would shadow the C module's other half (dm core
//! autoloads by name, and the C module's init fails whole on EBUSY).

use super::bindings;
use super::target::{Target, TargetVTable};
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
/// `tt` is registered with dm core under `_name` while `registered` is true
/// (from creation until `unregister` or drop); its heap location never
/// changes (dm core links it in a list, and tables point to it).
struct Registration {
    tt: KBox<Opaque<bindings::target_type>>,
    // dm core reads the name through `tt.name` while registered.
    _name: CString,
    // Whether `tt` is still registered (see `unregister`).
    registered: bool,
}

// SAFETY: after registration dm core owns all access to `tt`; we only pass its
// address to `dm_unregister_target`, which may run on any thread.
unsafe impl Send for Registration {}
// SAFETY: `&Registration` exposes nothing but the name.
unsafe impl Sync for Registration {}

impl Registration {
    /// Registers `T` as `<prefix><T::NAME>`, or as `<prefix><T::SHORT_NAME>`
    /// when the former is too long for dm's ioctl interface.
    ///
    /// Returns `Ok(None)` if another module already holds the name.
    fn register<T: Target>(module: &'static ThisModule, prefix: &CStr) -> Result<Option<Self>> {
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
            pr_info!("target {} is registered by another module\n", &*name);
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
            _name: name,
            registered: true,
        }))
    }
}

impl Registration {
    /// Unregisters now; the memory stays with `self`.
    fn unregister(&mut self) {
        if self.registered {
            // SAFETY: registered since creation until now (type invariant).
            unsafe { bindings::dm_unregister_target(self.tt.get()) };
            self.registered = false;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Module exit runs after dm core dropped every table using it
        // (module refcount).
        self.unregister();
    }
}

/// A registered family of target types.
pub(crate) struct Family {
    _regs: KVec<Registration>,
}

/// A family undone because one of its names was taken: its types are
/// unregistered, but their memory stays until module exit, because a table
/// may have been created with one of them while the module was loading.
pub(crate) struct UndoneFamily {
    _regs: KVec<Registration>,
}

/// Registers the target types of one family, all or none.
pub(crate) struct FamilyBuilder {
    name: &'static str,
    module: &'static ThisModule,
    prefix: &'static CStr,
    regs: KVec<Registration>,
    // Set once a name of the family turned out taken: nothing more registers
    // and `finish` drops what did.
    busy: bool,
}

impl FamilyBuilder {
    /// Starts registering family `name` under `prefix`.
    pub(crate) fn new(
        name: &'static str,
        module: &'static ThisModule,
        prefix: &'static CStr,
    ) -> Self {
        Self {
            name,
            module,
            prefix,
            regs: KVec::new(),
            busy: false,
        }
    }

    /// Registers `T` unless an earlier name of the family was taken.
    pub(crate) fn add<T: Target>(mut self) -> Result<Self> {
        if self.busy {
            return Ok(self);
        }
        match Registration::register::<T>(self.module, self.prefix)? {
            Some(reg) => self.regs.push(reg, GFP_KERNEL)?,
            None => self.busy = true,
        }
        Ok(self)
    }

    /// The registered family, or (everything unregistered, logged) the
    /// undone one if one of its names was taken by another module.
    pub(crate) fn finish(self) -> Result<Family, UndoneFamily> {
        if self.busy {
            pr_info!(
                "{} family: a target name is registered by another module; skipping the family\n",
                self.name
            );
            let mut regs = self.regs;
            for reg in regs.iter_mut() {
                reg.unregister();
            }
            let undone = UndoneFamily { _regs: regs };
            return Err(undone);
        }
        Ok(Family { _regs: self.regs })
    }
}
