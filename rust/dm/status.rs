// SPDX-License-Identifier: GPL-2.0

//! The status/message result buffer, written like `DMEMIT`.

use core::fmt;

/// Which status dm core asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum StatusType {
    /// `dmsetup status`: runtime information.
    Info,
    /// `dmsetup table`: the table line as it would be loaded.
    Table,
    /// The IMA measurement string.
    Ima,
}

/// Writes into the result buffer dm core hands to `status` and `message`.
///
/// Like `scnprintf`, output that does not fit is dropped and the buffer stays
/// NUL-terminated; dm core notices a full buffer and retries with a larger one.
pub(crate) struct StatusWriter<'a> {
    buf: &'a mut [u8],
    // INVARIANT: `pos < buf.len()` when `buf` is not empty, and `buf[pos] == 0`.
    pos: usize,
}

impl<'a> StatusWriter<'a> {
    /// Wraps `buf`, which becomes the empty string.
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        Self { buf, pos: 0 }
    }

    /// Whether nothing has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Appends raw bytes, truncating what does not fit.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) {
        // Room for payload: one byte stays reserved for the terminating NUL.
        let room = self.buf.len().saturating_sub(self.pos + 1);
        let n = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (self.buf.get_mut(self.pos..self.pos + n), bytes.get(..n)) {
            dst.copy_from_slice(src);
            self.pos += n;
        }
        if let Some(nul) = self.buf.get_mut(self.pos) {
            *nul = 0;
        }
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_bytes(s.as_bytes());
        Ok(())
    }
}
