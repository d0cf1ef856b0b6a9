// SPDX-License-Identifier: GPL-2.0

//! Rate-limited kernel log messages (upstream's `DMERR_LIMIT`): errors that
//! a stream of bios can trigger, one per bio, must not flood the log.
//!
//! Each call site of [`dm_err_limit!`] has its own [`RateLimit`]: at most
//! [`BURST`] messages in every [`INTERVAL_NS`] window, the kernel's
//! `DEFAULT_RATELIMIT_*` values. Lock-free, so it is usable in `map`,
//! `end_io` and under spinlocks.

use core::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use kernel::time::Ktime;

/// Messages allowed per window (`DEFAULT_RATELIMIT_BURST`).
pub(crate) const BURST: u32 = 10;

/// Window length (`DEFAULT_RATELIMIT_INTERVAL`, 5 s), in nanoseconds.
pub(crate) const INTERVAL_NS: i64 = 5_000_000_000;

/// One call site's window: when it started and how many messages it let
/// through.
pub(crate) struct RateLimit {
    start: AtomicI64,
    count: AtomicU32,
}

impl RateLimit {
    /// A limit whose first window opens with its first message.
    pub(crate) const fn new() -> Self {
        RateLimit {
            start: AtomicI64::new(i64::MIN),
            count: AtomicU32::new(0),
        }
    }

    /// Whether a message may be printed now. Racing callers at a window's
    /// edge may let a few more through; that is harmless.
    pub(crate) fn allow(&self) -> bool {
        let now = Ktime::ktime_get().to_ns();
        let start = self.start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= INTERVAL_NS
            && self
                .start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.count.store(0, Ordering::Relaxed);
        }
        // Saturating: a long burst must not wrap the counter back to "allow".
        let seen = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_add(1))
            })
            .unwrap_or(u32::MAX);
        seen < BURST
    }
}

/// `pr_err!`, at most [`BURST`] times per [`INTERVAL_NS`] for this call
/// site.
macro_rules! dm_err_limit {
    ($($arg:tt)*) => {{
        static LIMIT: $crate::dm::ratelimit::RateLimit = $crate::dm::ratelimit::RateLimit::new();
        if LIMIT.allow() {
            ::kernel::pr_err!($($arg)*);
        }
    }};
}
pub(crate) use dm_err_limit;
