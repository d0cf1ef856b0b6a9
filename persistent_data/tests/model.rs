//! Model-based property tests: random thin-pool histories (mappings,
//! range removals, snapshots, device deletes, metadata snapshots) across
//! many transactions, with commits, aborts, simulated crashes between
//! operations, and power cuts and I/O errors in the middle of them.
//!
//! After every commit and every reopen the trees must equal the model as
//! of the last commit, and the checker's recount must match both space
//! maps exactly (`common::check`). A crash or a failure inside an
//! operation must leave exactly the last committed state.
//!
//! Cases: `PD_MODEL_CASES` per test, else a few in a debug build and a few
//! hundred in total in a release build (`cargo test --release`).

mod common;

use common::{check, format_cached, open_cached, Mappings, Pool};
use persistent_data::io::mem::MemIo;
use persistent_data::Error;
use proptest::prelude::*;

const NR_DEVS: u64 = 4;
const NR_VBLOCKS: u64 = 3000;

/// A thin-pool operation.
#[derive(Clone, Debug)]
enum Op {
    Map(u64, u64),
    MapRun(u64, u64, u64),
    Unmap(u64, u64),
    UnmapRange(u64, u64, u64),
    Snapshot(u64, u64),
    DeleteDev(u64),
    ReserveMetaSnap,
    ReleaseMetaSnap,
    Commit,
}

