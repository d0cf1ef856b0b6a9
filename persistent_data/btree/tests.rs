// SPDX-License-Identifier: GPL-2.0

//! Corrupt trees: cycles, shared subtrees, deep chains. Every reader must
//! end in an error (or, for the recount, terminate), quickly and without
//! using more stack for a deeper tree.

use super::node::{self, BTREE_NODE_VALIDATOR, INTERNAL_NODE, LEAF_NODE};
use super::{find_highest_key, lookup, lookup_next, walk, MAX_DEPTH};
use crate::persistent_data::block_manager::{BlockManager, ReadRef, ValidatorRef};
use crate::persistent_data::check::RefCounts;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::mem::MemIo;
use crate::persistent_data::io::BLOCK_SIZE;
use crate::persistent_data::transaction_manager::{BlockReader, TransactionManager};
use crate::persistent_data::validator::Validator;
use core::cell::Cell;

/// Where hand-made nodes go (past the space map's own blocks).
const BASE: u64 = 100;

fn put_node(io: &MemIo, b: u64, flags: u32, entries: &[(u64, u64)]) {
    let mut d = [0u8; BLOCK_SIZE];
    node::init_node(&mut d, flags, 8).unwrap();
    for (i, (k, v)) in entries.iter().enumerate() {
        node::insert_at(&mut d, i, *k, &v.to_le_bytes()).unwrap();
    }
    BTREE_NODE_VALIDATOR.prepare_for_write(b, &mut d).unwrap();
    io.poke(b, 0, &d);
}

fn tm(io: &MemIo) -> TransactionManager<MemIo> {
    TransactionManager::create(BlockManager::new(io.clone(), 64), 0).unwrap()
}

/// A reader that counts its reads and records how far apart on the stack
/// its callers were.
struct Probe<'a> {
    tm: &'a TransactionManager<MemIo>,
    reads: Cell<u64>,
    low: Cell<usize>,
    high: Cell<usize>,
}

impl<'a> Probe<'a> {
    fn new(tm: &'a TransactionManager<MemIo>) -> Self {
        Probe {
            tm,
            reads: Cell::new(0),
            low: Cell::new(usize::MAX),
            high: Cell::new(0),
        }
    }

    /// Bytes of stack between the deepest and shallowest read.
    fn spread(&self) -> usize {
        self.high.get() - self.low.get()
    }
}

impl BlockReader for Probe<'_> {
    type Io = MemIo;

    #[inline(never)]
    fn read_lock(&self, b: u64, v: ValidatorRef) -> Result<ReadRef<'_, MemIo>> {
        let here = 0u8;
        let at = core::ptr::addr_of!(here) as usize;
        self.low.set(self.low.get().min(at));
        self.high.set(self.high.get().max(at));
        self.reads.set(self.reads.get() + 1);
        self.tm.read_lock(b, v)
    }
}

/// A chain of `depth` internal nodes, one entry each, above a leaf holding
/// keys 10 and 20; returns the root.
fn chain(io: &MemIo, depth: u64) -> u64 {
    for i in 0..depth {
        put_node(io, BASE + i, INTERNAL_NODE, &[(0, BASE + i + 1)]);
    }
    put_node(io, BASE + depth, LEAF_NODE, &[(10, 1), (20, 2)]);
    BASE
}

/// Stack used by every reader over a chain of `depth` internal nodes.
fn stack_spreads(depth: u64) -> [usize; 4] {
    let io = MemIo::new(BASE + 80);
    let tm = tm(&io);
    let root = chain(&io, depth);
    let mut v = [0u8; 8];
    let p = Probe::new(&tm);
    lookup(&p, root, &[20], &mut v).unwrap();
    let lookup_spread = p.spread();
    let p = Probe::new(&tm);
    assert_eq!(lookup_next(&p, root, &[11], &mut v), Ok(20));
    let next_spread = p.spread();
    let p = Probe::new(&tm);
    let mut n = 0;
    walk(&p, root, &mut |_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 2);
    let walk_spread = p.spread();
    let p = Probe::new(&tm);
    let mut rc = RefCounts::new(BASE + 80).unwrap();
    rc.count_btree(&p, root, 1, &mut |_, _| Ok(())).unwrap();
    assert_eq!(rc.get(BASE + depth), 1);
    [lookup_spread, next_spread, walk_spread, p.spread()]
}

