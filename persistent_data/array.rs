// SPDX-License-Identifier: GPL-2.0

//! Persistent arrays, byte-compatible with upstream `dm-array`.
//!
//! An array of `n` fixed-size values is stored as *array blocks*: 4 KiB
//! blocks holding a 24-byte header and then as many packed values as fit.
//! Every array block but the last is full. A single-level btree maps the
//! array block's position (`index / max_entries`) to its block number; the
//! btree's root is the array's root.
//!
//! Array block header (little-endian):
//! `csum u32 | max_entries u32 | nr_entries u32 | value_size u32 |
//! blocknr u64`. The checksum covers bytes `4..4096`, salted with
//! [`ARRAY_CSUM_XOR`].
//!
//! References: each btree entry holds one reference on its array block
//! ([`ArrayBlocks`] is the btree's value type). The values inside an array
//! block hold references described by the caller's element [`ValueType`],
//! once per array block: when an array block is copied because it is
//! shared, every value in it gains a reference; when the last reference to
//! an array block goes, its values lose theirs. So a snapshot of a whole
//! array costs one reference on its root, as with btrees.
//!
//! Unlike [`btree::insert`], [`set`] takes its own reference on the new
//! value (the caller keeps theirs) and drops the old value's reference;
//! growing takes one reference per copy of the default value.
//!
//! The array's length is not stored: callers keep it (cache metadata keeps
//! it in its superblock) and pass it to [`resize`].

use crate::persistent_data::block_manager::{ReadRef, WriteBlock};
use crate::persistent_data::btree::{self, node, ValueType};
use crate::persistent_data::endian::{le32, set_le32};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::transaction_manager::{with_runs, BlockReader, TransactionManager};
use crate::persistent_data::validator::{CsumValidator, Validator};

/// Checksum salt of array blocks.
pub const ARRAY_CSUM_XOR: u32 = 595_846_735;
/// Size of the array block header.
pub const ARRAY_HEADER_SIZE: usize = 24;

const OFF_MAX: usize = 4;
const OFF_NR: usize = 8;
const OFF_VSIZE: usize = 12;
const OFF_BLOCKNR: usize = 16;

/// Values of `value_size` bytes that fit one array block (509 for 8-byte
/// values, 1018 for 4-byte ones); 0 for a zero or oversized value size.
pub fn calc_max_entries(value_size: usize) -> u32 {
    if value_size == 0 {
        return 0;
    }
    ((BLOCK_SIZE - ARRAY_HEADER_SIZE) / value_size) as u32
}

/// Decoded array block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayHeader {
    /// Capacity in values.
    pub max_entries: u32,
    /// Values in use.
    pub nr_entries: u32,
    /// Bytes per value.
    pub value_size: u32,
}

impl ArrayHeader {
    /// Decodes the header of `d`.
    pub fn read(d: &[u8]) -> Result<ArrayHeader> {
        Ok(ArrayHeader {
            max_entries: le32(d, OFF_MAX)?,
            nr_entries: le32(d, OFF_NR)?,
            value_size: le32(d, OFF_VSIZE)?,
        })
    }

    /// Encodes into `d` (leaves csum and blocknr alone).
    pub fn write(&self, d: &mut [u8]) -> Result<()> {
        set_le32(d, OFF_MAX, self.max_entries)?;
        set_le32(d, OFF_NR, self.nr_entries)?;
        set_le32(d, OFF_VSIZE, self.value_size)
    }

    /// The structural checks upstream makes on every array block read.
    pub fn check(&self) -> Result<()> {
        if self.value_size == 0
            || self.max_entries != calc_max_entries(self.value_size as usize)
            || self.nr_entries > self.max_entries
        {
            return Err(Error::BadChecksum);
        }
        Ok(())
    }

    fn vs(&self) -> usize {
        self.value_size as usize
    }

    /// Byte range of values `begin..end` (not checked against the block).
    fn range(&self, begin: u32, end: u32) -> core::ops::Range<usize> {
        let b = ARRAY_HEADER_SIZE + self.vs() * begin as usize;
        let e = ARRAY_HEADER_SIZE + self.vs() * end as usize;
        b..e
    }
}

/// Validator for array blocks: location, checksum, then header sanity.
pub struct ArrayValidator {
    csum: CsumValidator,
}

