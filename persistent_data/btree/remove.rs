// SPDX-License-Identifier: GPL-2.0

//! Btree removal with upstream's rebalancing.
//!
//! On the way down, before entering a child, the child and one or two of
//! its siblings are rebalanced so the child can lose an entry: two siblings
//! are merged when they would together fit comfortably in one, three have
//! the middle one dissolved into its neighbours when they fit in two, and
//! otherwise entries are spread evenly. An internal node left with a single
//! child absorbs it (the tree gets shorter).

use super::insert::{inc_children, shadow_child, Spine};
use super::node::{self, header, BTREE_NODE_VALIDATOR};
use super::{lookup, BlockRefs, ValueType};
use crate::persistent_data::block_manager::WriteBlock;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::transaction_manager::TransactionManager;

fn merge_threshold(d: &[u8]) -> Result<usize> {
    Ok(header(d)?.max_entries as usize / 3)
}

/// Moves `count` entries across the boundary between `left` and `right`:
/// positive from the end of left to the front of right, negative the other
/// way.
fn shift(left: &mut [u8], right: &mut [u8], count: isize) -> Result<()> {
    let hl = header(left)?;
    let hr = header(right)?;
    if hl.max_entries != hr.max_entries || hl.value_size != hr.value_size {
        return Err(Error::BadChecksum);
    }
    let nl = hl.nr_entries as isize;
    let nr = hr.nr_entries as isize;
    let max = hl.max_entries as isize;
    if nl - count < 0 || nl - count > max || nr + count < 0 || nr + count > max {
        return Err(Error::Invalid);
    }
    if count > 0 {
        let c = count as usize;
        node::move_within(right, c, 0, nr as usize)?;
        node::copy_entries(right, 0, left, (nl - count) as usize, c)?;
    } else if count < 0 {
        let c = count.unsigned_abs();
        node::copy_entries(left, nl as usize, right, 0, c)?;
        node::move_within(right, 0, c, nr as usize - c)?;
    }
    node::set_nr_entries(left, (nl - count) as usize)?;
    node::set_nr_entries(right, (nr + count) as usize)
}

struct Child {
    index: usize,
    wb: WriteBlock,
}

fn rebalance2_nodes<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    parent: &mut [u8],
    l: &mut Child,
    r: &mut Child,
) -> Result<()> {
    let nl = node::nr_entries(&l.wb[..])?;
    let nr = node::nr_entries(&r.wb[..])?;
    // Keep both above a third full, whichever one the removal then hits.
    let threshold = 2 * (merge_threshold(&l.wb[..])? + 1);
    if nl + nr < threshold {
        node::copy_entries(&mut l.wb[..], nl, &r.wb[..], 0, nr)?;
        node::set_nr_entries(&mut l.wb[..], nl + nr)?;
        node::delete_at(parent, r.index)?;
        // Only the node goes; its children now belong to left.
        tm.dec(r.wb.loc())?;
    } else {
        let target_left = (nl + nr) / 2;
        shift(
            &mut l.wb[..],
            &mut r.wb[..],
            nl as isize - target_left as isize,
        )?;
        let k = node::key(&r.wb[..], 0)?;
        node::set_key(parent, r.index, k)?;
    }
    Ok(())
}

fn init_child<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    parent: &mut [u8],
    index: usize,
) -> Result<Child> {
    Ok(Child {
        index,
        wb: shadow_child(tm, vt, parent, index)?,
    })
}

fn rebalance2<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    parent: &mut [u8],
    vt: &mut dyn ValueType<IO>,
    left_index: usize,
) -> Result<()> {
    let mut l = init_child(tm, vt, parent, left_index)?;
    let mut r = match init_child(tm, vt, parent, left_index + 1) {
        Ok(r) => r,
        Err(e) => {
            tm.unlock(l.wb);
            return Err(e);
        }
    };
    let res = rebalance2_nodes(tm, parent, &mut l, &mut r);
    tm.unlock(l.wb);
    tm.unlock(r.wb);
    res
}

fn delete_center_node<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    parent: &mut [u8],
    l: &mut Child,
    c: &mut Child,
    r: &mut Child,
) -> Result<()> {
    let nl = node::nr_entries(&l.wb[..])?;
    let nc = node::nr_entries(&c.wb[..])?;
    let nr = node::nr_entries(&r.wb[..])?;
    let max = header(&l.wb[..])?.max_entries as usize;
    let s = (max - nl.min(max)).min(nc);
    if nl + s > max {
        return Err(Error::Invalid);
    }
    node::copy_entries(&mut l.wb[..], nl, &c.wb[..], 0, s)?;
    node::set_nr_entries(&mut l.wb[..], nl + s)?;
    if s != nc {
        let rest = nc - s;
        if nr + rest > max {
            return Err(Error::Invalid);
        }
        node::move_within(&mut r.wb[..], rest, 0, nr)?;
        node::copy_entries(&mut r.wb[..], 0, &c.wb[..], s, rest)?;
        node::set_nr_entries(&mut r.wb[..], nr + rest)?;
    }
    let k = node::key(&r.wb[..], 0)?;
    node::set_key(parent, r.index, k)?;
    node::delete_at(parent, c.index)?;
    r.index -= 1;
    tm.dec(c.wb.loc())?;
    rebalance2_nodes(tm, parent, l, r)
}

