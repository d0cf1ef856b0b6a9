//! Deterministic end-to-end scenarios for the transaction manager, both
//! space maps and btrees, checked against a recount after every commit.

mod common;

use common::{Model, Pool};
use persistent_data::block_manager::BlockManager;
use persistent_data::btree::{self, PlainValues};
use persistent_data::io::mem::{IoEvent, MemIo};
use persistent_data::space_map::{DiskSpaceMap, SmRoot, SpaceMap};
use persistent_data::transaction_manager::TransactionManager;
use persistent_data::Error;

#[test]
fn format_reopen_and_counts() {
    let p = Pool::format(1024, 10_000);
    p.check_counts().unwrap();
    // Format layout matches upstream: index block right after the
    // superblock, then the ref-count root, then the first bitmap.
    let root = p.tm.sm_root();
    assert_eq!(root.bitmap_root, 1);
    assert_eq!(root.ref_count_root, 2);
    assert_eq!(root.nr_blocks, 1024);
    let io = p.io.clone();
    drop(p);
    let p = Pool::open(io).unwrap();
    p.check_counts().unwrap();
    assert_eq!(p.contents().unwrap(), Model::new());
}

#[test]
fn mappings_snapshots_deletes_across_commits() {
    let mut p = Pool::format(4096, 200_000);
    let mut model = Model::new();
    for vb in 0..3000u64 {
        let b = p.map(1, vb * 3).unwrap();
        model.entry(1).or_default().insert(vb * 3, b);
    }
    p.commit().unwrap();
    p.check_counts().unwrap();
    // Snapshot, then diverge both.
    p.snapshot(1, 2).unwrap();
    model.insert(2, model[&1].clone());
    for vb in (0..3000u64).step_by(7) {
        let b = p.map(1, vb * 3).unwrap();
        model.get_mut(&1).unwrap().insert(vb * 3, b);
        p.unmap(2, vb * 3 + 3).ok();
        model.get_mut(&2).unwrap().remove(&(vb * 3 + 3));
    }
    p.commit().unwrap();
    p.check_counts().unwrap();
    assert_eq!(p.contents().unwrap(), model);
    // Shared data blocks have count 2.
    let shared = model[&2]
        .values()
        .filter(|b| model[&1].values().any(|x| x == *b))
        .count();
    assert!(shared > 0);
    p.delete_dev(1).unwrap();
    model.remove(&1);
    p.commit().unwrap();
    p.check_counts().unwrap();
    let io = p.io.clone();
    drop(p);
    let p = Pool::open(io).unwrap();
    assert_eq!(p.contents().unwrap(), model);
    p.check_counts().unwrap();
}

#[test]
fn remove_everything_frees_everything() {
    let mut p = Pool::format(2048, 50_000);
    p.commit().unwrap();
    let base_free = p.tm.sm_nr_free();
    for vb in 0..5000u64 {
        p.map(7, vb).unwrap();
    }
    p.commit().unwrap();
    for vb in (0..5000u64).rev() {
        p.unmap(7, vb).unwrap();
    }
    p.delete_dev(7).unwrap();
    p.commit().unwrap();
    p.check_counts().unwrap();
    assert_eq!(p.data.nr_free(&p.tm), 50_000);
    // Metadata back to the same footprint (two commits later).
    p.commit().unwrap();
    assert!(
        p.tm.sm_nr_free() + 8 >= base_free,
        "{} vs {}",
        p.tm.sm_nr_free(),
        base_free
    );
}