/// The array block validator.
pub static ARRAY_VALIDATOR: ArrayValidator = ArrayValidator {
    csum: CsumValidator {
        name: "array",
        xor: ARRAY_CSUM_XOR,
        blocknr_offset: OFF_BLOCKNR,
    },
};

impl Validator for ArrayValidator {
    fn name(&self) -> &'static str {
        self.csum.name
    }

    fn check(&self, b: u64, data: &Block) -> Result<()> {
        self.csum.check(b, data)?;
        ArrayHeader::read(data)?.check()
    }

    fn prepare_for_write(&self, b: u64, data: &mut Block) -> Result<()> {
        self.csum.prepare_for_write(b, data)
    }
}

/// Header of array block `d`, checked, with the value size the caller
/// expects (a mismatch is corruption: `BadChecksum`, upstream's `-EILSEQ`).
fn ablock_header(d: &[u8], value_size: usize) -> Result<ArrayHeader> {
    let h = ArrayHeader::read(d)?;
    h.check()?;
    if h.vs() != value_size {
        return Err(Error::BadChecksum);
    }
    Ok(h)
}

/// Values `begin..end` of array block `d`.
fn entries<'d>(d: &'d [u8], h: &ArrayHeader, begin: u32, end: u32) -> Result<&'d [u8]> {
    if begin > end || end > h.max_entries {
        return Err(Error::Invalid);
    }
    d.get(h.range(begin, end)).ok_or(Error::Invalid)
}

fn entries_mut<'d>(d: &'d mut [u8], h: &ArrayHeader, begin: u32, end: u32) -> Result<&'d mut [u8]> {
    if begin > end || end > h.max_entries {
        return Err(Error::Invalid);
    }
    d.get_mut(h.range(begin, end)).ok_or(Error::Invalid)
}

/// The btree value type of an array: little-endian array block numbers,
/// each holding a reference on its block. Dropping the last reference to
/// an array block drops the references of the values inside it, through
/// the element value type.
pub struct ArrayBlocks<'a, IO: BlockIo> {
    /// The element value type.
    pub elem: &'a mut dyn ValueType<IO>,
}

impl<IO: BlockIo> ArrayBlocks<'_, IO> {
    fn dec_one(&mut self, tm: &mut TransactionManager<IO>, b: u64) -> Result<()> {
        if tm.ref_count(b)? == 1 {
            // The block is about to go: release what its values hold.
            let d = tm.bm.read_copy(b, Some(&ARRAY_VALIDATOR))?;
            let h = ablock_header(&d[..], self.elem.size())?;
            if h.nr_entries > 0 {
                self.elem.dec(tm, entries(&d[..], &h, 0, h.nr_entries)?)?;
            }
        }
        tm.dec(b)
    }
}

impl<IO: BlockIo> ValueType<IO> for ArrayBlocks<'_, IO> {
    fn size(&self) -> usize {
        8
    }

    fn inc(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        with_runs(values, |b, e| tm.inc_range(b, e))
    }

    fn dec(&mut self, tm: &mut TransactionManager<IO>, values: &[u8]) -> Result<()> {
        for c in values.chunks_exact(8) {
            let b = u64::from_le_bytes(c.try_into().map_err(|_| Error::Invalid)?);
            self.dec_one(tm, b)?;
        }
        Ok(())
    }
}

fn max_entries_for(value_size: usize) -> Result<u32> {
    match calc_max_entries(value_size) {
        0 => Err(Error::Invalid),
        m => Ok(m),
    }
}

/// Creates an empty array; returns its root.
pub fn empty<IO: BlockIo>(tm: &mut TransactionManager<IO>) -> Result<u64> {
    tm.mutate(|tm| btree::empty(tm, 8))
}

/// Drops the caller's reference to the array at `root`; array blocks (and
/// the references their values hold) go with their last reference.
pub fn del<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    root: u64,
) -> Result<()> {
    tm.mutate(|tm| btree::del(tm, &mut ArrayBlocks { elem }, root, 1))
}

/// Number of the array block holding entry `index`, and the entry's
/// position in it.
fn locate(value_size: usize, index: u32) -> Result<(u64, u32)> {
    let max = max_entries_for(value_size)?;
    Ok((u64::from(index / max), index % max))
}

