// SPDX-License-Identifier: GPL-2.0

//! CRC-32C through the kernel's `crc32c()` (libcrc32c: the CPU's CRC32
//! instruction where there is one), for the metadata engine's checksums.
//!
//! C header: [`include/linux/crc32c.h`](srctree/include/linux/crc32c.h)

use super::bindings;

/// The raw CRC-32C update of `crc` with `data` (no inversion on entry or
/// exit), as `crc32c(crc, data, len)` computes it.
#[allow(unreachable_pub)] // Re-exported by the engine's shim.
pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    // The C length is 32-bit: feed longer slices in pieces.
    for piece in data.chunks(u32::MAX as usize) {
        // SAFETY: `piece` is a valid, initialised slice of `piece.len()`
        // bytes (which fits a `u32`) for the duration of the call, which
        // only reads it.
        crc = unsafe { bindings::dmrs_crc32c(crc, piece.as_ptr().cast(), piece.len() as u32) };
    }
    crc
}
