// SPDX-License-Identifier: GPL-2.0

//! On-disk structures and low-level operations shared by the space maps.
//!
//! Counts are kept two bits per block in bitmap blocks (0 free, 1, 2, and 3
//! meaning "look in the ref-count btree", which holds the counts above two
//! as `u32`). Each bitmap covers [`ENTRIES_PER_BLOCK`] blocks and is
//! described by an index entry (its location, free count and a search
//! hint). The metadata space map keeps its index entries in one index
//! block; the disk space map in a btree (index number -> entry), fronted by
//! a small write-back cache.

use crate::persistent_data::block_manager::WriteBlock;
use crate::persistent_data::btree::{self, node, PlainValues};
use crate::persistent_data::endian::{le32, le64, set_le64};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::shim::PBox;
use crate::persistent_data::space_map::SmRoot;
use crate::persistent_data::transaction_manager::{BlockReader, TransactionManager};
use crate::persistent_data::validator::{CsumValidator, ValidatorRef};

/// Bitmap block header size (`csum u32 | not_used u32 | blocknr u64`).
pub const BITMAP_HEADER_SIZE: usize = 16;
/// Blocks described by one bitmap block.
pub const ENTRIES_PER_BLOCK: u64 = ((BLOCK_SIZE - BITMAP_HEADER_SIZE) * 4) as u64;
/// Index entries in the metadata space map's single index block.
pub const MAX_METADATA_BITMAPS: usize = 255;
/// Largest metadata device the metadata space map can describe.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS as u64 * ENTRIES_PER_BLOCK;
/// Encoded size of an index entry.
pub const INDEX_ENTRY_SIZE: usize = 16;

/// Validator of the metadata space map's index block.
pub static INDEX_VALIDATOR: CsumValidator = CsumValidator {
    name: "index",
    xor: 160478,
    blocknr_offset: 8,
};

/// Validator of bitmap blocks.
pub static BITMAP_VALIDATOR: CsumValidator = CsumValidator {
    name: "sm_bitmap",
    xor: 240779,
    blocknr_offset: 8,
};

fn bitmap_v() -> ValidatorRef {
    &BITMAP_VALIDATOR
}

/// One bitmap's index entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexEntry {
    /// Location of the bitmap block.
    pub blocknr: u64,
    /// Free entries in the bitmap.
    pub nr_free: u32,
    /// No entry before this one is free (a search hint).
    pub none_free_before: u32,
}

impl IndexEntry {
    /// Decodes 16 bytes.
    pub fn unpack(d: &[u8]) -> Result<IndexEntry> {
        Ok(IndexEntry {
            blocknr: le64(d, 0)?,
            nr_free: le32(d, 8)?,
            none_free_before: le32(d, 12)?,
        })
    }

    /// Encodes to 16 bytes.
    pub fn pack(&self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut d = [0u8; INDEX_ENTRY_SIZE];
        let (blocknr, rest) = d.split_at_mut(8);
        let (nr_free, none_free_before) = rest.split_at_mut(4);
        blocknr.copy_from_slice(&self.blocknr.to_le_bytes());
        nr_free.copy_from_slice(&self.nr_free.to_le_bytes());
        none_free_before.copy_from_slice(&self.none_free_before.to_le_bytes());
        d
    }
}

/// Offset of the word holding entry `bit`; `Invalid` past the bitmap.
fn bitmap_word(bit: u64) -> Result<usize> {
    if bit >= ENTRIES_PER_BLOCK {
        return Err(Error::Invalid);
    }
    Ok(BITMAP_HEADER_SIZE + 8 * (bit / 32) as usize)
}

/// Count of entry `bit` in a bitmap block. Each 64-bit little-endian word
/// holds 32 entries; bit `2i` of the word is the high bit of entry `i`.
pub fn bitmap_lookup(d: &Block, bit: u64) -> Result<u32> {
    let w = le64(d, bitmap_word(bit)?)?;
    let s = 2 * (bit % 32);
    let hi = (w >> s) & 1;
    let lo = (w >> (s + 1)) & 1;
    Ok(((hi << 1) | lo) as u32)
}