fn lookup_ablock<R: BlockReader>(r: &R, root: u64, block_index: u64) -> Result<u64> {
    let mut v = [0u8; 8];
    btree::lookup(r, root, &[block_index], &mut v)?;
    Ok(u64::from_le_bytes(v))
}

/// Copies entry `index` of the array at `root` into `out` (whose length is
/// the value size). `NoData` past the end.
pub fn get<R: BlockReader>(r: &R, root: u64, index: u32, out: &mut [u8]) -> Result<()> {
    let (bi, entry) = locate(out.len(), index)?;
    let b = lookup_ablock(r, root, bi)?;
    let d = r.read_lock(b, &ARRAY_VALIDATOR)?;
    let h = ablock_header(&d[..], out.len())?;
    if entry >= h.nr_entries {
        return Err(Error::NoData);
    }
    out.copy_from_slice(entries(&d[..], &h, entry, entry + 1)?);
    Ok(())
}

/// Makes array block `block_index` writable in this transaction. The btree
/// path to it is shadowed first (so sharing is pushed down to the array
/// blocks before we look at their counts), then the array block itself;
/// if that was shared, its values gain a reference. Returns the new root
/// and the write-locked array block.
fn shadow_ablock<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    root: u64,
    block_index: u64,
) -> Result<(u64, WriteBlock)> {
    let value_size = elem.size();
    let (new_root, mut leaf, i) =
        btree::get_overwrite_leaf_vt(tm, &mut ArrayBlocks { elem: &mut *elem }, root, block_index)?;
    let r = (|| {
        let b = node::value64(&leaf[..], i)?;
        let (ab, shared) = tm.shadow_block(b, &ARRAY_VALIDATOR)?;
        let fix = (|| {
            let h = ablock_header(&ab[..], value_size)?;
            if shared && h.nr_entries > 0 {
                elem.inc(tm, entries(&ab[..], &h, 0, h.nr_entries)?)?;
            }
            if ab.loc() != b {
                // The leaf's reference moves to the copy; shadowing already
                // dropped the one it held on the original.
                node::set_value64(&mut leaf[..], i, ab.loc())?;
            }
            Ok(())
        })();
        match fix {
            Ok(()) => Ok(ab),
            Err(e) => {
                tm.unlock(ab);
                Err(e)
            }
        }
    })();
    tm.unlock(leaf);
    r.map(|ab| (new_root, ab))
}

/// Checks that entry `entry` of array block `block_index` exists, without
/// changing anything.
fn check_present<R: BlockReader>(
    r: &R,
    root: u64,
    block_index: u64,
    entry: u32,
    value_size: usize,
) -> Result<()> {
    let b = lookup_ablock(r, root, block_index)?;
    let d = r.read_lock(b, &ARRAY_VALIDATOR)?;
    let h = ablock_header(&d[..], value_size)?;
    if entry >= h.nr_entries {
        return Err(Error::NoData);
    }
    Ok(())
}

/// Sets entry `index` to `value`; returns the new root. The new value
/// gains a reference and the old one loses one (unless they are `equal`).
/// `NoData`, with nothing changed, past the end.
pub fn set<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    root: u64,
    index: u32,
    value: &[u8],
) -> Result<u64> {
    tm.mutate(|tm| {
        let vs = elem.size();
        if value.len() != vs {
            return Err(Error::Invalid);
        }
        let (bi, entry) = locate(vs, index)?;
        check_present(tm, root, bi, entry, vs)?;
        let (new_root, mut ab) = shadow_ablock(tm, elem, root, bi)?;
        let r = (|| {
            let h = ablock_header(&ab[..], vs)?;
            if entry >= h.nr_entries {
                return Err(Error::Invalid);
            }
            let old = entries(&ab[..], &h, entry, entry + 1)?;
            if !elem.equal(old, value) {
                elem.inc(tm, value)?;
                elem.dec(tm, old)?;
            }
            entries_mut(&mut ab[..], &h, entry, entry + 1)?.copy_from_slice(value);
            Ok(())
        })();
        tm.unlock(ab);
        r.map(|()| new_root)
    })
}