/// A step of a history: an operation, or something happening to the pool.
#[derive(Clone, Debug)]
enum Step {
    Do(Op),
    /// Drop everything since the last commit and reopen.
    Abort,
    /// Power cut between operations: unflushed writes are kept or lost
    /// (chosen by the seed).
    Crash(u64),
    /// Power cut after `writes` more writes, in the middle of `op` (or
    /// after it, if it writes less), then a reopen.
    CrashIn(Op, u64, u64),
    /// `op` meets an I/O error (if it gets that far): a read of one of the
    /// blocks in use fails, or every write after the given number; then
    /// the pool aborts.
    FailIn(Op, Fault),
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The n-th (modulo) metadata block in use at the last check.
    Read(usize),
    Write(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..NR_DEVS;
    let vb = 0..NR_VBLOCKS;
    prop_oneof![
        30 => (dev.clone(), vb.clone()).prop_map(|(d, v)| Op::Map(d, v)),
        8 => (dev.clone(), vb.clone(), 1..300u64).prop_map(|(d, v, n)| Op::MapRun(d, v, n)),
        12 => (dev.clone(), vb.clone()).prop_map(|(d, v)| Op::Unmap(d, v)),
        4 => (dev.clone(), vb, 1..600u64).prop_map(|(d, v, n)| Op::UnmapRange(d, v, n)),
        3 => (dev.clone(), dev.clone()).prop_map(|(s, d)| Op::Snapshot(s, d)),
        2 => dev.prop_map(Op::DeleteDev),
        1 => Just(Op::ReserveMetaSnap),
        1 => Just(Op::ReleaseMetaSnap),
        6 => Just(Op::Commit),
    ]
}

/// Operations to fault: mostly those that read and write many blocks.
fn big_op() -> impl Strategy<Value = Op> {
    let dev = 0..NR_DEVS;
    let vb = 0..NR_VBLOCKS;
    prop_oneof![
        4 => Just(Op::Commit),
        4 => (dev.clone(), vb.clone(), 50..300u64).prop_map(|(d, v, n)| Op::MapRun(d, v, n)),
        2 => (dev.clone(), vb, 100..1000u64).prop_map(|(d, v, n)| Op::UnmapRange(d, v, n)),
        1 => dev.prop_map(Op::DeleteDev),
        1 => Just(Op::ReserveMetaSnap),
        1 => Just(Op::ReleaseMetaSnap),
        1 => op(),
    ]
}

/// Steps where crashes and failures inside operations are as common as
/// the given weight.
fn step(fault_weight: u32) -> impl Strategy<Value = Step> {
    let fault = prop_oneof![
        any::<usize>().prop_map(Fault::Read),
        (0..10u64).prop_map(Fault::Write),
    ];
    prop_oneof![
        60 => op().prop_map(Step::Do),
        2 => Just(Step::Abort),
        2 => any::<u64>().prop_map(Step::Crash),
        fault_weight => (big_op(), 0..10u64, any::<u64>()).prop_map(|(o, k, s)| Step::CrashIn(o, k, s)),
        fault_weight => (big_op(), fault).prop_map(|(o, f)| Step::FailIn(o, f)),
    ]
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The pool, the model of its current transaction and of its last commit.
struct Run {
    io: MemIo,
    p: Pool,
    cache: usize,
    cur: Mappings,
    committed: Mappings,
    /// What the metadata snapshot holds, now and as committed.
    held: Option<Mappings>,
    held_committed: Option<Mappings>,
    /// Metadata blocks in use at the last check (read fault targets).
    in_use: Vec<u64>,
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// The outcome an operation's error must have, given the model.
fn expect_err(r: Result<(), Error>, want: Error) -> Result<(), Error> {
    match r {
        Err(e) if e == want => Ok(()),
        Ok(()) => Err(Error::Invalid),
        e => e,
    }
}

impl Run {
    fn new(cache: usize) -> Run {
        let (io, p) = format_cached(1500, 32_640, cache);
        let mut r = Run {
            io,
            p,
            cache,
            cur: Mappings::new(),
            committed: Mappings::new(),
            held: None,
            held_committed: None,
            in_use: Vec::new(),
        };
        r.check().unwrap();
        r
    }

    /// Checks the pool, which must be in the last committed state.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let got = self.p.mappings().map_err(|e| fail(format!("walk: {e}")))?;
        prop_assert_eq!(&got, &self.committed);
        let held = match self.p.held_mappings() {
            Ok(m) => Some(m),
            Err(Error::NoData) => None,
            Err(e) => return Err(fail(format!("held walk: {e}"))),
        };
        prop_assert_eq!(&held, &self.held_committed);
        let r = check(&self.io, &self.p).map_err(fail)?;
        self.in_use = r.meta_in_use();
        Ok(())
    }

    /// Applies `op` to pool and model. Errors the model expects (absent
    /// devices and blocks) are not errors here.
    fn apply(&mut self, op: &Op) -> Result<(), Error> {
        let p = &mut self.p;
        match *op {
            Op::Map(d, v) => self.map(d, v),
            Op::MapRun(d, v, n) => (v..v + n).try_for_each(|x| self.map(d, x)),
            Op::Unmap(d, v) => {
                let present = self.cur.get(&d).is_some_and(|m| m.contains_key(&v));
                let r = p.remove(d, v);
                if !present {
                    return expect_err(r, Error::NoData);
                }
                r?;
                self.cur.get_mut(&d).map(|m| m.remove(&v));
                Ok(())
            }
            Op::UnmapRange(d, v, n) => {
                let Some(m) = self.cur.get_mut(&d) else {
                    return expect_err(p.remove_range(d, v, v + n).map(|_| ()), Error::NoData);
                };
                let gone = p.remove_range(d, v, v + n)?;
                let want: Vec<u64> = m.range(v..v + n).map(|(&k, _)| k).collect();
                for k in &want {
                    m.remove(k);
                }
                if gone != want.len() as u64 {
                    return Err(Error::Invalid);
                }
                Ok(())
            }
            Op::Snapshot(s, d) => {
                if self.cur.contains_key(&d) {
                    return expect_err(p.create_snap(d, s), Error::Busy);
                }
                if !self.cur.contains_key(&s) {
                    return expect_err(p.create_snap(d, s), Error::NoData);
                }
                p.create_snap(d, s)?;
                let m = self.cur[&s].clone();
                self.cur.insert(d, m);
                Ok(())
            }
            Op::DeleteDev(d) => {
                if !self.cur.contains_key(&d) {
                    return expect_err(p.delete(d), Error::NoData);
                }
                p.delete(d)?;
                self.cur.remove(&d);
                Ok(())
            }
            Op::ReserveMetaSnap => {
                // Reserving commits first; commit here so the model knows
                // whether that commit happened (the one inside then
                // commits the same state again).
                self.apply(&Op::Commit)?;
                let r = self.p.reserve_metadata_snap();
                if self.held.is_some() {
                    return expect_err(r.map(|_| ()), Error::Busy);
                }
                r?;
                self.held = Some(self.cur.clone());
                Ok(())
            }
            Op::ReleaseMetaSnap => {
                if self.held.is_none() {
                    return expect_err(p.release_metadata_snap(), Error::Invalid);
                }
                p.release_metadata_snap()?;
                self.held = None;
                Ok(())
            }
            Op::Commit => {
                p.commit()?;
                self.committed = self.cur.clone();
                self.held_committed = self.held.clone();
                Ok(())
            }
        }
    }

    fn map(&mut self, d: u64, v: u64) -> Result<(), Error> {
        if !self.cur.contains_key(&d) {
            self.p.create_thin(d)?;
            self.cur.insert(d, Default::default());
        }
        let b = self.p.map(d, v)?;
        self.cur.entry(d).or_default().insert(v, b);
        Ok(())
    }

    /// Drops the pool (its block manager writes back what it caches,
    /// unflushed, as dm-bufio does), optionally cuts the power (each
    /// unflushed write kept or lost as `crash_seed` says), reopens, and
    /// checks the device holds the last commit.
    fn restart(self, crash_seed: Option<u64>) -> Result<Run, TestCaseError> {
        let Run {
            io,
            p,
            cache,
            committed,
            held_committed,
            ..
        } = self;
        drop(p);
        io.clear_faults();
        if let Some(mut s) = crash_seed {
            s |= 1;
            io.crash(|_| xorshift(&mut s) % 2 == 0);
        }
        let p = open_cached(&io, cache).map_err(|e| fail(format!("reopen: {e}")))?;
        let mut r = Run {
            io,
            p,
            cache,
            cur: committed.clone(),
            committed,
            held: held_committed.clone(),
            held_committed,
            in_use: Vec::new(),
        };
        r.check()?;
        Ok(r)
    }

    /// Runs `op` with a fault armed, then aborts (after a power cut if
    /// `crash_seed` is given: the cut device takes no more writes, not
    /// even the write-back of the pool's drop). A commit that returned an
    /// error must not be on the device, then or later.
    fn faulty(mut self, op: &Op, crash_seed: Option<u64>) -> Result<Run, TestCaseError> {
        let r = self.apply(op);
        if crash_seed.is_none() {
            self.io.clear_faults();
        }
        match r {
            Ok(()) | Err(Error::Io | Error::NoSpace) => self.restart(crash_seed),
            Err(e) => Err(fail(format!("{op:?} under a fault: {e}"))),
        }
    }

    fn step(mut self, s: &Step) -> Result<Run, TestCaseError> {
        match s {
            Step::Do(op) => match self.apply(op) {
                Ok(()) if matches!(op, Op::Commit) => self.check().map(|()| self),
                Ok(()) => Ok(self),
                // Out of space: the transaction is abandoned, as thin does.
                Err(Error::NoSpace) => self.restart(None),
                Err(e) => Err(fail(format!("{op:?}: {e}"))),
            },
            Step::Abort => self.restart(None),
            Step::Crash(seed) => self.restart(Some(*seed)),
            Step::CrashIn(op, k, seed) => {
                self.io.fail_writes_after(Some(*k));
                self.faulty(op, Some(*seed))
            }
            Step::FailIn(op, f) => {
                match *f {
                    Fault::Read(n) => {
                        let b = self.in_use[n % self.in_use.len()];
                        self.io.fail_read_of(b);
                    }
                    Fault::Write(k) => self.io.fail_writes_after(Some(k)),
                }
                self.faulty(op, None)
            }
        }
    }
}

fn run(cache: usize, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut r = Run::new(cache);
    for s in &steps {
        r = r.step(s)?;
    }
    r.apply(&Op::Commit)
        .map_err(|e| fail(format!("final commit: {e}")))?;
    r.check()?;
    r.restart(Some(12345)).map(|_| ())
}

fn cases(release: u32) -> u32 {
    std::env::var("PD_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 4 } else { release })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(200),
        max_shrink_iters: 300,
        // The minimal failing case is printed; no file beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Long histories, mostly operations, a crash or failure now and then.
    #[test]
    fn histories_match_the_model(
        cache in prop_oneof![Just(8usize), Just(16), Just(64)],
        steps in proptest::collection::vec(step(2), 1..120),
    ) {
        run(cache, steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(150),
        max_shrink_iters: 300,
        // The minimal failing case is printed; no file beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Power cuts and I/O errors inside operations, often.
    #[test]
    fn faults_inside_operations_keep_the_last_commit(
        cache in prop_oneof![Just(8usize), Just(16)],
        steps in proptest::collection::vec(step(20), 1..60),
    ) {
        run(cache, steps)?;
    }
}
