// SPDX-License-Identifier: GPL-2.0

//! The I/O size hints a thin-pool device advertises, from its block size and
//! the limits stacked from its data device, as upstream's pool does: file
//! systems on its thins align their I/O to them (mkfs.xfs's sunit/swidth).

/// Limits stacked from the data device, in sectors except where named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackedLimits {
    /// Largest I/O the device takes, in sectors.
    pub max_sectors: u32,
    /// Preferred minimum I/O size, in bytes.
    pub io_min: u32,
    /// Optimal I/O size, in bytes (0: none given).
    pub io_opt: u32,
}

/// `limits` adjusted for a pool of `block_sectors`-sector blocks.
///
/// A largest I/O smaller than a block is lowered to the largest power of
/// two that divides the block, so that a block's worth of such I/Os ends on
/// the block's boundary (a RAID stripe as wide as a block is then written
/// whole). The sizes are set to the block's unless the data device's
/// optimal size is already a multiple of it.
pub fn pool_io_limits(block_sectors: u32, mut limits: StackedLimits) -> StackedLimits {
    if block_sectors == 0 {
        return limits;
    }
    let divides_block = |s: u32| s != 0 && block_sectors % s == 0;
    if limits.max_sectors != 0 && limits.max_sectors < block_sectors {
        // Terminates: every step lowers a nonzero value, and 1 divides.
        while !divides_block(limits.max_sectors) {
            let m = if limits.max_sectors.is_power_of_two() {
                limits.max_sectors - 1
            } else {
                limits.max_sectors
            };
            // m >= 1 here: a power of two that does not divide the block
            // is at least 2.
            limits.max_sectors = 1 << (31 - m.leading_zeros());
        }
    }
    let io_opt_sectors = limits.io_opt >> 9;
    if io_opt_sectors < block_sectors || io_opt_sectors % block_sectors != 0 {
        let block_bytes = block_sectors.saturating_mul(512);
        limits.io_min = if divides_block(limits.max_sectors) {
            limits.max_sectors.saturating_mul(512)
        } else {
            block_bytes
        };
        limits.io_opt = block_bytes;
    }
    limits
}
