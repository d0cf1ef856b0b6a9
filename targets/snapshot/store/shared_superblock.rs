// SPDX-License-Identifier: GPL-2.0

//! The shared exception store's superblock and layout: block 0 of the COW
//! device (4 KiB metadata blocks), written last by every commit.
//!
//! Layout of the COW device: `metadata_blocks` metadata blocks (the
//! persistent-data engine's space, superblock first), then data chunks
//! from chunk `data_start` on, `data_chunks` of them, their allocation
//! tracked by a disk space map in the same transaction as the index.

use super::exception_store::SECTOR_SHIFT;
use super::shared_index::IdMask;
use super::{Chunk, ChunkSize};
use crate::persistent_data::checksum::dm_checksum;
use crate::persistent_data::endian::{le32, le64, set_le32, set_le64};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BLOCK_SECTORS};
use crate::persistent_data::space_map::common::MAX_METADATA_BLOCKS;
use crate::persistent_data::space_map::SM_ROOT_SIZE;
use crate::persistent_data::validator::Validator;

/// Where the superblock lives.
pub const SUPERBLOCK_LOCATION: u64 = 0;
/// "dmrsSHRD", little endian.
pub const SHARED_MAGIC: u64 = u64::from_le_bytes(*b"dmrsSHRD");
/// Format version.
pub const SHARED_VERSION: u32 = 1;
const CSUM_XOR: u32 = 0x5348_5244;
/// `flags`: the whole store is invalid (`ES_INVALIDATE`).
pub const INVALID_FLAG: u32 = 1;

mod off {
    pub(super) const CSUM: usize = 0;
    pub(super) const FLAGS: usize = 4;
    pub(super) const BLOCKNR: usize = 8;
    pub(super) const MAGIC: usize = 16;
    pub(super) const VERSION: usize = 24;
    pub(super) const CHUNK_SECTORS: usize = 28;
    pub(super) const METADATA_BLOCKS: usize = 32;
    pub(super) const DATA_START: usize = 40;
    pub(super) const DATA_CHUNKS: usize = 48;
    pub(super) const MEMBERS: usize = 56;
    pub(super) const INVALID_IDS: usize = 64;
    pub(super) const INDEX_ROOT: usize = 72;
    pub(super) const METADATA_SM_ROOT: usize = 80;
    pub(super) const DATA_SM_ROOT: usize = 112;
}

/// The superblock validator: location, magic and checksum.
pub struct SharedSuperblockValidator {
    _name: &'static str,
}

/// The one instance.
pub static SUPERBLOCK_VALIDATOR: SharedSuperblockValidator = SharedSuperblockValidator {
    _name: "shared snapshot superblock",
};

fn checksum(data: &Block) -> u32 {
    dm_checksum(data.get(off::FLAGS..).unwrap_or(&[]), CSUM_XOR)
}

impl Validator for SharedSuperblockValidator {
    fn name(&self) -> &'static str {
        "shared snapshot superblock"
    }

    fn check(&self, b: u64, data: &Block) -> Result<()> {
        if le64(data, off::BLOCKNR)? != b {
            return Err(Error::BadBlockNumber);
        }
        if le64(data, off::MAGIC)? != SHARED_MAGIC || le32(data, off::CSUM)? != checksum(data) {
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

/// Where metadata ends and data chunks begin, fixed at format time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Metadata blocks (4 KiB) at the start of the device.
    pub metadata_blocks: u64,
    /// First data chunk (in chunks from the start of the device).
    pub data_start: Chunk,
    /// Number of data chunks.
    pub data_chunks: u64,
}

/// Metadata bytes set aside per data chunk: a worst-case half-full leaf
/// entry (24 bytes, so 48) twice over (a transaction's shadows live beside
/// the blocks they replace), plus the space maps and the tree's inner
/// nodes, rounded up generously.
const METADATA_BYTES_PER_CHUNK: u64 = 128;
/// Fixed metadata overhead: superblock, space map roots and bitmaps of a
/// small device, the empty index.
const METADATA_BASE_BLOCKS: u64 = 64;

impl Layout {
    /// The layout for a device of `dev_sectors` with chunks of `chunk`:
    /// enough metadata for one exception per data chunk. `NoSpace` if not
    /// even one data chunk fits.
    pub fn for_device(dev_sectors: u64, chunk: ChunkSize) -> Result<Self> {
        let shift = chunk.shift();
        let chunks = dev_sectors >> shift;
        let block_bytes = u64::from(BLOCK_SECTORS) << SECTOR_SHIFT;
        let metadata_blocks = chunks
            .checked_mul(METADATA_BYTES_PER_CHUNK)
            .ok_or(Error::Invalid)?
            .div_ceil(block_bytes)
            .checked_add(METADATA_BASE_BLOCKS)
            .ok_or(Error::Invalid)?
            .min(MAX_METADATA_BLOCKS);
        let metadata_sectors = metadata_blocks
            .checked_mul(BLOCK_SECTORS.into())
            .ok_or(Error::Invalid)?;
        // Rounded up to whole chunks.
        let data_start = metadata_sectors
            .checked_add((1u64 << shift) - 1)
            .ok_or(Error::Invalid)?
            >> shift;
        let data_chunks = chunks.checked_sub(data_start).ok_or(Error::NoSpace)?;
        if data_chunks == 0 {
            return Err(Error::NoSpace);
        }
        Ok(Layout {
            metadata_blocks,
            data_start,
            data_chunks,
        })
    }
}

/// The superblock's fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedSuperblock {
    /// [`INVALID_FLAG`].
    pub flags: u32,
    /// Chunk size in sectors.
    pub chunk_sectors: u32,
    /// See [`Layout`].
    pub metadata_blocks: u64,
    /// See [`Layout`].
    pub data_start: Chunk,
    /// See [`Layout`].
    pub data_chunks: u64,
    /// Snapshot ids that are members of the store.
    pub members: IdMask,
    /// Members whose snapshot is invalid (lost a chunk to a full device).
    pub invalid_ids: IdMask,
    /// Root of the exception index.
    pub index_root: u64,
    /// The metadata space map's root.
    pub metadata_sm_root: [u8; SM_ROOT_SIZE],
    /// The data chunks' space map root.
    pub data_sm_root: [u8; SM_ROOT_SIZE],
}

