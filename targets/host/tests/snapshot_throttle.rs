//! The limit on copies in flight (upstream's `snapshot_cow_threshold`):
//! writes park only while more copies than the threshold are in flight,
//! every parked write comes back once a copy's end brings the count to the
//! threshold, none is lost or handed back twice, and a model-based check
//! against plain counting.

use dm_rs_targets_host::snapshot_store::{CopyThrottle, Parked};
use proptest::prelude::*;

/// Parked writes, by number.
#[derive(Default, Debug, PartialEq)]
struct Writes(Vec<u32>);

impl Parked for Writes {
    type Item = u32;
    fn park(&mut self, item: u32) {
        self.0.push(item);
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[test]
fn writes_park_only_over_the_threshold_and_come_back_at_it() {
    let mut t = CopyThrottle::<Writes>::new();
    // Threshold 2: up to two copies in flight, writes go on.
    t.start();
    t.start();
    assert_eq!(t.in_progress(), 2);
    assert_eq!(
        t.park(1, 2, |w| w),
        Err(1),
        "at the threshold a write goes on"
    );
    t.start();
    assert!(t.over(2));
    assert_eq!(t.park(1, 2, |w| w), Ok(()));
    assert_eq!(t.park(2, 2, |w| w), Ok(()));
    // Back at the threshold: both come back, in order, once.
    assert_eq!(t.end(2), Ok(Some(Writes(vec![1, 2]))));
    assert_eq!(t.end(2), Ok(None), "nothing parked any more");
    assert_eq!(t.in_progress(), 1);
}

#[test]
fn an_end_still_over_the_threshold_releases_nothing() {
    let mut t = CopyThrottle::<Writes>::new();
    for _ in 0..4 {
        t.start();
    }
    assert_eq!(t.park(7, 1, |w| w), Ok(()));
    assert_eq!(t.end(1), Ok(None), "3 copies in flight, threshold 1");
    assert_eq!(t.end(1), Ok(None), "2 copies in flight");
    assert_eq!(t.end(1), Ok(Some(Writes(vec![7]))));
}

#[test]
fn threshold_zero_parks_while_any_copy_is_in_flight() {
    let mut t = CopyThrottle::<Writes>::new();
    assert_eq!(t.park(1, 0, |w| w), Err(1));
    t.start();
    assert_eq!(t.park(1, 0, |w| w), Ok(()));
    assert_eq!(t.end(0), Ok(Some(Writes(vec![1]))));
}

#[test]
fn an_end_without_a_copy_is_an_error_and_keeps_the_count() {
    let mut t = CopyThrottle::<Writes>::new();
    assert_eq!(t.end(0), Err(()));
    assert_eq!(t.in_progress(), 0);
}

#[test]
fn take_parked_empties_the_queue_whatever_the_count() {
    let mut t = CopyThrottle::<Writes>::new();
    t.start();
    t.start();
    assert_eq!(t.park(3, 1, |w| w), Ok(()));
    assert_eq!(t.take_parked(), Writes(vec![3]));
    assert_eq!(t.end(1), Ok(None));
}

#[derive(Clone, Debug)]
enum Op {
    Start,
    End,
    Write,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Start), Just(Op::End), Just(Op::Write)]
}

proptest! {
    /// Against a model: a write parks iff more than `threshold` copies are
    /// in flight; every parked write comes back exactly once, at the first
    /// end that leaves at most `threshold` in flight; none is left parked
    /// once no copy is in flight.
    #[test]
    fn matches_counting(threshold in 0usize..4, ops in prop::collection::vec(op(), 0..200)) {
        let mut t = CopyThrottle::<Writes>::new();
        let mut copies = 0usize;
        let mut parked: Vec<u32> = Vec::new();
        let mut back: Vec<u32> = Vec::new();
        let mut next = 0u32;
        for o in ops {
            match o {
                Op::Start => {
                    t.start();
                    copies += 1;
                }
                Op::End => {
                    let r = t.end(threshold);
                    if copies == 0 {
                        prop_assert_eq!(r, Err(()));
                        continue;
                    }
                    copies -= 1;
                    let expect = (copies <= threshold && !parked.is_empty())
                        .then(|| Writes(std::mem::take(&mut parked)));
                    if let Ok(Some(w)) = &r {
                        back.extend(&w.0);
                    }
                    prop_assert_eq!(r, Ok(expect));
                }
                Op::Write => {
                    next += 1;
                    match t.park(next, threshold, |w| w) {
                        Ok(()) => {
                            prop_assert!(copies > threshold);
                            parked.push(next);
                        }
                        Err(w) => {
                            prop_assert_eq!(w, next);
                            prop_assert!(copies <= threshold);
                            back.push(w);
                        }
                    }
                }
            }
            prop_assert_eq!(t.in_progress(), copies);
            if copies <= threshold {
                prop_assert!(parked.is_empty(), "a write stayed parked under the threshold");
            }
        }
        // Every write either went on or is still parked, once.
        let mut all = back.clone();
        all.extend(&parked);
        all.sort_unstable();
        prop_assert_eq!(all, (1..=next).collect::<Vec<_>>());
    }
}
