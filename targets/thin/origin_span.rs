// SPDX-License-Identifier: GPL-2.0

//! Where a thin device's external origin ends, seen from a bio or a block:
//! unprovisioned blocks read the origin up to its end and zeros past it,
//! and a partial write to one copies what the origin has of its block.
//! Sectors are the thin's own (the origin is addressed like the thin).

/// Where an unprovisioned read of `sectors` at virtual sector `virt` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnprovisionedRead {
    /// All of it is on the origin.
    Origin,
    /// All of it lies past the origin's end: zeros.
    Zeros,
    /// It crosses the origin's end: its first so many sectors are on the
    /// origin (at least one, fewer than the bio's).
    Crosses(u32),
}

/// Where an unprovisioned read of `sectors` at `virt` goes, the origin
/// being `origin` sectors long.
pub fn unprovisioned_read(virt: u64, sectors: u32, origin: u64) -> UnprovisionedRead {
    if virt >= origin {
        return UnprovisionedRead::Zeros;
    }
    let on_origin = origin - virt;
    match u32::try_from(on_origin) {
        Ok(n) if n < sectors => UnprovisionedRead::Crosses(n),
        _ => UnprovisionedRead::Origin,
    }
}

/// How many sectors of the origin a new data block for virtual block
/// `vblock` starts from: the whole block, the part before the origin's
/// end, or none (the block lies past it).
pub fn origin_copy_len(vblock: u64, block_size: u64, origin: u64) -> u64 {
    let begin = vblock.saturating_mul(block_size);
    origin.saturating_sub(begin).min(block_size)
}
