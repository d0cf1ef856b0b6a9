// SPDX-License-Identifier: GPL-2.0

//! thin-pool's table line:
//! `<metadata dev> <data dev> <data block size> <low water mark>
//! [<#feature args> [<arg>]*]`, parsed with upstream's checks and error
//! texts, and written back the way upstream's table status writes it.

use super::metadata::superblock::valid_data_block_size;
use super::number::{is_keyword, kstrtoull, scan_u32};
use super::status::{EmitDevice, StatusSink};

/// At most this many feature words.
pub const MAX_FEATURE_ARGS: usize = 4;

/// The optional features of a thin-pool table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolFeatures {
    /// Zero the rest of a newly provisioned block (off: `skip_block_zeroing`).
    pub zero_new_blocks: bool,
    /// Process discards at all (off: `ignore_discard`).
    pub discard_enabled: bool,
    /// Pass discards down to the data device (off: `no_discard_passdown`).
    pub discard_passdown: bool,
    /// Open the metadata read-only (`read_only`).
    pub read_only: bool,
    /// Fail I/O at once when out of data space (`error_if_no_space`).
    pub error_if_no_space: bool,
}

impl Default for PoolFeatures {
    fn default() -> Self {
        Self {
            zero_new_blocks: true,
            discard_enabled: true,
            discard_passdown: true,
            read_only: false,
            error_if_no_space: false,
        }
    }
}

impl PoolFeatures {
    /// The feature words a table line needs, in upstream's order.
    fn words(&self) -> [(bool, &'static str); 5] {
        [
            (!self.zero_new_blocks, "skip_block_zeroing"),
            (!self.discard_enabled, "ignore_discard"),
            (!self.discard_passdown, "no_discard_passdown"),
            (self.read_only, "read_only"),
            (self.error_if_no_space, "error_if_no_space"),
        ]
    }

    /// Writes `<count> <word> <word> ... ` with a space after each token,
    /// as upstream's table status does (`0 ` for the defaults).
    pub fn emit(&self, out: &mut dyn StatusSink) {
        let words = self.words();
        let count = words.iter().filter(|(on, _)| *on).count();
        out.put_u64(count as u64);
        out.put(b" ");
        for (_, word) in words.iter().filter(|(on, _)| *on) {
            out.put(word.as_bytes());
            out.put(b" ");
        }
    }

    /// Applies one feature word (case-insensitive); false if unknown.
    fn apply(&mut self, word: &[u8]) -> bool {
        if is_keyword(word, "skip_block_zeroing") {
            self.zero_new_blocks = false;
        } else if is_keyword(word, "ignore_discard") {
            self.discard_enabled = false;
        } else if is_keyword(word, "no_discard_passdown") {
            self.discard_passdown = false;
        } else if is_keyword(word, "read_only") {
            self.read_only = true;
        } else if is_keyword(word, "error_if_no_space") {
            self.error_if_no_space = true;
        } else {
            return false;
        }
        true
    }
}

/// Why a thin-pool table line was refused; [`Self::text`] is upstream's
/// `ti->error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolCtrError {
    /// Fewer than four arguments.
    ArgCount,
    /// The metadata and data device words are the same string.
    SameDevice,
    /// The feature count is not a number in 0..=4 or exceeds the words left.
    FeatureCount,
    /// A feature word is not one of the five.
    UnknownFeature,
    /// The block size is not a multiple of 128 sectors in 128..=2097152.
    BlockSize,
    /// The low water mark is not a 64-bit decimal number.
    LowWater,
    // The rest are found by the caller (opening devices, finding or
    // creating the pool); here for their texts. Upstream's errno is
    // `-EINVAL` unless noted.
    /// Opening the metadata device failed (its errno).
    OpenMetadata,
    /// Opening the data device failed (its errno).
    OpenData,
    /// The metadata device belongs to another pool device (`-EBUSY`).
    MetadataInUse,
    /// The pool's metadata device is used with another data device (`-EBUSY`).
    DataInUse,
    /// This pool device already has a pool on other devices.
    DifferentPool,
    /// A reload changes `ignore_discard` ([`check_reload_discard`]).
    DiscardChanged,
    /// Opening or formatting the metadata failed (its errno).
    MetadataOpen,
    /// Allocating the pool failed (`-ENOMEM`).
    PoolAlloc,
    /// Creating the cell lock failed (`-ENOMEM`).
    Prison,
    /// Creating the copier failed (its errno).
    Kcopyd,
    /// Creating the workqueue failed (`-ENOMEM`).
    Workqueue,
    /// Creating the shared-read deferred set failed (`-ENOMEM`).
    SharedReadSet,
    /// Creating the all-I/O deferred set failed (`-ENOMEM`).
    AllIoSet,
    /// Creating the mapping pool failed (its errno).
    MappingPool,
    /// Allocating the cell sort array failed (`-ENOMEM`).
    CellSortArray,
    /// Registering the metadata low-water callback failed (its errno).
    Threshold,
}