fn redistribute3(parent: &mut [u8], l: &mut Child, c: &mut Child, r: &mut Child) -> Result<()> {
    let (left, center, right) = (&mut l.wb[..], &mut c.wb[..], &mut r.wb[..]);
    let mut nl = node::nr_entries(left)? as isize;
    let nc = node::nr_entries(center)? as isize;
    let mut nr = node::nr_entries(right)? as isize;
    let max = header(left)?.max_entries as isize;
    let total = nl + nc + nr;
    let target_right = total / 3;
    let remainder = isize::from(target_right * 3 != total);
    let target_left = target_right + remainder;
    if target_left > max || target_right > max {
        return Err(Error::Invalid);
    }
    if nl < nr {
        let mut s = nl - target_left;
        if s < 0 && nc < -s {
            // Not enough in the centre: take from the right as well.
            shift(left, center, -nc)?;
            s += nc;
            shift(left, right, s)?;
            nr += s;
        } else {
            shift(left, center, s)?;
        }
        shift(center, right, target_right - nr)?;
    } else {
        let mut s = target_right - nr;
        if s > 0 && nc < s {
            shift(center, right, nc)?;
            s -= nc;
            shift(left, right, s)?;
            nl -= s;
        } else {
            shift(center, right, s)?;
        }
        shift(left, center, nl - target_left)?;
    }
    let ck = node::key(center, 0)?;
    let rk = node::key(right, 0)?;
    node::set_key(parent, c.index, ck)?;
    node::set_key(parent, r.index, rk)
}

fn rebalance3<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    parent: &mut [u8],
    vt: &mut dyn ValueType<IO>,
    left_index: usize,
) -> Result<()> {
    let mut l = init_child(tm, vt, parent, left_index)?;
    let mut c = match init_child(tm, vt, parent, left_index + 1) {
        Ok(c) => c,
        Err(e) => {
            tm.unlock(l.wb);
            return Err(e);
        }
    };
    let mut r = match init_child(tm, vt, parent, left_index + 2) {
        Ok(r) => r,
        Err(e) => {
            tm.unlock(l.wb);
            tm.unlock(c.wb);
            return Err(e);
        }
    };
    let res = (|| {
        let hl = header(&l.wb[..])?;
        let hc = header(&c.wb[..])?;
        let hr = header(&r.wb[..])?;
        if hl.max_entries != hc.max_entries || hc.max_entries != hr.max_entries {
            return Err(Error::BadChecksum);
        }
        let total = (hl.nr_entries + hc.nr_entries + hr.nr_entries) as usize;
        let threshold = merge_threshold(&l.wb[..])? * 4 + 1;
        if total < threshold {
            delete_center_node(tm, parent, &mut l, &mut c, &mut r)
        } else {
            redistribute3(parent, &mut l, &mut c, &mut r)
        }
    })();
    tm.unlock(l.wb);
    tm.unlock(c.wb);
    tm.unlock(r.wb);
    res
}

/// Makes sure the child of the current (internal) node that `key` falls in
/// can lose an entry.
fn rebalance_children<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    vt: &mut dyn ValueType<IO>,
    key: u64,
) -> Result<()> {
    let n = spine.current.as_mut().ok_or(Error::Invalid)?;
    let nr = node::nr_entries(&n[..])?;
    if nr == 1 {
        // A lone child: pull it up into this node.
        let b = node::value64(&n[..], 0)?;
        let shared = tm.block_is_shared(b)?;
        let child = tm.bm.read_copy(b, Some(&BTREE_NODE_VALIDATOR))?;
        if shared {
            inc_children(tm, &child[..], vt)?;
        }
        n.copy_from_slice(&child[..]);
        return tm.dec(b);
    }
    let i = node::lower_bound(&n[..], key)?;
    if i < 0 {
        return Err(Error::NoData);
    }
    let i = i as usize;
    let has_left = i > 0;
    let has_right = i + 1 < nr;
    if !has_left {
        rebalance2(tm, &mut n[..], vt, i)
    } else if !has_right {
        rebalance2(tm, &mut n[..], vt, i - 1)
    } else {
        rebalance3(tm, &mut n[..], vt, i - 1)
    }
}

/// How a descent picks the leaf entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Find {
    Exact,
    Nearest,
}

