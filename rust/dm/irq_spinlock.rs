// SPDX-License-Identifier: GPL-2.0

//! A spinlock taken with interrupts off (`spin_lock_irqsave`), for state that
//! bio completions (which may run in interrupt context) share with `map` and
//! workers: deferred bio lists, pending counts.
//!
//! It plugs into the kernel crate's generic [`kernel::sync::Lock`], so guards,
//! pinning and lockdep classes work as for [`kernel::sync::SpinLock`]. Create
//! one with [`new_irq_spinlock!`](crate::new_irq_spinlock).

use super::bindings;
use kernel::ffi::c_ulong;
use kernel::sync::lock::{Backend, Lock};

/// A spinlock that disables local interrupts while held.
pub(crate) type IrqSpinLock<T> = Lock<T, IrqSpinLockBackend>;

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
// to the matching `unlock`.
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
