// SPDX-License-Identifier: GPL-2.0

//! Thin-pool metadata (`dm-thin-metadata.c`): superblock at block 0, the
//! device-details btree (dev -> 24-byte details), the two-level mapping
//! btree (dev -> vblock -> `data_block << 24 | time`), the data space map
//! (a disk space map) and the metadata space map; optionally a metadata
//! snapshot (a superblock copy at `held_root`).

use std::collections::BTreeMap;
use std::format;
use std::prelude::rust_2021::*;

use super::{Report, Walker};
use crate::block_manager::{le32_at, le64_at, BlockManager, CsumValidator};
use crate::check::RefCounts;
use crate::io::{Block, BlockIo, BLOCK_SECTORS};
use crate::space_map::common::ENTRIES_PER_BLOCK;
use crate::space_map::SmRoot;

/// `THIN_SUPERBLOCK_MAGIC`.
pub const THIN_MAGIC: u64 = 27022010;
/// Superblock checksum salt.
pub const THIN_SB_XOR: u32 = 160774;
/// `THIN_METADATA_NEEDS_CHECK_FLAG`.
pub const NEEDS_CHECK: u32 = 1;

/// Validator of the thin superblock (and of metadata snapshot copies).
pub static THIN_SB_VALIDATOR: CsumValidator = CsumValidator {
    name: "thin_superblock",
    xor: THIN_SB_XOR,
    blocknr_offset: 8,
};

/// Superblock offsets (digest §3.2).
pub mod off {
    /// `flags` (u32).
    pub const FLAGS: usize = 4;
    /// `magic` (u64).
    pub const MAGIC: usize = 32;
    /// `version` (u32).
    pub const VERSION: usize = 40;
    /// `time` (u32).
    pub const TIME: usize = 44;
    /// `trans_id` (u64).
    pub const TRANS_ID: usize = 48;
    /// `held_root` (u64).
    pub const HELD_ROOT: usize = 56;
    /// `data_space_map_root` (128 bytes).
    pub const DATA_SM: usize = 64;
    /// `metadata_space_map_root` (128 bytes).
    pub const META_SM: usize = 192;
    /// `data_mapping_root` (u64).
    pub const MAPPING_ROOT: usize = 320;
    /// `device_details_root` (u64).
    pub const DETAILS_ROOT: usize = 328;
    /// `data_block_size` (u32, sectors).
    pub const DATA_BLOCK_SIZE: usize = 336;
    /// `metadata_block_size` (u32, sectors).
    pub const META_BLOCK_SIZE: usize = 340;
    /// `metadata_nr_blocks` (u64).
    pub const META_NR_BLOCKS: usize = 344;
    /// `incompat_flags` (u32).
    pub const INCOMPAT: usize = 360;
}

/// The thin superblock fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThinSuperblock {
    /// `flags`.
    pub flags: u32,
    /// `magic`.
    pub magic: u64,
    /// `version`.
    pub version: u32,
    /// Snapshot epoch.
    pub time: u32,
    /// Userspace transaction id.
    pub trans_id: u64,
    /// Metadata snapshot superblock copy (0 = none).
    pub held_root: u64,
    /// Data space map root.
    pub data_sm_root: SmRoot,
    /// Metadata space map root (empty in a metadata snapshot copy).
    pub meta_sm_root: SmRoot,
    /// The raw 32 bytes of the metadata space map root.
    pub meta_sm_raw: [u8; 32],
    /// Two-level mapping tree.
    pub mapping_root: u64,
    /// Device details tree.
    pub details_root: u64,
    /// Data block size in sectors.
    pub data_block_size: u32,
    /// Metadata block size in sectors (8).
    pub metadata_block_size: u32,
    /// Metadata blocks at format time.
    pub metadata_nr_blocks: u64,
    /// Incompatible feature flags (none supported).
    pub incompat_flags: u32,
}

fn sm_root_at(d: &[u8], o: usize) -> SmRoot {
    SmRoot {
        nr_blocks: le64_at(d, o),
        nr_allocated: le64_at(d, o + 8),
        bitmap_root: le64_at(d, o + 16),
        ref_count_root: le64_at(d, o + 24),
    }
}