#[test]
fn readers_use_the_same_stack_at_any_depth() {
    let shallow = stack_spreads(4);
    let deep = stack_spreads(60);
    // A recursive reader needs a frame per level: 56 more levels would
    // take kilobytes. Here the spreads are equal.
    for (s, d) in shallow.iter().zip(deep.iter()) {
        assert!(
            d <= &(s + 64),
            "stack grows with depth: {shallow:?} -> {deep:?}"
        );
    }
}

#[test]
fn too_deep_a_tree_is_an_error() {
    let io = MemIo::new(BASE + 80);
    let tm = tm(&io);
    let root = chain(&io, MAX_DEPTH as u64 + 2);
    let mut v = [0u8; 8];
    assert_eq!(lookup(&tm, root, &[20], &mut v), Err(Error::Invalid));
    assert_eq!(walk(&tm, root, &mut |_, _| Ok(())), Err(Error::Invalid));
    let mut rc = RefCounts::new(BASE + 80).unwrap();
    assert_eq!(
        rc.count_btree(&tm, root, 1, &mut |_, _| Ok(())),
        Err(Error::Invalid)
    );
}

#[test]
fn cyclic_tree_is_an_error() {
    let io = MemIo::new(BASE + 8);
    let tm = tm(&io);
    // An internal node whose children are itself.
    put_node(&io, BASE, INTERNAL_NODE, &[(0, BASE), (100, BASE)]);
    let mut v = [0u8; 8];
    let p = Probe::new(&tm);
    assert_eq!(lookup(&p, BASE, &[50], &mut v), Err(Error::Invalid));
    assert_eq!(lookup_next(&p, BASE, &[150], &mut v), Err(Error::Invalid));
    assert_eq!(walk(&p, BASE, &mut |_, _| Ok(())), Err(Error::Invalid));
    let mut keys = [0u64; 1];
    assert_eq!(find_highest_key(&p, BASE, &mut keys), Err(Error::Invalid));
    assert!(
        p.reads.get() < 8 * MAX_DEPTH as u64,
        "{} reads",
        p.reads.get()
    );
    // The recount visits each node once: it ends, counting the three
    // references (the root's and its two children's) the checker reports.
    let mut rc = RefCounts::new(BASE + 8).unwrap();
    rc.count_btree(&tm, BASE, 1, &mut |_, _| Ok(())).unwrap();
    assert_eq!(rc.get(BASE), 3);
}

#[test]
fn lookup_next_in_a_corrupt_dag_takes_two_descents() {
    // Forty levels of two children each, both the next level, over an
    // empty leaf: retrying each sibling, as a recursive search does, is
    // 2^40 descents.
    let io = MemIo::new(BASE + 50);
    let tm = tm(&io);
    for i in 0..40 {
        put_node(
            &io,
            BASE + i,
            INTERNAL_NODE,
            &[(0, BASE + i + 1), (10, BASE + i + 1)],
        );
    }
    put_node(&io, BASE + 40, LEAF_NODE, &[]);
    let p = Probe::new(&tm);
    let mut v = [0u8; 8];
    assert_eq!(lookup_next(&p, BASE, &[5], &mut v), Err(Error::Invalid));
    assert!(p.reads.get() <= 2 * 41, "{} reads", p.reads.get());
}

#[test]
fn walk_refuses_a_subtree_reached_twice() {
    let io = MemIo::new(BASE + 8);
    let tm = tm(&io);
    put_node(&io, BASE + 1, LEAF_NODE, &[(1, 1), (2, 2)]);
    put_node(&io, BASE, INTERNAL_NODE, &[(0, BASE + 1), (10, BASE + 1)]);
    let mut seen = 0;
    let r = walk(&tm, BASE, &mut |_, _| {
        seen += 1;
        Ok(())
    });
    assert_eq!((r, seen), (Err(Error::Invalid), 2));
}
