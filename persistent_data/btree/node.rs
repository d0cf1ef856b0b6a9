// SPDX-License-Identifier: GPL-2.0

//! On-disk btree node: encoding, decoding and in-node entry moves.
//!
//! Layout (one 4 KiB block, little-endian): a 32-byte header
//! `csum u32 | flags u32 | blocknr u64 | nr_entries u32 | max_entries u32 |
//! value_size u32 | padding u32`, then `keys[max_entries]` (u64), then
//! `values[max_entries]` of `value_size` bytes. Values start after
//! `max_entries` keys, not after `nr_entries`.
//!
//! Every accessor is bounds-checked and returns [`Error::Invalid`] instead of
//! panicking; headers are sanity-checked by [`NodeValidator`] on read.

use crate::persistent_data::endian::{le32, le64, set_le32};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BLOCK_SIZE};
use crate::persistent_data::validator::{CsumValidator, Validator};

/// `flags` bit of an internal node (values are child block numbers).
pub const INTERNAL_NODE: u32 = 1;
/// `flags` bit of a leaf node.
pub const LEAF_NODE: u32 = 2;
/// Size of the node header.
pub const NODE_HEADER_SIZE: usize = 32;
/// Checksum salt of btree nodes.
pub const BTREE_CSUM_XOR: u32 = 121107;

const OFF_FLAGS: usize = 4;
const OFF_NR: usize = 16;
const OFF_MAX: usize = 20;
const OFF_VSIZE: usize = 24;

/// Largest multiple of three entries that fits a block: multiples of three
/// behave better under repeated insert/remove than `2n + 1`.
pub fn calc_max_entries(value_size: usize) -> u32 {
    let total = (BLOCK_SIZE - NODE_HEADER_SIZE) / (8 + value_size);
    (3 * (total / 3)) as u32
}

/// Validator for btree nodes: location, checksum, then header sanity.
pub struct NodeValidator {
    csum: CsumValidator,
}

/// The btree node validator.
pub static BTREE_NODE_VALIDATOR: NodeValidator = NodeValidator {
    csum: CsumValidator {
        name: "btree_node",
        xor: BTREE_CSUM_XOR,
        blocknr_offset: 8,
    },
};

impl Validator for NodeValidator {
    fn name(&self) -> &'static str {
        self.csum.name
    }

    fn check(&self, b: u64, data: &Block) -> Result<()> {
        self.csum.check(b, data)?;
        header(data).map(|_| ()).map_err(|_| Error::BadChecksum)
    }

    fn prepare_for_write(&self, b: u64, data: &mut Block) -> Result<()> {
        self.csum.prepare_for_write(b, data)
    }
}

/// Decoded node header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `INTERNAL_NODE` or `LEAF_NODE`.
    pub flags: u32,
    /// Entries in use.
    pub nr_entries: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Bytes per value.
    pub value_size: u32,
}

impl Header {
    /// Decodes the header of `d` (not checked: see [`header`]).
    #[inline]
    pub fn read(d: &[u8]) -> Result<Header> {
        // The layout, spelt out as a pattern: nothing to get out of range.
        let Some(
            &[_, _, _, _, f0, f1, f2, f3, _, _, _, _, _, _, _, _, n0, n1, n2, n3, m0, m1, m2, m3, v0, v1, v2, v3, _, _, _, _],
        ) = d.first_chunk::<NODE_HEADER_SIZE>()
        else {
            return Err(Error::Invalid);
        };
        Ok(Header {
            flags: u32::from_le_bytes([f0, f1, f2, f3]),
            nr_entries: u32::from_le_bytes([n0, n1, n2, n3]),
            max_entries: u32::from_le_bytes([m0, m1, m2, m3]),
            value_size: u32::from_le_bytes([v0, v1, v2, v3]),
        })
    }

    /// Encodes into `d` (leaves csum and blocknr alone).
    pub fn write(&self, d: &mut [u8]) -> Result<()> {
        set_le32(d, OFF_FLAGS, self.flags)?;
        set_le32(d, OFF_NR, self.nr_entries)?;
        set_le32(d, OFF_MAX, self.max_entries)?;
        set_le32(d, OFF_VSIZE, self.value_size)
    }

    /// The structural checks upstream's `node_check` makes.
    #[inline]
    pub fn check(&self) -> Result<()> {
        let need = (8u64 + u64::from(self.value_size))
            .checked_mul(u64::from(self.max_entries))
            .and_then(|x| x.checked_add(NODE_HEADER_SIZE as u64))
            .ok_or(Error::Invalid)?;
        if need > BLOCK_SIZE as u64
            || self.nr_entries > self.max_entries
            || self.flags & (INTERNAL_NODE | LEAF_NODE) == 0
        {
            return Err(Error::Invalid);
        }
        Ok(())
    }