/// Sets the count of entry `bit` (0..=3).
pub fn bitmap_set(d: &mut Block, bit: u64, val: u32) -> Result<()> {
    let off = bitmap_word(bit)?;
    let mut w = le64(d, off)?;
    let s = 2 * (bit % 32);
    w &= !(3u64 << s);
    w |= u64::from((val >> 1) & 1) << s;
    w |= u64::from(val & 1) << (s + 1);
    set_le64(d, off, w)
}

/// First free entry in `[begin, end)`, skipping full words quickly.
pub fn bitmap_find_free(d: &Block, mut begin: u64, end: u64) -> Result<Option<u64>> {
    while begin < end {
        if begin % 32 == 0 {
            let w = le64(d, bitmap_word(begin)?)?;
            // Every 2-bit entry non-zero: (w | w >> 1) has all low bits set.
            if (w | (w >> 1)) & 0x5555_5555_5555_5555 == 0x5555_5555_5555_5555 {
                begin += 32;
                continue;
            }
        }
        if bitmap_lookup(d, begin)? == 0 {
            return Ok(Some(begin));
        }
        begin += 1;
    }
    Ok(None)
}

const IE_CACHE_SIZE: usize = 64;

/// One slot of the disk space map's index-entry cache.
#[derive(Clone, Copy, Default)]
pub struct IeSlot {
    valid: bool,
    dirty: bool,
    index: u64,
    ie: IndexEntry,
}

/// Where a space map keeps its index entries.
pub enum Index {
    /// Metadata space map: the whole index block, in core.
    Meta(PBox<[IndexEntry; MAX_METADATA_BITMAPS]>),
    /// Disk space map: a btree, with dirty entries cached here until
    /// evicted or committed.
    Disk(PBox<[IeSlot; IE_CACHE_SIZE]>),
}

/// The low-level state of a space map (upstream's `ll_disk`).
pub struct LlDisk {
    /// Blocks covered.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Index block (metadata) or index btree root (disk).
    pub bitmap_root: u64,
    /// Root of the btree of counts above two.
    pub ref_count_root: u64,
    /// Index entries.
    pub index: Index,
    /// Index entries changed since the last commit.
    pub index_changed: bool,
}

/// Value type of the ref-count btree (`__le32`, no references held).
pub const REF_COUNT_VT: PlainValues = PlainValues(4);
/// Value type of the disk space map's index btree.
pub const INDEX_VT: PlainValues = PlainValues(INDEX_ENTRY_SIZE);

impl LlDisk {
    fn new(index: Index) -> LlDisk {
        LlDisk {
            nr_blocks: 0,
            nr_allocated: 0,
            bitmap_root: 0,
            ref_count_root: 0,
            index,
            index_changed: false,
        }
    }

    // The index arrays are 4 KiB and 2.5 KiB: they are built on the heap
    // in place, never on the (kernel) stack.

    /// An empty metadata ll (no blocks yet).
    pub fn new_meta() -> Result<LlDisk> {
        Ok(LlDisk::new(Index::Meta(PBox::try_new_array(
            IndexEntry::default(),
        )?)))
    }

    /// An empty disk ll.
    pub fn new_disk() -> Result<LlDisk> {
        Ok(LlDisk::new(Index::Disk(PBox::try_new_array(
            IeSlot::default(),
        )?)))
    }

    /// A copy for the committed view. The disk index cache is clean after a
    /// commit, so the copy starts with an empty one.
    pub fn try_clone(&self) -> Result<LlDisk> {
        let index = match &self.index {
            Index::Meta(m) => Index::Meta(PBox::try_copy_of(m)?),
            Index::Disk(_) => Index::Disk(PBox::try_new_array(IeSlot::default())?),
        };
        Ok(LlDisk {
            index,
            index_changed: false,
            ..*self
        })
    }

    /// The root to store in a superblock.
    pub fn root(&self) -> SmRoot {
        SmRoot {
            nr_blocks: self.nr_blocks,
            nr_allocated: self.nr_allocated,
            bitmap_root: self.bitmap_root,
            ref_count_root: self.ref_count_root,
        }
    }

    fn set_root(&mut self, r: &SmRoot) {
        self.nr_blocks = r.nr_blocks;
        self.nr_allocated = r.nr_allocated;
        self.bitmap_root = r.bitmap_root;
        self.ref_count_root = r.ref_count_root;
    }

