// SPDX-License-Identifier: GPL-2.0

//! Btree insertion: shadowing spine, preemptive splits and rebalancing,
//! following upstream's choices exactly so trees have the same shape.
//!
//! On the way down every node on the path is shadowed. A full node is made
//! room in before descending: the root is split beneath itself (two new
//! children); other nodes first try to move entries into an unshared
//! sibling with at least [`SPACE_THRESHOLD`] free entries, else split one
//! node into two (at either end of the parent, or next to a shared
//! sibling) or two into three.

use super::node::{self, header, BTREE_NODE_VALIDATOR, INTERNAL_NODE, LEAF_NODE};
use super::{BlockRefs, ValueType};
use crate::persistent_data::block_manager::WriteBlock;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::transaction_manager::{with_runs, TransactionManager};

/// Fewest free entries a sibling needs before entries are moved into it.
const SPACE_THRESHOLD: usize = 8;

/// The locked path of an update: the node being worked on and its parent.
pub(crate) struct Spine {
    pub(crate) parent: Option<WriteBlock>,
    pub(crate) current: Option<WriteBlock>,
    pub(crate) root: Option<u64>,
}

/// Takes a reference on everything a (shared, just shadowed) node points
/// to: children of internal nodes, values of leaves.
pub(crate) fn inc_children<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    d: &[u8],
    vt: &mut dyn ValueType<IO>,
) -> Result<()> {
    let h = header(d)?;
    let values = node::values(d)?;
    if h.flags & INTERNAL_NODE != 0 {
        with_runs(values, |b, e| tm.inc_range(b, e))
    } else {
        vt.inc(tm, values)
    }
}

/// Shadows child `index` of `parent` and points the parent at the copy.
pub(crate) fn shadow_child<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    parent: &mut [u8],
    index: usize,
) -> Result<WriteBlock> {
    let b = node::value64(parent, index)?;
    let (wb, inc) = tm.shadow_block(b, &BTREE_NODE_VALIDATOR)?;
    if inc {
        if let Err(e) = inc_children(tm, &wb[..], vt) {
            tm.unlock(wb);
            return Err(e);
        }
    }
    if let Err(e) = node::set_value64(parent, index, wb.loc()) {
        tm.unlock(wb);
        return Err(e);
    }
    Ok(wb)
}

impl Spine {
    pub(crate) fn new() -> Self {
        Spine {
            parent: None,
            current: None,
            root: None,
        }
    }

    /// Moves down to (a shadow of) block `b`.
    pub(crate) fn step<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        b: u64,
        vt: &mut dyn ValueType<IO>,
    ) -> Result<()> {
        if let Some(p) = self.parent.take() {
            tm.unlock(p);
        }
        let (wb, inc) = tm.shadow_block(b, &BTREE_NODE_VALIDATOR)?;
        if inc {
            if let Err(e) = inc_children(tm, &wb[..], vt) {
                tm.unlock(wb);
                return Err(e);
            }
        }
        self.root.get_or_insert(wb.loc());
        self.parent = self.current.take();
        self.current = Some(wb);
        Ok(())
    }

    /// Releases every lock held.
    pub(crate) fn exit<IO: BlockIo>(&mut self, tm: &mut TransactionManager<IO>) {
        if let Some(p) = self.parent.take() {
            tm.unlock(p);
        }
        if let Some(c) = self.current.take() {
            tm.unlock(c);
        }
    }

    pub(crate) fn cur(&mut self) -> Result<&mut WriteBlock> {
        self.current.as_mut().ok_or(Error::Invalid)
    }

    pub(crate) fn root(&self) -> Result<u64> {
        self.root.ok_or(Error::Invalid)
    }

    /// Points the parent's entry `i` at the current node.
    pub(crate) fn patch_parent(&mut self, i: usize) -> Result<()> {
        if let (Some(p), Some(c)) = (self.parent.as_mut(), self.current.as_ref()) {
            node::set_value64(&mut p[..], i, c.loc())?;
        }
        Ok(())
    }
}

/// Allocates an empty leaf for values of `value_size` bytes; returns its
/// location (the new tree's root).
pub fn empty<IO: BlockIo>(tm: &mut TransactionManager<IO>, value_size: usize) -> Result<u64> {
    tm.mutate(|tm| {
        if value_size == 0 || node::calc_max_entries(value_size) == 0 {
            return Err(Error::Invalid);
        }
        let mut wb = tm.new_block(&BTREE_NODE_VALIDATOR)?;
        let r = node::init_node(&mut wb[..], LEAF_NODE, value_size);
        let loc = wb.loc();
        tm.unlock(wb);
        r.map(|()| loc)
    })
}

