//! The cell lock and the deferred set against simple models: no item lost
//! or duplicated, FIFO per cell, bounded capacity, and work never released
//! before the I/O counted ahead of it.

use std::collections::{BTreeSet, VecDeque};

use dm_rs_targets_host::thin::prison::{
    CellHandle, CellKey, DeferredEntry, DeferredSet, DetainError, Detained, Prison, Promotion,
    StaleCell, MAX_KEY_RANGE,
};
use proptest::prelude::*;

#[test]
fn key_ranges_follow_upstreams_limits() {
    let k = |begin, end| CellKey {
        virt: true,
        dev: 1,
        begin,
        end,
    };
    assert!(k(0, 1).is_valid());
    assert!(k(0, MAX_KEY_RANGE).is_valid());
    assert!(k(1024, 2048).is_valid());
    assert!(k(5, 1024).is_valid());
    assert!(!k(0, 0).is_valid());
    assert!(!k(3, 2).is_valid());
    assert!(!k(0, 1025).is_valid());
    assert!(!k(1023, 1025).is_valid());
    assert!(CellKey::block(false, 0, u64::MAX - 1).is_valid());
    let mut p = Prison::try_new(4, 4).unwrap();
    assert_eq!(p.detain(&k(1023, 1025), 7), Err(DetainError::InvalidKey(7)));
}

#[test]
fn holder_queue_release_in_order() {
    let mut p: Prison<u32> = Prison::try_new(8, 8).unwrap();
    let key = CellKey::block(true, 3, 10);
    let Ok(Detained::Holder(cell, 1)) = p.detain(&key, 1) else {
        panic!("first detain must hold");
    };
    for i in 2..=4 {
        assert_eq!(p.detain(&key, i), Ok(Detained::Queued));
    }
    // Another device, the data space, a neighbour block: separate cells.
    let others = [
        CellKey::block(true, 4, 10),
        CellKey::block(false, 3, 10),
        CellKey::block(true, 3, 11),
    ];
    let mut handles = Vec::new();
    for (i, k) in others.iter().enumerate() {
        match p.detain(k, 10 + i as u32) {
            Ok(Detained::Holder(h, _)) => handles.push(h),
            other => panic!("{other:?}"),
        }
    }
    // A range overlapping block 10 queues in its cell.
    let range = CellKey {
        virt: true,
        dev: 3,
        begin: 8,
        end: 11,
    };
    assert_eq!(p.detain(&range, 5), Ok(Detained::Queued));
    assert_eq!(p.queued_in(&cell), 4);
    assert_eq!((p.held_cells(), p.queued_items()), (4, 4));
    let Ok(Promotion::Promoted(cell, 2)) = p.promote_or_release(cell) else {
        panic!("2 is next");
    };
    let mut out = Vec::new();
    p.release(cell, |i| out.push(i)).unwrap();
    assert_eq!(out, [3, 4, 5]);
    // The range is free again.
    let Ok(Detained::Holder(cell, 6)) = p.detain(&key, 6) else {
        panic!("released cells free their range");
    };
    assert_eq!(p.promote_or_release(cell), Ok(Promotion::Released));
    for h in handles {
        p.release(h, |_| panic!("nothing queued")).unwrap();
    }
    assert_eq!((p.held_cells(), p.queued_items()), (0, 0));
}

#[test]
fn ranges_and_single_blocks_share_cells_both_ways() {
    let mut p: Prison<u32> = Prison::try_new(64, 64).unwrap();
    let range = CellKey {
        virt: false,
        dev: 0,
        begin: 2048,
        end: 3072,
    };
    let Ok(Detained::Holder(h, 1)) = p.detain(&range, 1) else {
        panic!("range holds");
    };
    // Every block of the range, first and last included, queues behind it.
    for (n, b) in [2048u64, 2500, 3071].into_iter().enumerate() {
        assert_eq!(
            p.detain(&CellKey::block(false, 0, b), 2 + n as u32),
            Ok(Detained::Queued)
        );
    }
    // Outside it, or in the virtual space: separate cells.
    let mut others = Vec::new();
    for k in [
        CellKey::block(false, 0, 2047),
        CellKey::block(false, 0, 3072),
        CellKey::block(true, 0, 2500),
    ] {
        let Ok(Detained::Holder(o, _)) = p.detain(&k, 9) else {
            panic!("{k:?} is not in the range");
        };
        others.push(o);
    }
    let mut out = Vec::new();
    p.release(h, |i| out.push(i)).unwrap();
    assert_eq!(out, [2, 3, 4]);
    for o in others {
        p.release(o, |_| panic!("nothing queued")).unwrap();
    }
    assert_eq!(p.held_cells(), 0);
}

