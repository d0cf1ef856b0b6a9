// SPDX-License-Identifier: GPL-2.0

//! Sleeping locks for targets: a read-write semaphore (the 6.12 kernel crate
//! has none) and, for plain mutual exclusion, the kernel crate's [`Mutex`].
//!
//! Both may be held across sleeps and taken from work items, kcopyd
//! callbacks and any other process context (a pool's worker holding the
//! metadata lock while it commits); neither from `map` when it must not
//! block, nor from interrupt context.
//!
//! # Ownership
//!
//! An [`RwSemaphore<T>`] owns its `T`: [`ReadGuard`]s hand out `&T` to any
//! number of readers, a [`WriteGuard`] hands out `&mut T` to one writer, so
//! "many readers or one writer" is checked by the compiler, as the metadata
//! engine expects (reads take `&self`, writes `&mut self`). Guards are not
//! `Send`: the task that took the semaphore releases it, as lockdep requires.
//!
//! C header: [`include/linux/rwsem.h`](srctree/include/linux/rwsem.h)

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::LockClassKey;
use kernel::types::Opaque;

/// The kernel crate's sleeping mutex (`struct mutex`); fine in workers.
pub(crate) use kernel::sync::{new_mutex, Mutex};

/// Creates an [`RwSemaphore`] with a lock class of its own for this call
/// site: `new_rwsem!(value)` or `new_rwsem!(value, "name")`.
macro_rules! new_rwsem {
    ($inner:expr $(, $name:literal)?) => {
        $crate::dm::sync::RwSemaphore::new(
            $inner,
            ::kernel::optional_name!($($name)?),
            ::kernel::static_lock_class!(),
        )
    };
}
pub(crate) use new_rwsem;

/// The C pointer of a lock class key.
pub(super) fn lock_class_ptr(key: &'static LockClassKey) -> *mut bindings::lock_class_key {
    // `LockClassKey` is a transparent wrapper of `lock_class_key`; lockdep
    // writes to it through its own synchronisation.
    (key as *const LockClassKey).cast_mut().cast()
}

/// A read-write semaphore (`struct rw_semaphore`) protecting a `T`.
///
/// # Invariants
///
/// `sem` was initialised by `__init_rwsem` before the value was reachable.
#[pin_data]
pub(crate) struct RwSemaphore<T: ?Sized> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    data: UnsafeCell<T>,
}

// SAFETY: moving the semaphore moves the `T` it owns.
unsafe impl<T: ?Sized + Send> Send for RwSemaphore<T> {}
// SAFETY: readers on several threads share `&T` (needs `Sync`); a writer
// gets `&mut T` on any thread (needs `Send`). The semaphore serialises them.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwSemaphore<T> {}

impl<T> RwSemaphore<T> {
    /// A semaphore initialiser; use [`new_rwsem!`], which supplies the
    /// lock class.
    pub(crate) fn new(t: T, name: &'static CStr, key: &'static LockClassKey) -> impl PinInit<Self> {
        let key = lock_class_ptr(key);
        pin_init!(Self {
            data: UnsafeCell::new(t),
            // SAFETY: `slot` is valid for writes; `name` and `key` are static.
            // INVARIANT: initialised here, before the value exists.
            sem <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_rwsem(slot, name.as_char_ptr(), key)
            }),
        })
    }
}

impl<T: ?Sized> RwSemaphore<T> {
    /// Takes the semaphore for reading, sleeping while a writer holds it.
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant).
        unsafe { bindings::down_read(self.sem.get()) };
        ReadGuard::new(self)
    }

    /// Takes the semaphore for reading if that needs no wait.
    pub(crate) fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant).
        let got = unsafe { bindings::down_read_trylock(self.sem.get()) } != 0;
        got.then(|| ReadGuard::new(self))
    }

    /// Takes the semaphore for writing, sleeping while anyone holds it.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant).
        unsafe { bindings::down_write(self.sem.get()) };
        WriteGuard::new(self)
    }

    /// Takes the semaphore for writing if that needs no wait.
    pub(crate) fn try_write(&self) -> Option<WriteGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant).
        let got = unsafe { bindings::down_write_trylock(self.sem.get()) } != 0;
        got.then(|| WriteGuard::new(self))
    }
}

/// Shared access to an [`RwSemaphore`]'s value; released on drop.
///
/// # Invariants
///
/// The current task holds `sem` for reading.
#[must_use = "the semaphore is released at once if the guard is unused"]
pub(crate) struct ReadGuard<'a, T: ?Sized> {
    sem: &'a RwSemaphore<T>,
    _not_send: PhantomData<*mut ()>,
}

// SAFETY: a shared guard only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for ReadGuard<'_, T> {}

impl<'a, T: ?Sized> ReadGuard<'a, T> {
    // INVARIANT: callers just took `sem` for reading.
    fn new(sem: &'a RwSemaphore<T>) -> Self {
        ReadGuard {
            sem,
            _not_send: PhantomData,
        }
    }
}

impl<T: ?Sized> Deref for ReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: a read hold excludes writers (type invariant), so no
        // `&mut T` exists while this `&T` does.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this task holds `sem` for reading (type invariant).
        unsafe { bindings::up_read(self.sem.sem.get()) };
    }
}

/// Exclusive access to an [`RwSemaphore`]'s value; released on drop.
///
/// # Invariants
///
/// The current task holds `sem` for writing.
#[must_use = "the semaphore is released at once if the guard is unused"]
pub(crate) struct WriteGuard<'a, T: ?Sized> {
    sem: &'a RwSemaphore<T>,
    _not_send: PhantomData<*mut ()>,
}

// SAFETY: `&WriteGuard` only hands out `&T`.
unsafe impl<T: ?Sized + Sync> Sync for WriteGuard<'_, T> {}

impl<'a, T: ?Sized> WriteGuard<'a, T> {
    // INVARIANT: callers just took `sem` for writing.
    fn new(sem: &'a RwSemaphore<T>) -> Self {
        WriteGuard {
            sem,
            _not_send: PhantomData,
        }
    }

    /// Turns the write hold into a read hold without letting another writer
    /// in between (`downgrade_write`).
    pub(crate) fn downgrade(self) -> ReadGuard<'a, T> {
        let sem = self.sem;
        // The hold is handed over, not released.
        core::mem::forget(self);
        // SAFETY: this task holds `sem` for writing (type invariant of the
        // consumed guard); afterwards it holds it for reading.
        unsafe { bindings::downgrade_write(sem.sem.get()) };
        ReadGuard::new(sem)
    }
}

impl<T: ?Sized> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: a write hold excludes everyone else (type invariant).
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: a write hold excludes everyone else (type invariant), and
        // `&mut self` excludes other uses of this guard.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this task holds `sem` for writing (type invariant).
        unsafe { bindings::up_write(self.sem.sem.get()) };
    }
}

/// Sleeps for at least `ms` milliseconds (`msleep`), for the rare waits
/// upstream polls too (I/O in flight to a chunk about to change). Process
/// context only.
pub(crate) fn sleep_ms(ms: u32) {
    // SAFETY: `msleep` has no memory-safety preconditions; it may only be
    // called where sleeping is allowed, which is what this function asks of
    // its callers (a sleep in atomic context is a kernel bug report, not
    // undefined behaviour).
    unsafe { kernel::bindings::msleep(ms) }
}