    /// True for internal nodes.
    pub fn is_internal(&self) -> bool {
        self.flags & INTERNAL_NODE != 0
    }

    /// True for leaves.
    pub fn is_leaf(&self) -> bool {
        self.flags & LEAF_NODE != 0
    }

    fn vs(&self) -> usize {
        self.value_size as usize
    }

    fn val_off(&self, i: usize) -> usize {
        NODE_HEADER_SIZE + 8 * self.max_entries as usize + self.vs() * i
    }
}

/// Header of `d`, checked (a node we made ourselves is never checked by the
/// validator, so every user re-checks before trusting sizes).
#[inline]
pub fn header(d: &[u8]) -> Result<Header> {
    let h = Header::read(d)?;
    h.check()?;
    Ok(h)
}

/// A read-only view of a node whose header was read and checked once, for
/// the read paths (a lookup touches a node a handful of times; re-reading
/// the header each time was a large share of its cost).
#[derive(Clone, Copy)]
pub struct Node<'a> {
    h: Header,
    /// The keys of the entries in use.
    keys: &'a [[u8; 8]],
    /// The values of the entries in use.
    values: &'a [u8],
}

impl<'a> Node<'a> {
    /// Checks `d`'s header and that its entries lie inside `d`.
    #[inline]
    // `as_chunks` is newer than the kernel's minimum Rust (1.78), but the
    // module is built with the pinned toolchain (rust-toolchain.toml), as
    // the kernel's own metadata requires; it saves half of a lookup's key
    // comparisons' cost.
    #[allow(clippy::incompatible_msrv)]
    pub fn new(d: &'a [u8]) -> Result<Self> {
        let h = header(d)?;
        let nr = h.nr_entries as usize;
        // `check` bounds `max_entries` and the value size so that every
        // entry lies inside a block: these cannot overflow.
        let keys = d
            .get(NODE_HEADER_SIZE..NODE_HEADER_SIZE + 8 * nr)
            .ok_or(Error::Invalid)?
            .as_chunks::<8>()
            .0;
        let v0 = h.val_off(0);
        let values = d.get(v0..v0 + h.vs() * nr).ok_or(Error::Invalid)?;
        Ok(Node { h, keys, values })
    }

    /// The checked header.
    #[inline]
    pub fn header(&self) -> Header {
        self.h
    }

    /// Entries in use.
    #[inline]
    pub fn nr_entries(&self) -> usize {
        self.h.nr_entries as usize
    }

    /// True for internal nodes.
    #[inline]
    pub fn is_internal(&self) -> bool {
        self.h.is_internal()
    }

    /// Key `i` (an entry in use).
    #[inline]
    pub fn key(&self, i: usize) -> Result<u64> {
        self.keys
            .get(i)
            .map(|k| u64::from_le_bytes(*k))
            .ok_or(Error::Invalid)
    }

    /// Value `i` (an entry in use).
    #[inline]
    pub fn value(&self, i: usize) -> Result<&'a [u8]> {
        let vs = self.h.vs();
        self.values.get(vs * i..vs * i + vs).ok_or(Error::Invalid)
    }

    /// Value `i` as a little-endian u64 (child block or subtree root).
    #[inline]
    pub fn value64(&self, i: usize) -> Result<u64> {
        self.value(i)?
            .get(..8)
            .and_then(|v| v.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(Error::Invalid)
    }

    /// Binary search, assuming sorted keys without duplicates: `Ok` with
    /// the index of `key`, else `Err` with the index of the first larger
    /// key (possibly `nr_entries`).
    #[inline]
    pub fn search(&self, key: u64) -> core::result::Result<usize, usize> {
        self.keys
            .binary_search_by(|k| u64::from_le_bytes(*k).cmp(&key))
    }

    /// Index of the largest key `<= key`, or -1.
    #[inline]
    pub fn lower_bound(&self, key: u64) -> isize {
        match self.search(key) {
            Ok(i) => i as isize,
            Err(i) => i as isize - 1,
        }
    }

    /// Index of the smallest key `>= key`, or `nr_entries`.
    #[inline]
    pub fn upper_bound(&self, key: u64) -> isize {
        match self.search(key) {
            Ok(i) | Err(i) => i as isize,
        }
    }
}

/// Initialises an empty node header.
pub fn init_node(d: &mut [u8], flags: u32, value_size: usize) -> Result<()> {
    Header {
        flags,
        nr_entries: 0,
        max_entries: calc_max_entries(value_size),
        value_size: u32::try_from(value_size).map_err(|_| Error::Invalid)?,
    }
    .write(d)
}

/// Number of entries in use.
#[inline]
pub fn nr_entries(d: &[u8]) -> Result<usize> {
    Ok(le32(d, OFF_NR)? as usize)
}