#[test]
fn capacity_is_bounded_and_items_come_back() {
    let mut p: Prison<u32> = Prison::try_new(2, 1).unwrap();
    let a = CellKey::block(false, 0, 1);
    let b = CellKey::block(false, 0, 2);
    let Ok(Detained::Holder(ha, _)) = p.detain(&a, 1) else {
        panic!()
    };
    let Ok(Detained::Holder(hb, _)) = p.detain(&b, 2) else {
        panic!()
    };
    assert_eq!(
        p.detain(&CellKey::block(false, 0, 3), 3),
        Err(DetainError::Full(3))
    );
    assert_eq!(p.detain(&a, 4), Ok(Detained::Queued));
    assert_eq!(p.detain(&b, 5), Err(DetainError::Full(5)));
    let mut out = Vec::new();
    p.release(ha, |i| out.push(i)).unwrap();
    assert_eq!(out, [4]);
    assert_eq!(p.detain(&b, 5), Ok(Detained::Queued));
    p.release(hb, |i| out.push(i)).unwrap();
    assert_eq!(out, [4, 5]);
    // A prison with no room at all refuses politely.
    let mut none: Prison<u32> = Prison::try_new(0, 0).unwrap();
    assert_eq!(none.detain(&a, 9), Err(DetainError::Full(9)));
}

#[test]
fn handles_of_another_prison_are_stale() {
    let mut p: Prison<u32> = Prison::try_new(2, 2).unwrap();
    let mut q: Prison<u32> = Prison::try_new(2, 2).unwrap();
    let key = CellKey::block(true, 0, 0);
    let Ok(Detained::Holder(h, _)) = q.detain(&key, 1) else {
        panic!()
    };
    assert_eq!(p.queued_in(&h), 0);
    assert_eq!(p.release(h, |_| {}), Err(StaleCell));
    let Ok(Detained::Holder(h, _)) = q.detain(&CellKey::block(true, 0, 1), 2) else {
        panic!()
    };
    assert_eq!(p.promote_or_release(h), Err(StaleCell));
}

#[derive(Clone, Debug)]
enum Op {
    Detain(bool, u64, u64, u64),
    Release(usize),
    Promote(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0..2u64, 0..40u64, prop_oneof![Just(1u64), Just(4), Just(0), Just(1030)])
            .prop_map(|(v, d, b, len)| Op::Detain(v, d, 1010 + b, len)),
        2 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Promote),
    ]
}

struct ModelCell {
    key: CellKey,
    handle: CellHandle,
    queue: VecDeque<u32>,
}

