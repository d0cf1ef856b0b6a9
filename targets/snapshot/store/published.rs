// SPDX-License-Identifier: GPL-2.0

//! A value built from a list and published for readers that must not copy
//! the list on every use (an origin's snapshots, as its writes see them):
//! rebuilt whenever the list changes. Building allocates, so it can fail;
//! the value is then stale, and a reader that cannot rebuild it learns
//! "could not tell" (`NoMem`), never "the list is empty": an origin write
//! that took the one for the other would overwrite chunks a snapshot has
//! not copied yet.

use crate::persistent_data::{Error, Result};

/// The published value: `V` for a non-empty list.
pub enum Published<V> {
    /// The list is empty.
    Empty,
    /// Built from the current list.
    Ready(V),
    /// The last build ran out of memory: the next reader builds it.
    Stale,
}

impl<V: Clone> Published<V> {
    /// The value if it is known: `Some(None)` for an empty list, `None`
    /// while it is stale.
    pub fn known(&self) -> Option<Option<V>> {
        match self {
            Published::Empty => Some(None),
            Published::Ready(v) => Some(Some(v.clone())),
            Published::Stale => None,
        }
    }

    /// Publishes what a build of the current list gave (`Ok(None)`: the
    /// list is empty) and returns it as a reader sees it: `NoMem` if the
    /// build failed, the value staying stale.
    pub fn publish(&mut self, built: Result<Option<V>>) -> Result<Option<V>> {
        *self = match built {
            Ok(Some(v)) => Published::Ready(v),
            Ok(None) => Published::Empty,
            Err(_) => Published::Stale,
        };
        self.known().ok_or(Error::NoMem)
    }
}

/// The longest sleep between two tries of [`until_known`], in ms.
pub const MAX_BACKOFF_MS: u32 = 64;

/// Calls `try_get` until it answers (an `Err` means only "no memory now"),
/// calling `sleep(ms)` between tries with a delay doubling from 1 ms to
/// [`MAX_BACKOFF_MS`]: for a caller that may sleep and must not act on a
/// guess, as upstream's origin writes sleep in `mempool_alloc`.
pub fn until_known<T>(mut try_get: impl FnMut() -> Result<T>, mut sleep: impl FnMut(u32)) -> T {
    let mut delay = 1;
    loop {
        if let Ok(v) = try_get() {
            return v;
        }
        sleep(delay);
        delay = (delay * 2).min(MAX_BACKOFF_MS);
    }
}
