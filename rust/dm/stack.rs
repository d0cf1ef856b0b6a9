// SPDX-License-Identifier: GPL-2.0

//! How deep the current task's kernel stack gets while a closure runs: the
//! unused part of the stack is painted with a pattern before, and scanned
//! for the lowest overwritten word after (the kernel's
//! `DEBUG_STACK_USAGE` method, for one call instead of a task's life).
//! Everything the closure causes on this task's stack counts: the I/O it
//! submits, the allocator, `schedule()` while it sleeps, the frame an
//! interrupt pushes before switching to its own stack.
//!
//! A closure rather than a start/stop pair: painting and scanning must run
//! on the same task with the measured code strictly nested between them.
//!
//! C header: [`include/linux/sched/task_stack.h`](srctree/include/linux/sched/task_stack.h)

use super::bindings;

/// Stack use of one measured call, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StackUse {
    /// In use when the call started (its callers: the syscall, dm core).
    pub(crate) at_entry: usize,
    /// In use at the deepest point of the call, callers included.
    pub(crate) deepest: usize,
    /// The task's stack size (`THREAD_SIZE`).
    pub(crate) size: usize,
}

impl StackUse {
    /// What the call itself used beyond its callers.
    pub(crate) fn own(&self) -> usize {
        self.deepest.saturating_sub(self.at_entry)
    }
}

/// Runs `f` and reports how deep it took the current task's stack. Outside
/// task context (an interrupt, another stack) nothing is measured: every
/// field but `size` is 0.
pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, StackUse) {
    // SAFETY: reads the current task's stack pointer and `THREAD_SIZE`.
    let at_entry = unsafe { bindings::dmrs_stack_in_use() } as usize;
    // SAFETY: the helper checks that it runs in task context on the task's
    // own stack and otherwise does nothing; then it writes only that stack
    // below the live frames of this call chain (and above its end canary),
    // which no one else reads: the kernel keeps nothing below the stack
    // pointer.
    unsafe { bindings::dmrs_stack_paint() };
    let r = f();
    // SAFETY: only reads the current task's stack between its end canary
    // and the stack pointer, and only when the stack pointer is on it (the
    // helper checks).
    let deepest = unsafe { bindings::dmrs_stack_deepest() } as usize;
    // SAFETY: returns a constant.
    let size = unsafe { bindings::dmrs_stack_size() } as usize;
    (
        r,
        StackUse {
            at_entry,
            deepest,
            size,
        },
    )
}