fn root_at(d: &[u8], at: usize) -> Result<[u8; SM_ROOT_SIZE]> {
    d.get(at..at + SM_ROOT_SIZE)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Invalid)
}

fn set_root(d: &mut [u8], at: usize, root: &[u8; SM_ROOT_SIZE]) -> Result<()> {
    d.get_mut(at..at + SM_ROOT_SIZE)
        .ok_or(Error::Invalid)?
        .copy_from_slice(root);
    Ok(())
}

impl SharedSuperblock {
    /// The layout it records.
    pub fn layout(&self) -> Layout {
        Layout {
            metadata_blocks: self.metadata_blocks,
            data_start: self.data_start,
            data_chunks: self.data_chunks,
        }
    }

    /// Reads a (validated) superblock; `Invalid` for an unknown version or
    /// an impossible layout.
    pub fn unpack(d: &[u8]) -> Result<Self> {
        if le32(d, off::VERSION)? != SHARED_VERSION {
            return Err(Error::Invalid);
        }
        let sb = SharedSuperblock {
            flags: le32(d, off::FLAGS)?,
            chunk_sectors: le32(d, off::CHUNK_SECTORS)?,
            metadata_blocks: le64(d, off::METADATA_BLOCKS)?,
            data_start: le64(d, off::DATA_START)?,
            data_chunks: le64(d, off::DATA_CHUNKS)?,
            members: IdMask(le64(d, off::MEMBERS)?),
            invalid_ids: IdMask(le64(d, off::INVALID_IDS)?),
            index_root: le64(d, off::INDEX_ROOT)?,
            metadata_sm_root: root_at(d, off::METADATA_SM_ROOT)?,
            data_sm_root: root_at(d, off::DATA_SM_ROOT)?,
        };
        let metadata_sectors = sb.metadata_blocks.checked_mul(BLOCK_SECTORS.into());
        let data_sectors = sb.data_start.checked_mul(sb.chunk_sectors.into());
        match (metadata_sectors, data_sectors) {
            (Some(m), Some(d))
                if sb.chunk_sectors.is_power_of_two()
                    && m <= d
                    && sb.metadata_blocks <= MAX_METADATA_BLOCKS =>
            {
                Ok(sb)
            }
            _ => Err(Error::Invalid),
        }
    }

    /// Writes the fields (the validator stamps location and checksum).
    pub fn pack(&self, d: &mut [u8]) -> Result<()> {
        set_le32(d, off::FLAGS, self.flags)?;
        set_le64(d, off::MAGIC, SHARED_MAGIC)?;
        set_le32(d, off::VERSION, SHARED_VERSION)?;
        set_le32(d, off::CHUNK_SECTORS, self.chunk_sectors)?;
        set_le64(d, off::METADATA_BLOCKS, self.metadata_blocks)?;
        set_le64(d, off::DATA_START, self.data_start)?;
        set_le64(d, off::DATA_CHUNKS, self.data_chunks)?;
        set_le64(d, off::MEMBERS, self.members.0)?;
        set_le64(d, off::INVALID_IDS, self.invalid_ids.0)?;
        set_le64(d, off::INDEX_ROOT, self.index_root)?;
        set_root(d, off::METADATA_SM_ROOT, &self.metadata_sm_root)?;
        set_root(d, off::DATA_SM_ROOT, &self.data_sm_root)
    }
}

/// True for a zeroed block 0: "format a new store".
pub fn is_blank(d: &Block) -> bool {
    d.iter().all(|&b| b == 0)
}
