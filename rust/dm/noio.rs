// SPDX-License-Identifier: GPL-2.0

//! A scope in which the current task's allocations do not start I/O.
//!
//! The metadata engine allocates with `GFP_KERNEL` (the 6.12 kernel crate has
//! no `GFP_NOIO`). A target that runs the engine on its I/O path (a pool's
//! worker committing metadata, a mapping lookup in `map`) runs the call inside
//! [`noio_scope`], so memory reclaim cannot recurse into I/O on the very
//! device the target is serving: the kernel's recommended scoped form of
//! `GFP_NOIO`.
//!
//! The scope is a closure rather than a guard value: `memalloc_noio_save` and
//! `memalloc_noio_restore` must nest strictly, which a guard dropped out of
//! order (or moved to another task) would break.
//!
//! C header: [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h)

use super::bindings;

/// Runs `f` with the current task's allocations behaving as `GFP_NOIO`.
pub(crate) fn noio_scope<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: only sets a flag on the current task; restored below, on this
    // task, after everything `f` nested has been restored (closures nest).
    let saved = unsafe { bindings::dmrs_memalloc_noio_save() };
    let r = f();
    // SAFETY: `saved` came from the matching save on this task, and the
    // kernel never unwinds, so this runs exactly once after `f`.
    unsafe { bindings::dmrs_memalloc_noio_restore(saved) };
    r
}
