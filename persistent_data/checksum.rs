// SPDX-License-Identifier: GPL-2.0

//! CRC-32C (Castagnoli) as the kernel's raw `crc32c()` computes it, and the
//! metadata block checksum built on it.
//!
//! In the module this is the kernel's `crc32c()` (the CPU's CRC32
//! instruction where there is one); on the host, a slicing-by-8 table.

/// Raw CRC-32C update: no initial or final inversion, like the kernel's
/// `crc32c(seed, data, len)`.
#[cfg(MODULE)]
#[inline]
pub fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    crate::persistent_data::shim::crc32c(crc, data)
}

/// Raw CRC-32C update: no initial or final inversion, like the kernel's
/// `crc32c(seed, data, len)`.
#[cfg(not(MODULE))]
pub fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    software::crc32c_raw(crc, data)
}

/// Standard CRC-32C (init and final inversion), as used by iSCSI/ext4.
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_raw(!0, data)
}

/// `dm_bm_checksum`: raw CRC-32C seeded with all ones, no final inversion,
/// XORed with a per-structure salt. Stored little-endian.
pub fn dm_checksum(data: &[u8], xor: u32) -> u32 {
    crc32c_raw(!0, data) ^ xor
}

/// The host's CRC-32C: slicing-by-8 tables built at compile time.
#[cfg(not(MODULE))]
mod software {
    /// Reflected CRC-32C polynomial.
    const POLY: u32 = 0x82F6_3B78;

    /// Slicing-by-8 tables, built at compile time.
    const TABLES: [[u32; 256]; 8] = make_tables();

    // Compile-time only: an out-of-range index here is a build error, not a
    // runtime panic.
    #[allow(clippy::indexing_slicing)]
    const fn make_tables() -> [[u32; 256]; 8] {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut s = 1;
        while s < 8 {
            let mut i = 0;
            while i < 256 {
                let prev = t[s - 1][i];
                t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                i += 1;
            }
            s += 1;
        }
        t
    }

    pub(super) fn tab(t: usize, i: u32) -> u32 {
        // `i` is always masked to a byte and `t < 8`, so this never misses; the
        // fallback keeps the function panic-free for the lint.
        TABLES
            .get(t)
            .and_then(|row| row.get((i & 0xff) as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Raw CRC-32C update.
    pub(super) fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap_or_default());
            let lo = (w as u32) ^ crc;
            let hi = (w >> 32) as u32;
            crc = tab(7, lo)
                ^ tab(6, lo >> 8)
                ^ tab(5, lo >> 16)
                ^ tab(4, lo >> 24)
                ^ tab(3, hi)
                ^ tab(2, hi >> 8)
                ^ tab(1, hi >> 16)
                ^ tab(0, hi >> 24);
        }
        for &b in chunks.remainder() {
            crc = tab(0, crc ^ u32::from(b)) ^ (crc >> 8);
        }
        crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The CRC-32C catalogue check value.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn slicing_matches_bytewise() {
        use super::software::tab;
        let data: std::vec::Vec<u8> = (0..4093u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut crc = !0u32;
        for &b in &data {
            crc = tab(0, crc ^ u32::from(b)) ^ (crc >> 8);
        }
        assert_eq!(crc, crc32c_raw(!0, &data));
    }

    #[test]
    fn dm_checksum_is_inverted_standard_xor_salt() {
        let data = [0u8; 4092];
        assert_eq!(dm_checksum(&data, 121107), !crc32c(&data) ^ 121107);
    }
}
