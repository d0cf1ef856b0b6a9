//! The pool's I/O gate against a model of a thin and its snapshot: `map`
//! bios (looked up and counted in one step, then in flight), discards,
//! breaking sharing, provisioning and deleting the snapshot, in any
//! interleaving.
//! The property: a data block is never freed (and so never reused) while
//! a bio that was remapped to it is still in flight. Each way of breaking
//! the gate (no cell check in `map`, discards not waiting, breaking
//! sharing not waiting for shared reads) has a sequence that violates it.

use std::collections::{BTreeMap, BTreeSet};

use dm_rs_targets_host::thin::gate::{IoEntries, IoGate};
use dm_rs_targets_host::thin::prison::{CellHandle, CellKey, Detained};
use proptest::prelude::*;

const VBLOCKS: u64 = 8;
const ORIGIN: u64 = 0;
const SNAP: u64 = 1;

/// Which safeguard the model leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Break {
    None,
    /// `map` counts a bio without checking the cell.
    NoCellCheck,
    /// A discard unmaps and frees at once.
    NoAllIoWait,
    /// Breaking sharing remaps at once.
    NoSharedWait,
}

#[derive(Clone, Debug)]
enum Op {
    /// A bio reaches `map`.
    Map { dev: u64, vblock: u64, write: bool },
    /// `map` looks a bio up and counts and remaps it in one step (under
    /// the metadata read lock, which the worker's changes exclude).
    Lookup(usize),
    /// A remapped bio completes (`end_io`).
    Complete(usize),
    /// The worker discards `begin..begin + len`.
    Discard { dev: u64, begin: u64, len: u64 },
    /// The worker writes to a shared block: a copy, then a remap.
    BreakShare { dev: u64, vblock: u64 },
    /// The worker provisions an unmapped block.
    Provision { dev: u64, vblock: u64 },
    /// The (inactive) snapshot is deleted: no waiting, as upstream.
    DeleteSnapshot,
}

struct Pending {
    dev: u64,
    vblock: u64,
    write: bool,
}

struct InFlight {
    dev: u64,
    block: u64,
    entries: IoEntries,
}

struct DiscardWork {
    dev: u64,
    begin: u64,
    end: u64,
    handle: CellHandle,
}

struct ShareWork {
    token: u64,
    dev: u64,
    vblock: u64,
    block: u64,
    handle: CellHandle,
}

struct Model {
    brk: Break,
    gate: IoGate<u32, DiscardWork>,
    maps: [BTreeMap<u64, u64>; 2],
    refs: BTreeMap<u64, u32>,
    free: BTreeSet<u64>,
    snap_deleted: bool,
    pending: Vec<Pending>,
    in_flight: Vec<InFlight>,
    sharing: Vec<ShareWork>,
    next_token: u64,
    violations: Vec<String>,
}

fn vkey(dev: u64, vblock: u64) -> CellKey {
    CellKey::block(true, dev, vblock)
}

impl Model {
    fn new(brk: Break) -> Self {
        // The origin maps 0..8 to data blocks 0..8; the snapshot shares them.
        let origin: BTreeMap<u64, u64> = (0..VBLOCKS).map(|v| (v, v)).collect();
        Model {
            brk,
            gate: IoGate::try_new(64, 256).unwrap(),
            maps: [origin.clone(), origin],
            refs: (0..VBLOCKS).map(|b| (b, 2)).collect(),
            free: (VBLOCKS..4 * VBLOCKS).collect(),
            snap_deleted: false,
            pending: Vec::new(),
            in_flight: Vec::new(),
            sharing: Vec::new(),
            next_token: 0,
            violations: Vec::new(),
        }
    }

    fn dev_gone(&self, dev: u64) -> bool {
        dev == SNAP && self.snap_deleted
    }

    fn map(&mut self, dev: u64, vblock: u64, write: bool) {
        if self.dev_gone(dev) {
            return;
        }
        self.pending.push(Pending { dev, vblock, write });
    }

