// SPDX-License-Identifier: GPL-2.0

//! Host-only metadata checkers, shared by the `pdata-check` binary, the
//! golden tests and the fuzz targets (not part of the kernel build: the
//! host crate root `lib.rs` includes this module, `mod.rs` does not); and
//! [`thin_writer`], which writes thin metadata through the engine for the
//! checkers (and `thin_check`, and the C dm-thin) to judge.
//!
//! A check walks every structure reachable from the superblock, verifying
//! each block's location and checksum and each btree node's shape (value
//! size, key order, keys inside the parent's range, every node but a root
//! at least a third full), recounts the references every metadata and
//! data block should have, and compares the recount with the space maps
//! block by block. It never stops at the first
//! problem: a damaged subtree is reported once and skipped, and the rest is
//! still checked. Every problem is one [`Problem`] (one output line).
//!
//! Like the engine, this code never panics on disk contents (the fuzz
//! targets run it on damaged images).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable
)]

use std::collections::{BTreeMap, HashMap};
use std::prelude::rust_2021::*;
use std::{format, vec};

use crate::block_manager::{le32_at, le64_at, BlockManager, ValidatorRef};
use crate::btree::node::{self, BTREE_NODE_VALIDATOR};
use crate::btree::MAX_DEPTH;
use crate::check::RefCounts;
use crate::io::{Block, BlockIo};
use crate::space_map::common::{
    bitmap_lookup, IndexEntry, BITMAP_VALIDATOR, ENTRIES_PER_BLOCK, INDEX_ENTRY_SIZE,
    INDEX_VALIDATOR, MAX_METADATA_BITMAPS,
};
use crate::space_map::SmRoot;

pub mod cache;
pub mod thin;
pub mod thin_history;
pub mod thin_writer;

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Damage: a structure cannot be read, or a count is too low (the
    /// block could be handed out again while still in use).
    Error,
    /// A block whose count is higher than its references: space that is
    /// never given back, but no data at risk.
    Leak,
}

/// One problem found (one line of `pdata-check` output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Error or leak.
    pub severity: Severity,
    /// What and where, without a trailing newline.
    pub msg: String,
}

/// The outcome of a check.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Problems, in the order they were found.
    pub problems: Vec<Problem>,
    /// Informational lines (not problems).
    pub notes: Vec<String>,
}

impl Report {
    /// Records damage.
    pub fn error(&mut self, msg: String) {
        self.problems.push(Problem {
            severity: Severity::Error,
            msg,
        });
    }

    /// Records a leak.
    pub fn leak(&mut self, msg: String) {
        self.problems.push(Problem {
            severity: Severity::Leak,
            msg,
        });
    }

    /// True if nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }

    /// Number of leaks.
    pub fn leaks(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Leak)
            .count()
    }

    /// True if some problem's message contains `s`.
    pub fn mentions(&self, s: &str) -> bool {
        self.problems.iter().any(|p| p.msg.contains(s))
    }
}

/// Which metadata format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// dm-thin-pool.
    Thin,
    /// dm-cache.
    Cache,
}

/// Guesses the format from the superblock magic (thin if neither).
pub fn detect(d: &Block) -> Format {
    if le64_at(d, 32) == cache::CACHE_MAGIC {
        Format::Cache
    } else {
        Format::Thin
    }
}

/// Checks the metadata on `io` (block 0 is the superblock).
pub fn check<IO: BlockIo>(io: IO, format: Option<Format>) -> Report {
    let format = match format {
        Some(f) => f,
        None => match io.read(0, None) {
            Ok(b) => detect(&b),
            Err(_) => Format::Thin,
        },
    };
    match format {
        Format::Thin => thin::check(io),
        Format::Cache => cache::check(io),
    }
}

/// A space map's structures as found on disk.
pub(crate) struct SmFound {
    /// "metadata" or "data".
    pub name: &'static str,
    /// The root from the superblock.
    pub root: SmRoot,
    /// Index entry per bitmap (`None`: missing or unreadable).
    pub index: Vec<Option<IndexEntry>>,
    /// The ref-count btree (counts above two).
    pub overflow: BTreeMap<u64, u32>,
    /// The ref-count tree could not be read entirely.
    pub overflow_damaged: bool,
}