    /// The disk index cache's entry for `index`, if cached.
    #[cfg(test)]
    pub(crate) fn cached_ie(&self, index: u64) -> Option<IndexEntry> {
        match &self.index {
            Index::Disk(c) => c
                .get(cache_slot(index))
                .filter(|s| s.valid && s.index == index)
                .map(|s| s.ie),
            Index::Meta(_) => None,
        }
    }

    fn max_index_entries(&self) -> u64 {
        match self.index {
            Index::Meta(_) => MAX_METADATA_BITMAPS as u64,
            Index::Disk(_) => u64::MAX,
        }
    }
}

/// Loads a metadata ll from its root: reads the index block.
pub fn open_meta<R: BlockReader>(r: &R, root: &SmRoot) -> Result<LlDisk> {
    let mut ll = LlDisk::new_meta()?;
    ll.set_root(root);
    let d = r.read_lock(ll.bitmap_root, &INDEX_VALIDATOR)?;
    if let Index::Meta(m) = &mut ll.index {
        for (i, e) in m.iter_mut().enumerate() {
            let o = 16 + INDEX_ENTRY_SIZE * i;
            *e = IndexEntry::unpack(d.get(o..o + INDEX_ENTRY_SIZE).ok_or(Error::Invalid)?)?;
        }
    }
    drop(d);
    check_geometry(&ll)?;
    Ok(ll)
}

/// A disk ll from its root (nothing to read up front).
pub fn open_disk(root: &SmRoot) -> Result<LlDisk> {
    let mut ll = LlDisk::new_disk()?;
    ll.set_root(root);
    check_geometry(&ll)?;
    Ok(ll)
}

fn check_geometry(ll: &LlDisk) -> Result<()> {
    if ll.nr_allocated > ll.nr_blocks
        || ll.nr_blocks.div_ceil(ENTRIES_PER_BLOCK) > ll.max_index_entries()
    {
        return Err(Error::Invalid);
    }
    Ok(())
}

fn cache_slot(index: u64) -> usize {
    (index % IE_CACHE_SIZE as u64) as usize
}

/// Index entry `index` of `ll`.
pub fn load_ie<R: BlockReader>(r: &R, ll: &LlDisk, index: u64) -> Result<IndexEntry> {
    match &ll.index {
        Index::Meta(m) => usize::try_from(index)
            .ok()
            .and_then(|i| m.get(i))
            .copied()
            .ok_or(Error::Invalid),
        Index::Disk(c) => {
            if let Some(s) = c.get(cache_slot(index)) {
                if s.valid && s.index == index {
                    return Ok(s.ie);
                }
            }
            let mut v = [0u8; INDEX_ENTRY_SIZE];
            btree::lookup(r, ll.bitmap_root, &[index], &mut v)?;
            IndexEntry::unpack(&v)
        }
    }
}

/// Access to a space map's ll and the transaction manager together. The
/// metadata space map's ll lives inside the transaction manager, so the two
/// cannot simply be borrowed side by side; this trait hands out one at a
/// time.
pub(crate) trait LlCtx<IO: BlockIo> {
    fn tm(&mut self) -> &mut TransactionManager<IO>;
    fn ll(&mut self) -> &mut LlDisk;
    fn both(&self) -> (&TransactionManager<IO>, &LlDisk);
}

/// The disk space map's context: ll kept outside the transaction manager.
pub(crate) struct DiskCtx<'a, IO: BlockIo> {
    pub tm: &'a mut TransactionManager<IO>,
    pub ll: &'a mut LlDisk,
}

impl<IO: BlockIo> LlCtx<IO> for DiskCtx<'_, IO> {
    fn tm(&mut self) -> &mut TransactionManager<IO> {
        self.tm
    }
    fn ll(&mut self) -> &mut LlDisk {
        self.ll
    }
    fn both(&self) -> (&TransactionManager<IO>, &LlDisk) {
        (self.tm, self.ll)
    }
}

fn ie_writeback<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, index: u64, ie: &IndexEntry) -> Result<()> {
    let root = c.ll().bitmap_root;
    let mut vt = INDEX_VT;
    let new_root = btree::insert(c.tm(), &mut vt, root, &[index], &ie.pack())?;
    c.ll().bitmap_root = new_root;
    Ok(())
}

