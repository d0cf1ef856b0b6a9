//! Tracked chunks (snapshot reads in flight to the origin): counted per
//! chunk, never allocating past the table's capacity, an overflow that
//! makes every chunk look tracked, and a model-based check against a plain
//! multiset.

use dm_rs_targets_host::snapshot_store::{Tracked, TrackedChunks};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[test]
fn a_chunk_is_tracked_until_its_last_bio_ends() {
    let mut t = TrackedChunks::new(4).unwrap();
    assert!(t.is_empty());
    let a = t.track(7);
    let b = t.track(7);
    assert_eq!(a, Tracked::Chunk(7));
    assert!(t.is_tracked(7));
    assert!(!t.is_tracked(6) && !t.is_tracked(8));
    t.untrack(a);
    assert!(t.is_tracked(7), "one read of chunk 7 is still in flight");
    t.untrack(b);
    assert!(!t.is_tracked(7));
    assert!(t.is_empty());
    // Untracking what was never tracked changes nothing.
    t.untrack(Tracked::No);
    t.untrack(Tracked::Chunk(9));
    assert!(t.is_empty());
}

#[test]
fn a_full_table_counts_the_rest_as_overflow() {
    let mut t = TrackedChunks::new(2).unwrap();
    let a = t.track(1);
    let b = t.track(2);
    let c = t.track(3);
    assert_eq!(c, Tracked::Overflow);
    // A chunk already in the table is still counted there.
    assert_eq!(t.track(2), Tracked::Chunk(2));
    // While the overflow lasts, every chunk may be in use.
    assert!(t.is_tracked(3) && t.is_tracked(1000));
    t.untrack(c);
    assert!(!t.is_tracked(3) && !t.is_tracked(1000));
    assert!(t.is_tracked(1) && t.is_tracked(2));
    t.untrack(a);
    t.untrack(b);
    t.untrack(Tracked::Chunk(2));
    assert!(t.is_empty());
}

proptest! {
    /// Any interleaving of tracks and untracks: a chunk is reported
    /// tracked whenever a bio on it is in flight (never too little), and
    /// only then unless the overflow is in use.
    #[test]
    fn matches_a_multiset(ops in prop::collection::vec((0u64..12, any::<bool>()), 1..300),
                          limit in 1usize..6) {
        let mut t = TrackedChunks::new(limit).unwrap();
        let mut live: Vec<(u64, Tracked)> = Vec::new();
        for (chunk, add) in ops {
            if add || live.is_empty() {
                live.push((chunk, t.track(chunk)));
            } else {
                let i = chunk as usize % live.len();
                let (_, tr) = live.remove(i);
                t.untrack(tr);
            }
            let mut count: BTreeMap<u64, usize> = BTreeMap::new();
            for (c, _) in &live {
                *count.entry(*c).or_default() += 1;
            }
            let overflow = live.iter().any(|(_, tr)| *tr == Tracked::Overflow);
            for c in 0..12 {
                if count.contains_key(&c) {
                    prop_assert!(t.is_tracked(c));
                } else if !overflow {
                    prop_assert!(!t.is_tracked(c));
                }
            }
            prop_assert_eq!(t.is_empty(), live.is_empty());
        }
    }
}