/// The walk state: a block reader, the metadata recount, the report.
pub(crate) struct Walker<'a, IO: BlockIo> {
    pub bm: &'a BlockManager<IO>,
    /// Blocks the metadata space map covers (recount range).
    pub nr_meta: u64,
    /// Expected metadata reference counts.
    pub meta: RefCounts,
    /// Entries below each btree node visited (`None`: damaged).
    memo: HashMap<u64, Option<u64>>,
    pub report: Report,
}

type LeafFn<'f, 'a, IO> = dyn FnMut(&mut Walker<'a, IO>, u64, &[u8]) + 'f;

fn validator_name(v: ValidatorRef) -> &'static str {
    v.name()
}

impl<'a, IO: BlockIo> Walker<'a, IO> {
    /// A walker recounting `nr_meta` metadata blocks; gives the report
    /// back (with the failure recorded) if the recount cannot be allocated.
    pub fn new(
        bm: &'a BlockManager<IO>,
        nr_meta: u64,
        report: Report,
    ) -> core::result::Result<Self, Report> {
        let mut report = report;
        let meta = match RefCounts::new(nr_meta) {
            Ok(m) => m,
            Err(e) => {
                report.error(format!(
                    "metadata space map: cannot recount {nr_meta} blocks: {e}"
                ));
                return Err(report);
            }
        };
        Ok(Walker {
            bm,
            nr_meta,
            meta,
            memo: HashMap::new(),
            report,
        })
    }

    /// Counts one reference to metadata block `b`; true on the first.
    /// `None` (reported) if `b` is outside the metadata space map.
    pub fn reference(&mut self, what: &str, b: u64) -> Option<bool> {
        if b >= self.nr_meta {
            self.report.error(format!(
                "{what}: block {b} is beyond the metadata space map ({} blocks)",
                self.nr_meta
            ));
            return None;
        }
        match self.meta.inc(b) {
            Ok(first) => Some(first),
            Err(e) => {
                self.report
                    .error(format!("{what}: block {b}: cannot count reference: {e}"));
                None
            }
        }
    }

    /// Reads `b` with `v`, reporting failure.
    pub fn read(&mut self, what: &str, b: u64, v: ValidatorRef) -> Option<Box<Block>> {
        read_block(self.bm, &mut self.report, what, b, v)
    }