fn overlaps(a: &CellKey, b: &CellKey) -> bool {
    a.virt == b.virt && a.dev == b.dev && a.begin < b.end && b.begin < a.end
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prison_matches_model(
        ops in proptest::collection::vec(op(), 1..120),
        max_cells in 0u32..6,
        max_queued in 0u32..8,
    ) {
        let mut p: Prison<u32> = Prison::try_new(max_cells, max_queued).unwrap();
        let mut cells: Vec<ModelCell> = Vec::new();
        // Every item id is in exactly one of: held by the caller (the cell
        // holders), queued in the model, handed back (released or refused).
        let mut next_id = 0u32;
        let mut back: Vec<u32> = Vec::new();
        let mut holders: BTreeSet<u32> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Detain(virt, dev, begin, len) => {
                    let key = CellKey { virt, dev, begin, end: begin + len };
                    let id = next_id;
                    next_id += 1;
                    let valid = (1..=1024).contains(&len) && begin / 1024 == (begin + len - 1) / 1024;
                    let hits: Vec<usize> = (0..cells.len()).filter(|&i| overlaps(&cells[i].key, &key)).collect();
                    let queued: usize = cells.iter().map(|c| c.queue.len()).sum();
                    let before: Vec<usize> = hits.iter().map(|&i| p.queued_in(&cells[i].handle)).collect();
                    match p.detain(&key, id) {
                        Err(DetainError::InvalidKey(i)) => {
                            prop_assert!(!valid);
                            prop_assert_eq!(i, id);
                            back.push(i);
                        }
                        Err(DetainError::Full(i)) => {
                            prop_assert!(valid);
                            prop_assert_eq!(i, id);
                            if hits.is_empty() {
                                prop_assert_eq!(cells.len(), max_cells as usize);
                            } else {
                                prop_assert_eq!(queued, max_queued as usize);
                            }
                            back.push(i);
                        }
                        Ok(Detained::Holder(handle, i)) => {
                            prop_assert!(valid && hits.is_empty());
                            prop_assert_eq!(i, id);
                            holders.insert(i);
                            cells.push(ModelCell { key, handle, queue: VecDeque::new() });
                        }
                        Ok(Detained::Queued) => {
                            prop_assert!(valid && !hits.is_empty());
                            // Which overlapping cell took it: the one whose
                            // queue grew.
                            let grew: Vec<usize> = hits.iter().zip(&before)
                                .filter(|(&i, &n)| p.queued_in(&cells[i].handle) == n + 1)
                                .map(|(&i, _)| i).collect();
                            prop_assert_eq!(grew.len(), 1);
                            cells[grew[0]].queue.push_back(id);
                        }
                    }
                }
                Op::Release(n) if !cells.is_empty() => {
                    let c = cells.swap_remove(n % cells.len());
                    let mut out = Vec::new();
                    p.release(c.handle, |i| out.push(i)).unwrap();
                    prop_assert_eq!(&out, &Vec::from(c.queue));
                    back.extend(out);
                }
                Op::Promote(n) if !cells.is_empty() => {
                    let i = n % cells.len();
                    let mut c = cells.swap_remove(i);
                    match p.promote_or_release(c.handle).unwrap() {
                        Promotion::Released => prop_assert!(c.queue.is_empty()),
                        Promotion::Promoted(handle, item) => {
                            prop_assert_eq!(Some(item), c.queue.pop_front());
                            holders.insert(item);
                            c.handle = handle;
                            cells.push(c);
                        }
                    }
                }
                _ => {}
            }
            prop_assert_eq!(p.held_cells(), cells.len());
            prop_assert_eq!(p.queued_items(), cells.iter().map(|c| c.queue.len()).sum::<usize>());
        }
        for c in cells.drain(..) {
            p.release(c.handle, |i| back.push(i)).unwrap();
        }
        prop_assert_eq!((p.held_cells(), p.queued_items()), (0, 0));
        // Each id came back exactly once, or went to the caller as a holder.
        let mut all: Vec<u32> = back.iter().copied().chain(holders.iter().copied()).collect();
        all.sort_unstable();
        let before_dedup = all.len();
        all.dedup();
        prop_assert_eq!(before_dedup, all.len(), "an item was duplicated");
        prop_assert_eq!(all, (0..next_id).collect::<Vec<_>>(), "an item was lost");
    }

    #[test]
    fn deferred_work_waits_for_earlier_io(
        ops in proptest::collection::vec(0u8..3, 1..400),
        max_work in 0u32..40,
    ) {
        let mut ds: DeferredSet<u32> = DeferredSet::try_new(max_work).unwrap();
        // In-flight I/O: (io id, entry). Work waiting: id -> I/O it waits for.
        let mut io: Vec<(u32, DeferredEntry)> = Vec::new();
        let mut waiting: Vec<(u32, BTreeSet<u32>)> = Vec::new();
        let mut done_io: BTreeSet<u32> = BTreeSet::new();
        let mut ran: Vec<u32> = Vec::new();
        let (mut next_io, mut next_work) = (0u32, 0u32);
        let mut refused = 0usize;
        for (step, o) in ops.into_iter().enumerate() {
            match o {
                0 => {
                    io.push((next_io, ds.inc()));
                    next_io += 1;
                }
                1 if !io.is_empty() => {
                    // Finish some in-flight I/O (not always the oldest).
                    let (id, e) = io.remove(step % io.len());
                    done_io.insert(id);
                    let mut out = Vec::new();
                    ds.dec(e, |w| out.push(w));
                    for w in out {
                        let pos = waiting.iter().position(|(x, _)| *x == w);
                        prop_assert!(pos.is_some(), "work {} ran twice or from nowhere", w);
                        let (_, deps) = waiting.remove(pos.unwrap());
                        prop_assert!(deps.is_subset(&done_io), "work {} ran before its I/O", w);
                        ran.push(w);
                    }
                }
                _ => {
                    let id = next_work;
                    next_work += 1;
                    let in_flight: BTreeSet<u32> = io.iter().map(|(i, _)| *i).collect();
                    match ds.add_work(id) {
                        Ok(Some(w)) => {
                            prop_assert_eq!(w, id);
                            prop_assert!(in_flight.is_empty(), "ran with I/O in flight");
                            ran.push(w);
                        }
                        Ok(None) => {
                            prop_assert!(!in_flight.is_empty());
                            waiting.push((id, in_flight));
                        }
                        Err(w) => {
                            prop_assert_eq!(w, id);
                            prop_assert_eq!(ds.waiting_work(), max_work as usize);
                            refused += 1;
                        }
                    }
                }
            }
            prop_assert_eq!(ds.waiting_work(), waiting.len());
        }
        // Finish everything: all work runs.
        while let Some((id, e)) = io.pop() {
            done_io.insert(id);
            ds.dec(e, |w| {
                waiting.retain(|(x, _)| *x != w);
                ran.push(w);
            });
        }
        prop_assert!(waiting.is_empty(), "work left waiting: {:?}", waiting);
        prop_assert_eq!(ds.waiting_work(), 0);
        prop_assert_eq!(ran.len() + refused, next_work as usize);
    }
}

#[test]
fn deferred_set_survives_more_generations_than_it_has() {
    // 200 generations each kept busy: the ring is full, work still waits
    // correctly and all of it runs at the end.
    let mut ds: DeferredSet<u32> = DeferredSet::try_new(300).unwrap();
    let mut entries = Vec::new();
    for w in 0..200 {
        entries.push(ds.inc());
        assert_eq!(ds.add_work(w), Ok(None));
    }
    let mut ran = Vec::new();
    let last = entries.pop().unwrap();
    for e in entries {
        ds.dec(e, |w| ran.push(w));
    }
    assert!(ran.len() < 200);
    ds.dec(last, |w| ran.push(w));
    ran.sort_unstable();
    assert_eq!(ran, (0..200).collect::<Vec<_>>());
    assert_eq!(ds.add_work(7), Ok(Some(7)));
}