/// Stores index entry `index`.
pub(crate) fn save_ie<IO: BlockIo, C: LlCtx<IO>>(
    c: &mut C,
    index: u64,
    ie: IndexEntry,
) -> Result<()> {
    c.ll().index_changed = true;
    let evict = match &mut c.ll().index {
        Index::Meta(m) => {
            let e = usize::try_from(index)
                .ok()
                .and_then(|i| m.get_mut(i))
                .ok_or(Error::Invalid)?;
            *e = ie;
            return Ok(());
        }
        Index::Disk(cache) => {
            let s = cache.get_mut(cache_slot(index)).ok_or(Error::Invalid)?;
            let evict = (s.valid && s.dirty && s.index != index).then_some((s.index, s.ie));
            *s = IeSlot {
                valid: true,
                dirty: true,
                index,
                ie,
            };
            evict
        }
    };
    if let Some((i, e)) = evict {
        ie_writeback(c, i, &e)?;
    }
    Ok(())
}

/// Index entry `index` of `ll`, remembering it in the disk space map's
/// cache (as upstream's `disk_ll_load_ie` does) when it had to be read from
/// the index btree. A slot holding a dirty entry is left alone: writing
/// that back needs the transaction manager, and this is a read path.
pub fn load_ie_caching<R: BlockReader>(r: &R, ll: &mut LlDisk, index: u64) -> Result<IndexEntry> {
    let ie = load_ie(r, ll, index)?;
    if let Index::Disk(c) = &mut ll.index {
        if let Some(s) = c.get_mut(cache_slot(index)) {
            if !s.valid || !s.dirty {
                *s = IeSlot {
                    valid: true,
                    dirty: false,
                    index,
                    ie,
                };
            }
        }
    }
    Ok(ie)
}

/// Where index entries come from: an ll borrowed shared (looked up only)
/// or exclusively (entries read from the index btree are cached).
pub trait IeSource {
    /// The ll.
    fn ll(&self) -> &LlDisk;
    /// Index entry `index`.
    fn ie<R: BlockReader>(&mut self, r: &R, index: u64) -> Result<IndexEntry>;
}

/// A shared ll: lookups do not touch its cache.
pub struct Shared<'a>(pub &'a LlDisk);

impl IeSource for Shared<'_> {
    fn ll(&self) -> &LlDisk {
        self.0
    }
    fn ie<R: BlockReader>(&mut self, r: &R, index: u64) -> Result<IndexEntry> {
        load_ie(r, self.0, index)
    }
}

impl IeSource for LlDisk {
    fn ll(&self) -> &LlDisk {
        self
    }
    fn ie<R: BlockReader>(&mut self, r: &R, index: u64) -> Result<IndexEntry> {
        load_ie_caching(r, self, index)
    }
}

fn lookup_bitmap_in<R: BlockReader, L: IeSource>(r: &R, ll: &mut L, b: u64) -> Result<u32> {
    if b >= ll.ll().nr_blocks {
        return Err(Error::Invalid);
    }
    let ie = ll.ie(r, b / ENTRIES_PER_BLOCK)?;
    let d = r.read_lock(ie.blocknr, bitmap_v())?;
    bitmap_lookup(&d, b % ENTRIES_PER_BLOCK)
}

/// Count of `b` in the bitmap (3 means "see the ref-count tree").
pub fn lookup_bitmap<R: BlockReader>(r: &R, ll: &LlDisk, b: u64) -> Result<u32> {
    lookup_bitmap_in(r, &mut Shared(ll), b)
}

fn lookup_big<R: BlockReader>(r: &R, ll: &LlDisk, b: u64) -> Result<u32> {
    let mut v = [0u8; 4];
    btree::lookup(r, ll.ref_count_root, &[b], &mut v)?;
    Ok(u32::from_le_bytes(v))
}

fn lookup_in<R: BlockReader, L: IeSource>(r: &R, ll: &mut L, b: u64) -> Result<u32> {
    let c = lookup_bitmap_in(r, ll, b)?;
    if c < 3 {
        return Ok(c);
    }
    lookup_big(r, ll.ll(), b)
}

