// SPDX-License-Identifier: GPL-2.0

//! Cache metadata (`dm-cache-metadata.c`): superblock at block 0, the
//! metadata space map, and the dm-array/dm-bitset structures (mapping
//! array, hint array, discard bitset, and with metadata version 2 the
//! dirty bitset).
//!
//! The arrays are walked here directly from their on-disk format (a
//! one-level btree of array-block numbers, each array block holding
//! `max_entries` packed values after a 24-byte header), so the checker
//! does not depend on the engine's array implementation.

use std::format;
use std::prelude::rust_2021::*;

use super::{Report, Walker};
use crate::block_manager::{le32_at, le64_at, BlockManager, CsumValidator};
use crate::io::{Block, BlockIo, BLOCK_SECTORS, BLOCK_SIZE};
use crate::space_map::SmRoot;

/// `CACHE_SUPERBLOCK_MAGIC` (octal 06142003).
pub const CACHE_MAGIC: u64 = 1623043;
/// Superblock checksum salt.
pub const CACHE_SB_XOR: u32 = 9031977;
/// Array block checksum salt.
pub const ARRAY_CSUM_XOR: u32 = 595846735;
/// Array block header size.
pub const ARRAY_HEADER_SIZE: usize = 24;

/// Validator of the cache superblock.
pub static CACHE_SB_VALIDATOR: CsumValidator = CsumValidator {
    name: "cache_superblock",
    xor: CACHE_SB_XOR,
    blocknr_offset: 8,
};

/// Validator of dm-array blocks.
pub static ARRAY_BLOCK_VALIDATOR: CsumValidator = CsumValidator {
    name: "array_block",
    xor: ARRAY_CSUM_XOR,
    blocknr_offset: 16,
};

/// The cache superblock fields the checker uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSuperblock {
    /// `flags` (bit 0 clean shutdown, bit 1 needs check).
    pub flags: u32,
    /// `magic`.
    pub magic: u64,
    /// 1, or 2 with the dirty bitset.
    pub version: u32,
    /// Bytes per hint (0: none).
    pub policy_hint_size: u32,
    /// Metadata space map root.
    pub meta_sm_root: SmRoot,
    /// Mapping array root.
    pub mapping_root: u64,
    /// Hint array root (0: none).
    pub hint_root: u64,
    /// Discard bitset root (0: none).
    pub discard_root: u64,
    /// Discard bits.
    pub discard_nr_blocks: u64,
    /// Metadata block size in sectors (8).
    pub metadata_block_size: u32,
    /// Cache blocks (length of the mapping array).
    pub cache_blocks: u32,
    /// Incompatible feature flags (none supported).
    pub incompat_flags: u32,
    /// Dirty bitset root (version 2).
    pub dirty_root: u64,
}

impl CacheSuperblock {
    /// Decodes a superblock.
    pub fn parse(d: &Block) -> CacheSuperblock {
        CacheSuperblock {
            flags: le32_at(d, 4),
            magic: le64_at(d, 32),
            version: le32_at(d, 40),
            policy_hint_size: le32_at(d, 60),
            meta_sm_root: SmRoot {
                nr_blocks: le64_at(d, 64),
                nr_allocated: le64_at(d, 72),
                bitmap_root: le64_at(d, 80),
                ref_count_root: le64_at(d, 88),
            },
            mapping_root: le64_at(d, 192),
            hint_root: le64_at(d, 200),
            discard_root: le64_at(d, 208),
            discard_nr_blocks: le64_at(d, 224),
            metadata_block_size: le32_at(d, 236),
            cache_blocks: le32_at(d, 240),
            incompat_flags: le32_at(d, 252),
            dirty_root: le64_at(d, 284),
        }
    }
}