/// Shadows and rebalances down to the leaf for `key`; returns the entry's
/// index (`Exact`: `NoData` if absent; `Nearest`: `lower_bound`, maybe -1).
fn remove_raw<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    vt: &mut dyn ValueType<IO>,
    mut root: u64,
    key: u64,
    index: isize,
    find: Find,
) -> Result<isize> {
    let mut i = index;
    for _ in 0..super::MAX_DEPTH {
        spine.step(tm, root, vt)?;
        if i >= 0 {
            spine.patch_parent(i as usize)?;
        }
        let mut leaf = header(&spine.cur()?[..])?.is_leaf();
        if !leaf {
            rebalance_children(tm, spine, vt, key)?;
            leaf = header(&spine.cur()?[..])?.is_leaf();
        }
        let cur = spine.cur()?;
        i = node::lower_bound(&cur[..], key)?;
        if leaf {
            if find == Find::Exact
                && (i < 0
                    || i as usize >= node::nr_entries(&cur[..])?
                    || node::key(&cur[..], i as usize)? != key)
            {
                return Err(Error::NoData);
            }
            return Ok(i);
        }
        if i < 0 {
            return Err(Error::NoData);
        }
        root = node::value64(&cur[..], i as usize)?;
    }
    Err(Error::Invalid)
}

/// Removes `keys` and drops its value's reference; returns the new root.
/// `NoData` (with the tree untouched) if the key is absent.
pub fn remove<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    root: u64,
    keys: &[u64],
) -> Result<u64> {
    tm.mutate(|tm| {
        // Check first: a removal that shadows its path and then finds nothing
        // would leave the caller holding a released root.
        let mut probe = [0u8; 64];
        let probe = probe.get_mut(..vt.size()).ok_or(Error::Invalid)?;
        lookup(tm, root, keys, probe)?;

        let last = keys.len() - 1;
        let mut spine = Spine::new();
        let r = (|| {
            let mut index: isize = -1;
            let mut block = root;
            for (level, &k) in keys.iter().enumerate() {
                let i = if level == last {
                    remove_raw(tm, &mut spine, vt, block, k, index, Find::Exact)?
                } else {
                    remove_raw(tm, &mut spine, &mut BlockRefs, block, k, index, Find::Exact)?
                };
                let cur = spine.current.as_mut().ok_or(Error::Invalid)?;
                if level != last {
                    block = node::value64(&cur[..], i as usize)?;
                    index = i;
                    continue;
                }
                vt.dec(tm, node::value(&cur[..], i as usize)?)?;
                node::delete_at(&mut cur[..], i as usize)?;
            }
            spine.root()
        })();
        spine.exit(tm);
        r
    })
}

fn remove_one<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    root: u64,
    keys: &mut [u64],
    end_key: u64,
) -> (Option<u64>, Result<()>) {
    let last = keys.len() - 1;
    let mut spine = Spine::new();
    let r = (|| {
        let mut index: isize = -1;
        let mut block = root;
        for &k in keys.get(..last).unwrap_or(&[]) {
            let i = remove_raw(tm, &mut spine, &mut BlockRefs, block, k, index, Find::Exact)?;
            block = node::value64(&spine.cur()?[..], i as usize)?;
            index = i;
        }
        let k = *keys.get(last).ok_or(Error::Invalid)?;
        let i = remove_raw(tm, &mut spine, vt, block, k, index, Find::Nearest)?.max(0) as usize;
        let cur = spine.current.as_mut().ok_or(Error::Invalid)?;
        if i >= node::nr_entries(&cur[..])? {
            return Err(Error::NoData);
        }
        let found = node::key(&cur[..], i)?;
        if found >= k && found < end_key {
            vt.dec(tm, node::value(&cur[..], i)?)?;
            node::delete_at(&mut cur[..], i)?;
            if let Some(kl) = keys.get_mut(last) {
                *kl = found + 1;
            }
            Ok(())
        } else {
            Err(Error::NoData)
        }
    })();
    let root = spine.root;
    spine.exit(tm);
    (root, r)
}

/// Removes entries from `keys` (bottom level) up to `end_key`, one at a
/// time, stopping at the first gap as upstream's 6.12 code does (the
/// caller loops with `lookup_next`). Returns the new root and how many
/// entries went.
pub fn remove_leaves<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    mut root: u64,
    keys: &[u64],
    end_key: u64,
) -> Result<(u64, u32)> {
    tm.mutate(|tm| {
        let mut k = [0u64; 8];
        let k = k.get_mut(..keys.len()).ok_or(Error::Invalid)?;
        if k.is_empty() {
            return Err(Error::Invalid);
        }
        // Element by element: the lengths match, but `copy_from_slice`
        // keeps a panic path the module must not carry.
        for (d, s) in k.iter_mut().zip(keys) {
            *d = *s;
        }
        let mut removed = 0u32;
        loop {
            let (new_root, r) = remove_one(tm, vt, root, k, end_key);
            if let Some(nr) = new_root {
                root = nr;
            }
            match r {
                Ok(()) => removed += 1,
                Err(Error::NoData) => return Ok((root, removed)),
                Err(e) => return Err(e),
            }
        }
    })
}