impl ThinSuperblock {
    /// Decodes a superblock (no validation beyond field extraction).
    pub fn parse(d: &Block) -> ThinSuperblock {
        let mut raw = [0u8; 32];
        if let Some(s) = d.get(off::META_SM..off::META_SM + 32) {
            raw.copy_from_slice(s);
        }
        ThinSuperblock {
            flags: le32_at(d, off::FLAGS),
            magic: le64_at(d, off::MAGIC),
            version: le32_at(d, off::VERSION),
            time: le32_at(d, off::TIME),
            trans_id: le64_at(d, off::TRANS_ID),
            held_root: le64_at(d, off::HELD_ROOT),
            data_sm_root: sm_root_at(d, off::DATA_SM),
            meta_sm_root: sm_root_at(d, off::META_SM),
            meta_sm_raw: raw,
            mapping_root: le64_at(d, off::MAPPING_ROOT),
            details_root: le64_at(d, off::DETAILS_ROOT),
            data_block_size: le32_at(d, off::DATA_BLOCK_SIZE),
            metadata_block_size: le32_at(d, off::META_BLOCK_SIZE),
            metadata_nr_blocks: le64_at(d, off::META_NR_BLOCKS),
            incompat_flags: le32_at(d, off::INCOMPAT),
        }
    }

    /// Reads and validates block 0 of `bm`.
    pub fn read<IO: BlockIo>(bm: &BlockManager<IO>) -> crate::Result<ThinSuperblock> {
        let d = bm.read_lock(0, Some(&THIN_SB_VALIDATOR))?;
        Ok(ThinSuperblock::parse(&d))
    }
}

// The thin value types (device details, block+time mapping values) are
// the thin metadata layer's own files, so there is one copy of them. Their
// unit tests unwrap, as that layer's lints allow in tests.
#[cfg_attr(test, allow(clippy::unwrap_used))]
#[path = "../../../targets/thin/metadata/device_details.rs"]
pub mod device_details;
#[cfg_attr(test, allow(clippy::unwrap_used))]
#[path = "../../../targets/thin/metadata/mapping.rs"]
pub mod mapping;

pub use device_details::{DeviceDetails, DETAILS_SIZE};
pub use mapping::{pack_block_time, unpack_block_time, BlockTime, DevTrees};

/// A thin check's report and, if the walk got that far, the recounted
/// references (what each block's count should be).
pub struct ThinCheck {
    /// Problems found.
    pub report: Report,
    /// Expected metadata block counts.
    pub meta: Option<RefCounts>,
    /// Expected data block counts.
    pub data: Option<RefCounts>,
}

/// Checks thin metadata on `io`.
pub fn check<IO: BlockIo>(io: IO) -> Report {
    check_full(io).report
}

/// Checks thin metadata on `io`, also returning the recount.
pub fn check_full<IO: BlockIo>(io: IO) -> ThinCheck {
    let mut counts = None;
    let report = inner(io, &mut counts);
    let (meta, data) = match counts {
        Some((m, d)) => (Some(m), Some(d)),
        None => (None, None),
    };
    ThinCheck { report, meta, data }
}