/// Reference count of `b`.
pub fn lookup<R: BlockReader>(r: &R, ll: &LlDisk, b: u64) -> Result<u32> {
    lookup_in(r, &mut Shared(ll), b)
}

fn find_free_block_in<R: BlockReader, L: IeSource>(
    r: &R,
    ll: &mut L,
    begin: u64,
    end: u64,
) -> Result<u64> {
    let end = end.min(ll.ll().nr_blocks);
    if begin >= end {
        return Err(Error::NoSpace);
    }
    let first = begin / ENTRIES_PER_BLOCK;
    let last = end.div_ceil(ENTRIES_PER_BLOCK);
    for i in first..last {
        let ie = ll.ie(r, i)?;
        if ie.nr_free == 0 {
            continue;
        }
        let base = i * ENTRIES_PER_BLOCK;
        let lo = begin
            .saturating_sub(base)
            .max(u64::from(ie.none_free_before));
        let hi = (end - base).min(ENTRIES_PER_BLOCK);
        let d = r.read_lock(ie.blocknr, bitmap_v())?;
        if let Some(bit) = bitmap_find_free(&d, lo, hi)? {
            return Ok(base + bit);
        }
    }
    Err(Error::NoSpace)
}

/// First block with a zero count in `[begin, end)`, or `NoSpace`.
pub fn find_free_block<R: BlockReader>(r: &R, ll: &LlDisk, begin: u64, end: u64) -> Result<u64> {
    find_free_block_in(r, &mut Shared(ll), begin, end)
}

/// A block free in both the committed (`old`) and current (`new`) views,
/// index entries coming from (and, for exclusive lls, cached in) each.
pub fn find_common_free_block_in<R: BlockReader, O: IeSource, N: IeSource>(
    r: &R,
    old: &mut O,
    new: &mut N,
    mut begin: u64,
    end: u64,
) -> Result<u64> {
    loop {
        let b = find_free_block_in(r, new, begin, end)?;
        if b >= old.ll().nr_blocks || lookup_in(r, old, b)? == 0 {
            return Ok(b);
        }
        begin = b + 1;
    }
}

/// A block free in both the committed (`old`) and current (`new`) views.
pub fn find_common_free_block<R: BlockReader>(
    r: &R,
    old: &LlDisk,
    new: &LlDisk,
    begin: u64,
    end: u64,
) -> Result<u64> {
    find_common_free_block_in(r, &mut Shared(old), &mut Shared(new), begin, end)
}

/// Grows the ll by `extra` blocks, creating bitmaps as needed.
pub(crate) fn extend<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, extra: u64) -> Result<()> {
    let ll = c.ll();
    let old = ll.nr_blocks;
    let nr = old.checked_add(extra).ok_or(Error::Invalid)?;
    let old_bitmaps = old.div_ceil(ENTRIES_PER_BLOCK);
    let bitmaps = nr.div_ceil(ENTRIES_PER_BLOCK);
    if bitmaps > ll.max_index_entries() {
        return Err(Error::Invalid);
    }
    // Set before allocating: the new bitmaps may come from the new range.
    ll.nr_blocks = nr;
    for i in old_bitmaps..bitmaps {
        let wb = c.tm().new_block(bitmap_v())?;
        let loc = wb.loc();
        c.tm().unlock(wb);
        save_ie(
            c,
            i,
            IndexEntry {
                blocknr: loc,
                nr_free: ENTRIES_PER_BLOCK as u32,
                none_free_before: 0,
            },
        )?;
    }
    Ok(())
}

fn set_big<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, b: u64, count: u32) -> Result<()> {
    let root = c.ll().ref_count_root;
    let mut vt = REF_COUNT_VT;
    let nr = btree::insert(c.tm(), &mut vt, root, &[b], &count.to_le_bytes())?;
    c.ll().ref_count_root = nr;
    Ok(())
}

fn del_big<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, b: u64) -> Result<()> {
    let root = c.ll().ref_count_root;
    let mut vt = REF_COUNT_VT;
    let nr = btree::remove(c.tm(), &mut vt, root, &[b])?;
    c.ll().ref_count_root = nr;
    Ok(())
}