/// Appends copies of `value` to array block `d` until it holds `new_nr`
/// values; each copy gains a reference.
fn fill_ablock<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    d: &mut [u8],
    value: &[u8],
    new_nr: u32,
) -> Result<()> {
    let mut h = ablock_header(d, elem.size())?;
    let nr = h.nr_entries;
    if new_nr < nr || new_nr > h.max_entries || value.len() != h.vs() {
        return Err(Error::Invalid);
    }
    let area = entries_mut(d, &h, nr, new_nr)?;
    for c in area.chunks_exact_mut(value.len()) {
        c.copy_from_slice(value);
    }
    elem.inc(tm, entries(d, &h, nr, new_nr)?)?;
    h.nr_entries = new_nr;
    h.write(d)
}

/// Drops the values of array block `d` from `new_nr` on; each loses its
/// reference.
fn trim_ablock<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    d: &mut [u8],
    new_nr: u32,
) -> Result<()> {
    let mut h = ablock_header(d, elem.size())?;
    let nr = h.nr_entries;
    if new_nr > nr {
        return Err(Error::Invalid);
    }
    elem.dec(tm, entries(d, &h, new_nr, nr)?)?;
    h.nr_entries = new_nr;
    h.write(d)
}

/// Allocates a new array block, fills it with `nr` values produced by
/// `fill` (which writes each value, given its position in the block), and
/// inserts it into the btree at `block_index`. Values gain a reference
/// each. Returns the new root.
fn insert_new_ablock<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    root: u64,
    block_index: u64,
    nr: u32,
    fill: &mut dyn FnMut(u32, &mut [u8]) -> Result<()>,
) -> Result<u64> {
    let vs = elem.size();
    let max = max_entries_for(vs)?;
    if nr > max {
        return Err(Error::Invalid);
    }
    let mut ab = tm.new_block(&ARRAY_VALIDATOR)?;
    let h = ArrayHeader {
        max_entries: max,
        nr_entries: nr,
        value_size: vs as u32,
    };
    let r = (|| {
        h.write(&mut ab[..])?;
        let area = entries_mut(&mut ab[..], &h, 0, nr)?;
        for (i, c) in area.chunks_exact_mut(vs).enumerate() {
            fill(i as u32, c)?;
        }
        elem.inc(tm, entries(&ab[..], &h, 0, nr)?)
    })();
    let loc = ab.loc();
    tm.unlock(ab);
    // A failure leaves `loc` allocated and unreferenced: the caller's
    // operation (run under `mutate`) poisons the transaction.
    r?;
    // The btree adopts the block's single reference.
    btree::insert(
        tm,
        &mut ArrayBlocks { elem },
        root,
        &[block_index],
        &loc.to_le_bytes(),
    )
}

/// Shape of an array of a given length: full blocks and the length of the
/// partial last one (0 if none).
#[derive(Clone, Copy)]
struct Shape {
    full: u64,
    tail: u32,
}

impl Shape {
    fn new(len: u32, max: u32) -> Shape {
        Shape {
            full: u64::from(len / max),
            tail: len % max,
        }
    }

    fn blocks(&self) -> u64 {
        self.full + u64::from(self.tail > 0)
    }
}

/// Resizes the array at `root` from `old_len` to `new_len` values; returns
/// the new root. Growing appends copies of `value` (each gaining a
/// reference); shrinking drops the values past the end (each losing one).
/// `old_len` must be the array's current length.
pub fn resize<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    root: u64,
    old_len: u32,
    new_len: u32,
    value: &[u8],
) -> Result<u64> {
    tm.mutate(|tm| {
        let vs = elem.size();
        if value.len() != vs {
            return Err(Error::Invalid);
        }
        let max = max_entries_for(vs)?;
        if old_len == new_len {
            return Ok(root);
        }
        let old = Shape::new(old_len, max);
        let new = Shape::new(new_len, max);
        if new_len > old_len {
            grow(tm, elem, root, old, new, max, value)
        } else {
            shrink(tm, elem, root, old, new)
        }
    })
}

fn extend_tail<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    root: u64,
    block_index: u64,
    new_nr: u32,
    value: &[u8],
) -> Result<u64> {
    let (root, mut ab) = shadow_ablock(tm, elem, root, block_index)?;
    let r = fill_ablock(tm, elem, &mut ab[..], value, new_nr);
    tm.unlock(ab);
    r.map(|()| root)
}