    fn lookup(&mut self, i: usize) {
        if self.pending.is_empty() {
            return;
        }
        let p = self.pending.remove(i % self.pending.len());
        let Some(block) = self.maps[p.dev as usize].get(&p.vblock).copied() else {
            // Unmapped: zeroes or the worker (not modelled further).
            return;
        };
        let shared = self.refs[&block] > 1;
        if shared && p.write {
            // Breaking sharing is the worker's.
            return;
        }
        let entries = if self.brk == Break::NoCellCheck {
            Some(self.gate.enter(shared))
        } else {
            self.gate.enter_mapped(&vkey(p.dev, p.vblock), shared)
        };
        // `None`: the cell is held, the bio goes to the worker.
        if let Some(entries) = entries {
            self.in_flight.push(InFlight {
                dev: p.dev,
                block,
                entries,
            });
        }
    }

    fn exit(&mut self, mut entries: IoEntries) {
        self.gate.exit(&mut entries);
        assert!(entries.is_empty());
        self.run_ready();
    }

    fn complete(&mut self, i: usize) {
        if self.in_flight.is_empty() {
            return;
        }
        let io = self.in_flight.remove(i % self.in_flight.len());
        self.exit(io.entries);
    }

    /// The worker's turn: work whose I/O drained.
    fn run_ready(&mut self) {
        while let Some(d) = self.gate.pop_all_io_ready() {
            self.run_discard(d);
        }
        while let Some(token) = self.gate.pop_shared_ready() {
            let i = self.sharing.iter().position(|s| s.token == token).unwrap();
            let s = self.sharing.remove(i);
            self.finish_share(s);
        }
    }

    fn free_block(&mut self, b: u64, why: &str) {
        if self.in_flight.iter().any(|io| io.block == b) {
            self.violations
                .push(format!("{why} freed block {b} with I/O in flight"));
        }
        self.refs.remove(&b);
        self.free.insert(b);
    }

    fn dec(&mut self, b: u64, why: &str) {
        let r = self.refs.get_mut(&b).unwrap();
        *r -= 1;
        if *r == 0 {
            self.free_block(b, why);
        }
    }

    fn alloc(&mut self) -> Option<u64> {
        let b = *self.free.iter().next()?;
        self.free.remove(&b);
        self.refs.insert(b, 1);
        Some(b)
    }

    fn release(&mut self, handle: CellHandle) {
        // Waiting items would go back to the worker; the model drops them.
        self.gate.release(handle, |_| {}).unwrap();
    }

    fn discard(&mut self, dev: u64, begin: u64, len: u64) {
        if self.dev_gone(dev) {
            return;
        }
        let end = (begin + len).min(VBLOCKS);
        let key = CellKey {
            virt: true,
            dev,
            begin,
            end,
        };
        let Ok(Detained::Holder(handle, _)) = self.gate.detain(&key, 0) else {
            // Queued behind a held cell: the worker would retry later.
            return;
        };
        let work = DiscardWork {
            dev,
            begin,
            end,
            handle,
        };
        if self.brk == Break::NoAllIoWait {
            return self.run_discard(work);
        }
        match self.gate.after_all_io(work) {
            Ok(Some(work)) => self.run_discard(work),
            Ok(None) => {}
            Err(_) => panic!("the gate refused a discard"),
        }
    }

    fn run_discard(&mut self, d: DiscardWork) {
        for v in d.begin..d.end {
            if let Some(b) = self.maps[d.dev as usize].remove(&v) {
                self.dec(b, "discard");
            }
        }
        self.release(d.handle);
    }