fn new_node_like<IO: BlockIo>(tm: &mut TransactionManager<IO>, like: &[u8]) -> Result<WriteBlock> {
    let h = header(like)?;
    let mut wb = tm.new_block(&BTREE_NODE_VALIDATOR)?;
    match (node::Header { nr_entries: 0, ..h }).write(&mut wb[..]) {
        Ok(()) => Ok(wb),
        Err(e) => {
            tm.unlock(wb);
            Err(e)
        }
    }
}

fn shift_down(n: &mut [u8], count: usize) -> Result<()> {
    let nr = node::nr_entries(n)?;
    let rest = nr.checked_sub(count).ok_or(Error::Invalid)?;
    node::move_within(n, 0, count, rest)
}

fn shift_up(n: &mut [u8], count: usize) -> Result<()> {
    let nr = node::nr_entries(n)?;
    node::move_within(n, count, 0, nr)
}

/// Evens out two siblings (left gets the smaller half).
fn redistribute2(left: &mut [u8], right: &mut [u8]) -> Result<()> {
    let nl = node::nr_entries(left)?;
    let nr = node::nr_entries(right)?;
    let total = nl + nr;
    let tl = total / 2;
    let tr = total - tl;
    if nl < tl {
        let delta = tl - nl;
        node::copy_entries(left, nl, right, 0, delta)?;
        shift_down(right, delta)?;
    } else if nl > tl {
        let delta = nl - tl;
        if nr > 0 {
            shift_up(right, delta)?;
        }
        node::copy_entries(right, 0, left, tl, delta)?;
    }
    node::set_nr_entries(left, tl)?;
    node::set_nr_entries(right, tr)?;
    Ok(())
}

/// Spreads two nodes' entries over three; `center` starts empty.
fn redistribute3(left: &mut [u8], center: &mut [u8], right: &mut [u8]) -> Result<()> {
    let nl = node::nr_entries(left)?;
    let nr = node::nr_entries(right)?;
    if node::nr_entries(center)? != 0 {
        return Err(Error::Invalid);
    }
    let total = nl + nr;
    let tl = total / 3;
    let tc = (total - tl) / 2;
    let tr = total - tl - tc;
    if nl < tl {
        let left_short = tl - nl;
        node::copy_entries(left, nl, right, 0, left_short)?;
        node::copy_entries(center, 0, right, left_short, tc)?;
        shift_down(right, nr.checked_sub(tr).ok_or(Error::Invalid)?)?;
    } else if nl < tl + tc {
        let l2c = nl - tl;
        node::copy_entries(center, 0, left, tl, l2c)?;
        node::copy_entries(center, l2c, right, 0, tc - l2c)?;
        shift_down(right, nr.checked_sub(tr).ok_or(Error::Invalid)?)?;
    } else {
        let right_short = tr.checked_sub(nr).ok_or(Error::Invalid)?;
        shift_up(right, right_short)?;
        node::copy_entries(right, 0, left, nl - right_short, right_short)?;
        node::copy_entries(center, 0, left, tl, nl - tl)?;
    }
    node::set_nr_entries(left, tl)?;
    node::set_nr_entries(center, tc)?;
    node::set_nr_entries(right, tr)?;
    Ok(())
}

/// Splits the (full) current node by moving its entries into two new
/// children; the current node becomes their internal parent. Used on a
/// root, which has no parent to take a sibling.
fn split_beneath<IO: BlockIo>(tm: &mut TransactionManager<IO>, spine: &mut Spine) -> Result<()> {
    let pn = spine.current.as_mut().ok_or(Error::Invalid)?;
    let h = header(&pn[..])?;
    let nr = h.nr_entries as usize;
    let nr_left = nr / 2;
    let nr_right = nr - nr_left;

    let mut left = new_node_like(tm, &pn[..])?;
    let mut right = match new_node_like(tm, &pn[..]) {
        Ok(r) => r,
        Err(e) => {
            tm.unlock(left);
            return Err(e);
        }
    };
    let r = (|| {
        node::set_nr_entries(&mut left[..], nr_left)?;
        node::copy_entries(&mut left[..], 0, &pn[..], 0, nr_left)?;
        node::set_nr_entries(&mut right[..], nr_right)?;
        node::copy_entries(&mut right[..], 0, &pn[..], nr_left, nr_right)?;
        let lk = node::key(&left[..], 0)?;
        let rk = node::key(&right[..], 0)?;
        node::init_node(&mut pn[..], INTERNAL_NODE, 8)?;
        node::set_nr_entries(&mut pn[..], 2)?;
        node::set_key(&mut pn[..], 0, lk)?;
        node::set_value64(&mut pn[..], 0, left.loc())?;
        node::set_key(&mut pn[..], 1, rk)?;
        node::set_value64(&mut pn[..], 1, right.loc())
    })();
    tm.unlock(left);
    tm.unlock(right);
    r
}

