// SPDX-License-Identifier: GPL-2.0

//! Module parameters, declared in C (`src/params.c`: the 6.12 `module!` macro
//! cannot declare them) and read here.

use super::bindings;
use kernel::str::CStr;

/// The `prefix=` parameter ("" by default).
pub(crate) fn prefix() -> &'static CStr {
    // SAFETY: the parameter is a NUL-terminated string that the module keeps
    // for its lifetime; it is read-only (0444) after load.
    unsafe { CStr::from_char_ptr(bindings::dmrs_param_prefix()) }
}

/// The `targets=` parameter: "" (the families dm-rs ships complete), "all",
/// or a comma-separated list of family or target names.
pub(crate) fn targets() -> &'static CStr {
    // SAFETY: as for `prefix`.
    unsafe { CStr::from_char_ptr(bindings::dmrs_param_targets()) }
}

/// The `selftest=` parameter: register the test-only targets.
pub(crate) fn selftest() -> bool {
    // SAFETY: reads a `bool` module parameter, read-only (0444) after load.
    unsafe { bindings::dmrs_param_selftest() }
}

/// The `no_space_timeout=` parameter (seconds; writable at run time): how
/// long an out-of-data-space thin pool queues I/O before failing it.
pub(crate) fn no_space_timeout() -> u32 {
    // SAFETY: reads an `unsigned int` module parameter with `READ_ONCE`.
    unsafe { bindings::dmrs_param_no_space_timeout() }
}

/// The `snapshot_cow_threshold=` parameter (writable at run time): how many
/// chunk copies a snapshot may have in flight before writes that could
/// start another wait.
pub(crate) fn snapshot_cow_threshold() -> u32 {
    // SAFETY: reads an `unsigned int` module parameter with `READ_ONCE`.
    unsafe { bindings::dmrs_param_snapshot_cow_threshold() }
}
