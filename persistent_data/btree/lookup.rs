// SPDX-License-Identifier: GPL-2.0

//! Read-only btree queries. They take any [`BlockReader`], so they also run
//! on the non-blocking view (returning `WouldBlock` on a cache miss). None
//! of them allocates or recurses: each holds one node at a time and walks
//! at most [`MAX_DEPTH`] levels, so a corrupt (even cyclic) tree ends in an
//! error, not an exhausted stack.

use super::node::{Node, BTREE_NODE_VALIDATOR};
use super::MAX_DEPTH;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::transaction_manager::BlockReader;

fn copy_value(n: &Node<'_>, i: usize, out: &mut [u8]) -> Result<()> {
    let v = n.value(i)?;
    if v.len() != out.len() {
        return Err(Error::Invalid);
    }
    // Most values are 8 bytes (mappings, roots): copy those inline rather
    // than through a call to memcpy.
    match (<&mut [u8; 8]>::try_from(&mut *out), <&[u8; 8]>::try_from(v)) {
        (Ok(o), Ok(v)) => *o = *v,
        _ => out.copy_from_slice(v),
    }
    Ok(())
}

/// Descends one level's tree from `block` to the entry with the largest
/// key `<= key`. Returns that key and copies its value.
#[inline]
fn lookup_raw<R: BlockReader>(r: &R, mut block: u64, key: u64, out: &mut [u8]) -> Result<u64> {
    for _ in 0..MAX_DEPTH {
        let d = r.read_lock(block, &BTREE_NODE_VALIDATOR)?;
        let n = Node::new(&d[..])?;
        let i = n.lower_bound(key);
        if i < 0 {
            return Err(Error::NoData);
        }
        let i = i as usize;
        if n.is_internal() {
            block = n.value64(i)?;
            continue;
        }
        copy_value(&n, i, out)?;
        return n.key(i);
    }
    Err(Error::Invalid)
}

/// Looks up `keys` (one per level); copies the value into `out`, whose
/// length must be the tree's value size. `NoData` if absent.
pub fn lookup<R: BlockReader>(r: &R, mut root: u64, keys: &[u64], out: &mut [u8]) -> Result<()> {
    let (last, upper) = keys.split_last().ok_or(Error::Invalid)?;
    for &k in upper {
        let mut v = [0u8; 8];
        if lookup_raw(r, root, k, &mut v)? != k {
            return Err(Error::NoData);
        }
        root = u64::from_le_bytes(v);
    }
    if lookup_raw(r, root, *last, out)? != *last {
        return Err(Error::NoData);
    }
    Ok(())
}

/// The lowest key `>= key` in one level's tree, copying its value.
///
/// Descends choosing the child whose range holds `key`; on the way it
/// remembers the deepest right sibling of the path. If the leaf reached
/// has nothing `>= key`, the answer is the lowest entry of that sibling's
/// subtree (every key there is above `key`, and nothing between the leaf
/// and it is), reached by one more leftmost descent. Upstream recurses and
/// retries siblings at each level; on a valid tree both find the same
/// entry, and here a corrupt one costs at most two descents, not
/// exponential time.
fn lookup_next_single<R: BlockReader>(r: &R, root: u64, key: u64, out: &mut [u8]) -> Result<u64> {
    let mut block = root;
    // The subtree to try when the path runs out of keys.
    let mut next: Option<u64> = None;
    let mut retried = false;
    let mut depth = 0;
    loop {
        depth += 1;
        if depth > 2 * MAX_DEPTH {
            return Err(Error::Invalid);
        }
        let d = r.read_lock(block, &BTREE_NODE_VALIDATOR)?;
        let n = Node::new(&d[..])?;
        let nr = n.nr_entries();
        if n.is_internal() {
            // All keys may be above `key`: then the first child holds it.
            let i = n.lower_bound(key).max(0) as usize;
            if i >= nr {
                return Err(Error::NoData);
            }
            if i + 1 < nr {
                next = Some(n.value64(i + 1)?);
            }
            block = n.value64(i)?;
            continue;
        }
        let i = n.upper_bound(key) as usize;
        if i < nr {
            copy_value(&n, i, out)?;
            return n.key(i);
        }
        // The sibling subtree's leftmost leaf holds keys (only a root
        // leaf is ever empty): missing there too is corruption.
        if retried {
            return Err(Error::Invalid);
        }
        block = next.take().ok_or(Error::NoData)?;
        retried = true;
    }
}

/// Exact match on the upper levels; at the bottom level finds the lowest
/// key `>= keys[last]`. Returns that key and copies its value into `out`.
pub fn lookup_next<R: BlockReader>(
    r: &R,
    mut root: u64,
    keys: &[u64],
    out: &mut [u8],
) -> Result<u64> {
    let (last, upper) = keys.split_last().ok_or(Error::Invalid)?;
    for &k in upper {
        let mut v = [0u8; 8];
        if lookup_raw(r, root, k, &mut v)? != k {
            return Err(Error::NoData);
        }
        root = u64::from_le_bytes(v);
    }
    lookup_next_single(r, root, *last, out)
}

/// Key at the highest (or lowest) end of one level's tree, and the value
/// next to it as a u64 (the next level's root).
fn find_key<R: BlockReader>(r: &R, mut block: u64, highest: bool) -> Result<(u64, u64)> {
    for _ in 0..MAX_DEPTH {
        let d = r.read_lock(block, &BTREE_NODE_VALIDATOR)?;
        let n = Node::new(&d[..])?;
        let nr = n.nr_entries();
        if nr == 0 {
            return Err(Error::NoData);
        }
        let i = if highest { nr - 1 } else { 0 };
        let k = n.key(i)?;
        let v = if n.is_internal() || n.header().value_size >= 8 {
            n.value64(i)?
        } else {
            0
        };
        if n.is_internal() {
            block = v;
            continue;
        }
        return Ok((k, v));
    }
    Err(Error::Invalid)
}

fn find_extreme<R: BlockReader>(
    r: &R,
    mut root: u64,
    keys: &mut [u64],
    highest: bool,
) -> Result<usize> {
    let levels = keys.len();
    let mut count = 0;
    for (level, out) in keys.iter_mut().enumerate() {
        match find_key(r, root, highest) {
            Ok((k, v)) => {
                *out = k;
                count += 1;
                if level + 1 < levels {
                    root = v;
                }
            }
            Err(Error::NoData) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// Fills `keys` (one per level) with the highest key; returns how many
/// levels were filled in (0 for an empty tree).
pub fn find_highest_key<R: BlockReader>(r: &R, root: u64, keys: &mut [u64]) -> Result<usize> {
    find_extreme(r, root, keys, true)
}

/// Fills `keys` (one per level) with the lowest key; returns how many
/// levels were filled in (0 for an empty tree).
pub fn find_lowest_key<R: BlockReader>(r: &R, root: u64, keys: &mut [u64]) -> Result<usize> {
    find_extreme(r, root, keys, false)
}