impl PoolCtrError {
    /// The error text, NUL-terminated for `ti->error`.
    pub fn text_with_nul(self) -> &'static [u8] {
        match self {
            Self::ArgCount => b"Invalid argument count\0",
            Self::SameDevice => b"Error setting metadata or data device\0",
            Self::FeatureCount => b"Invalid number of pool feature arguments\0",
            Self::UnknownFeature => b"Unrecognised pool feature requested\0",
            Self::BlockSize => b"Invalid block size\0",
            Self::LowWater => b"Invalid low water mark\0",
            Self::OpenMetadata => b"Error opening metadata block device\0",
            Self::OpenData => b"Error getting data device\0",
            Self::MetadataInUse => b"metadata device already in use by a pool\0",
            Self::DataInUse => b"data device already in use by a pool\0",
            Self::DifferentPool => b"different pool cannot replace a pool\0",
            Self::DiscardChanged => b"Discard support cannot be disabled once enabled\0",
            Self::MetadataOpen => b"Error creating metadata object\0",
            Self::PoolAlloc => b"Error allocating memory for pool\0",
            Self::Prison => b"Error creating pool's bio prison\0",
            Self::Kcopyd => b"Error creating pool's kcopyd client\0",
            Self::Workqueue => b"Error creating pool's workqueue\0",
            Self::SharedReadSet => b"Error creating pool's shared read deferred set\0",
            Self::AllIoSet => b"Error creating pool's all io deferred set\0",
            Self::MappingPool => b"Error creating pool's mapping mempool\0",
            Self::CellSortArray => b"Error allocating cell sort array\0",
            Self::Threshold => b"Error registering metadata threshold\0",
        }
    }

    /// The error text.
    pub fn text(self) -> &'static [u8] {
        let t = self.text_with_nul();
        t.strip_suffix(b"\0").unwrap_or(t)
    }

    /// Whether upstream finds this only after opening both devices: the
    /// caller must then try to open them first and report a failure to open
    /// ([`Self::OpenMetadata`], [`Self::OpenData`]) instead of this error.
    pub fn found_after_open(self) -> bool {
        matches!(self, Self::BlockSize | Self::LowWater)
    }
}

/// A parsed thin-pool table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolTable<'a> {
    /// The metadata device word.
    pub metadata_dev: &'a [u8],
    /// The data device word.
    pub data_dev: &'a [u8],
    /// Data block size in sectors.
    pub data_block_size: u32,
    /// Free data blocks at which a dm event is raised.
    pub low_water_blocks: u64,
    /// The optional features.
    pub features: PoolFeatures,
}

impl<'a> PoolTable<'a> {
    /// Parses the words of a thin-pool table line (after the target name).
    /// Words after the feature group are ignored, as upstream does.
    pub fn parse<I>(args: I) -> Result<Self, PoolCtrError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut args = args.into_iter();
        let (Some(metadata_dev), Some(data_dev), Some(block_size), Some(low_water)) =
            (args.next(), args.next(), args.next(), args.next())
        else {
            return Err(PoolCtrError::ArgCount);
        };
        if metadata_dev == data_dev {
            return Err(PoolCtrError::SameDevice);
        }
        let features = parse_features(args)?;
        let data_block_size = kstrtoull(block_size)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| valid_data_block_size(n))
            .ok_or(PoolCtrError::BlockSize)?;
        let low_water_blocks = kstrtoull(low_water).ok_or(PoolCtrError::LowWater)?;
        Ok(Self {
            metadata_dev,
            data_dev,
            data_block_size,
            low_water_blocks,
            features,
        })
    }

    /// Writes the table line with the devices as loaded.
    pub fn emit(&self, out: &mut dyn StatusSink) {
        emit_pool_table(
            out,
            &self.metadata_dev,
            &self.data_dev,
            self.data_block_size,
            self.low_water_blocks,
            &self.features,
        );
    }
}

/// A reload (a table for a pool that already exists) may not turn
/// discards on or off: `current_discard_enabled` is the pool's setting now.
pub fn check_reload_discard(
    new: &PoolFeatures,
    current_discard_enabled: bool,
) -> Result<(), PoolCtrError> {
    if new.discard_enabled == current_discard_enabled {
        Ok(())
    } else {
        Err(PoolCtrError::DiscardChanged)
    }
}

/// Reads `[<#feature args> [<arg>]*]`.
fn parse_features<'a>(
    mut args: impl Iterator<Item = &'a [u8]>,
) -> Result<PoolFeatures, PoolCtrError> {
    let mut features = PoolFeatures::default();
    let Some(count_word) = args.next() else {
        return Ok(features);
    };
    let count = scan_u32(count_word)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= MAX_FEATURE_ARGS)
        .ok_or(PoolCtrError::FeatureCount)?;
    // The count is checked against the words left before any is read.
    let mut group: [&[u8]; MAX_FEATURE_ARGS] = [&[]; MAX_FEATURE_ARGS];
    for slot in group.iter_mut().take(count) {
        *slot = args.next().ok_or(PoolCtrError::FeatureCount)?;
    }
    for word in group.iter().take(count) {
        if !features.apply(word) {
            return Err(PoolCtrError::UnknownFeature);
        }
    }
    Ok(features)
}

/// Writes a thin-pool table line as upstream's table status does:
/// `<metadata> <data> <block size> <low water> <#features> <features>`,
/// every token followed by a space.
pub fn emit_pool_table(
    out: &mut dyn StatusSink,
    metadata_dev: &dyn EmitDevice,
    data_dev: &dyn EmitDevice,
    data_block_size: u32,
    low_water_blocks: u64,
    features: &PoolFeatures,
) {
    metadata_dev.emit_device(out);
    out.put(b" ");
    data_dev.emit_device(out);
    out.put(b" ");
    out.put_u64(u64::from(data_block_size));
    out.put(b" ");
    out.put_u64(low_water_blocks);
    out.put(b" ");
    features.emit(out);
}
