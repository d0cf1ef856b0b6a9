// SPDX-License-Identifier: GPL-2.0

//! The thin-pool superblock: block 0 of the metadata device, with its own
//! validator (checksum salt, location and magic), as `dm-thin-metadata.c`
//! lays it out. It is the only block ever written in place: a commit
//! rewrites it last, after everything it points to is on disk.

use crate::persistent_data::checksum::dm_checksum;
use crate::persistent_data::endian::{le32, le64, set_le32, set_le64};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BLOCK_SECTORS};
use crate::persistent_data::space_map::common::MAX_METADATA_BLOCKS;
use crate::persistent_data::space_map::{SmRoot, SM_ROOT_SIZE};
use crate::persistent_data::validator::Validator;

use super::mapping::DATA_BLOCK_LIMIT;

/// Where the superblock lives.
pub const SUPERBLOCK_LOCATION: u64 = 0;
/// `THIN_SUPERBLOCK_MAGIC`.
pub const THIN_MAGIC: u64 = 27022010;
/// The metadata format version written at format (never checked on open,
/// as upstream).
pub const THIN_VERSION: u32 = 2;
/// The superblock's checksum salt.
pub const SUPERBLOCK_CSUM_XOR: u32 = 160774;
/// `flags` bit: the metadata must be checked (`thin_check`) before use.
pub const NEEDS_CHECK_FLAG: u32 = 1;
/// Feature bits this implementation understands (none, as upstream).
pub const COMPAT_SUPPORTED: u32 = 0;
/// Read-only-compatible feature bits understood (none).
pub const COMPAT_RO_SUPPORTED: u32 = 0;
/// Incompatible feature bits understood (none).
pub const INCOMPAT_SUPPORTED: u32 = 0;
/// The most metadata blocks a pool uses (the metadata space map's limit);
/// a larger device is used up to this size.
pub const MAX_METADATA_BLOCKS_USED: u64 = MAX_METADATA_BLOCKS;
/// Smallest data block: 64 KiB, in sectors; sizes are multiples of it.
pub const DATA_BLOCK_SIZE_MIN_SECTORS: u32 = 128;
/// Largest data block: 1 GiB, in sectors.
pub const DATA_BLOCK_SIZE_MAX_SECTORS: u32 = 2_097_152;

/// Byte offsets of the fields (`struct thin_disk_superblock`, packed).
mod off {
    pub(super) const CSUM: usize = 0;
    pub(super) const FLAGS: usize = 4;
    pub(super) const BLOCKNR: usize = 8;
    pub(super) const MAGIC: usize = 32;
    pub(super) const VERSION: usize = 40;
    pub(super) const TIME: usize = 44;
    pub(super) const TRANS_ID: usize = 48;
    pub(super) const HELD_ROOT: usize = 56;
    /// 128 bytes reserved; the space map root uses the first 32.
    pub(super) const DATA_SM_ROOT: usize = 64;
    pub(super) const METADATA_SM_ROOT: usize = 192;
    pub(super) const MAPPING_ROOT: usize = 320;
    pub(super) const DETAILS_ROOT: usize = 328;
    pub(super) const DATA_BLOCK_SIZE: usize = 336;
    pub(super) const METADATA_BLOCK_SIZE: usize = 340;
    pub(super) const METADATA_NR_BLOCKS: usize = 344;
    pub(super) const COMPAT: usize = 352;
    pub(super) const COMPAT_RO: usize = 356;
    pub(super) const INCOMPAT: usize = 360;
}

/// The space map root stored at `at` (the first 32 of its 128 bytes).
fn sm_root_at(d: &[u8], at: usize) -> Result<[u8; SM_ROOT_SIZE]> {
    d.get(at..at + SM_ROOT_SIZE)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Invalid)
}

fn set_sm_root(d: &mut [u8], at: usize, root: &[u8; SM_ROOT_SIZE]) -> Result<()> {
    d.get_mut(at..at + SM_ROOT_SIZE)
        .ok_or(Error::Invalid)?
        .copy_from_slice(root);
    Ok(())
}

/// The superblock's validator: the block records its own location, the
/// thin magic, and a checksum of everything after the checksum field.
pub struct SuperblockValidator {
    name: &'static str,
}

/// The one superblock validator (also for metadata snapshot copies).
pub static SUPERBLOCK_VALIDATOR: SuperblockValidator = SuperblockValidator { name: "superblock" };

fn checksum(data: &Block) -> u32 {
    dm_checksum(data.get(off::FLAGS..).unwrap_or(&[]), SUPERBLOCK_CSUM_XOR)
}

impl Validator for SuperblockValidator {
    fn name(&self) -> &'static str {
        self.name
    }

    fn check(&self, b: u64, data: &Block) -> Result<()> {
        if le64(data, off::BLOCKNR)? != b {
            return Err(Error::BadBlockNumber);
        }
        if le64(data, off::MAGIC)? != THIN_MAGIC || le32(data, off::CSUM)? != checksum(data) {
            return Err(Error::BadChecksum);
        }
        Ok(())
    }

    fn prepare_for_write(&self, b: u64, data: &mut Block) -> Result<()> {
        set_le64(data, off::BLOCKNR, b)?;
        let c = checksum(data);
        set_le32(data, off::CSUM, c)
    }
}

