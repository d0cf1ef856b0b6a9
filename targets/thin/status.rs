// SPDX-License-Identifier: GPL-2.0

//! thin-pool's and thin's status and table lines, byte for byte as
//! upstream's `DMEMIT`s write them, into any [`StatusSink`].

/// Where a status or table line goes: the module's bounded result buffer
/// (which drops what does not fit, as `DMEMIT` does) or a host `Vec`.
pub trait StatusSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);

    /// Appends `value` in decimal, without allocating.
    fn put_u64(&mut self, value: u64) {
        // u64::MAX has 20 digits.
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = value;
        for slot in digits.iter_mut().rev() {
            // `rest % 10` is below 10, so the cast keeps it exactly.
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
            start -= 1;
            if rest == 0 {
                break;
            }
        }
        self.put(digits.get(start..).unwrap_or(&[]));
    }
}

#[cfg(not(MODULE))]
impl StatusSink for alloc::vec::Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[cfg(MODULE)]
impl StatusSink for crate::dm::status::StatusWriter<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.push_bytes(bytes);
    }
}

/// A block device number, printed `major:minor` like `format_dev_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevNumber {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// A device as a table line names it: by the word the table was loaded
/// with (host round trips), or by number (what `dmsetup table` shows).
pub trait EmitDevice {
    /// Appends the device's name.
    fn emit_device(&self, out: &mut dyn StatusSink);
}

impl EmitDevice for DevNumber {
    fn emit_device(&self, out: &mut dyn StatusSink) {
        out.put_u64(u64::from(self.major));
        out.put(b":");
        out.put_u64(u64::from(self.minor));
    }
}

impl EmitDevice for &[u8] {
    fn emit_device(&self, out: &mut dyn StatusSink) {
        out.put(self);
    }
}