/// Adds `delta` (+1/-1) to an overflow count in place and returns the old
/// count; shadows the path to the leaf like upstream's overwrite leaf.
fn adjust_big<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, b: u64, inc: bool) -> Result<u32> {
    let root = c.ll().ref_count_root;
    let (new_root, mut leaf, i) = btree::get_overwrite_leaf(c.tm(), root, b)?;
    c.ll().ref_count_root = new_root;
    let r = (|| {
        let v = node::value_mut(&mut leaf[..], i)?;
        let old = u32::from_le_bytes(
            v.get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(Error::Invalid)?,
        );
        let new = if inc {
            old.checked_add(1).ok_or(Error::Invalid)?
        } else {
            old.checked_sub(1).ok_or(Error::Invalid)?
        };
        v.get_mut(..4)
            .ok_or(Error::Invalid)?
            .copy_from_slice(&new.to_le_bytes());
        Ok(old)
    })();
    c.tm().unlock(leaf);
    r
}

enum Op {
    Inc,
    Dec,
}

/// Shadows bitmap `ie` points to; returns the write lock and updates `ie`.
fn shadow_bitmap<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, ie: &mut IndexEntry) -> Result<WriteBlock> {
    let (wb, _) = c.tm().shadow_block(ie.blocknr, bitmap_v())?;
    ie.blocknr = wb.loc();
    Ok(wb)
}

/// Checks, before anything is shadowed, that applying `op` to entries
/// `[bit, bit_end)` of the bitmap `ie` describes keeps every count and
/// total in range: a double free or a corrupt total then fails with
/// nothing changed, instead of poisoning the transaction half way.
fn precheck<IO: BlockIo, C: LlCtx<IO>>(
    c: &C,
    ie: &IndexEntry,
    bit: u64,
    bit_end: u64,
    op: &Op,
) -> Result<()> {
    let (tm, ll) = c.both();
    let d = tm.read_lock(ie.blocknr, bitmap_v())?;
    let mut flips = 0u32;
    for x in bit..bit_end {
        match (op, bitmap_lookup(&d, x)?) {
            (Op::Inc, 0) | (Op::Dec, 1) => flips += 1,
            (Op::Dec, 0) => return Err(Error::Invalid),
            _ => {}
        }
    }
    let ok = match op {
        Op::Inc => {
            ll.nr_allocated.checked_add(u64::from(flips)).is_some()
                && ie.nr_free.checked_sub(flips).is_some()
        }
        Op::Dec => {
            ll.nr_allocated.checked_sub(u64::from(flips)).is_some()
                && ie.nr_free.checked_add(flips).is_some()
        }
    };
    if !ok {
        return Err(Error::Invalid);
    }
    Ok(())
}

