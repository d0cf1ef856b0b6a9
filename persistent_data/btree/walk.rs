// SPDX-License-Identifier: GPL-2.0

//! In-order traversal of single-level trees: a callback walk and a cursor.

use super::node::{self, header, Node, BTREE_NODE_VALIDATOR};
use super::MAX_DEPTH;
use crate::persistent_data::block_manager::ReadRef;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::shim::PVec;
use crate::persistent_data::transaction_manager::BlockReader;

/// One node on the walk's path: its read lock, the next entry to visit.
struct Frame<'a, R: BlockReader + 'a> {
    node: ReadRef<'a, R::Io>,
    next: usize,
}

/// Calls `f(key, value)` for every entry of the single-level tree at
/// `root`, in key order; stops at the first error `f` returns.
///
/// Iterative, with the path on the heap: at most [`MAX_DEPTH`] levels, and
/// keys must rise strictly from one entry to the next, so a corrupt tree
/// (a cycle, a node reachable twice) ends in `Invalid` instead of
/// exhausting the stack or walking forever.
pub fn walk<R: BlockReader>(
    r: &R,
    root: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut path: PVec<Frame<'_, R>> = PVec::new();
    let mut last: Option<u64> = None;
    path.try_push(Frame {
        node: r.read_lock(root, &BTREE_NODE_VALIDATOR)?,
        next: 0,
    })?;
    while let Some(top) = path.last_mut() {
        let n = Node::new(&top.node[..])?;
        let i = top.next;
        if i >= n.nr_entries() {
            path.pop();
            continue;
        }
        top.next += 1;
        if n.is_internal() {
            let child = n.value64(i)?;
            if path.len() >= MAX_DEPTH {
                return Err(Error::Invalid);
            }
            let node = r.read_lock(child, &BTREE_NODE_VALIDATOR)?;
            path.try_push(Frame { node, next: 0 })?;
        } else {
            let k = n.key(i)?;
            if last.is_some_and(|l| k <= l) {
                return Err(Error::Invalid);
            }
            last = Some(k);
            f(k, n.value(i)?)?;
        }
    }
    Ok(())
}

/// Cursor depth limit, as upstream.
const CURSOR_MAX_DEPTH: usize = 16;

/// A forward cursor over a single-level tree, holding read locks on its
/// path.
pub struct Cursor<'a, R: BlockReader> {
    r: &'a R,
    nodes: PVec<(ReadRef<'a, R::Io>, usize)>,
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
            if *i < node::nr_entries(&d[..])? {
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
