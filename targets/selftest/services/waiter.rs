// SPDX-License-Identifier: GPL-2.0

//! Counts completions signalled from work items and callbacks, and lets the
//! message handler wait for them with a timeout.

use kernel::new_condvar;
use kernel::prelude::*;
use kernel::sync::{new_mutex, Arc, CondVar, CondVarTimeoutResult, Mutex};
use kernel::time::msecs_to_jiffies;

/// Completions seen so far, and how many of them reported a failure.
#[derive(Clone, Copy, Default)]
pub(super) struct Tally {
    pub(super) done: u64,
    pub(super) failed: u64,
}

#[pin_data]
pub(super) struct Waiter {
    #[pin]
    tally: Mutex<Tally>,
    #[pin]
    cv: CondVar,
}

impl Waiter {
    pub(super) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Waiter {
                tally <- new_mutex!(Tally::default()),
                cv <- new_condvar!(),
            }),
            GFP_KERNEL,
        )
    }

    /// Records one completion.
    pub(super) fn signal(&self, ok: bool) {
        let mut t = self.tally.lock();
        t.done += 1;
        if !ok {
            t.failed += 1;
        }
        drop(t);
        self.cv.notify_all();
    }

    /// The tally now.
    pub(super) fn tally(&self) -> Tally {
        *self.tally.lock()
    }

    /// Waits until `n` completions were seen or `ms` milliseconds passed.
    pub(super) fn wait_for(&self, n: u64, ms: u32) -> Tally {
        let mut left = msecs_to_jiffies(ms);
        let mut t = self.tally.lock();
        while t.done < n && left > 0 {
            match self.cv.wait_interruptible_timeout(&mut t, left) {
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                CondVarTimeoutResult::Timeout | CondVarTimeoutResult::Signal { .. } => break,
            }
        }
        *t
    }
}