fn inner<IO: BlockIo>(io: IO, counts: &mut Option<(RefCounts, RefCounts)>) -> Report {
    let mut report = Report::default();
    let nr_dev = io.nr_blocks();
    let mut bm = BlockManager::new(io, 64);
    bm.set_read_only();
    if nr_dev == 0 {
        report.error("metadata device: smaller than one block".into());
        return report;
    }
    let sb = match ThinSuperblock::read(&bm) {
        Ok(sb) => sb,
        Err(e) => {
            report.error(format!("superblock: block 0: {e}"));
            return report;
        }
    };
    if sb.magic != THIN_MAGIC {
        report.error(format!(
            "superblock: bad magic {} (thin is {THIN_MAGIC})",
            sb.magic
        ));
        return report;
    }
    if !(1..=2).contains(&sb.version) {
        report.error(format!("superblock: unknown version {}", sb.version));
    }
    if sb.metadata_block_size != BLOCK_SECTORS {
        report.error(format!(
            "superblock: metadata block size {} sectors (must be {BLOCK_SECTORS})",
            sb.metadata_block_size
        ));
    }
    if sb.data_block_size == 0 || sb.data_block_size % 128 != 0 {
        report.error(format!(
            "superblock: data block size {} sectors is not a multiple of 64 KiB",
            sb.data_block_size
        ));
    }
    if sb.incompat_flags != 0 {
        report.error(format!(
            "superblock: unsupported incompat flags {:#x}",
            sb.incompat_flags
        ));
    }
    if sb.flags & NEEDS_CHECK != 0 {
        report
            .notes
            .push("superblock: needs_check flag is set".into());
    }
    let meta_root = sb.meta_sm_root;
    if meta_root.nr_blocks > nr_dev {
        report.error(format!(
            "metadata space map: {} blocks but the device has {nr_dev}",
            meta_root.nr_blocks
        ));
    }
    if meta_root.nr_allocated > meta_root.nr_blocks {
        report.error(format!(
            "metadata space map: {} allocated of {} blocks",
            meta_root.nr_allocated, meta_root.nr_blocks
        ));
    }
    let nr_meta = meta_root.nr_blocks.min(nr_dev);
    let mut w = match Walker::new(&bm, nr_meta, report) {
        Ok(w) => w,
        Err(report) => return report,
    };
    // The superblock itself.
    w.reference("superblock", 0);

    let meta_sm = w.metadata_sm(meta_root);
    let data_sm = w.disk_sm("data", sb.data_sm_root);
    // Recount data references over the bitmaps that exist (a bogus huge
    // nr_blocks is reported by disk_sm and must not be allocated).
    let nr_data = sb
        .data_sm_root
        .nr_blocks
        .min(data_sm.index.len() as u64 * ENTRIES_PER_BLOCK);
    let mut data = match RefCounts::new(nr_data) {
        Ok(d) => d,
        Err(e) => {
            w.report.error(format!(
                "data space map: cannot recount {nr_data} blocks: {e}"
            ));
            return w.report;
        }
    };

    // The live trees, then the metadata snapshot's.
    let devs = walk_roots(
        &mut w,
        &mut data,
        "",
        sb.mapping_root,
        sb.details_root,
        sb.data_sm_root.nr_blocks,
    );
    if let Some(devs) = devs {
        w.report.notes.push(format!("{} thin devices", devs.len()));
    }
    let held = if sb.held_root != 0 && w.reference("metadata snapshot", sb.held_root) == Some(true)
    {
        w.read(
            "metadata snapshot superblock",
            sb.held_root,
            &THIN_SB_VALIDATOR,
        )
    } else {
        None
    };
    if let Some(d) = held {
        let held = ThinSuperblock::parse(&d);
        if held.magic != THIN_MAGIC {
            w.report.error(format!(
                "metadata snapshot: superblock copy at block {} has bad magic {}",
                sb.held_root, held.magic
            ));
        } else {
            walk_roots(
                &mut w,
                &mut data,
                "metadata snapshot: ",
                held.mapping_root,
                held.details_root,
                sb.data_sm_root.nr_blocks,
            );
        }
    }

    w.compare_meta(&meta_sm);
    w.compare(&data_sm, &data);
    let Walker { meta, report, .. } = w;
    *counts = Some((meta, data));
    report
}

/// Walks one pair of (mapping, details) roots; returns the device ids of
/// the details tree if it could be read.
fn walk_roots<IO: BlockIo>(
    w: &mut Walker<'_, IO>,
    data: &mut RefCounts,
    prefix: &str,
    mapping_root: u64,
    details_root: u64,
    nr_data: u64,
) -> Option<BTreeMap<u64, DeviceDetails>> {
    let mut details: BTreeMap<u64, DeviceDetails> = BTreeMap::new();
    let d_ok = w.tree(
        &format!("{prefix}device details"),
        details_root,
        24,
        &mut |_, dev, v| {
            details.insert(dev, DeviceDetails::unpack(v).unwrap_or_default());
        },
    );
    let mut mapped: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    let top = format!("{prefix}mapping tree");
    let m_ok = w.tree(&top, mapping_root, 8, &mut |w, dev, v| {
        let root = le64_at(v, 0);
        let what = format!("{prefix}device {dev} mappings");
        let n = w.tree(&what, root, 8, &mut |w, vb, v| {
            let (b, _t) = unpack_block_time(le64_at(v, 0));
            if b >= nr_data {
                w.report.error(format!(
                    "{what}: block {vb} maps to data block {b} beyond the data device ({nr_data} blocks)"
                ));
            } else if let Err(e) = data.inc(b) {
                w.report
                    .error(format!("{what}: data block {b}: cannot count: {e}"));
            }
        });
        mapped.insert(dev, n);
    });
    // Cross-check the live roots only: nodes the metadata snapshot shares
    // with them were walked (and counted) already and are skipped.
    if prefix.is_empty() && d_ok.is_some() && m_ok.is_some() {
        for (dev, n) in &mapped {
            match details.get(dev) {
                None => w
                    .report
                    .error(format!("{prefix}device {dev}: mappings but no details")),
                Some(d) => {
                    if let Some(n) = n {
                        if *n != d.mapped_blocks {
                            w.report.error(format!(
                                "{prefix}device {dev}: details say {} mapped blocks, tree has {n}",
                                d.mapped_blocks
                            ));
                        }
                    }
                }
            }
        }
        for dev in details.keys() {
            if !mapped.contains_key(dev) {
                w.report
                    .error(format!("device {dev}: details but no mapping tree"));
            }
        }
    }
    d_ok.map(|_| details)
}