/// Walks the dm-array at `root` (values of `vsize` bytes; `0`: whatever
/// size its array blocks say), counting its btree nodes and array blocks;
/// calls `f(index, value)` for each entry. Returns the number of entries,
/// `None` if damaged (reported).
pub(crate) fn walk_array<IO: BlockIo>(
    w: &mut Walker<'_, IO>,
    what: &str,
    root: u64,
    vsize: usize,
    f: &mut dyn FnMut(&mut Report, u64, &[u8]),
) -> Option<u64> {
    let mut vsize = vsize;
    if vsize > BLOCK_SIZE - ARRAY_HEADER_SIZE {
        w.report
            .error(format!("{what}: impossible value size {vsize}"));
        return None;
    }
    let mut max = ((BLOCK_SIZE - ARRAY_HEADER_SIZE) / vsize.max(1)) as u64;
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    let walked = w.tree(what, root, 8, &mut |_, k, v| {
        blocks.push((k, le64_at(v, 0)))
    });
    let mut total = 0u64;
    let mut damaged = walked.is_none();
    let nr = blocks.len();
    for (i, &(k, ab)) in blocks.iter().enumerate() {
        if k != i as u64 {
            w.report.error(format!(
                "{what}: array block index {k} where {i} was expected"
            ));
            damaged = true;
        }
        if w.reference(what, ab) != Some(true) {
            // Out of range (reported) or shared: a cache array never shares.
            if ab < w.nr_meta {
                w.report
                    .error(format!("{what}: array block {ab} referenced twice"));
            }
            damaged = true;
            continue;
        }
        let Some(d) = w.read(&format!("{what}: array block"), ab, &ARRAY_BLOCK_VALIDATOR) else {
            damaged = true;
            continue;
        };
        if vsize == 0 {
            // Self-describing: take the first block's value size.
            let vs = le32_at(&d[..], 12) as usize;
            if vs == 0 || vs > BLOCK_SIZE - ARRAY_HEADER_SIZE {
                w.report
                    .error(format!("{what}: array block {ab}: value size {vs}"));
                return None;
            }
            vsize = vs;
            max = ((BLOCK_SIZE - ARRAY_HEADER_SIZE) / vs) as u64;
        }
        let (bmax, bnr, bvs) = (le32_at(&d[..], 4), le32_at(&d[..], 8), le32_at(&d[..], 12));
        if bvs as usize != vsize || u64::from(bmax) != max || bnr > bmax {
            w.report.error(format!(
                "{what}: array block {ab}: max_entries {bmax}, nr_entries {bnr}, value size {bvs} (expected {max} entries of {vsize} bytes)"
            ));
            damaged = true;
            continue;
        }
        if i + 1 < nr && u64::from(bnr) != max {
            w.report.error(format!(
                "{what}: array block {ab} ({i} of {nr}) is not full ({bnr} entries)"
            ));
        }
        for j in 0..bnr as usize {
            let o = ARRAY_HEADER_SIZE + j * vsize;
            if let Some(v) = d.get(o..o + vsize) {
                f(&mut w.report, total + j as u64, v);
            }
        }
        total += u64::from(bnr);
    }
    if damaged {
        None
    } else {
        Some(total)
    }
}

/// Checks cache metadata on `io`.
pub fn check<IO: BlockIo>(io: IO) -> Report {
    let mut report = Report::default();
    let nr_dev = io.nr_blocks();
    let mut bm = BlockManager::new(io, 64);
    bm.set_read_only();
    if nr_dev == 0 {
        report.error("metadata device: smaller than one block".into());
        return report;
    }
    let sb = match bm.read_lock(0, Some(&CACHE_SB_VALIDATOR)) {
        Ok(d) => CacheSuperblock::parse(&d),
        Err(e) => {
            report.error(format!("superblock: block 0: {e}"));
            return report;
        }
    };
    if sb.magic != CACHE_MAGIC {
        report.error(format!(
            "superblock: bad magic {} (cache is {CACHE_MAGIC})",
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
    if sb.incompat_flags != 0 {
        report.error(format!(
            "superblock: unsupported incompat flags {:#x}",
            sb.incompat_flags
        ));
    }
    let root = sb.meta_sm_root;
    if root.nr_blocks > nr_dev {
        report.error(format!(
            "metadata space map: {} blocks but the device has {nr_dev}",
            root.nr_blocks
        ));
    }
    let mut w = match Walker::new(&bm, root.nr_blocks.min(nr_dev), report) {
        Ok(w) => w,
        Err(report) => return report,
    };
    w.reference("superblock", 0);
    let meta_sm = w.metadata_sm(root);

    let cache_blocks = u64::from(sb.cache_blocks);
    let mut valid = 0u64;
    // M_VALID, and M_DIRTY only in version 1 (version 2 keeps dirtiness in
    // the dirty bitset), as cache_check requires.
    let allowed = if sb.version >= 2 { 1 } else { 3 };
    let n = walk_array(
        &mut w,
        "mapping array",
        sb.mapping_root,
        8,
        &mut |r, i, v| {
            let v = le64_at(v, 0);
            let flags = v & 0xffff;
            if flags & !allowed != 0 {
                r.error(format!(
                    "mapping array: cache block {i}: unknown flags {flags:#x}"
                ));
            }
            if flags & 1 != 0 {
                valid += 1;
            }
        },
    );
    if let Some(n) = n {
        if n != cache_blocks {
            w.report.error(format!(
                "mapping array: {n} entries for {cache_blocks} cache blocks"
            ));
        }
    }
    w.report
        .notes
        .push(format!("{valid} of {cache_blocks} cache blocks mapped"));
    if sb.hint_root != 0 {
        // Upstream's seed and cache_restore leave policy_hint_size at 0
        // while writing a hint array (the kernel then ignores the hints);
        // its blocks still hold references, so walk it with the value size
        // its blocks record.
        let n = walk_array(
            &mut w,
            "hint array",
            sb.hint_root,
            sb.policy_hint_size as usize,
            &mut |_, _, _| {},
        );
        if let Some(n) = n {
            if n != cache_blocks {
                w.report.error(format!(
                    "hint array: {n} entries for {cache_blocks} cache blocks"
                ));
            }
        }
    }
    for (what, root, bits) in [
        ("discard bitset", sb.discard_root, sb.discard_nr_blocks),
        (
            "dirty bitset",
            if sb.version >= 2 { sb.dirty_root } else { 0 },
            cache_blocks,
        ),
    ] {
        if root == 0 {
            continue;
        }
        if let Some(n) = walk_array(&mut w, what, root, 8, &mut |_, _, _| {}) {
            let want = bits.div_ceil(64);
            if n != want {
                w.report.error(format!(
                    "{what}: {n} words for {bits} bits (expected {want})"
                ));
            }
        }
    }
    w.compare_meta(&meta_sm);
    w.report
}
