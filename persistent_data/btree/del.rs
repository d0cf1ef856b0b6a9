// SPDX-License-Identifier: GPL-2.0

//! Dropping a reference to a whole tree.

use super::node::{self, header, BTREE_NODE_VALIDATOR};
use super::{ValueType, MAX_DEPTH};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BlockIo};
use crate::persistent_data::shim::{PBox, PVec};
use crate::persistent_data::transaction_manager::TransactionManager;

struct Frame {
    loc: u64,
    data: PBox<Block>,
    level: usize,
    next: usize,
}

/// Drops the caller's reference to the tree at `root` (of `levels` key
/// levels). Nodes whose count falls to zero release their children and, at
/// the bottom level, their values; shared nodes just lose one reference.
/// Iterative, with an explicit stack of node copies.
pub fn del<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    vt: &mut dyn ValueType<IO>,
    root: u64,
    levels: usize,
) -> Result<()> {
    tm.mutate(|tm| {
        if levels == 0 {
            return Err(Error::Invalid);
        }
        let mut stack: PVec<Frame> = PVec::new();
        push(tm, &mut stack, root, 0)?;
        while let Some(f) = stack.last_mut() {
            let h = header(&f.data[..])?;
            let nr = h.nr_entries as usize;
            if f.next >= nr || (h.is_leaf() && f.level + 1 >= levels) {
                if h.is_leaf() && f.level + 1 >= levels && nr > 0 {
                    let values = node::values(&f.data[..])?;
                    vt.dec(tm, values)?;
                }
                let loc = f.loc;
                stack.pop();
                tm.dec(loc)?;
                continue;
            }
            let child = node::value64(&f.data[..], f.next)?;
            f.next += 1;
            let level = if h.is_internal() {
                f.level
            } else {
                f.level + 1
            };
            push(tm, &mut stack, child, level)?;
        }
        Ok(())
    })
}

fn push<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    stack: &mut PVec<Frame>,
    b: u64,
    level: usize,
) -> Result<()> {
    if stack.len() >= MAX_DEPTH {
        return Err(Error::NoMem);
    }
    if tm.ref_count(b)? > 1 {
        // Shared: someone else still needs the children.
        return tm.dec(b);
    }
    let data = tm.bm.read_copy(b, Some(&BTREE_NODE_VALIDATOR))?;
    stack.try_push(Frame {
        loc: b,
        data,
        level,
        next: 0,
    })
}