    /// Walks the single-level btree at `root` whose leaves hold `vsize`
    /// byte values, counting a reference to every node (subtrees already
    /// seen are counted, not walked again). `leaf` gets every entry of
    /// every leaf walked. Returns the number of entries below `root`, or
    /// `None` if part of the tree is damaged (reported).
    pub fn tree(
        &mut self,
        what: &str,
        root: u64,
        vsize: usize,
        leaf: &mut LeafFn<'_, 'a, IO>,
    ) -> Option<u64> {
        self.node(what, root, vsize, 0, None, 0, leaf)
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &mut self,
        what: &str,
        b: u64,
        vsize: usize,
        lo: u64,
        hi: Option<u64>,
        depth: usize,
        leaf: &mut LeafFn<'_, 'a, IO>,
    ) -> Option<u64> {
        if depth > MAX_DEPTH {
            self.report
                .error(format!("{what}: btree deeper than {MAX_DEPTH} at node {b}"));
            return None;
        }
        if !self.reference(what, b)? {
            // Shared (or a cycle, caught by the depth limit otherwise).
            return self.memo.get(&b).copied().unwrap_or(None);
        }
        // Until finished, a revisit sees "damaged" (also stops cycles).
        self.memo.insert(b, None);
        let d = self.read(&format!("{what}: btree node"), b, &BTREE_NODE_VALIDATOR)?;
        let h = match node::header(&d[..]) {
            Ok(h) => h,
            Err(e) => {
                self.report
                    .error(format!("{what}: btree node {b}: bad header: {e}"));
                return None;
            }
        };
        let want = if h.is_internal() { 8 } else { vsize };
        if h.value_size as usize != want {
            self.report.error(format!(
                "{what}: btree node {b}: value size {} (expected {want})",
                h.value_size
            ));
            return None;
        }
        if h.is_internal() && h.is_leaf() {
            self.report
                .error(format!("{what}: btree node {b}: both internal and leaf"));
            return None;
        }
        let n = h.nr_entries as usize;
        if h.is_internal() && n == 0 {
            self.report.error(format!(
                "{what}: btree node {b}: internal node with no entries"
            ));
            return None;
        }
        // Upstream's remove rebalances so that every node but a root
        // keeps at least a third of its capacity (thin_check enforces it).
        if depth > 0 && h.nr_entries < h.max_entries / 3 {
            self.report.error(format!(
                "{what}: btree node {b}: {} entries, under a third of its {} (only a root may be)",
                h.nr_entries, h.max_entries
            ));
        }
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            match node::key(&d[..], i) {
                Ok(k) => keys.push(k),
                Err(e) => {
                    self.report
                        .error(format!("{what}: btree node {b}: key {i}: {e}"));
                    return None;
                }
            }
        }
        let mut prev: Option<u64> = None;
        for &k in &keys {
            if prev.is_some_and(|p| k <= p) {
                self.report
                    .error(format!("{what}: btree node {b}: keys out of order"));
                return None;
            }
            if k < lo || hi.is_some_and(|h| k >= h) {
                self.report.error(format!(
                    "{what}: btree node {b}: key {k} outside its parent's range"
                ));
                return None;
            }
            prev = Some(k);
        }
        let mut total: Option<u64> = Some(0);
        for (i, &k) in keys.iter().enumerate() {
            let v = match node::value(&d[..], i) {
                Ok(v) => v,
                Err(e) => {
                    self.report
                        .error(format!("{what}: btree node {b}: value {i}: {e}"));
                    return None;
                }
            };
            if h.is_internal() {
                let child = le64_at(v, 0);
                let chi = keys.get(i + 1).copied().or(hi);
                let c = self.node(what, child, vsize, k, chi, depth + 1, leaf);
                total = match (total, c) {
                    (Some(t), Some(c)) => t.checked_add(c),
                    _ => None,
                };
            } else {
                leaf(self, k, v);
            }
        }
        if h.is_leaf() {
            total = Some(n as u64);
        }
        self.memo.insert(b, total);
        total
    }

    /// Reads the metadata space map's index block and counts its blocks
    /// (index block, bitmaps, ref-count tree).
    pub fn metadata_sm(&mut self, root: SmRoot) -> SmFound {
        let mut f = SmFound {
            name: "metadata",
            root,
            index: Vec::new(),
            overflow: BTreeMap::new(),
            overflow_damaged: false,
        };
        let what = "metadata space map";
        let nr_bitmaps = root.nr_blocks.div_ceil(ENTRIES_PER_BLOCK);
        if nr_bitmaps > MAX_METADATA_BITMAPS as u64 {
            self.report.error(format!(
                "{what}: {} blocks need {nr_bitmaps} bitmaps (at most {MAX_METADATA_BITMAPS})",
                root.nr_blocks
            ));
        }
        let nr_bitmaps = nr_bitmaps.min(MAX_METADATA_BITMAPS as u64) as usize;
        let index = match self.reference(&format!("{what} index"), root.bitmap_root) {
            Some(_) => self.read(&format!("{what} index"), root.bitmap_root, &INDEX_VALIDATOR),
            None => None,
        };
        f.index = vec![None; nr_bitmaps];
        if let Some(d) = index {
            for (i, slot) in f.index.iter_mut().enumerate() {
                let o = 16 + INDEX_ENTRY_SIZE * i;
                *slot = d
                    .get(o..o + INDEX_ENTRY_SIZE)
                    .and_then(|e| IndexEntry::unpack(e).ok());
            }
        }
        self.count_bitmaps(&mut f);
        self.overflow_tree(&mut f);
        f
    }

    /// Walks a disk space map's index btree and counts its blocks.
    pub fn disk_sm(&mut self, name: &'static str, root: SmRoot) -> SmFound {
        let mut f = SmFound {
            name,
            root,
            index: Vec::new(),
            overflow: BTreeMap::new(),
            overflow_damaged: false,
        };
        let what = format!("{name} space map index");
        let mut entries: BTreeMap<u64, IndexEntry> = BTreeMap::new();
        let walked = self.tree(&what, root.bitmap_root, INDEX_ENTRY_SIZE, &mut |_, k, v| {
            if let Ok(e) = IndexEntry::unpack(v) {
                entries.insert(k, e);
            }
        });
        let nr_bitmaps = root.nr_blocks.div_ceil(ENTRIES_PER_BLOCK);
        if walked.is_some() && entries.len() as u64 != nr_bitmaps {
            self.report.error(format!(
                "{what}: {} entries for {} blocks (expected {nr_bitmaps})",
                entries.len(),
                root.nr_blocks
            ));
        }
        if let Some((&k, _)) = entries.range(nr_bitmaps..).next() {
            self.report
                .error(format!("{what}: entry {k} beyond the last bitmap"));
        }
        // Only as many bitmaps as there are entries for: a huge bogus
        // nr_blocks must not make us allocate for it.
        let have = entries
            .keys()
            .next_back()
            .map_or(0, |k| k.saturating_add(1));
        let mut n = nr_bitmaps.min(have);
        // A stray huge key (reported above) must not size the index
        // either: beyond a few missing entries, keep only what exists.
        if n > entries.len() as u64 + 1024 {
            n = entries.len() as u64;
        }
        f.index = (0..n).map(|i| entries.get(&i).copied()).collect();
        for (i, e) in f.index.iter().enumerate() {
            if e.is_none() {
                self.report
                    .error(format!("{what}: no entry for bitmap {i}"));
            }
        }
        self.count_bitmaps(&mut f);
        self.overflow_tree(&mut f);
        f
    }

    fn count_bitmaps(&mut self, f: &mut SmFound) {
        let what = format!("{} space map bitmap", f.name);
        let mut seen = HashMap::new();
        for (i, e) in f.index.iter_mut().enumerate() {
            let Some(ie) = e else { continue };
            if let Some(j) = seen.insert(ie.blocknr, i) {
                self.report.error(format!(
                    "{what} {i}: block {} is also bitmap {j}",
                    ie.blocknr
                ));
            }
            if self.reference(&format!("{what} {i}"), ie.blocknr).is_none() {
                *e = None;
            }
        }
    }

    fn overflow_tree(&mut self, f: &mut SmFound) {
        let what = format!("{} space map ref counts", f.name);
        let mut counts = BTreeMap::new();
        let r = self.tree(&what, f.root.ref_count_root, 4, &mut |_, k, v| {
            counts.insert(k, le32_at(v, 0));
        });
        f.overflow = counts;
        f.overflow_damaged = r.is_none();
    }

    /// Compares a space map with the metadata recount.
    pub fn compare_meta(&mut self, f: &SmFound) {
        compare(self.bm, &mut self.report, f, &self.meta);
    }

    /// Compares a space map with the recount `expected`.
    pub fn compare(&mut self, f: &SmFound, expected: &RefCounts) {
        compare(self.bm, &mut self.report, f, expected);
    }
}