fn grow<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    mut root: u64,
    old: Shape,
    new: Shape,
    max: u32,
    value: &[u8],
) -> Result<u64> {
    let mut copy = |_: u32, c: &mut [u8]| {
        c.copy_from_slice(value);
        Ok(())
    };
    if new.full == old.full {
        // Only the partial last block changes (or appears).
        return if old.tail > 0 {
            extend_tail(tm, elem, root, old.full, new.tail, value)
        } else {
            insert_new_ablock(tm, elem, root, new.full, new.tail, &mut copy)
        };
    }
    if old.tail > 0 {
        root = extend_tail(tm, elem, root, old.full, max, value)?;
    }
    for bi in old.blocks()..new.full {
        root = insert_new_ablock(tm, elem, root, bi, max, &mut copy)?;
    }
    if new.tail > 0 {
        root = insert_new_ablock(tm, elem, root, new.full, new.tail, &mut copy)?;
    }
    Ok(root)
}

fn shrink<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    mut root: u64,
    old: Shape,
    new: Shape,
) -> Result<u64> {
    // Whole blocks past the new end go first; the btree drops their
    // references, and with the last one their values'.
    for bi in new.blocks()..old.blocks() {
        root = btree::remove(tm, &mut ArrayBlocks { elem: &mut *elem }, root, &[bi])?;
    }
    if new.tail > 0 {
        let (r, mut ab) = shadow_ablock(tm, elem, root, new.full)?;
        root = r;
        let t = trim_ablock(tm, elem, &mut ab[..], new.tail);
        tm.unlock(ab);
        t?;
    }
    Ok(root)
}

/// Builds a new array of `len` values; `f(index, out)` writes value
/// `index`, which then gains a reference. Returns the root. Cheaper than
/// growing and setting: each array block is written once.
pub fn new<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    elem: &mut dyn ValueType<IO>,
    len: u32,
    f: &mut dyn FnMut(u32, &mut [u8]) -> Result<()>,
) -> Result<u64> {
    tm.mutate(|tm| {
        let max = max_entries_for(elem.size())?;
        let mut root = empty(tm)?;
        let shape = Shape::new(len, max);
        for bi in 0..shape.blocks() {
            let nr = if bi < shape.full { max } else { shape.tail };
            // `bi * max` stays below `len`, so it fits a u32.
            let base = (bi as u32).wrapping_mul(max);
            let mut fill = |i: u32, c: &mut [u8]| f(base + i, c);
            root = insert_new_ablock(tm, elem, root, bi, nr, &mut fill)?;
        }
        Ok(root)
    })
}

/// Calls `f(index, value)` for every entry of the array at `root` (values
/// of `value_size` bytes), in index order; stops at the first error.
pub fn walk<R: BlockReader>(
    r: &R,
    root: u64,
    value_size: usize,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    btree::walk(r, root, &mut |key, v| {
        let b = u64::from_le_bytes(v.try_into().map_err(|_| Error::Invalid)?);
        let d = r.read_lock(b, &ARRAY_VALIDATOR)?;
        let h = ablock_header(&d[..], value_size)?;
        let base = key
            .checked_mul(u64::from(h.max_entries))
            .ok_or(Error::Invalid)?;
        let vals = entries(&d[..], &h, 0, h.nr_entries)?;
        for (i, c) in vals.chunks_exact(value_size).enumerate() {
            f(base.checked_add(i as u64).ok_or(Error::Invalid)?, c)?;
        }
        Ok(())
    })
}

/// Number of values in the array at `root`, derived from its last array
/// block (the length is normally kept by the caller; this is for checks).
pub fn len<R: BlockReader>(r: &R, root: u64, value_size: usize) -> Result<u64> {
    let mut key = [0u64; 1];
    if btree::find_highest_key(r, root, &mut key)? == 0 {
        return Ok(0);
    }
    let b = lookup_ablock(r, root, key[0])?;
    let d = r.read_lock(b, &ARRAY_VALIDATOR)?;
    let h = ablock_header(&d[..], value_size)?;
    key[0]
        .checked_mul(u64::from(h.max_entries))
        .and_then(|x| x.checked_add(u64::from(h.nr_entries)))
        .ok_or(Error::Invalid)
}

/// A forward cursor over an array's values, holding read locks on the
/// btree path and the current array block.
pub struct Cursor<'a, R: BlockReader> {
    r: &'a R,
    value_size: usize,
    tree: btree::Cursor<'a, R>,
    block: ReadRef<'a, R::Io>,
    header: ArrayHeader,
    /// Position in the current array block.
    pos: u32,
    /// Index of the current value in the array.
    index: u64,
}