fn free_space<IO: BlockIo>(tm: &TransactionManager<IO>, b: u64) -> Result<usize> {
    let d = tm.read_lock(b, &BTREE_NODE_VALIDATOR)?;
    let h = header(&d[..])?;
    Ok((h.max_entries - h.nr_entries) as usize)
}

fn rebalance_left<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    vt: &mut dyn ValueType<IO>,
    pi: usize,
    key: u64,
) -> Result<()> {
    let parent = spine.parent.as_mut().ok_or(Error::Invalid)?;
    let mut sib = shadow_child(tm, vt, &mut parent[..], pi - 1)?;
    let cur = spine.current.as_mut().ok_or(Error::Invalid)?;
    let r = redistribute2(&mut sib[..], &mut cur[..])
        .and_then(|()| node::key(&cur[..], 0))
        .and_then(|k0| node::set_key(&mut parent[..], pi, k0).map(|()| k0));
    match r {
        Ok(k0) if key < k0 => {
            if let Some(c) = spine.current.replace(sib) {
                tm.unlock(c);
            }
            Ok(())
        }
        Ok(_) => {
            tm.unlock(sib);
            Ok(())
        }
        Err(e) => {
            tm.unlock(sib);
            Err(e)
        }
    }
}

fn rebalance_right<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    vt: &mut dyn ValueType<IO>,
    pi: usize,
    key: u64,
) -> Result<()> {
    let parent = spine.parent.as_mut().ok_or(Error::Invalid)?;
    let mut sib = shadow_child(tm, vt, &mut parent[..], pi + 1)?;
    let cur = spine.current.as_mut().ok_or(Error::Invalid)?;
    let r = redistribute2(&mut cur[..], &mut sib[..])
        .and_then(|()| node::key(&sib[..], 0))
        .and_then(|k0| node::set_key(&mut parent[..], pi + 1, k0).map(|()| k0));
    match r {
        Ok(k0) if key < k0 => {
            tm.unlock(sib);
            Ok(())
        }
        Ok(_) => {
            if let Some(c) = spine.current.replace(sib) {
                tm.unlock(c);
            }
            Ok(())
        }
        Err(e) => {
            tm.unlock(sib);
            Err(e)
        }
    }
}

fn split_one_into_two<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    pi: usize,
    key: u64,
) -> Result<()> {
    let left = spine.current.as_mut().ok_or(Error::Invalid)?;
    let mut right = new_node_like(tm, &left[..])?;
    let parent = spine.parent.as_mut().ok_or(Error::Invalid)?;
    let r = redistribute2(&mut left[..], &mut right[..])
        .and_then(|()| node::key(&right[..], 0))
        .and_then(|rk| {
            node::insert_at(&mut parent[..], pi + 1, rk, &right.loc().to_le_bytes()).map(|()| rk)
        });
    match r {
        Ok(rk) if key >= rk => {
            if let Some(l) = spine.current.replace(right) {
                tm.unlock(l);
            }
            Ok(())
        }
        Ok(_) => {
            tm.unlock(right);
            Ok(())
        }
        Err(e) => {
            tm.unlock(right);
            Err(e)
        }
    }
}

