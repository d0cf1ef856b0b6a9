// SPDX-License-Identifier: GPL-2.0

//! Little-endian fields of on-disk structures.
//!
//! Every access is range-checked: reading or writing past the end of the
//! slice is an error ([`Error::Invalid`]), never a silent zero or a dropped
//! write, so a bad offset (a corrupt `value_size`, say) cannot turn into a
//! wrong count or a lost update.

use crate::persistent_data::error::{Error, Result};

fn field<const N: usize>(d: &[u8], off: usize) -> Result<[u8; N]> {
    let end = off.checked_add(N).ok_or(Error::Invalid)?;
    d.get(off..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Invalid)
}

fn field_mut<const N: usize>(d: &mut [u8], off: usize) -> Result<&mut [u8]> {
    let end = off.checked_add(N).ok_or(Error::Invalid)?;
    d.get_mut(off..end).ok_or(Error::Invalid)
}

/// The little-endian `u32` at `off`.
#[inline]
pub fn le32(d: &[u8], off: usize) -> Result<u32> {
    field::<4>(d, off).map(u32::from_le_bytes)
}

/// The little-endian `u64` at `off`.
#[inline]
pub fn le64(d: &[u8], off: usize) -> Result<u64> {
    field::<8>(d, off).map(u64::from_le_bytes)
}

/// Stores `v` little-endian at `off`.
#[inline]
pub fn set_le32(d: &mut [u8], off: usize, v: u32) -> Result<()> {
    field_mut::<4>(d, off)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Stores `v` little-endian at `off`.
#[inline]
pub fn set_le64(d: &mut [u8], off: usize, v: u64) -> Result<()> {
    field_mut::<8>(d, off)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Unchecked-looking shorthands for host tests and tools, where a bad
/// offset is a bug in the test: they panic (a loud failure) instead of
/// returning an error. Not part of the kernel build; the engine itself
/// only uses the checked accessors above.
#[cfg(not(MODULE))]
#[allow(clippy::expect_used)]
pub mod host {
    /// The little-endian `u32` at `off`; panics out of range.
    pub fn le32_at(d: &[u8], off: usize) -> u32 {
        super::le32(d, off).expect("le32_at: offset out of range")
    }

    /// The little-endian `u64` at `off`; panics out of range.
    pub fn le64_at(d: &[u8], off: usize) -> u64 {
        super::le64(d, off).expect("le64_at: offset out of range")
    }

    /// Stores `v` at `off`; panics out of range.
    pub fn put_le32(d: &mut [u8], off: usize, v: u32) {
        super::set_le32(d, off, v).expect("put_le32: offset out of range")
    }

    /// Stores `v` at `off`; panics out of range.
    pub fn put_le64(d: &mut [u8], off: usize, v: u64) {
        super::set_le64(d, off, v).expect("put_le64: offset out of range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_is_an_error_not_zero() {
        let mut d = [0u8; 12];
        set_le32(&mut d, 8, 0xdead_beef).unwrap();
        assert_eq!(le32(&d, 8), Ok(0xdead_beef));
        assert_eq!(le32(&d, 9), Err(Error::Invalid));
        assert_eq!(le64(&d, 5), Err(Error::Invalid));
        assert_eq!(le64(&d, usize::MAX), Err(Error::Invalid));
        assert_eq!(set_le32(&mut d, 9, 1), Err(Error::Invalid));
        assert_eq!(set_le64(&mut d, 8, 1), Err(Error::Invalid));
        // A refused write changed nothing.
        assert_eq!(le32(&d, 8), Ok(0xdead_beef));
        set_le64(&mut d, 0, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(d[0], 8);
        assert_eq!(le64(&d, 0), Ok(0x0102_0304_0506_0708));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn host_shorthand_panics_out_of_range() {
        host::le32_at(&[0u8; 4], 1);
    }
}