impl<'a, R: BlockReader> Cursor<'a, R> {
    /// Positions on the first value; `NoData` for an empty array.
    pub fn begin(r: &'a R, root: u64, value_size: usize) -> Result<Self> {
        max_entries_for(value_size)?;
        let tree = btree::Cursor::begin(r, root)?;
        let (block, header) = Self::load(r, &tree, value_size)?;
        let mut c = Cursor {
            r,
            value_size,
            tree,
            block,
            header,
            pos: 0,
            index: 0,
        };
        if c.header.nr_entries == 0 {
            c.next_block()?;
        }
        Ok(c)
    }

    fn load(
        r: &'a R,
        tree: &btree::Cursor<'a, R>,
        value_size: usize,
    ) -> Result<(ReadRef<'a, R::Io>, ArrayHeader)> {
        let (_, v) = tree.get()?;
        let b = u64::from_le_bytes(v.try_into().map_err(|_| Error::Invalid)?);
        let block = r.read_lock(b, &ARRAY_VALIDATOR)?;
        let header = ablock_header(&block[..], value_size)?;
        Ok((block, header))
    }

    fn next_block(&mut self) -> Result<()> {
        loop {
            self.tree.next()?;
            let (block, header) = Self::load(self.r, &self.tree, self.value_size)?;
            self.block = block;
            self.header = header;
            self.pos = 0;
            if header.nr_entries > 0 {
                return Ok(());
            }
        }
    }

    /// Moves to the next value; `NoData` past the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<()> {
        if self.pos + 1 < self.header.nr_entries {
            self.pos += 1;
        } else {
            self.next_block()?;
        }
        self.index += 1;
        Ok(())
    }

    /// Skips `count` values; `NoData` if that runs past the end.
    pub fn skip(&mut self, mut count: u32) -> Result<()> {
        while count > 0 {
            let left_here = self.header.nr_entries.saturating_sub(self.pos + 1);
            if count <= left_here {
                self.pos += count;
                self.index += u64::from(count);
                return Ok(());
            }
            // Jump to the first value of the next block.
            count -= left_here + 1;
            self.index += u64::from(left_here) + 1;
            self.next_block()?;
        }
        Ok(())
    }

    /// Index of the current value.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The current value.
    pub fn get(&self) -> Result<&[u8]> {
        entries(&self.block[..], &self.header, self.pos, self.pos + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_entries_formula() {
        assert_eq!(calc_max_entries(8), 509);
        assert_eq!(calc_max_entries(4), 1018);
        assert_eq!(calc_max_entries(16), 254);
        assert_eq!(calc_max_entries(0), 0);
        assert_eq!(calc_max_entries(5000), 0);
    }

    #[test]
    fn validator_checks_header() {
        let mut d = [0u8; BLOCK_SIZE];
        ArrayHeader {
            max_entries: 509,
            nr_entries: 3,
            value_size: 8,
        }
        .write(&mut d)
        .unwrap();
        ARRAY_VALIDATOR.prepare_for_write(9, &mut d).unwrap();
        assert!(ARRAY_VALIDATOR.check(9, &d).is_ok());
        assert_eq!(ARRAY_VALIDATOR.check(10, &d), Err(Error::BadBlockNumber));
        let mut bad = d;
        set_le32(&mut bad, OFF_MAX, 508).unwrap();
        ARRAY_VALIDATOR.prepare_for_write(9, &mut bad).unwrap();
        assert_eq!(ARRAY_VALIDATOR.check(9, &bad), Err(Error::BadChecksum));
        let mut bad = d;
        set_le32(&mut bad, OFF_NR, 510).unwrap();
        ARRAY_VALIDATOR.prepare_for_write(9, &mut bad).unwrap();
        assert_eq!(ARRAY_VALIDATOR.check(9, &bad), Err(Error::BadChecksum));
        let mut bad = d;
        set_le32(&mut bad, OFF_VSIZE, 0).unwrap();
        ARRAY_VALIDATOR.prepare_for_write(9, &mut bad).unwrap();
        assert_eq!(ARRAY_VALIDATOR.check(9, &bad), Err(Error::BadChecksum));
        let mut bad = d;
        bad[100] ^= 1;
        assert_eq!(ARRAY_VALIDATOR.check(9, &bad), Err(Error::BadChecksum));
    }
}
