// SPDX-License-Identifier: GPL-2.0

//! A snapshot's health: valid, overflowed, merge failed; what a full COW
//! device does to it, and the status line that reports it (upstream's
//! `snapshot_status` INFO and the overflow rules of `snapshot_map` and
//! `__origin_write`).

use super::exception_store::{Scope, Usage};
use core::fmt;

/// The flags a snapshot's status reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Invalidated: every I/O to the snapshot fails.
    pub invalid: bool,
    /// A merge hit an error and stopped.
    pub merge_failed: bool,
    /// `PO` only: a snapshot write found the COW device full; writes to
    /// the snapshot fail, reads still work.
    pub overflowed: bool,
}

/// What a failed COW allocation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    /// The snapshot becomes invalid (and the store records it).
    Invalidate,
    /// The snapshot overflows: this write fails, the snapshot stays
    /// readable.
    Overflow,
}

impl Health {
    /// Applies a failed allocation on behalf of `scope` to a snapshot
    /// whose store `supports_overflow` (`PO`), and says what happened. An
    /// origin write cannot be failed for the snapshot's sake, so it always
    /// invalidates.
    pub fn cow_full(&mut self, scope: Scope, supports_overflow: bool) -> OnFull {
        if scope == Scope::Snapshot && supports_overflow {
            self.overflowed = true;
            OnFull::Overflow
        } else {
            self.invalid = true;
            OnFull::Invalidate
        }
    }

    /// Writes the status INFO line: `Invalid`, `Merge failed`, `Overflow`
    /// (in that order of precedence) or the store's usage,
    /// `<allocated>/<total> <metadata>`.
    pub fn fmt_info(&self, usage: Usage, w: &mut dyn fmt::Write) -> fmt::Result {
        if self.invalid {
            w.write_str("Invalid")
        } else if self.merge_failed {
            w.write_str("Merge failed")
        } else if self.overflowed {
            w.write_str("Overflow")
        } else {
            write!(w, "{usage}")
        }
    }
}

impl Usage {
    /// True once a merging snapshot has nothing left to merge (lvm2's
    /// test: only metadata is allocated).
    pub fn merge_complete(&self) -> bool {
        self.allocated == self.metadata
    }
}
