//! The snapshot's in-core tables against models: completed exceptions
//! (runs of consecutive chunks) and pending exceptions (waiters, commit
//! order).

mod snapshot_common;

use proptest::prelude::*;
use snapshot_common::*;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// Checks `t` against the model: every lookup, and the run invariants
/// (at most 256 chunks, within one 256-chunk aligned group).
fn check(t: &ExceptionTable, model: &BTreeMap<u64, u64>, span: u64) {
    for c in 0..span {
        assert_eq!(t.lookup(c), model.get(&c).copied(), "chunk {c}");
    }
    assert_eq!(t.len(), model.len() as u64);
    let mut total = 0;
    for r in t.runs() {
        assert!((1..=256).contains(&r.len), "{r:?}");
        assert_eq!(
            r.old >> 8,
            (r.old + r.len - 1) >> 8,
            "{r:?} crosses a group"
        );
        for i in 0..r.len {
            assert_eq!(model.get(&(r.old + i)), Some(&(r.new + i)), "{r:?}");
        }
        total += r.len;
    }
    assert_eq!(total, model.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn exception_table_matches_a_map(
        // Mostly runs (old and new both stepping by one), some jumps.
        steps in prop::collection::vec((0u8..10, 0u64..40), 1..800),
        // One bucket puts neighbouring groups side by side.
        buckets in prop::sample::select(vec![0usize, 1, 2, 3, 64, 100]),
    ) {
        let mut t = ExceptionTable::new(buckets).unwrap();
        let mut model = BTreeMap::new();
        let mut order = Vec::new();
        let (mut old, mut new) = (0u64, 2u64);
        for (kind, jump) in steps {
            match kind {
                0..=6 => (old, new) = (old + 1, new + 1),
                7 => (old, new) = (old + jump, new + 1),
                8 => (old, new) = (old.saturating_sub(jump * 7), new + 1),
                _ => (old, new) = (old + 1, new + jump),
            }
            let e = Exception { old, new };
            match model.entry(old) {
                Entry::Occupied(_) => prop_assert_eq!(t.insert(e), Err(Error::Exists)),
                Entry::Vacant(v) => {
                    t.insert(e).unwrap();
                    v.insert(new);
                    order.push(old);
                }
            }
        }
        let span = model.keys().last().unwrap() + 300;
        check(&t, &model, span);
        // Merging removes chunks in the reverse of their commit order,
        // always at the end of a run.
        for (i, old) in order.iter().rev().enumerate() {
            t.remove(*old).unwrap();
            model.remove(old);
            prop_assert_eq!(t.lookup(*old), None);
            if i % 50 == 0 {
                check(&t, &model, span);
            }
        }
        prop_assert!(t.is_empty());
        prop_assert_eq!(t.remove(0), Err(Error::NoData));
    }

    /// Removing a span of chunks a stored run at a time does what removing
    /// them one by one, last first, does: the same chunk fails, with the
    /// same error, and the same table is left.
    #[test]
    fn removing_a_span_matches_removing_chunk_by_chunk(
        steps in prop::collection::vec((0u8..10, 0u64..40), 1..400),
        spans in prop::collection::vec((0u64..600, 1u64..300), 1..6),
    ) {
        let mut a = ExceptionTable::new(4).unwrap();
        let mut b = ExceptionTable::new(4).unwrap();
        let (mut old, mut new) = (0u64, 2u64);
        for (kind, jump) in steps {
            match kind {
                0..=6 => (old, new) = (old + 1, new + 1),
                7 => (old, new) = (old + jump, new + 1),
                8 => (old, new) = (old.saturating_sub(jump * 7), new + 1),
                _ => (old, new) = (old + 1, new + jump),
            }
            let e = Exception { old, new };
            let r = a.insert(e);
            prop_assert_eq!(r, b.insert(e));
        }
        for (last, len) in spans {
            let len = len.min(last + 1);
            let one_by_one = (last + 1 - len..=last)
                .rev()
                .try_for_each(|c| b.remove(c).map_err(|e| (e, c)));
            prop_assert_eq!(a.remove_back_from(last, len), one_by_one);
            prop_assert_eq!(a.len(), b.len());
            let mut ra: Vec<_> = a.runs().collect();
            let mut rb: Vec<_> = b.runs().collect();
            ra.sort_by_key(|r| r.old);
            rb.sort_by_key(|r| r.old);
            prop_assert_eq!(ra, rb);
        }
    }

    /// Whatever order copies finish in, and whichever are abandoned,
    /// commits come out in allocation order, each once.
    #[test]
    fn pending_commits_come_out_in_allocation_order(
        ops in prop::collection::vec((0u8..4, 0u64..12), 1..200),
    ) {
        let mut p: PendingExceptions<u64> = PendingExceptions::new();
        let mut seq = BTreeMap::new(); // old -> allocation sequence
        let mut next = 0u64;
        let mut abandoned = Vec::new();
        let mut out = Vec::new();
        for (op, old) in ops {
            match op {
                0 => {
                    if p.insert(old, 100 + next).is_ok() {
                        prop_assert!(seq.insert(old, next).is_none());
                        next += 1;
                        p.start(old);
                    }
                }
                1 => { let _ = p.copied(old, false); }
                2 => {
                    if p.get(old).is_some_and(|e| e.state() != CopyState::Committing) {
                        p.remove(old);
                        abandoned.push(seq.remove(&old).unwrap());
                    }
                }
                _ => {
                    while let Some(r) = p.next_ready() {
                        out.push(seq.remove(&r.old).unwrap());
                        prop_assert!(p.remove(r.old).is_some());
                    }
                }
            }
        }
        prop_assert!(out.windows(2).all(|w| w[0] < w[1]), "{:?}", out);
        prop_assert!(out.iter().all(|s| !abandoned.contains(s)));
    }
}

#[test]
fn consecutive_exceptions_compress_into_runs_of_a_group() {
    let mut t = ExceptionTable::new(64).unwrap();
    for c in 0..1000 {
        t.insert(Exception {
            old: c,
            new: c + 10,
        })
        .unwrap();
    }
    let mut runs: Vec<Run> = t.runs().collect();
    runs.sort_by_key(|r| r.old);
    let want = [(0, 256), (256, 256), (512, 256), (768, 232)];
    assert_eq!(
        runs.iter().map(|r| (r.old, r.len)).collect::<Vec<_>>(),
        want
    );
    assert_eq!(t.lookup(999), Some(1009));
    assert_eq!(t.lookup(1000), None);
    // Backwards too, and a chunk filling a gap joins the run before it.
    let mut t = ExceptionTable::new(64).unwrap();
    for c in (10..20).rev() {
        t.insert(Exception { old: c, new: c }).unwrap();
    }
    t.insert(Exception { old: 21, new: 21 }).unwrap();
    t.insert(Exception { old: 20, new: 20 }).unwrap();
    let mut runs: Vec<(u64, u64)> = t.runs().map(|r| (r.old, r.len)).collect();
    runs.sort();
    assert_eq!(runs, [(10, 11), (21, 1)]);
    // Removing from the middle of a run is refused.
    assert_eq!(t.remove(15), Err(Error::Invalid));
    t.remove(10).unwrap();
    t.remove(20).unwrap();
    assert_eq!(
        t.lookup_run(15),
        Some(Run {
            old: 11,
            new: 11,
            len: 9
        })
    );
    // Chunk numbers are 56 bits.
    assert_eq!(
        t.insert(Exception {
            old: 1 << 56,
            new: 5
        }),
        Err(Error::Invalid)
    );
    assert_eq!(
        t.insert(Exception {
            old: 5,
            new: 1 << 56
        }),
        Err(Error::Invalid)
    );
    t.insert(Exception {
        old: (1 << 56) - 1,
        new: (1 << 56) - 1,
    })
    .unwrap();
    assert_eq!(t.lookup((1 << 56) - 1), Some((1 << 56) - 1));
}

/// A bucket of up to four runs is scanned, a longer one bisected: every
/// chunk around runs in one bucket maps the same on both sides of that.
#[test]
fn lookups_in_buckets_of_few_and_many_runs() {
    for runs in 1..=6u64 {
        let mut t = ExceptionTable::new(1).unwrap();
        // Runs of two chunks with a gap of one: 10-11, 13-14, ...
        for r in 0..runs {
            for c in [10 + 3 * r, 11 + 3 * r] {
                t.insert(Exception {
                    old: c,
                    new: c + 100,
                })
                .unwrap();
            }
        }
        assert_eq!(t.runs().count() as u64, runs);
        for c in 0..(12 + 3 * runs) {
            let inside = c >= 10 && c < 10 + 3 * runs && (c - 10) % 3 != 2;
            let want = inside.then_some(c + 100);
            assert_eq!(t.lookup(c), want, "{runs} runs, chunk {c}");
            assert_eq!(t.lookup_run(c).is_some(), inside, "{runs} runs, chunk {c}");
        }
    }
}

#[test]
fn bucket_count_follows_upstreams_rule() {
    assert_eq!(ExceptionTable::buckets_for(0), 64);
    assert_eq!(ExceptionTable::buckets_for(100), 64);
    assert_eq!(ExceptionTable::buckets_for(1000), 512);
    // Capped at 2 MiB of buckets.
    let cap = ExceptionTable::buckets_for(u64::MAX);
    assert!(cap.is_power_of_two());
    assert!(cap * 24 <= 2 << 20 && cap * 48 > 2 << 20, "{cap}");
}

#[test]
fn pending_exceptions_hold_waiters_and_commit_in_allocation_order() {
    let mut p: PendingExceptions<&str> = PendingExceptions::new();
    p.insert(50, 2).unwrap();
    p.insert(10, 3).unwrap();
    p.insert(30, 4).unwrap();
    assert_eq!(p.insert(10, 9), Err(Error::Exists));
    p.add_waiter(10, WaiterKind::Origin, "o1").unwrap();
    p.add_waiter(10, WaiterKind::Snapshot, "s1").unwrap();
    p.add_waiter(10, WaiterKind::Origin, "o2").unwrap();
    assert_eq!(
        p.add_waiter(99, WaiterKind::Origin, "lost"),
        Err((Error::NoData, "lost"))
    );
    assert!(p.start(10));
    assert!(!p.start(10), "a copy starts once");
    assert!(p.start(50) && p.start(30));
    assert_eq!(p.copied(77, false), Err(Error::NoData));
    // 10 and 30 finish first, but 50 was allocated first.
    p.copied(10, false).unwrap();
    p.copied(30, true).unwrap();
    assert_eq!(p.next_ready(), None);
    assert!(!p.has_ready(), "the oldest copy (50) is still running");
    p.copied(50, false).unwrap();
    assert!(p.has_ready());
    let ready: Vec<_> = std::iter::from_fn(|| p.next_ready()).collect();
    assert!(!p.has_ready(), "every copy handed out");
    assert_eq!(
        ready,
        [
            ReadyToCommit {
                old: 50,
                new: 2,
                valid: true
            },
            ReadyToCommit {
                old: 10,
                new: 3,
                valid: true
            },
            ReadyToCommit {
                old: 30,
                new: 4,
                valid: false
            },
        ]
    );
    assert_eq!(p.get(10).map(|e| e.state()), Some(CopyState::Committing));
    let (snap, origin) = p.remove(10).unwrap().into_waiters();
    let (snap, origin): (Vec<_>, Vec<_>) = (snap.iter().collect(), origin.iter().collect());
    assert_eq!(
        (&snap[..], &origin[..]),
        (&[&"s1"][..], &[&"o1", &"o2"][..])
    );
    assert_eq!(p.len(), 2);
}
