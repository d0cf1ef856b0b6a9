// SPDX-License-Identifier: GPL-2.0

//! Table-line and message arguments, in the style of `struct dm_arg_set`:
//! shift words off the front, read counted groups, check numeric ranges, and
//! report every problem as a [`TargetError`] that reaches user space.

use super::target::{CtrResult, TargetError};
use kernel::error::code::EINVAL;
use kernel::ffi::c_char;
use kernel::str::CStr;

/// The words of a table line or message that have not been consumed yet.
#[derive(Clone, Copy)]
pub(crate) struct ArgSet<'a> {
    // INVARIANT: every pointer is a valid NUL-terminated string for `'a`.
    argv: &'a [*mut c_char],
}

/// A numeric argument's allowed range and the error reported when it is out of
/// range or not a number (like `struct dm_arg`).
pub(crate) struct ArgSpec {
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) error: &'static CStr,
}

impl<'a> ArgSet<'a> {
    /// Wraps the `argc`/`argv` pair dm core passes to `ctr` and `message`.
    ///
    /// # Safety
    ///
    /// `argv` must point to `argc` valid NUL-terminated strings that live for
    /// `'a` (or `argc` must be zero).
    pub(crate) unsafe fn from_raw(argc: u32, argv: *mut *mut c_char) -> Self {
        if argc == 0 || argv.is_null() {
            return Self { argv: &[] };
        }
        // SAFETY: the caller guarantees `argv` holds `argc` valid pointers for `'a`.
        let argv = unsafe { core::slice::from_raw_parts(argv, argc as usize) };
        Self { argv }
    }

    /// Number of words left.
    pub(crate) fn len(&self) -> usize {
        self.argv.len()
    }

    /// Whether no words are left.
    pub(crate) fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }

    /// Takes the next word.
    pub(crate) fn shift(&mut self) -> Option<&'a CStr> {
        let (first, rest) = self.argv.split_first()?;
        self.argv = rest;
        // SAFETY: the type invariant says `first` is a valid C string for `'a`.
        Some(unsafe { CStr::from_char_ptr(*first) })
    }

    /// Takes the next word, or fails with `error`.
    pub(crate) fn shift_or(&mut self, error: &'static CStr) -> CtrResult<&'a CStr> {
        self.shift().ok_or(TargetError::new(EINVAL, error))
    }

    /// Looks at word `i` without consuming anything.
    pub(crate) fn peek(&self, i: usize) -> Option<&'a CStr> {
        let p = self.argv.get(i)?;
        // SAFETY: the type invariant says `p` is a valid C string for `'a`.
        Some(unsafe { CStr::from_char_ptr(*p) })
    }

    /// Drops the next `n` words (fewer if fewer are left).
    pub(crate) fn consume(&mut self, n: usize) {
        self.argv = self.argv.get(n..).unwrap_or(&[]);
    }

    /// Reads a decimal number in `spec`'s range (like `dm_read_arg`).
    pub(crate) fn read_u32(&mut self, spec: &ArgSpec) -> CtrResult<u32> {
        let err = TargetError::new(EINVAL, spec.error);
        let word = self.shift().ok_or(err)?;
        match parse_u64(word) {
            Some(v) if v >= u64::from(spec.min) && v <= u64::from(spec.max) => Ok(v as u32),
            _ => Err(err),
        }
    }

    /// Reads a group count in `spec`'s range and splits that many words off
    /// (like `dm_read_arg_group`).
    pub(crate) fn read_group(&mut self, spec: &ArgSpec) -> CtrResult<ArgSet<'a>> {
        let n = self.read_u32(spec)? as usize;
        if n > self.argv.len() {
            return Err(TargetError::new(EINVAL, spec.error));
        }
        let (group, rest) = self.argv.split_at(n);
        self.argv = rest;
        Ok(ArgSet { argv: group })
    }
}

/// Parses an unsigned decimal number: digits only, no sign, no overflow.
pub(crate) fn parse_u64(s: &CStr) -> Option<u64> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Case-insensitive comparison of a word with an ASCII keyword.
pub(crate) fn eq_ignore_case(s: &CStr, keyword: &str) -> bool {
    s.as_bytes().eq_ignore_ascii_case(keyword.as_bytes())
}