/// Applies `op` to the counts of `[b, e)`; returns the change in the number
/// of allocated blocks.
fn inc_dec<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, mut b: u64, e: u64, op: Op) -> Result<i64> {
    // The whole range must be covered: nothing is applied otherwise.
    if e > c.ll().nr_blocks {
        return Err(Error::Invalid);
    }
    let mut nr_allocations = 0i64;
    while b < e {
        let index = b / ENTRIES_PER_BLOCK;
        let mut bit = b % ENTRIES_PER_BLOCK;
        let (tm, ll) = c.both();
        if b >= ll.nr_blocks {
            return Err(Error::Invalid);
        }
        let mut ie = load_ie(tm, ll, index)?;
        // `bit <= b`, so this is at most `e`.
        let bit_end = (bit + (e - b)).min(ENTRIES_PER_BLOCK);
        precheck(c, &ie, bit, bit_end, &op)?;
        let mut held = Some(shadow_bitmap(c, &mut ie)?);
        let r = (|| -> Result<()> {
            while bit < bit_end {
                // The bitmap is dropped around btree updates (they may
                // allocate, and so read bitmaps); re-take it plainly, it is
                // already a shadow.
                let mut wb = match held.take() {
                    Some(wb) => wb,
                    None => c.tm().write_lock_shadowed(ie.blocknr, bitmap_v())?,
                };
                let old = match bitmap_lookup(&wb, bit) {
                    Ok(old) => old,
                    Err(e) => {
                        c.tm().unlock(wb);
                        return Err(e);
                    }
                };
                match (&op, old) {
                    (Op::Inc, 0) => {
                        held = Some(wb);
                        nr_allocations += 1;
                        let ll = c.ll();
                        ll.nr_allocated = ll.nr_allocated.checked_add(1).ok_or(Error::Invalid)?;
                        ie.nr_free = ie.nr_free.checked_sub(1).ok_or(Error::Invalid)?;
                        if u64::from(ie.none_free_before) == bit {
                            ie.none_free_before = (bit + 1) as u32;
                        }
                        set_held(&mut held, bit, 1)?;
                    }
                    (Op::Inc, 1) => {
                        held = Some(wb);
                        set_held(&mut held, bit, 2)?;
                    }
                    (Op::Inc, 2) => {
                        let r = bitmap_set(&mut wb, bit, 3);
                        c.tm().unlock(wb);
                        r?;
                        set_big(c, b, 3)?;
                    }
                    (Op::Inc, _) => {
                        c.tm().unlock(wb);
                        adjust_big(c, b, true)?;
                    }
                    (Op::Dec, 0) => {
                        c.tm().unlock(wb);
                        return Err(Error::Invalid);
                    }
                    (Op::Dec, 1) => {
                        held = Some(wb);
                        nr_allocations -= 1;
                        let ll = c.ll();
                        ll.nr_allocated = ll.nr_allocated.checked_sub(1).ok_or(Error::Invalid)?;
                        ie.nr_free = ie.nr_free.checked_add(1).ok_or(Error::Invalid)?;
                        ie.none_free_before = ie.none_free_before.min(bit as u32);
                        set_held(&mut held, bit, 0)?;
                    }
                    (Op::Dec, 2) => {
                        held = Some(wb);
                        set_held(&mut held, bit, 1)?;
                    }
                    (Op::Dec, _) => {
                        c.tm().unlock(wb);
                        let (tm, ll) = c.both();
                        let old = lookup_big(tm, ll, b)?;
                        if old <= 3 {
                            del_big(c, b)?;
                            held = Some(c.tm().write_lock_shadowed(ie.blocknr, bitmap_v())?);
                            set_held(&mut held, bit, 2)?;
                        } else {
                            adjust_big(c, b, false)?;
                        }
                    }
                }
                bit += 1;
                b += 1;
            }
            Ok(())
        })();
        if let Some(wb) = held.take() {
            c.tm().unlock(wb);
        }
        r?;
        save_ie(c, index, ie)?;
    }
    Ok(nr_allocations)
}

/// Sets entry `bit` of the held bitmap (which stays held, for the caller
/// to unlock, whatever happens).
fn set_held(held: &mut Option<WriteBlock>, bit: u64, val: u32) -> Result<()> {
    bitmap_set(held.as_mut().ok_or(Error::Invalid)?, bit, val)
}

/// Increments the counts of `[b, e)`.
pub(crate) fn inc<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, b: u64, e: u64) -> Result<i64> {
    inc_dec(c, b, e, Op::Inc)
}

/// Decrements the counts of `[b, e)`.
pub(crate) fn dec<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, b: u64, e: u64) -> Result<i64> {
    inc_dec(c, b, e, Op::Dec)
}

/// Sets `b`'s count; returns the change in allocated blocks.
pub(crate) fn insert<IO: BlockIo, C: LlCtx<IO>>(c: &mut C, b: u64, count: u32) -> Result<i64> {
    let index = b / ENTRIES_PER_BLOCK;
    let bit = b % ENTRIES_PER_BLOCK;
    let (tm, ll) = c.both();
    if b >= ll.nr_blocks {
        return Err(Error::Invalid);
    }
    let mut ie = load_ie(tm, ll, index)?;
    // Everything is worked out before anything changes.
    let old = {
        let d = tm.read_lock(ie.blocknr, bitmap_v())?;
        match bitmap_lookup(&d, bit)? {
            o if o > 2 => lookup_big(tm, ll, b)?,
            o => o,
        }
    };
    let (delta, nr_allocated, nr_free) = match (old, count) {
        (0, n) if n > 0 => (1, ll.nr_allocated.checked_add(1), ie.nr_free.checked_sub(1)),
        (o, 0) if o > 0 => (
            -1,
            ll.nr_allocated.checked_sub(1),
            ie.nr_free.checked_add(1),
        ),
        _ => (0, Some(ll.nr_allocated), Some(ie.nr_free)),
    };
    let (Some(nr_allocated), Some(nr_free)) = (nr_allocated, nr_free) else {
        return Err(Error::Invalid);
    };
    let mut wb = shadow_bitmap(c, &mut ie)?;
    let r = bitmap_set(&mut wb, bit, count.min(3));
    c.tm().unlock(wb);
    r?;
    if count <= 2 {
        if old > 2 {
            del_big(c, b)?;
        }
    } else {
        set_big(c, b, count)?;
    }
    c.ll().nr_allocated = nr_allocated;
    ie.nr_free = nr_free;
    match delta {
        1 if u64::from(ie.none_free_before) == bit => ie.none_free_before = (bit + 1) as u32,
        -1 => ie.none_free_before = ie.none_free_before.min(bit as u32),
        _ => {}
    }
    save_ie(c, index, ie)?;
    Ok(delta)
}

