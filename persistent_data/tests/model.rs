//! Model-based property tests: random mapping changes, snapshots and
//! device deletes across many transactions, with commits, aborts and
//! simulated crashes (unflushed writes randomly lost or kept). After every
//! reopen the trees must equal the model as of the last commit, and every
//! reference count in both space maps must equal a recount (no leaks, no
//! premature frees).

mod common;

use common::{Model, Pool};
use persistent_data::Error;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Map(u64, u64),
    Unmap(u64, u64),
    MapRun(u64, u64, u64),
    Snapshot(u64, u64),
    DeleteDev(u64),
    Commit,
    Abort,
    Crash(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0..4u64, 0..3000u64).prop_map(|(d, v)| Op::Map(d, v)),
        15 => (0..4u64, 0..3000u64).prop_map(|(d, v)| Op::Unmap(d, v)),
        8 => (0..4u64, 0..3000u64, 1..400u64).prop_map(|(d, v, n)| Op::MapRun(d, v, n)),
        3 => (0..4u64, 0..4u64).prop_map(|(s, d)| Op::Snapshot(s, d)),
        2 => (0..4u64).prop_map(Op::DeleteDev),
        6 => Just(Op::Commit),
        2 => Just(Op::Abort),
        3 => any::<u64>().prop_map(Op::Crash),
    ]
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn reopen(p: Pool, crash_seed: Option<u64>) -> Pool {
    let io = p.io.clone();
    // Dropping writes back dirty blocks (as dm-bufio does) without a flush.
    drop(p);
    if let Some(mut s) = crash_seed {
        s |= 1;
        io.crash(|_| xorshift(&mut s) % 2 == 0);
    }
    Pool::open(io).expect("reopen after abort/crash")
}

fn check(p: &Pool, model: &Model) -> Result<(), TestCaseError> {
    let got = p
        .contents()
        .map_err(|e| TestCaseError::fail(format!("walk: {e}")))?;
    prop_assert_eq!(&got, model);
    p.check_counts().map_err(TestCaseError::fail)?;
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut p = Pool::format(3000, 30_000);
    let mut cur = Model::new();
    let mut committed = Model::new();
    for op in ops {
        let r = match op.clone() {
            Op::Map(d, v) => p.map(d, v).map(|b| {
                cur.entry(d).or_default().insert(v, b);
            }),
            Op::MapRun(d, v, n) => (v..v + n).try_for_each(|x| {
                p.map(d, x).map(|b| {
                    cur.entry(d).or_default().insert(x, b);
                })
            }),
            Op::Unmap(d, v) => match p.unmap(d, v) {
                Ok(()) => {
                    prop_assert!(cur.get_mut(&d).and_then(|m| m.remove(&v)).is_some());
                    Ok(())
                }
                Err(Error::NoData) => {
                    prop_assert!(cur.get(&d).and_then(|m| m.get(&v)).is_none());
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::Snapshot(s, d) => {
                if s == d || !cur.contains_key(&s) || cur.contains_key(&d) {
                    Ok(())
                } else {
                    p.snapshot(s, d).map(|_| {
                        let m = cur[&s].clone();
                        cur.insert(d, m);
                    })
                }
            }
            Op::DeleteDev(d) => match p.delete_dev(d) {
                Ok(()) => {
                    prop_assert!(cur.remove(&d).is_some());
                    Ok(())
                }
                Err(Error::NoData) => {
                    prop_assert!(!cur.contains_key(&d));
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::Commit => {
                p.commit()
                    .map_err(|e| TestCaseError::fail(format!("commit: {e}")))?;
                committed = cur.clone();
                check(&p, &committed)?;
                Ok(())
            }
            Op::Abort => {
                p = reopen(p, None);
                cur = committed.clone();
                check(&p, &committed)?;
                Ok(())
            }
            Op::Crash(seed) => {
                p = reopen(p, Some(seed));
                cur = committed.clone();
                check(&p, &committed)?;
                Ok(())
            }
        };
        match r {
            Ok(()) => {}
            // Out of space: the transaction is abandoned, as thin does.
            Err(Error::NoSpace) => {
                p = reopen(p, None);
                cur = committed.clone();
            }
            Err(e) => return Err(TestCaseError::fail(format!("{op:?}: {e}"))),
        }
    }
    p.commit()
        .map_err(|e| TestCaseError::fail(format!("final commit: {e}")))?;
    let p = reopen(p, Some(12345));
    check(&p, &cur)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PD_MODEL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(if cfg!(debug_assertions) { 4 } else { 24 }),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn transactions_match_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