/// Reads `b` with `v`, reporting failure.
fn read_block<IO: BlockIo>(
    bm: &BlockManager<IO>,
    report: &mut Report,
    what: &str,
    b: u64,
    v: ValidatorRef,
) -> Option<Box<Block>> {
    match bm.read_lock(b, Some(v)) {
        Ok(d) => Some(Box::new(*d)),
        Err(e) => {
            report.error(format!("{what}: block {b} ({}): {e}", validator_name(v)));
            None
        }
    }
}

/// Compares a space map with the recount `expected`, reading every
/// bitmap. Leaks of consecutive blocks are reported as one range.
fn compare<IO: BlockIo>(
    bm: &BlockManager<IO>,
    report: &mut Report,
    f: &SmFound,
    expected: &RefCounts,
) {
    {
        let name = f.name;
        let nr = f.root.nr_blocks;
        let mut allocated = 0u64;
        let mut complete = true;
        let mut leaks = LeakRuns::default();
        for (i, e) in f.index.iter().enumerate() {
            let Some(ie) = e else {
                complete = false;
                continue;
            };
            let what = format!("{name} space map bitmap {i}");
            let Some(d) = read_block(bm, report, &what, ie.blocknr, &BITMAP_VALIDATOR) else {
                complete = false;
                continue;
            };
            let base = i as u64 * ENTRIES_PER_BLOCK;
            let mut free = 0u32;
            let mut first_free: Option<u64> = None;
            for bit in 0..ENTRIES_PER_BLOCK {
                // `bit` is inside the bitmap: the lookup cannot fail.
                let raw = bitmap_lookup(&d, bit).unwrap_or(0);
                if raw == 0 {
                    free += 1;
                    first_free.get_or_insert(bit);
                }
                let b = base + bit;
                if b >= nr {
                    if raw != 0 {
                        report.error(format!(
                            "{what}: block {b} beyond the end ({nr} blocks) has count {raw}"
                        ));
                    }
                    continue;
                }
                let actual = if raw == 3 {
                    match f.overflow.get(&b) {
                        Some(&c) if c > 2 => c,
                        Some(&c) => {
                            report.error(format!(
                                "{name} space map: block {b}: ref-count tree holds {c} (must be above 2)"
                            ));
                            c
                        }
                        None => {
                            if !f.overflow_damaged {
                                report.error(format!(
                                    "{name} space map: block {b}: bitmap says >2 but the ref-count tree has no entry"
                                ));
                            }
                            continue;
                        }
                    }
                } else {
                    if f.overflow.contains_key(&b) {
                        report.error(format!(
                            "{name} space map: block {b}: stale ref-count tree entry (bitmap holds {raw})"
                        ));
                    }
                    raw
                };
                if actual != 0 {
                    allocated += 1;
                }
                let want = expected.get(b);
                if actual == want {
                    continue;
                }
                if actual > want {
                    leaks.add(report, name, b, want, actual);
                } else {
                    report.error(format!(
                        "{name} space map: block {b}: count {actual} but {want} references"
                    ));
                }
            }
            // The kernel counts every entry of a new bitmap as free, so
            // a last bitmap's nr_free includes the entries past the end;
            // userspace tools (cache_restore, thin_restore) count only
            // those before it. Either is consistent.
            let past_end = (base + ENTRIES_PER_BLOCK).saturating_sub(nr.max(base));
            let free_in_range = u64::from(free).saturating_sub(past_end);
            if u64::from(ie.nr_free) != u64::from(free) && u64::from(ie.nr_free) != free_in_range {
                report.error(format!(
                    "{what}: index entry says {} free, bitmap has {free}",
                    ie.nr_free
                ));
            }
            if first_free.is_some_and(|ff| ff < u64::from(ie.none_free_before)) {
                report.error(format!(
                    "{what}: index hint says none free before {}, but entry {} is free",
                    ie.none_free_before,
                    first_free.unwrap_or(0)
                ));
            }
        }
        leaks.flush(report, name);
        for &b in f.overflow.keys() {
            if b >= nr {
                report.error(format!(
                    "{name} space map: ref-count tree entry for block {b} beyond the end ({nr} blocks)"
                ));
            }
        }
        if complete && allocated != f.root.nr_allocated {
            report.error(format!(
                "{name} space map: root says {} blocks allocated, bitmaps hold {allocated}",
                f.root.nr_allocated
            ));
        }
    }
}

/// Collapses leaked blocks into runs for reporting.
#[derive(Default)]
struct LeakRuns {
    /// (first, last, expected, actual) of the open run.
    run: Option<(u64, u64, u32, u32)>,
}

impl LeakRuns {
    fn add(&mut self, report: &mut Report, name: &str, b: u64, want: u32, actual: u32) {
        if let Some((s, e, w, a)) = self.run {
            if e.checked_add(1) == Some(b) && w == want && a == actual {
                self.run = Some((s, b, w, a));
                return;
            }
            self.flush(report, name);
        }
        self.run = Some((b, b, want, actual));
    }

    fn flush(&mut self, report: &mut Report, name: &str) {
        let Some((s, e, w, a)) = self.run.take() else {
            return;
        };
        let blocks = if s == e {
            format!("block {s}")
        } else {
            format!("blocks {s}..={e}")
        };
        if w == 0 {
            report.leak(format!(
                "{name} space map: leaked {blocks}: count {a}, no references"
            ));
        } else {
            report.leak(format!(
                "{name} space map: leaked {blocks}: count {a} but only {w} references"
            ));
        }
    }
}