fn split_two_into_three<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    vt: &mut dyn ValueType<IO>,
    pi: usize,
    key: u64,
) -> Result<()> {
    let parent = spine.parent.as_mut().ok_or(Error::Invalid)?;
    let cur = spine.current.take().ok_or(Error::Invalid)?;
    let (middle_index, left, right) = if pi == 0 {
        match shadow_child(tm, vt, &mut parent[..], pi + 1) {
            Ok(r) => (1, cur, r),
            Err(e) => {
                spine.current = Some(cur);
                return Err(e);
            }
        }
    } else {
        match shadow_child(tm, vt, &mut parent[..], pi - 1) {
            Ok(l) => (pi, l, cur),
            Err(e) => {
                spine.current = Some(cur);
                return Err(e);
            }
        }
    };
    let (mut left, mut right) = (left, right);
    let mut middle = match new_node_like(tm, &left[..]) {
        Ok(m) => m,
        Err(e) => {
            tm.unlock(left);
            tm.unlock(right);
            return Err(e);
        }
    };
    let r = (|| {
        redistribute3(&mut left[..], &mut middle[..], &mut right[..])?;
        let rk = node::key(&right[..], 0)?;
        let mk = node::key(&middle[..], 0)?;
        node::set_key(&mut parent[..], middle_index, rk)?;
        node::insert_at(
            &mut parent[..],
            middle_index,
            mk,
            &middle.loc().to_le_bytes(),
        )?;
        Ok((mk, rk))
    })();
    match r {
        Ok((mk, rk)) => {
            let (keep, a, b) = if key < mk {
                (left, middle, right)
            } else if key < rk {
                (middle, left, right)
            } else {
                (right, left, middle)
            };
            tm.unlock(a);
            tm.unlock(b);
            spine.current = Some(keep);
            Ok(())
        }
        Err(e) => {
            tm.unlock(left);
            tm.unlock(middle);
            tm.unlock(right);
            Err(e)
        }
    }
}

fn rebalance_or_split<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    vt: &mut dyn ValueType<IO>,
    pi: usize,
    key: u64,
) -> Result<()> {
    let parent = spine.parent.as_ref().ok_or(Error::Invalid)?;
    let nr_parent = node::nr_entries(&parent[..])?;
    let left_b = if pi > 0 {
        Some(node::value64(&parent[..], pi - 1)?)
    } else {
        None
    };
    let right_b = if pi + 1 < nr_parent {
        Some(node::value64(&parent[..], pi + 1)?)
    } else {
        None
    };
    let mut left_shared = false;
    let mut right_shared = false;
    if let Some(b) = left_b {
        left_shared = tm.block_is_shared(b)?;
        if !left_shared && free_space(tm, b)? >= SPACE_THRESHOLD {
            return rebalance_left(tm, spine, vt, pi, key);
        }
    }
    if let Some(b) = right_b {
        right_shared = tm.block_is_shared(b)?;
        if !right_shared && free_space(tm, b)? >= SPACE_THRESHOLD {
            return rebalance_right(tm, spine, vt, pi, key);
        }
    }
    // Two into three packs nodes fuller, but sequential inserts (which hit
    // the first or last child) do better with one into two.
    if left_shared || right_shared || nr_parent <= 2 || pi == 0 || pi + 1 == nr_parent {
        split_one_into_two(tm, spine, pi, key)
    } else {
        split_two_into_three(tm, spine, vt, pi, key)
    }
}

fn has_space_for_insert(d: &[u8], key: u64) -> Result<bool> {
    let h = header(d)?;
    if h.nr_entries < h.max_entries {
        return Ok(true);
    }
    // A full leaf is fine for an overwrite.
    if h.is_leaf() {
        let i = node::lower_bound(d, key)?;
        return Ok(i >= 0 && node::key(d, i as usize)? == key);
    }
    Ok(false)
}

/// Shadows the path to where `key` belongs in the tree at `root`, making
/// room on the way; leaves the leaf as the spine's current node and sets
/// `index` to the key's (or its insertion) position. On entry `index` is
/// the slot in the spine's current node that points to `root` (or -1).
fn insert_raw<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    spine: &mut Spine,
    mut root: u64,
    vt: &mut dyn ValueType<IO>,
    key: u64,
    index: &mut isize,
) -> Result<()> {
    let mut i = *index;
    let mut top = true;
    for _ in 0..super::MAX_DEPTH {
        spine.step(tm, root, vt)?;
        if i >= 0 {
            spine.patch_parent(i as usize)?;
        }
        if !has_space_for_insert(&spine.cur()?[..], key)? {
            if top {
                split_beneath(tm, spine)?;
            } else {
                rebalance_or_split(tm, spine, vt, i as usize, key)?;
            }
        }
        let cur = spine.cur()?;
        i = node::lower_bound(&cur[..], key)?;
        if header(&cur[..])?.is_leaf() {
            if i < 0 || node::key(&cur[..], i as usize)? != key {
                i += 1;
            }
            *index = i;
            return Ok(());
        }
        if i < 0 {
            // The new key is the subtree's lowest: lower the bound.
            node::set_key(&mut cur[..], 0, key)?;
            i = 0;
        }
        root = node::value64(&cur[..], i as usize)?;
        top = false;
    }
    Err(Error::Invalid)
}