/// Sets the number of entries in use.
pub fn set_nr_entries(d: &mut [u8], n: usize) -> Result<()> {
    set_le32(d, OFF_NR, u32::try_from(n).map_err(|_| Error::Invalid)?)
}

/// Key `i` (below `max_entries`).
#[inline]
pub fn key(d: &[u8], i: usize) -> Result<u64> {
    if i >= le32(d, OFF_MAX)? as usize {
        return Err(Error::Invalid);
    }
    le64(d, NODE_HEADER_SIZE + 8 * i)
}

/// Sets key `i`.
pub fn set_key(d: &mut [u8], i: usize, k: u64) -> Result<()> {
    let h = Header::read(d)?;
    if i >= h.max_entries as usize {
        return Err(Error::Invalid);
    }
    let s = d
        .get_mut(NODE_HEADER_SIZE + 8 * i..NODE_HEADER_SIZE + 8 * i + 8)
        .ok_or(Error::Invalid)?;
    s.copy_from_slice(&k.to_le_bytes());
    Ok(())
}

/// Value bytes of entry `i`.
#[inline]
pub fn value(d: &[u8], i: usize) -> Result<&[u8]> {
    let h = Header::read(d)?;
    if i >= h.max_entries as usize {
        return Err(Error::Invalid);
    }
    let o = h.val_off(i);
    d.get(o..o + h.vs()).ok_or(Error::Invalid)
}

/// Mutable value bytes of entry `i`.
pub fn value_mut(d: &mut [u8], i: usize) -> Result<&mut [u8]> {
    let h = Header::read(d)?;
    if i >= h.max_entries as usize {
        return Err(Error::Invalid);
    }
    let o = h.val_off(i);
    d.get_mut(o..o + h.vs()).ok_or(Error::Invalid)
}

/// The values of entries `0..nr_entries`, contiguous.
pub fn values(d: &[u8]) -> Result<&[u8]> {
    let h = header(d)?;
    let o = h.val_off(0);
    d.get(o..o + h.vs() * h.nr_entries as usize)
        .ok_or(Error::Invalid)
}

/// Value `i` as a little-endian u64 (child block or subtree root).
#[inline]
pub fn value64(d: &[u8], i: usize) -> Result<u64> {
    let v = value(d, i)?;
    let a: [u8; 8] = v
        .get(..8)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::Invalid)?;
    Ok(u64::from_le_bytes(a))
}