    fn break_share(&mut self, dev: u64, vblock: u64) {
        if self.dev_gone(dev) {
            return;
        }
        let Ok(Detained::Holder(handle, _)) = self.gate.detain(&vkey(dev, vblock), 0) else {
            return;
        };
        let old = self.maps[dev as usize].get(&vblock).copied();
        let block = match old {
            Some(b) if self.refs[&b] > 1 => self.alloc(),
            _ => None,
        };
        let Some(block) = block else {
            return self.release(handle);
        };
        let token = self.next_token;
        self.next_token += 1;
        let s = ShareWork {
            token,
            dev,
            vblock,
            block,
            handle,
        };
        if self.brk == Break::NoSharedWait {
            return self.finish_share(s);
        }
        match self.gate.after_shared_reads(token) {
            Ok(true) => self.finish_share(s),
            Ok(false) => self.sharing.push(s),
            Err(()) => panic!("the gate refused a copy"),
        }
    }

    fn finish_share(&mut self, s: ShareWork) {
        if let Some(old) = self.maps[s.dev as usize].insert(s.vblock, s.block) {
            self.dec(old, "breaking sharing");
        }
        self.release(s.handle);
    }

    fn provision(&mut self, dev: u64, vblock: u64) {
        if self.dev_gone(dev) {
            return;
        }
        let Ok(Detained::Holder(handle, _)) = self.gate.detain(&vkey(dev, vblock), 0) else {
            return;
        };
        if !self.maps[dev as usize].contains_key(&vblock) {
            if let Some(b) = self.alloc() {
                self.maps[dev as usize].insert(vblock, b);
            }
        }
        self.release(handle);
    }

    fn delete_snapshot(&mut self) {
        // Only an inactive device is deleted: none of its bios is around.
        let busy = self.pending.iter().any(|p| p.dev == SNAP)
            || self.in_flight.iter().any(|io| io.dev == SNAP);
        if self.snap_deleted || busy {
            return;
        }
        if self.sharing.iter().any(|s| s.dev == SNAP) {
            return;
        }
        self.snap_deleted = true;
        let map = std::mem::take(&mut self.maps[SNAP as usize]);
        for b in map.into_values() {
            self.dec(b, "deleting the snapshot");
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Map { dev, vblock, write } => self.map(dev, vblock, write),
            Op::Lookup(i) => self.lookup(i),
            Op::Complete(i) => self.complete(i),
            Op::Discard { dev, begin, len } => self.discard(dev, begin, len),
            Op::BreakShare { dev, vblock } => self.break_share(dev, vblock),
            Op::Provision { dev, vblock } => self.provision(dev, vblock),
            Op::DeleteSnapshot => self.delete_snapshot(),
        }
    }

    /// Finishes every bio; all waiting work must then have run.
    fn drain(&mut self) {
        while !self.pending.is_empty() {
            self.lookup(0);
        }
        while !self.in_flight.is_empty() {
            self.complete(0);
        }
        assert!(self.sharing.is_empty(), "a copy still waits");
        assert_eq!(self.gate.pop_all_io_ready().map(|_| ()), None);
    }
}

fn run(brk: Break, ops: &[Op]) -> Vec<String> {
    let mut m = Model::new(brk);
    for op in ops {
        m.apply(op);
    }
    m.drain();
    m.violations
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..2u64;
    let v = 0..VBLOCKS;
    prop_oneof![
        3 => (dev.clone(), v.clone(), any::<bool>())
            .prop_map(|(dev, vblock, write)| Op::Map { dev, vblock, write }),
        3 => any::<usize>().prop_map(Op::Lookup),
        3 => any::<usize>().prop_map(Op::Complete),
        1 => (dev.clone(), v.clone(), 1..4u64)
            .prop_map(|(dev, begin, len)| Op::Discard { dev, begin, len }),
        1 => (dev.clone(), v.clone()).prop_map(|(dev, vblock)| Op::BreakShare { dev, vblock }),
        1 => (dev, v).prop_map(|(dev, vblock)| Op::Provision { dev, vblock }),
        1 => Just(Op::DeleteSnapshot),
    ]
}