/// Writes out changed index entries.
pub(crate) fn commit<IO: BlockIo, C: LlCtx<IO>>(c: &mut C) -> Result<()> {
    if !c.ll().index_changed {
        return Ok(());
    }
    let root = c.ll().bitmap_root;
    match &c.ll().index {
        Index::Meta(_) => {
            let (mut wb, _) = c.tm().shadow_block(root, &INDEX_VALIDATOR)?;
            if let Index::Meta(m) = &c.ll().index {
                // Header words (csum, padding, blocknr) are restamped by the
                // validator; padding stays zero.
                wb.get_mut(4..8).into_iter().for_each(|s| s.fill(0));
                for (i, e) in m.iter().enumerate() {
                    let o = 16 + INDEX_ENTRY_SIZE * i;
                    if let Some(s) = wb.get_mut(o..o + INDEX_ENTRY_SIZE) {
                        s.copy_from_slice(&e.pack());
                    }
                }
            }
            let loc = wb.loc();
            c.tm().unlock(wb);
            c.ll().bitmap_root = loc;
        }
        Index::Disk(_) => {
            for slot in 0..IE_CACHE_SIZE {
                let pending = match &mut c.ll().index {
                    Index::Disk(cache) => cache.get_mut(slot).and_then(|s| {
                        let p = (s.valid && s.dirty).then_some((s.index, s.ie));
                        s.dirty = false;
                        p
                    }),
                    Index::Meta(_) => None,
                };
                if let Some((i, e)) = pending {
                    ie_writeback(c, i, &e)?;
                }
            }
        }
    }
    c.ll().index_changed = false;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_packing_high_bit_first() {
        let mut d = [0u8; BLOCK_SIZE];
        bitmap_set(&mut d, 0, 2).unwrap();
        // Entry 0's high bit is bit 0 of the first word.
        assert_eq!(le64(&d, 16).unwrap(), 1);
        bitmap_set(&mut d, 0, 1).unwrap();
        assert_eq!(le64(&d, 16).unwrap(), 2);
        bitmap_set(&mut d, 33, 3).unwrap();
        assert_eq!(le64(&d, 24).unwrap(), 0b1100);
        assert_eq!(bitmap_lookup(&d, 33), Ok(3));
        assert_eq!(bitmap_lookup(&d, 0), Ok(1));
        assert_eq!(bitmap_find_free(&d, 0, 64), Ok(Some(1)));
        for i in 0..64 {
            bitmap_set(&mut d, i, 1).unwrap();
        }
        assert_eq!(bitmap_find_free(&d, 0, 64), Ok(None));
        assert_eq!(bitmap_find_free(&d, 0, 65), Ok(Some(64)));
        assert_eq!(ENTRIES_PER_BLOCK, 16320);
        assert_eq!(MAX_METADATA_BLOCKS, 4_161_600);
        // Past the bitmap: an error, never a silent "free".
        assert_eq!(bitmap_lookup(&d, ENTRIES_PER_BLOCK), Err(Error::Invalid));
        assert_eq!(
            bitmap_set(&mut d, ENTRIES_PER_BLOCK, 1),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn index_entry_roundtrip() {
        let e = IndexEntry {
            blocknr: 0x1122334455,
            nr_free: 77,
            none_free_before: 9,
        };
        assert_eq!(IndexEntry::unpack(&e.pack()), Ok(e));
    }
}
