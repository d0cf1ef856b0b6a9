// SPDX-License-Identifier: GPL-2.0

//! A scope in which the current task's allocations do not start I/O.
//!
//! The metadata engine allocates with `GFP_KERNEL` (the 6.12 kernel crate has
//! no `GFP_NOIO`). A target that runs the engine on its I/O path (a pool's
//! worker committing metadata, a mapping lookup) holds a [`NoIo`] scope around
//! the call, so memory reclaim cannot recurse into I/O on the very device the
//! target is serving: the kernel's recommended scoped form of `GFP_NOIO`.
//!
//! C header: [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h)

use super::bindings;
use core::marker::PhantomData;

/// While alive, allocations by the current task behave as `GFP_NOIO`.
///
/// # Invariants
///
/// `saved` is what `memalloc_noio_save` returned on this task; scopes nest
/// and are restored in reverse order, which holding the guard on the stack
/// (it is neither `Send` nor `Sync`) guarantees.
// Used by the engine's self-test target, which is next to land.
#[allow(dead_code)]
pub(crate) struct NoIo {
    saved: u32,
    _not_send: PhantomData<*mut ()>,
}

#[allow(dead_code)]
impl NoIo {
    /// Enters the scope.
    pub(crate) fn enter() -> Self {
        // SAFETY: only sets a flag on the current task; undone in `drop`.
        let saved = unsafe { bindings::dmrs_memalloc_noio_save() };
        // INVARIANT: `saved` came from `memalloc_noio_save` on this task.
        NoIo {
            saved,
            _not_send: PhantomData,
        }
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we are on the task that saved
        // `saved`, and inner scopes were dropped first.
        unsafe { bindings::dmrs_memalloc_noio_restore(self.saved) };
    }
}
