// SPDX-License-Identifier: GPL-2.0

//! A spinlock taken with interrupts off (`spin_lock_irqsave`), for state that
//! bio completions (which may run in interrupt context) share with `map` and
//! workers: deferred bio lists, pending counts.
//!
//! It is the kernel crate's generic [`kernel::sync::Lock`] with a
//! `spin_lock_irqsave` backend, but reachable only through
//! [`IrqSpinLock::with`]: the saved interrupt flags must be restored in
//! strict reverse order, which a guard dropped out of order (or forgotten)
//! would break. Create one with [`new_irq_spinlock!`](crate::new_irq_spinlock).
//!
//! Never end a bio inside `with`: ending one calls the target's `end_io`
//! synchronously, and if that takes the same lock the CPU spins for ever.
//! Take the bios out (e.g. [`BioList::take_all`]) and end them afterwards.
//!
//! [`BioList::take_all`]: super::BioList::take_all

use super::bindings;
use kernel::ffi::c_ulong;
use kernel::init::PinInit;
use kernel::prelude::*;
use kernel::sync::lock::{Backend, Lock};
use kernel::sync::LockClassKey;

/// A spinlock that disables local interrupts while held.
#[pin_data]
pub(crate) struct IrqSpinLock<T> {
    #[pin]
    inner: Lock<T, IrqSpinLockBackend>,
}

impl<T> IrqSpinLock<T> {
    /// An initialiser for a lock protecting `t` (use
    /// [`new_irq_spinlock!`](crate::new_irq_spinlock)).
    pub(crate) fn new(t: T, name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        pin_init!(Self {
            inner <- Lock::new(t, name, key),
        })
    }

    /// Runs `f` with the lock held and local interrupts off.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.inner.lock();
        f(&mut guard)
    }
}

/// The `spin_lock_irqsave` backend of [`IrqSpinLock`].
pub(crate) struct IrqSpinLockBackend;

/// Creates an [`IrqSpinLock`] initialiser with a static lockdep class.
#[macro_export]
macro_rules! new_irq_spinlock {
    ($inner:expr, $name:literal $(,)?) => {
        $crate::dm::IrqSpinLock::new(
            $inner,
            ::kernel::c_str!($name),
            ::kernel::static_lock_class!(),
        )
    };
}

// SAFETY: `lock` and `unlock` take and release a spinlock, which gives mutual
// exclusion; the saved interrupt flags travel in the guard state from `lock`
// to the matching `unlock`, and guards only live inside `IrqSpinLock::with`,
// so they are released in reverse order of acquisition.
unsafe impl Backend for IrqSpinLockBackend {
    type State = kernel::bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut kernel::bindings::lock_class_key,
    ) {
        // SAFETY: the caller guarantees `ptr` is valid for writes and `name`
        // and `key` live forever.
        unsafe { kernel::bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: the caller guarantees `ptr` is an initialised spinlock.
        unsafe { bindings::dmrs_spin_lock_irqsave(ptr.cast()) }
    }

    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        // SAFETY: the caller owns the lock; `guard_state` holds the flags
        // `lock` saved.
        unsafe { bindings::dmrs_spin_unlock_irqrestore(ptr.cast(), *guard_state) }
    }
}