/// Sets value `i` to a little-endian u64.
pub fn set_value64(d: &mut [u8], i: usize, v: u64) -> Result<()> {
    let s = value_mut(d, i)?;
    s.get_mut(..8)
        .ok_or(Error::Invalid)?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// Sets value `i`.
pub fn set_value(d: &mut [u8], i: usize, v: &[u8]) -> Result<()> {
    let s = value_mut(d, i)?;
    if s.len() != v.len() {
        return Err(Error::Invalid);
    }
    s.copy_from_slice(v);
    Ok(())
}

/// Index of the largest key `<= key`, or -1.
#[inline]
pub fn lower_bound(d: &[u8], key: u64) -> Result<isize> {
    Ok(Node::new(d)?.lower_bound(key))
}

/// Index of the smallest key `>= key`, or `nr_entries`.
#[inline]
pub fn upper_bound(d: &[u8], key: u64) -> Result<isize> {
    Ok(Node::new(d)?.upper_bound(key))
}

/// Moves `count` entries inside one node from `src` to `dst` (overlap ok).
pub fn move_within(d: &mut [u8], dst: usize, src: usize, count: usize) -> Result<()> {
    let h = header(d)?;
    let max = h.max_entries as usize;
    if dst + count > max || src + count > max {
        return Err(Error::Invalid);
    }
    let k0 = NODE_HEADER_SIZE;
    copy_within_checked(d, k0 + 8 * src, k0 + 8 * dst, 8 * count)?;
    copy_within_checked(d, h.val_off(src), h.val_off(dst), h.vs() * count)
}

fn copy_within_checked(d: &mut [u8], from: usize, to: usize, len: usize) -> Result<()> {
    if from + len > d.len() || to + len > d.len() {
        return Err(Error::Invalid);
    }
    d.copy_within(from..from + len, to);
    Ok(())
}

/// Copies `count` entries from node `src` (at `soff`) into node `dst` (at
/// `doff`). Both nodes must have the same value size.
pub fn copy_entries(
    dst: &mut [u8],
    doff: usize,
    src: &[u8],
    soff: usize,
    count: usize,
) -> Result<()> {
    let hd = header(dst)?;
    let hs = header(src)?;
    if hd.value_size != hs.value_size
        || doff + count > hd.max_entries as usize
        || soff + count > hs.max_entries as usize
    {
        return Err(Error::Invalid);
    }
    let k0 = NODE_HEADER_SIZE;
    let sk = src
        .get(k0 + 8 * soff..k0 + 8 * (soff + count))
        .ok_or(Error::Invalid)?;
    dst.get_mut(k0 + 8 * doff..k0 + 8 * (doff + count))
        .ok_or(Error::Invalid)?
        .copy_from_slice(sk);
    let vs = hs.vs();
    let sv = src
        .get(hs.val_off(soff)..hs.val_off(soff) + vs * count)
        .ok_or(Error::Invalid)?;
    dst.get_mut(hd.val_off(doff)..hd.val_off(doff) + vs * count)
        .ok_or(Error::Invalid)?
        .copy_from_slice(sv);
    Ok(())
}

/// Inserts `(k, v)` at `index`, shifting later entries up.
pub fn insert_at(d: &mut [u8], index: usize, k: u64, v: &[u8]) -> Result<()> {
    let h = header(d)?;
    let nr = h.nr_entries as usize;
    if index > nr || nr >= h.max_entries as usize || v.len() != h.vs() {
        return Err(Error::Invalid);
    }
    if index < nr {
        move_within(d, index + 1, index, nr - index)?;
    }
    set_key(d, index, k)?;
    set_value(d, index, v)?;
    set_nr_entries(d, nr + 1)
}

/// Deletes entry `index`, shifting later entries down.
pub fn delete_at(d: &mut [u8], index: usize) -> Result<()> {
    let nr = header(d)?.nr_entries as usize;
    if index >= nr {
        return Err(Error::Invalid);
    }
    let after = nr - index - 1;
    if after > 0 {
        move_within(d, index, index + 1, after)?;
    }
    set_nr_entries(d, nr - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_entries_formula() {
        assert_eq!(calc_max_entries(8), 252);
        assert_eq!(calc_max_entries(16), 168);
        assert_eq!(calc_max_entries(24), 126);
        assert_eq!(calc_max_entries(4), 336);
    }

    #[test]
    fn insert_delete_search() {
        let mut d = [0u8; BLOCK_SIZE];
        init_node(&mut d, LEAF_NODE, 8).unwrap();
        for (i, k) in [10u64, 30, 20, 5].iter().enumerate() {
            let pos = upper_bound(&d, *k).unwrap() as usize;
            insert_at(&mut d, pos, *k, &(i as u64).to_le_bytes()).unwrap();
        }
        let keys: std::vec::Vec<u64> = (0..4).map(|i| key(&d, i).unwrap()).collect();
        assert_eq!(keys, [5, 10, 20, 30]);
        assert_eq!(lower_bound(&d, 4).unwrap(), -1);
        assert_eq!(lower_bound(&d, 25).unwrap(), 2);
        assert_eq!(upper_bound(&d, 25).unwrap(), 3);
        assert_eq!(upper_bound(&d, 31).unwrap(), 4);
        assert_eq!(value64(&d, 2).unwrap(), 2);
        delete_at(&mut d, 0).unwrap();
        assert_eq!(key(&d, 0).unwrap(), 10);
        assert_eq!(nr_entries(&d).unwrap(), 3);
        assert!(delete_at(&mut d, 3).is_err());
        // Short or oversized nodes are errors, not zeroes.
        assert_eq!(nr_entries(&d[..10]), Err(Error::Invalid));
        assert_eq!(key(&d, 252), Err(Error::Invalid));
        assert_eq!(lower_bound(&d[..40], 5), Err(Error::Invalid));
        // Value area begins after max_entries keys.
        assert_eq!(Header::read(&d).unwrap().val_off(0), 32 + 8 * 252);
    }

    #[test]
    fn validator_rejects_bad_headers() {
        let mut d = [0u8; BLOCK_SIZE];
        init_node(&mut d, LEAF_NODE, 8).unwrap();
        BTREE_NODE_VALIDATOR.prepare_for_write(7, &mut d).unwrap();
        assert!(BTREE_NODE_VALIDATOR.check(7, &d).is_ok());
        let mut bad = d;
        set_le32(&mut bad, OFF_NR, 253).unwrap();
        BTREE_NODE_VALIDATOR.prepare_for_write(7, &mut bad).unwrap();
        assert_eq!(BTREE_NODE_VALIDATOR.check(7, &bad), Err(Error::BadChecksum));
        let mut bad = d;
        set_le32(&mut bad, OFF_FLAGS, 0).unwrap();
        BTREE_NODE_VALIDATOR.prepare_for_write(7, &mut bad).unwrap();
        assert_eq!(BTREE_NODE_VALIDATOR.check(7, &bad), Err(Error::BadChecksum));
        assert_eq!(
            BTREE_NODE_VALIDATOR.check(8, &d),
            Err(Error::BadBlockNumber)
        );
    }
}
