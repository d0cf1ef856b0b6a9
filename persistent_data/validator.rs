// SPDX-License-Identifier: GPL-2.0

//! Block validators, and the rule by which a block cache checks a block
//! only once.
//!
//! A validator stamps a block (its location, a checksum) when it is written
//! and checks it when it is read from the device. Checking costs a CRC32C
//! over 4 KiB, so a cache checks a block once, when it first hands it out
//! with a validator, and records which validator that was
//! ([`check_once`]); later reads with the same validator cost nothing. A
//! read with another validator (another client reading the same block, say
//! a checker's superblock validator) checks the block again every time.

use crate::persistent_data::checksum::dm_checksum;
use crate::persistent_data::endian::{le32, le64, set_le32, set_le64};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::Block;

/// Checks a block read from disk and stamps one about to be written.
///
/// Validators are statics with a non-zero size: a validator is known by
/// its address (see [`same_validator`]).
pub trait Validator: Sync {
    /// Name, for diagnostics.
    fn name(&self) -> &'static str;
    /// Verifies `data`, read from block `b`.
    fn check(&self, b: u64, data: &Block) -> Result<()>;
    /// Stamps `data` (location, checksum) before it is written to block `b`.
    fn prepare_for_write(&self, b: u64, data: &mut Block) -> Result<()>;
}

/// How validators are passed around: they are all statics.
pub type ValidatorRef = &'static dyn Validator;

/// Validators are told apart by identity: the same static is the same
/// address. Vtable addresses are not compared (one type can have several
/// vtables, one per codegen unit); the size is, and for zero-sized
/// validators (distinct zero-sized statics may share an address) the name
/// too. Two validators with the same name (the thin and cache
/// superblocks') are different.
#[inline]
pub fn same_validator(a: ValidatorRef, b: ValidatorRef) -> bool {
    let size = core::mem::size_of_val(a);
    core::ptr::addr_eq(a, b)
        && size == core::mem::size_of_val(b)
        && (size != 0 || a.name() == b.name())
}

/// The validate-once rule of a block cache. `recorded` is the validator
/// that already checked the cached copy of block `b` (`None`: not checked
/// yet), `want` the one a reader asks for (`None`: raw access, no check).
///
/// Returns `Ok(Some(v))` when `v` has just checked the block and the cache
/// should record it, `Ok(None)` when nothing needs recording (the block is
/// trusted, or was checked by `want` without replacing the record), or the
/// check's error.
#[inline]
pub fn check_once(
    b: u64,
    data: &Block,
    recorded: Option<ValidatorRef>,
    want: Option<ValidatorRef>,
) -> Result<Option<ValidatorRef>> {
    match (recorded, want) {
        (_, None) => Ok(None),
        (Some(r), Some(w)) if same_validator(r, w) => Ok(None),
        (Some(_), Some(w)) => w.check(b, data).map(|()| None),
        (None, Some(w)) => {
            w.check(b, data)?;
            Ok(Some(w))
        }
    }
}

/// The common validator shape: `csum` (le32) at offset 0 covering bytes
/// `4..4096` XORed with a salt, and the block's own location (le64) at
/// `blocknr_offset`.
pub struct CsumValidator {
    /// Validator name.
    pub name: &'static str,
    /// Checksum salt.
    pub xor: u32,
    /// Where the block records its own location.
    pub blocknr_offset: usize,
}

impl CsumValidator {
    fn csum(&self, data: &Block) -> u32 {
        dm_checksum(data.get(4..).unwrap_or(&[]), self.xor)
    }
}

impl Validator for CsumValidator {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, b: u64, data: &Block) -> Result<()> {
        // Location first: a misdirected write is a different failure from a
        // torn or corrupted one.
        if le64(data, self.blocknr_offset)? != b {
            return Err(Error::BadBlockNumber);
        }
        if le32(data, 0)? != self.csum(data) {
            return Err(Error::BadChecksum);
        }
        Ok(())
    }

    fn prepare_for_write(&self, b: u64, data: &mut Block) -> Result<()> {
        set_le64(data, self.blocknr_offset, b)?;
        let c = self.csum(data);
        set_le32(data, 0, c)
    }
}

/// Validators for the engine's unit tests.
#[cfg(test)]
pub(crate) mod test_validators {
    use super::CsumValidator;

    pub(crate) static V1: CsumValidator = CsumValidator {
        name: "test1",
        xor: 42,
        blocknr_offset: 8,
    };
    pub(crate) static V2: CsumValidator = CsumValidator {
        name: "test2",
        xor: 43,
        blocknr_offset: 8,
    };
    /// Same name as V1, another salt (like two targets' superblocks).
    pub(crate) static V1_TWIN: CsumValidator = CsumValidator {
        name: "test1",
        xor: 99,
        blocknr_offset: 8,
    };
}

#[cfg(test)]
mod tests {
    use super::test_validators::{V1, V1_TWIN};
    use super::*;
    static OUT_OF_BLOCK: CsumValidator = CsumValidator {
        name: "bad",
        xor: 1,
        blocknr_offset: 4090,
    };

    #[test]
    fn identity_not_name() {
        assert!(same_validator(&V1, &V1));
        assert!(!same_validator(&V1, &V1_TWIN));
    }

    #[test]
    fn checks_once_then_trusts_and_another_checks_every_time() {
        let mut d = [0u8; 4096];
        V1.prepare_for_write(7, &mut d).unwrap();
        assert_eq!(
            check_once(7, &d, None, Some(&V1))
                .unwrap()
                .map(|v| v.name()),
            Some("test1")
        );
        // Recorded: not checked again (a corrupted copy still passes).
        d[100] ^= 1;
        assert!(check_once(7, &d, Some(&V1), Some(&V1)).unwrap().is_none());
        assert_eq!(
            check_once(7, &d, None, Some(&V1)).err(),
            Some(Error::BadChecksum)
        );
        assert_eq!(
            check_once(7, &d, Some(&V1), Some(&V1_TWIN)).err(),
            Some(Error::BadChecksum)
        );
        let mut twin = [0u8; 4096];
        V1_TWIN.prepare_for_write(7, &mut twin).unwrap();
        assert!(check_once(7, &twin, Some(&V1), Some(&V1_TWIN))
            .unwrap()
            .is_none());
        assert!(check_once(7, &d, Some(&V1), None).unwrap().is_none());
    }

    #[test]
    fn location_outside_the_block_is_an_error() {
        let mut d = [0u8; 4096];
        assert_eq!(
            OUT_OF_BLOCK.prepare_for_write(1, &mut d),
            Err(Error::Invalid)
        );
        assert_eq!(OUT_OF_BLOCK.check(1, &d), Err(Error::Invalid));
    }
}