/// The superblock's fields (the uuid, always zero, is left alone).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    /// `NEEDS_CHECK_FLAG` and nothing else so far.
    pub flags: u32,
    /// [`THIN_MAGIC`].
    pub magic: u64,
    /// Format version.
    pub version: u32,
    /// Snapshot epoch: new mappings are stamped with it.
    pub time: u32,
    /// Userspace's transaction id.
    pub trans_id: u64,
    /// Location of the metadata snapshot's superblock copy (0: none).
    pub held_root: u64,
    /// The data space map's root.
    pub data_sm_root: [u8; SM_ROOT_SIZE],
    /// The metadata space map's root.
    pub metadata_sm_root: [u8; SM_ROOT_SIZE],
    /// Two-level mapping tree: `[dev, vblock] -> block_time`.
    pub mapping_root: u64,
    /// Device details tree: `dev -> details`.
    pub details_root: u64,
    /// Data block size in sectors.
    pub data_block_size: u32,
    /// Metadata block size in sectors (8).
    pub metadata_block_size: u32,
    /// Metadata blocks when formatted (not updated by a resize).
    pub metadata_nr_blocks: u64,
    /// Compatible feature bits.
    pub compat_flags: u32,
    /// Read-only-compatible feature bits.
    pub compat_ro_flags: u32,
    /// Incompatible feature bits.
    pub incompat_flags: u32,
}

impl Superblock {
    /// A fresh superblock for a pool formatted on a device of
    /// `device_blocks` metadata blocks.
    pub fn new(data_block_size: u32, device_blocks: u64) -> Self {
        Superblock {
            magic: THIN_MAGIC,
            version: THIN_VERSION,
            data_block_size,
            metadata_block_size: BLOCK_SECTORS,
            metadata_nr_blocks: device_blocks.min(MAX_METADATA_BLOCKS_USED),
            ..Superblock::default()
        }
    }

    /// Decodes the fields of a (validated) superblock block.
    pub fn unpack(d: &[u8]) -> Result<Self> {
        Ok(Superblock {
            flags: le32(d, off::FLAGS)?,
            magic: le64(d, off::MAGIC)?,
            version: le32(d, off::VERSION)?,
            time: le32(d, off::TIME)?,
            trans_id: le64(d, off::TRANS_ID)?,
            held_root: le64(d, off::HELD_ROOT)?,
            data_sm_root: sm_root_at(d, off::DATA_SM_ROOT)?,
            metadata_sm_root: sm_root_at(d, off::METADATA_SM_ROOT)?,
            mapping_root: le64(d, off::MAPPING_ROOT)?,
            details_root: le64(d, off::DETAILS_ROOT)?,
            data_block_size: le32(d, off::DATA_BLOCK_SIZE)?,
            metadata_block_size: le32(d, off::METADATA_BLOCK_SIZE)?,
            metadata_nr_blocks: le64(d, off::METADATA_NR_BLOCKS)?,
            compat_flags: le32(d, off::COMPAT)?,
            compat_ro_flags: le32(d, off::COMPAT_RO)?,
            incompat_flags: le32(d, off::INCOMPAT)?,
        })
    }

    /// Encodes the fields into `d` (the checksum and location are stamped
    /// by the validator when the block is written).
    pub fn pack(&self, d: &mut [u8]) -> Result<()> {
        set_le32(d, off::FLAGS, self.flags)?;
        set_le64(d, off::MAGIC, self.magic)?;
        set_le32(d, off::VERSION, self.version)?;
        set_le32(d, off::TIME, self.time)?;
        set_le64(d, off::TRANS_ID, self.trans_id)?;
        set_le64(d, off::HELD_ROOT, self.held_root)?;
        set_sm_root(d, off::DATA_SM_ROOT, &self.data_sm_root)?;
        set_sm_root(d, off::METADATA_SM_ROOT, &self.metadata_sm_root)?;
        set_le64(d, off::MAPPING_ROOT, self.mapping_root)?;
        set_le64(d, off::DETAILS_ROOT, self.details_root)?;
        set_le32(d, off::DATA_BLOCK_SIZE, self.data_block_size)?;
        set_le32(d, off::METADATA_BLOCK_SIZE, self.metadata_block_size)?;
        set_le64(d, off::METADATA_NR_BLOCKS, self.metadata_nr_blocks)?;
        set_le32(d, off::COMPAT, self.compat_flags)?;
        set_le32(d, off::COMPAT_RO, self.compat_ro_flags)?;
        set_le32(d, off::INCOMPAT, self.incompat_flags)
    }

