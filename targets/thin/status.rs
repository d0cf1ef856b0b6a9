// SPDX-License-Identifier: GPL-2.0

//! thin-pool's and thin's status and table lines, byte for byte as
//! upstream's `DMEMIT`s write them, into any [`StatusSink`].

use super::metadata::superblock::MAX_METADATA_BLOCKS_USED;
use super::mode::PoolMode;

/// Where a status or table line goes: the module's bounded result buffer
/// (which drops what does not fit, as `DMEMIT` does) or a host `Vec`.
pub trait StatusSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);

    /// Appends each of `parts` in turn.
    fn put_all(&mut self, parts: &[&[u8]]) {
        for part in parts {
            self.put(part);
        }
    }

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

/// What thin-pool's info status reports (`dmsetup status`), gathered by the
/// caller from the metadata and the pool's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// The metadata's transaction id.
    pub transaction_id: u64,
    /// Free metadata blocks (net of the reserve, as the metadata counts them).
    pub free_metadata_blocks: u64,
    /// Metadata blocks in use by the space map.
    pub total_metadata_blocks: u64,
    /// Free data blocks.
    pub free_data_blocks: u64,
    /// Data blocks in the pool.
    pub total_data_blocks: u64,
    /// The held metadata root's block, 0 if none is held.
    pub held_root: u64,
    /// The pool's current mode.
    pub mode: PoolMode,
    /// Discards processed (the pool's current features, not the table's).
    pub discard_enabled: bool,
    /// Discards passed down (possibly turned off for the data device).
    pub discard_passdown: bool,
    /// Out-of-space I/O errors at once (also set by the no-space timeout).
    pub error_if_no_space: bool,
    /// The metadata says it needs `thin_check`.
    pub needs_check: bool,
    /// See [`metadata_low_water_blocks`].
    pub metadata_low_water: u64,
}

/// Metadata blocks a metadata device of `sectors` provides: 4 KiB blocks,
/// no more than the metadata space map can address.
pub fn metadata_dev_blocks(sectors: u64) -> u64 {
    (sectors / 8).min(MAX_METADATA_BLOCKS_USED)
}

/// The free metadata blocks at which the pool raises a dm event (and which
/// its status reports): a quarter of the device, at most 1024 blocks (4 MiB).
pub fn metadata_low_water_blocks(metadata_dev_blocks: u64) -> u64 {
    (metadata_dev_blocks / 4).min(1024)
}

/// Writes thin-pool's info status line as upstream does, every token
/// followed by a space:
///
/// `<transaction id> <used>/<total metadata blocks> <used>/<total data
/// blocks> <held root|-> <rw|ro|out_of_data_space>
/// <ignore_discard|discard_passdown|no_discard_passdown>
/// <error_if_no_space|queue_if_no_space> <needs_check|-> <metadata low water>`
///
/// A pool in fail mode writes only `Fail`.
pub fn emit_pool_status(out: &mut dyn StatusSink, s: &PoolStatus) {
    if s.mode == PoolMode::Fail {
        out.put(b"Fail");
        return;
    }
    let number = |out: &mut dyn StatusSink, n: u64, after: &[u8]| {
        out.put_u64(n);
        out.put(after);
    };
    // Upstream subtracts in unsigned arithmetic; so do we, wrapping alike.
    number(out, s.transaction_id, b" ");
    let used_metadata = s.total_metadata_blocks.wrapping_sub(s.free_metadata_blocks);
    number(out, used_metadata, b"/");
    number(out, s.total_metadata_blocks, b" ");
    number(
        out,
        s.total_data_blocks.wrapping_sub(s.free_data_blocks),
        b"/",
    );
    number(out, s.total_data_blocks, b" ");
    if s.held_root == 0 {
        out.put(b"- ");
    } else {
        number(out, s.held_root, b" ");
    }
    out.put(s.mode.status_word());
    out.put(b" ");
    out.put(match (s.discard_enabled, s.discard_passdown) {
        (false, _) => b"ignore_discard ",
        (true, true) => b"discard_passdown ",
        (true, false) => b"no_discard_passdown ",
    });
    out.put(if s.error_if_no_space {
        b"error_if_no_space "
    } else {
        b"queue_if_no_space "
    });
    out.put(if s.needs_check {
        b"needs_check "
    } else {
        b"- "
    });
    number(out, s.metadata_low_water, b" ");
}

/// What upstream writes when reading a status figure failed.
pub fn emit_status_error(out: &mut dyn StatusSink) {
    out.put(b"Error");
}

/// What thin writes for every status type while its pool is in fail mode.
pub fn emit_thin_fail(out: &mut dyn StatusSink) {
    out.put(b"Fail");
}

/// Writes thin's info status line as upstream does:
/// `<mapped sectors> <last sector of the highest mapped block|->`,
/// no trailing space. `highest_mapped_block` is `None` when nothing is
/// mapped. (Upstream writes `-` alone for a thin whose device is not open,
/// and `Fail` while the pool is in fail mode: [`emit_thin_fail`].)
pub fn emit_thin_status(
    out: &mut dyn StatusSink,
    mapped_blocks: u64,
    highest_mapped_block: Option<u64>,
    sectors_per_block: u32,
) {
    let spb = u64::from(sectors_per_block);
    out.put_u64(mapped_blocks.wrapping_mul(spb));
    out.put(b" ");
    match highest_mapped_block {
        Some(highest) => out.put_u64(highest.wrapping_add(1).wrapping_mul(spb).wrapping_sub(1)),
        None => out.put(b"-"),
    }
}