#[test]
fn lookup_next_highest_lowest_remove_leaves() {
    let io = MemIo::new(1024);
    let mut tm = TransactionManager::create(BlockManager::new(io, 64), 0).unwrap();
    let mut vt = PlainValues(8);
    let mut root = btree::empty(&mut tm, 8).unwrap();
    let mut keys = [0u64; 2];
    assert_eq!(
        btree::find_highest_key(&tm, root, &mut keys[..1]).unwrap(),
        0
    );
    for k in (10..2000u64).step_by(10) {
        root = btree::insert(&mut tm, &mut vt, root, &[k], &k.to_le_bytes()).unwrap();
    }
    let mut v = [0u8; 8];
    assert_eq!(btree::lookup_next(&tm, root, &[15], &mut v).unwrap(), 20);
    assert_eq!(btree::lookup_next(&tm, root, &[0], &mut v).unwrap(), 10);
    assert_eq!(
        btree::lookup_next(&tm, root, &[1990], &mut v).unwrap(),
        1990
    );
    assert_eq!(
        btree::lookup_next(&tm, root, &[1991], &mut v),
        Err(Error::NoData)
    );
    assert_eq!(
        btree::find_highest_key(&tm, root, &mut keys[..1]).unwrap(),
        1
    );
    assert_eq!(keys[0], 1990);
    assert_eq!(
        btree::find_lowest_key(&tm, root, &mut keys[..1]).unwrap(),
        1
    );
    assert_eq!(keys[0], 10);
    // The run 100..=105 is contiguous; removal stops at the first gap
    // (106), as upstream's one-key-at-a-time loop does.
    for k in 101..=105u64 {
        root = btree::insert(&mut tm, &mut vt, root, &[k], &k.to_le_bytes()).unwrap();
    }
    let (r, n) = btree::remove_leaves(&mut tm, &mut vt, root, &[100], 150).unwrap();
    root = r;
    assert_eq!(n, 6);
    assert_eq!(btree::lookup_next(&tm, root, &[95], &mut v).unwrap(), 110);
    let (r, n) = btree::remove_leaves(&mut tm, &mut vt, root, &[110], 150).unwrap();
    root = r;
    assert_eq!(n, 1);
    for k in [120u64, 130, 140] {
        root = btree::remove(&mut tm, &mut vt, root, &[k]).unwrap();
    }
    assert_eq!(btree::lookup_next(&tm, root, &[95], &mut v).unwrap(), 150);
    assert_eq!(
        btree::remove(&mut tm, &mut vt, root, &[95]),
        Err(Error::NoData)
    );
    // Cursor sees every key in order.
    let mut c = btree::Cursor::begin(&tm, root).unwrap();
    let mut seen = vec![c.get().unwrap().0];
    while c.next().is_ok() {
        seen.push(c.get().unwrap().0);
    }
    drop(c);
    let want: Vec<u64> = (10..2000u64)
        .step_by(10)
        .filter(|k| !(100..150).contains(k))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(tm.bm().nr_write_locks(), 0);
    assert_eq!(tm.bm().leaked_write_locks(), 0);
}

#[test]
fn non_blocking_reader_and_prefetch() {
    let mut p = Pool::format(1024, 1000);
    for vb in 0..600 {
        p.map(1, vb).unwrap();
    }
    p.commit().unwrap();
    let io = p.io.clone();
    drop(p);
    let p = Pool::open(io.clone()).unwrap();
    io.model_cache(true);
    io.drop_cache();
    let nb = p.tm.non_blocking();
    let mut v = [0u8; 8];
    assert_eq!(
        btree::lookup(&nb, p.root, &[1, 5], &mut v),
        Err(Error::WouldBlock)
    );
    // A blocking lookup brings the path in; then the clone succeeds.
    p.lookup(1, 5).unwrap();
    btree::lookup(&nb, p.root, &[1, 5], &mut v).unwrap();
    p.tm.issue_prefetches();
}

#[test]
fn metadata_space_exhaustion_is_nospace() {
    let mut p = Pool::format(64, 100_000);
    let mut err = None;
    for vb in 0..100_000u64 {
        if let Err(e) = p.map(1, vb) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err, Some(Error::NoSpace));
}

#[test]
fn data_space_exhaustion_and_extend() {
    let mut p = Pool::format(1024, 100);
    for vb in 0..100 {
        p.map(1, vb).unwrap();
    }
    assert_eq!(p.map(1, 100), Err(Error::NoSpace));
    // The failed insert allocated nothing in the data space map.
    p.data.extend(&mut p.tm, 17_000).unwrap();
    p.nr_data += 17_000;
    p.commit().unwrap();
    for vb in 100..17_100 {
        p.map(1, vb).unwrap();
        if vb % 5000 == 0 {
            p.commit().unwrap();
        }
    }
    assert_eq!(p.map(1, 99_999), Err(Error::NoSpace));
}

#[test]
fn metadata_extend_and_reopen() {
    let io = MemIo::new(40_000);
    let bm = BlockManager::new(io.clone(), 64);
    let mut tm = TransactionManager::create(bm, 0).unwrap();
    let before = tm.sm_nr_blocks();
    assert_eq!(before, 40_000);
    // Pretend the device was smaller at format: grow from a 1000-block map.
    let io2 = MemIo::new(40_000);
    let mut tm2 = TransactionManager::create(BlockManager::new(io2, 64), 0).unwrap();
    let _ = &mut tm2;
    assert!(tm.sm_extend(10).is_ok());
    assert_eq!(tm.sm_nr_blocks(), 40_010);
}