    /// Refuses features this implementation does not know, as upstream:
    /// unknown incompatible bits always, unknown read-only-compatible bits
    /// unless the metadata device is read-only.
    pub fn check_features(&self, read_only_device: bool) -> Result<()> {
        if self.incompat_flags & !INCOMPAT_SUPPORTED != 0 {
            return Err(Error::Invalid);
        }
        if !read_only_device && self.compat_ro_flags & !COMPAT_RO_SUPPORTED != 0 {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    /// Refuses a superblock whose sizes this pool cannot use: metadata
    /// blocks other than 4 KiB, or more data blocks than a mapping can
    /// address.
    pub fn check_sizes(&self) -> Result<()> {
        if self.metadata_block_size != BLOCK_SECTORS {
            return Err(Error::Invalid);
        }
        if SmRoot::unpack(&self.data_sm_root)?.nr_blocks > DATA_BLOCK_LIMIT {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    /// Wipes the space map roots (a metadata snapshot's copy is not a pool
    /// of its own).
    pub fn clear_space_map_roots(d: &mut [u8]) -> Result<()> {
        d.get_mut(off::DATA_SM_ROOT..off::MAPPING_ROOT)
            .ok_or(Error::Invalid)?
            .fill(0);
        Ok(())
    }
}

/// True for a data block size thin-pool accepts: 64 KiB to 1 GiB, in
/// multiples of 64 KiB (in 512-byte sectors).
pub fn valid_data_block_size(sectors: u32) -> bool {
    (DATA_BLOCK_SIZE_MIN_SECTORS..=DATA_BLOCK_SIZE_MAX_SECTORS).contains(&sectors)
        && sectors % DATA_BLOCK_SIZE_MIN_SECTORS == 0
}

/// True if `d` is all zeros: an unformatted metadata device.
pub fn is_unformatted(d: &Block) -> bool {
    d.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_round_trip_and_layout() {
        let mut sb = Superblock::new(128, 1000);
        sb.flags = NEEDS_CHECK_FLAG;
        sb.time = 7;
        sb.trans_id = 0x0102_0304_0506_0708;
        sb.held_root = 99;
        sb.data_sm_root[0] = 0xaa;
        sb.metadata_sm_root[31] = 0xbb;
        sb.mapping_root = 5;
        sb.details_root = 6;
        let mut d = [0u8; 4096];
        sb.pack(&mut d).unwrap();
        assert_eq!(Superblock::unpack(&d).unwrap(), sb);
        // Spot-check upstream's offsets.
        assert_eq!(&d[32..40], &THIN_MAGIC.to_le_bytes());
        assert_eq!(d[40], 2);
        assert_eq!(d[44], 7);
        assert_eq!(d[64], 0xaa);
        assert_eq!(d[192 + 31], 0xbb);
        assert_eq!(d[320], 5);
        assert_eq!(d[328], 6);
        assert_eq!(&d[336..340], &128u32.to_le_bytes());
        assert_eq!(d[340], 8);
        assert_eq!(&d[344..352], &1000u64.to_le_bytes());
        assert!(d[364..].iter().all(|&b| b == 0));
    }

    #[test]
    fn validator_checks_location_magic_and_checksum() {
        let mut d = [0u8; 4096];
        Superblock::new(128, 100).pack(&mut d).unwrap();
        SUPERBLOCK_VALIDATOR.prepare_for_write(0, &mut d).unwrap();
        assert_eq!(SUPERBLOCK_VALIDATOR.check(0, &d), Ok(()));
        assert_eq!(
            SUPERBLOCK_VALIDATOR.check(3, &d),
            Err(Error::BadBlockNumber)
        );
        let mut bad = d;
        bad[100] ^= 1;
        assert_eq!(SUPERBLOCK_VALIDATOR.check(0, &bad), Err(Error::BadChecksum));
        // A right checksum over the wrong magic is refused too.
        let mut other = d;
        other[32] ^= 1;
        SUPERBLOCK_VALIDATOR
            .prepare_for_write(0, &mut other)
            .unwrap();
        assert_eq!(
            SUPERBLOCK_VALIDATOR.check(0, &other),
            Err(Error::BadChecksum)
        );
    }

    #[test]
    fn features_and_block_sizes() {
        let mut sb = Superblock::new(128, 100);
        assert_eq!(sb.check_features(false), Ok(()));
        sb.compat_ro_flags = 1;
        assert_eq!(sb.check_features(false), Err(Error::Invalid));
        assert_eq!(sb.check_features(true), Ok(()));
        sb.incompat_flags = 4;
        assert_eq!(sb.check_features(true), Err(Error::Invalid));
        assert!(valid_data_block_size(128));
        assert!(valid_data_block_size(2_097_152));
        assert!(!valid_data_block_size(64));
        assert!(!valid_data_block_size(192 + 1));
        assert!(!valid_data_block_size(2_097_152 + 128));
        assert_eq!(sb.check_sizes(), Ok(()));
        sb.metadata_block_size = 16;
        assert_eq!(sb.check_sizes(), Err(Error::Invalid));
        sb.metadata_block_size = 8;
        let mut root = SmRoot::unpack(&sb.data_sm_root).unwrap();
        root.nr_blocks = DATA_BLOCK_LIMIT + 1;
        root.pack(&mut sb.data_sm_root).unwrap();
        assert_eq!(sb.check_sizes(), Err(Error::Invalid));
        assert_eq!(
            Superblock::new(128, u64::MAX).metadata_nr_blocks,
            MAX_METADATA_BLOCKS_USED
        );
    }
}
