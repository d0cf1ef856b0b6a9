// SPDX-License-Identifier: GPL-2.0

//! In-order traversal of single-level trees: a callback walk and a cursor.

use super::node::{self, header, BTREE_NODE_VALIDATOR};
use super::MAX_DEPTH;
use crate::persistent_data::block_manager::ReadRef;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::shim::PVec;
use crate::persistent_data::transaction_manager::BlockReader;

fn walk_node<R: BlockReader>(
    r: &R,
    b: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    depth: usize,
) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(Error::Invalid);
    }
    let d = r.read_lock(b, &BTREE_NODE_VALIDATOR)?;
    let h = header(&d[..])?;
    for i in 0..h.nr_entries as usize {
        if h.is_internal() {
            walk_node(r, node::value64(&d[..], i)?, f, depth + 1)?;
        } else {
            f(node::key(&d[..], i)?, node::value(&d[..], i)?)?;
        }
    }
    Ok(())
}

/// Calls `f(key, value)` for every entry of the single-level tree at
/// `root`, in key order; stops at the first error `f` returns.
pub fn walk<R: BlockReader>(
    r: &R,
    root: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    walk_node(r, root, f, 0)
}

/// Cursor depth limit, as upstream.
const CURSOR_MAX_DEPTH: usize = 16;

/// A forward cursor over a single-level tree, holding read locks on its
/// path.
pub struct Cursor<'a, R: BlockReader> {
    r: &'a R,
    nodes: PVec<(ReadRef<'a>, usize)>,
}

impl<'a, R: BlockReader> Cursor<'a, R> {
    /// Positions on the first entry; `NoData` for an empty tree.
    pub fn begin(r: &'a R, root: u64) -> Result<Self> {
        let mut c = Cursor {
            r,
            nodes: PVec::new(),
        };
        c.push(root)?;
        c.find_leaf()?;
        Ok(c)
    }

    fn push(&mut self, b: u64) -> Result<()> {
        if self.nodes.len() >= CURSOR_MAX_DEPTH - 1 {
            return Err(Error::Invalid);
        }
        let d = self.r.read_lock(b, &BTREE_NODE_VALIDATOR)?;
        header(&d[..])?;
        self.nodes.try_push((d, 0))
    }

    fn find_leaf(&mut self) -> Result<()> {
        loop {
            let (d, i) = self.nodes.last().ok_or(Error::NoData)?;
            let h = header(&d[..])?;
            if h.is_leaf() {
                return if h.nr_entries == 0 {
                    Err(Error::NoData)
                } else {
                    Ok(())
                };
            }
            let child = node::value64(&d[..], *i)?;
            self.push(child)?;
        }
    }

    /// Moves to the next entry; `NoData` past the end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<()> {
        loop {
            let (d, i) = self.nodes.last_mut().ok_or(Error::NoData)?;
            *i += 1;
            if *i < node::nr_entries(&d[..]) {
                break;
            }
            self.nodes.pop();
        }
        self.find_leaf()
    }

    /// Skips `count` entries.
    pub fn skip(&mut self, count: u32) -> Result<()> {
        for _ in 0..count {
            self.next()?;
        }
        Ok(())
    }

    /// The current entry: key and value.
    pub fn get(&self) -> Result<(u64, &[u8])> {
        let (d, i) = self.nodes.last().ok_or(Error::NoData)?;
        if !header(&d[..])?.is_leaf() {
            return Err(Error::Invalid);
        }
        Ok((node::key(&d[..], *i)?, node::value(&d[..], *i)?))
    }
}