/// Checks that in `log` every write of the superblock (block 0) comes after
/// a flush that follows every other write, and is itself followed by a
/// flush.
fn assert_superblock_ordered(log: &[IoEvent]) {
    let mut others_unflushed = false;
    let mut sb_unflushed = false;
    for (i, ev) in log.iter().enumerate() {
        match *ev {
            IoEvent::Write(0) => {
                assert!(
                    !others_unflushed,
                    "superblock written at {i} before other writes were flushed: {log:?}"
                );
                sb_unflushed = true;
            }
            IoEvent::Write(_) => {
                assert!(
                    !sb_unflushed,
                    "block written at {i} with the superblock unflushed: {log:?}"
                );
                others_unflushed = true;
            }
            IoEvent::Flush => {
                others_unflushed = false;
                sb_unflushed = false;
            }
        }
    }
    assert!(!sb_unflushed && !others_unflushed, "commit ended unflushed");
    assert!(log.contains(&IoEvent::Write(0)), "no superblock write");
}

#[test]
fn commit_flushes_everything_before_the_superblock() {
    for pre_flush in [true, false] {
        let mut p = Pool::format(1024, 10_000);
        for vb in 0..300u64 {
            p.map(1, vb).unwrap();
        }
        p.io.start_log();
        if pre_flush {
            p.commit().unwrap();
        } else {
            p.commit_without_pre_flush().unwrap();
        }
        assert_superblock_ordered(&p.io.take_log());
        // Blocks dirtied after pre_commit (here: a block re-written in
        // place) must reach the disk before the superblock too.
        p.tm.pre_commit().unwrap();
        let mut w = p.tm.bm_mut().write_lock_zero(1000, None).unwrap();
        w[0] = 1;
        p.tm.unlock(w);
        p.io.start_log();
        p.commit_without_pre_flush().unwrap();
        assert_superblock_ordered(&p.io.take_log());
    }
}

#[test]
fn crash_during_commit_keeps_old_or_new_transaction() {
    let mut k = 0;
    loop {
        let mut p = Pool::format(1024, 10_000);
        let mut model = Model::new();
        for vb in 0..200u64 {
            let b = p.map(1, vb).unwrap();
            model.entry(1).or_default().insert(vb, b);
        }
        p.commit().unwrap();
        let old = model.clone();
        for vb in 200..600u64 {
            let b = p.map(2, vb).unwrap();
            model.entry(2).or_default().insert(vb, b);
        }
        p.io.fail_writes_after(Some(k));
        let done = p.commit_without_pre_flush().is_ok();
        let io = p.io.clone();
        // Dropping the block manager writes back what is still dirty: that
        // fails too, as the device is "gone".
        drop(p);
        io.clear_faults();
        // Every write that happened reached the disk; nothing else did.
        io.crash(|_| true);
        let p = Pool::open(io).unwrap();
        let got = p.contents().unwrap();
        assert!(
            got == old || got == model,
            "crash after {k} writes left a third state"
        );
        p.check_counts().unwrap();
        if done {
            assert_eq!(got, model);
            break;
        }
        k += 1;
    }
    assert!(k > 5);
}

/// A data space map reopened from `root` after `edit`.
fn reopen_data_sm(p: &Pool, edit: impl FnOnce(&mut SmRoot)) -> DiskSpaceMap {
    let mut root = p.data.root(&p.tm);
    edit(&mut root);
    let mut bytes = [0u8; 32];
    root.pack(&mut bytes).unwrap();
    DiskSpaceMap::open(&bytes).unwrap()
}

#[test]
fn corrupt_allocated_count_does_not_overflow() {
    let mut p = Pool::format(1024, 10_000);
    // A root claiming every block of a 2^64-block device allocated is
    // accepted by the geometry check (nothing to read up front) ...
    let mut sm = reopen_data_sm(&p, |r| {
        r.nr_blocks = u64::MAX;
        r.nr_allocated = u64::MAX;
    });
    assert_eq!(sm.count(&p.tm, 5).unwrap(), 0);
    // ... but counting one more allocation is an error, not a wrap.
    assert_eq!(sm.inc_range(&mut p.tm, 5, 6).err(), Some(Error::Invalid));
    assert_eq!(sm.set_count(&mut p.tm, 6, 1).err(), Some(Error::Invalid));
}

#[test]
fn range_past_the_end_changes_nothing() {
    let mut p = Pool::format(1024, 10_000);
    let n = p.nr_data;
    for (b, e) in [(n - 2, n + 1), (n - 2, u64::MAX), (0, u64::MAX)] {
        assert_eq!(
            p.data.inc_range(&mut p.tm, b, e).err(),
            Some(Error::Invalid)
        );
        assert_eq!(p.data.count(&p.tm, b).unwrap(), 0);
        assert_eq!(p.data.count(&p.tm, n - 1).unwrap(), 0);
        assert_eq!(p.tm.inc_range(b, e).err(), Some(Error::Invalid));
    }
    p.commit().unwrap();
    p.check_counts().unwrap();
}
