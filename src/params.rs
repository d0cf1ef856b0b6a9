// SPDX-License-Identifier: GPL-2.0

//! Module parameters (declared in `params.c`): which targets to register and
//! under which name prefix.

use crate::dm::bindings;
use kernel::str::CStr;

/// The `prefix=` parameter ("" by default).
pub(crate) fn prefix() -> &'static CStr {
    // SAFETY: the parameter is a NUL-terminated string that the module keeps
    // for its lifetime; it is read-only (0444) after load.
    unsafe { CStr::from_char_ptr(bindings::dmrs_param_prefix()) }
}

/// The `targets=` parameter: "all" or a comma-separated list of names.
pub(crate) fn targets() -> &'static CStr {
    // SAFETY: as for `prefix`.
    unsafe { CStr::from_char_ptr(bindings::dmrs_param_targets()) }
}

/// The `selftest=` parameter: register the test-only self-test target.
pub(crate) fn selftest() -> bool {
    // SAFETY: reads a bool the module owns; it is read-only (0444) after load.
    unsafe { bindings::dmrs_param_selftest() }
}

/// Whether `list` (the `targets=` value) selects the target `name`.
pub(crate) fn selects(list: &[u8], name: &[u8]) -> bool {
    list == b"all" || list.split(|&b| b == b',').any(|w| w == name)
}

/// The first word of `list` that is not one of `known`, if any.
pub(crate) fn unknown<'a>(list: &'a [u8], known: &[&[u8]]) -> Option<&'a [u8]> {
    if list == b"all" {
        return None;
    }
    list.split(|&b| b == b',').find(|w| !known.contains(w))
}