fn need_insert(d: &[u8], key: u64, index: usize) -> Result<bool> {
    Ok(index >= node::nr_entries(d)? || node::key(d, index)? != key)
}

/// Inserts or overwrites `keys -> value`; returns the new root and whether
/// the key is new. Empty lower-level trees are created as needed.
pub fn insert_notify<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    root: u64,
    keys: &[u64],
    value: &[u8],
) -> Result<(u64, bool)> {
    tm.mutate(|tm| {
        let (last, upper) = keys.split_last().ok_or(Error::Invalid)?;
        if value.len() != vt.size() {
            return Err(Error::Invalid);
        }
        let mut spine = Spine::new();
        let r = (|| {
            let mut index: isize = -1;
            let mut block = root;
            for (level, &k) in upper.iter().enumerate() {
                insert_raw(tm, &mut spine, block, &mut BlockRefs, k, &mut index)?;
                let idx = index as usize;
                if need_insert(&spine.cur()?[..], k, idx)? {
                    let vs = if level + 2 == keys.len() {
                        vt.size()
                    } else {
                        8
                    };
                    let new_tree = empty(tm, vs)?;
                    node::insert_at(&mut spine.cur()?[..], idx, k, &new_tree.to_le_bytes())?;
                }
                block = node::value64(&spine.cur()?[..], idx)?;
            }
            insert_raw(tm, &mut spine, block, vt, *last, &mut index)?;
            let idx = index as usize;
            let cur = spine.current.as_mut().ok_or(Error::Invalid)?;
            if node::header(&cur[..])?.value_size as usize != value.len() {
                return Err(Error::Invalid);
            }
            let inserted = need_insert(&cur[..], *last, idx)?;
            if inserted {
                node::insert_at(&mut cur[..], idx, *last, value)?;
            } else {
                let old = node::value(&cur[..], idx)?;
                if !vt.equal(old, value) {
                    vt.dec(tm, old)?;
                }
                node::set_value(&mut cur[..], idx, value)?;
            }
            Ok((spine.root()?, inserted))
        })();
        spine.exit(tm);
        r
    })
}

/// Inserts or overwrites `keys -> value`; returns the new root.
pub fn insert<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    root: u64,
    keys: &[u64],
    value: &[u8],
) -> Result<u64> {
    insert_notify(tm, vt, root, keys, value).map(|(r, _)| r)
}

/// Shadows the path to existing `key` in a single-level tree and returns
/// the new root, the write-locked leaf and the key's index in it, so the
/// value can be updated in place.
pub(crate) fn get_overwrite_leaf<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    root: u64,
    key: u64,
) -> Result<(u64, WriteBlock, usize)> {
    get_overwrite_leaf_vt(tm, &mut super::PlainValues(4), root, key)
}

/// [`get_overwrite_leaf`] for a tree whose values hold references: `vt`
/// takes them when a shared leaf on the path is copied.
pub(crate) fn get_overwrite_leaf_vt<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    root: u64,
    key: u64,
) -> Result<(u64, WriteBlock, usize)> {
    let mut spine = Spine::new();
    let r = (|| {
        let mut block = root;
        let mut i: isize = -1;
        for _ in 0..super::MAX_DEPTH {
            spine.step(tm, block, vt)?;
            if i >= 0 {
                spine.patch_parent(i as usize)?;
            }
            let cur = spine.cur()?;
            let h = header(&cur[..])?;
            i = node::lower_bound(&cur[..], key)?;
            if i < 0 || i as usize >= h.nr_entries as usize {
                return Err(Error::Invalid);
            }
            if h.is_leaf() {
                if node::key(&cur[..], i as usize)? != key {
                    return Err(Error::Invalid);
                }
                return Ok(i as usize);
            }
            block = node::value64(&cur[..], i as usize)?;
        }
        Err(Error::Invalid)
    })();
    match r {
        Ok(i) => {
            let leaf = spine.current.take().ok_or(Error::Invalid);
            let root = spine.root();
            spine.exit(tm);
            Ok((root?, leaf?, i))
        }
        Err(e) => {
            spine.exit(tm);
            Err(e)
        }
    }
}