// Random seeds: before the map path re-checked the cell (session 8), about
// one seed in five found the sequence kept as `known_violation_*` below.
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_block_is_freed_under_io(ops in proptest::collection::vec(op(), 1..200)) {
        let v = run(Break::None, &ops);
        prop_assert!(v.is_empty(), "{:?}", v);
    }
}

/// Some I/O in flight elsewhere, so the discard of block 0 has to wait.
fn io_elsewhere() -> Vec<Op> {
    vec![
        Op::Map {
            dev: ORIGIN,
            vblock: 5,
            write: false,
        },
        Op::Lookup(0),
    ]
}

#[test]
fn map_must_check_the_cell() {
    // The discard holds block 0 and waits for the read of block 5; a bio
    // to block 0 counted after it (in a later generation) must not get
    // through, or the discard frees the block under it.
    let mut ops = vec![Op::DeleteSnapshot];
    ops.extend(io_elsewhere());
    ops.extend([
        Op::Discard {
            dev: ORIGIN,
            begin: 0,
            len: 1,
        },
        Op::Map {
            dev: ORIGIN,
            vblock: 0,
            write: true,
        },
        Op::Lookup(0),
        Op::Complete(0),
    ]);
    assert_eq!(run(Break::None, &ops), Vec::<String>::new());
    assert_eq!(
        run(Break::NoCellCheck, &ops),
        ["discard freed block 0 with I/O in flight"]
    );
}

#[test]
fn discard_must_wait_for_io() {
    let ops = [
        Op::DeleteSnapshot,
        Op::Map {
            dev: ORIGIN,
            vblock: 0,
            write: true,
        },
        Op::Lookup(0),
        Op::Discard {
            dev: ORIGIN,
            begin: 0,
            len: 2,
        },
        Op::Complete(0),
    ];
    assert_eq!(run(Break::None, &ops), Vec::<String>::new());
    assert_eq!(
        run(Break::NoAllIoWait, &ops),
        ["discard freed block 0 with I/O in flight"]
    );
}

#[test]
fn breaking_sharing_must_wait_for_shared_reads() {
    // A read of shared block 0 is in flight; the origin breaks sharing,
    // then the snapshot is deleted: block 0 is free while it is read.
    let ops = [
        Op::Map {
            dev: ORIGIN,
            vblock: 0,
            write: false,
        },
        Op::Lookup(0),
        Op::BreakShare {
            dev: ORIGIN,
            vblock: 0,
        },
        Op::DeleteSnapshot,
        Op::Complete(0),
    ];
    assert_eq!(run(Break::None, &ops), Vec::<String>::new());
    assert_eq!(
        run(Break::NoSharedWait, &ops),
        ["deleting the snapshot freed block 0 with I/O in flight"]
    );
}

/// Found by `no_block_is_freed_under_io` with a random seed (session 7):
/// a read counted while its block was free of cells, looked up only after
/// the worker took the cell to break sharing and a snapshot discard left
/// the block unshared; without a second cell check at the remap it went to
/// the old block, which the finished copy then freed. (`map` now looks up
/// and counts in one step, which leaves no such window; kept as a case.)
#[test]
fn known_violation_break_share_after_deferred_discard() {
    use Op::*;
    let ops = vec![
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: true,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: true,
        },
        Lookup(0),
        Map {
            dev: 0,
            vblock: 0,
            write: true,
        },
        Lookup(0),
        Lookup(0),
        Map {
            dev: 1,
            vblock: 7,
            write: false,
        },
        Lookup(670709630631352304),
        Discard {
            dev: 1,
            begin: 0,
            len: 3,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Map {
            dev: 0,
            vblock: 2,
            write: false,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Complete(0),
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Map {
            dev: 0,
            vblock: 0,
            write: false,
        },
        Lookup(711387041445667281),
        BreakShare { dev: 0, vblock: 2 },
        Discard {
            dev: 1,
            begin: 6,
            len: 2,
        },
    ];
    assert_eq!(run(Break::None, &ops), Vec::<String>::new());
}
