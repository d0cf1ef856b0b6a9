//! Deterministic end-to-end scenarios for the transaction manager, both
//! space maps and btrees, driven as dm-thin drives them
//! (`checker::thin_writer`) and checked after every commit against the
//! checker's recount (`common::check`: no leaks, no early frees, `nr_free`
//! exact).

mod common;

use common::{check, format, open, reopen, Mappings};
use persistent_data::block_manager::BlockManager;
use persistent_data::btree::node::{self, BTREE_NODE_VALIDATOR};
use persistent_data::btree::{self, PlainValues};
use persistent_data::io::mem::{IoEvent, MemIo};
use persistent_data::io::BLOCK_SIZE;
use persistent_data::space_map::common::ENTRIES_PER_BLOCK;
use persistent_data::space_map::{DiskSpaceMap, SmRoot, SpaceMap};
use persistent_data::transaction_manager::TransactionManager;
use persistent_data::Error;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn format_reopen_and_counts() {
    let (io, p) = format(1024, 10_000);
    check(&io, &p).unwrap();
    // Format layout matches upstream: index block right after the
    // superblock, then the ref-count root, then the first bitmap.
    let root = p.tm.sm_root();
    assert_eq!(root.bitmap_root, 1);
    assert_eq!(root.ref_count_root, 2);
    assert_eq!(root.nr_blocks, 1024);
    let p = reopen(&io, p);
    check(&io, &p).unwrap();
    assert_eq!(p.mappings().unwrap(), Mappings::new());
}

#[test]
fn mappings_snapshots_deletes_across_commits() {
    let (io, mut p) = format(4096, 200_000);
    let mut model = Mappings::new();
    p.create_thin(1).unwrap();
    model.insert(1, Default::default());
    for vb in 0..3000u64 {
        let b = p.map(1, vb * 3).unwrap();
        model.get_mut(&1).unwrap().insert(vb * 3, b);
    }
    p.commit().unwrap();
    check(&io, &p).unwrap();
    // Snapshot, then diverge both.
    p.create_snap(2, 1).unwrap();
    model.insert(2, model[&1].clone());
    for vb in (0..3000u64).step_by(7) {
        let b = p.map(1, vb * 3).unwrap();
        model.get_mut(&1).unwrap().insert(vb * 3, b);
        p.remove(2, vb * 3 + 3).ok();
        model.get_mut(&2).unwrap().remove(&(vb * 3 + 3));
    }
    p.commit().unwrap();
    let r = check(&io, &p).unwrap();
    assert_eq!(p.mappings().unwrap(), model);
    // Blocks both devices still map have two references.
    let shared: Vec<u64> = model[&2]
        .values()
        .filter(|b| model[&1].values().any(|x| x == *b))
        .copied()
        .collect();
    assert!(!shared.is_empty());
    assert!(shared.iter().all(|&b| r.data.get(b) == 2));
    p.delete(1).unwrap();
    model.remove(&1);
    p.commit().unwrap();
    check(&io, &p).unwrap();
    let p = reopen(&io, p);
    assert_eq!(p.mappings().unwrap(), model);
    check(&io, &p).unwrap();
}

#[test]
fn remove_everything_frees_everything() {
    let (io, mut p) = format(2048, 50_000);
    let base = check(&io, &p).unwrap().meta_in_use();
    let base_free = p.tm.sm_nr_free();
    p.create_thin(7).unwrap();
    for vb in 0..5000u64 {
        p.map(7, vb).unwrap();
    }
    p.commit().unwrap();
    check(&io, &p).unwrap();
    for vb in (0..5000u64).rev() {
        p.remove(7, vb).unwrap();
    }
    p.delete(7).unwrap();
    p.commit().unwrap();
    let r = check(&io, &p).unwrap();
    assert_eq!(p.data.nr_free(&p.tm), 50_000);
    assert_eq!(r.data_in_use(), 0);
    // The metadata is back to the blocks format left in use (the trees'
    // roots and the data space map's index moved, their number did not).
    assert_eq!(r.meta_in_use().len(), base.len());
    assert_eq!(p.tm.sm_nr_free(), base_free);
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
    let (io, mut p) = format(1024, 1000);
    p.create_thin(1).unwrap();
    for vb in 0..600 {
        p.map(1, vb).unwrap();
    }
    p.commit().unwrap();
    let p = reopen(&io, p);
    io.model_cache(true);
    io.drop_cache();
    let nb = p.tm.non_blocking();
    let mut v = [0u8; 8];
    let root = p.mapping_root();
    assert_eq!(
        btree::lookup(&nb, root, &[1, 5], &mut v),
        Err(Error::WouldBlock)
    );
    // A blocking lookup brings the path in; then the clone succeeds.
    p.lookup(1, 5).unwrap().unwrap();
    btree::lookup(&nb, root, &[1, 5], &mut v).unwrap();
    p.tm.issue_prefetches();
}

#[test]
fn metadata_space_exhaustion_is_nospace() {
    let (_io, mut p) = format(64, 100_000);
    p.create_thin(1).unwrap();
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
    let (io, mut p) = format(1024, 100);
    p.create_thin(1).unwrap();
    for vb in 0..100 {
        p.map(1, vb).unwrap();
    }
    assert_eq!(p.map(1, 100), Err(Error::NoSpace));
    // The failed insert allocated nothing in the data space map.
    p.data.extend(&mut p.tm, 17_000).unwrap();
    p.commit().unwrap();
    check(&io, &p).unwrap();
    for vb in 100..17_100 {
        p.map(1, vb).unwrap();
        if vb % 5000 == 0 {
            p.commit().unwrap();
        }
    }
    assert_eq!(p.map(1, 99_999), Err(Error::NoSpace));
}

/// Bitmap boundaries of the metadata space map.
const BITMAP_1: u64 = ENTRIES_PER_BLOCK;
const BITMAP_2: u64 = 2 * ENTRIES_PER_BLOCK;

#[test]
fn metadata_extend_across_bitmap_boundaries_then_reopen() {
    assert_eq!(BITMAP_1, 16_320);
    // Formatted on 16,000 blocks: one bitmap, partly used.
    let (io, mut p) = format(16_000, 400_000);
    p.create_thin(0).unwrap();
    let mut model = Mappings::new();
    let m = model.entry(0).or_default();
    for vb in 0..30_000u64 {
        m.insert(vb, p.map(0, vb).unwrap());
    }
    p.commit().unwrap();
    drop(p);
    // The device grows to 40,000 blocks (three bitmaps); the space map
    // follows when told to, as thin does on a metadata resize.
    let mut img = io.image();
    img.resize(40_000 * BLOCK_SIZE, 0);
    let io = MemIo::from_image(img);
    let mut p = open(&io).unwrap();
    assert_eq!(p.tm.sm_nr_blocks(), 16_000);
    let free = p.tm.sm_nr_free();
    p.tm.sm_extend(24_000).unwrap();
    assert_eq!(p.tm.sm_nr_blocks(), 40_000);
    p.commit().unwrap();
    let r = check(&io, &p).unwrap();
    // Two new bitmaps, counted, and everything else free.
    assert!(
        p.tm.sm_nr_free() >= free + 24_000 - 2,
        "{}",
        p.tm.sm_nr_free()
    );
    assert_eq!(r.nr_meta, 40_000);
    let mut p = reopen(&io, p);
    assert_eq!(p.tm.sm_nr_blocks(), 40_000);
    check(&io, &p).unwrap();
    // Use the new space. The allocator takes free blocks in order and
    // never hands out again in this transaction what it handed out
    // before: take every free block up to past the boundary and give
    // them back, so what follows lands in the second bitmap.
    let before = p.tm.sm_nr_free();
    let mut taken = vec![];
    while taken.last().is_none_or(|&b| b < BITMAP_1 + 100) {
        taken.push(p.tm.sm_new_block().unwrap());
    }
    for &b in &taken {
        p.tm.dec(b).unwrap();
    }
    // Freed blocks stay unavailable until the commit; the space map's
    // own bitmap and index shadows come on top.
    let want = before - taken.len() as u64;
    assert!(
        (want - 4..=want).contains(&p.tm.sm_nr_free()),
        "{} of {want}",
        p.tm.sm_nr_free()
    );
    // A snapshot whose every leaf is then copied, and a new device.
    p.create_snap(1, 0).unwrap();
    let mut m = model[&0].clone();
    let mut s = 99u64;
    for vb in (0..30_000u64).step_by(120) {
        let vb = vb + xorshift(&mut s) % 120;
        m.insert(vb, p.map(1, vb).unwrap());
    }
    model.insert(1, m);
    p.create_thin(2).unwrap();
    let m = model.entry(2).or_default();
    for vb in 0..10_000u64 {
        m.insert(vb * 5, p.map(2, vb * 5).unwrap());
    }
    p.commit().unwrap();
    let r = check(&io, &p).unwrap();
    let used = r.meta_in_use();
    let past = used.iter().filter(|&&b| b >= BITMAP_1).count();
    assert!(past > 100, "{past} blocks in use past the boundary");
    assert!(used.iter().all(|&b| b < BITMAP_2));
    let mut p = reopen(&io, p);
    assert_eq!(p.mappings().unwrap(), model);
    check(&io, &p).unwrap();
    // And the reopened pool keeps working across the boundary.
    for vb in 0..2500u64 {
        p.remove(2, vb * 5).unwrap();
        model.get_mut(&2).unwrap().remove(&(vb * 5));
    }
    p.delete(0).unwrap();
    model.remove(&0);
    p.commit().unwrap();
    check(&io, &p).unwrap();
    let p = reopen(&io, p);
    assert_eq!(p.mappings().unwrap(), model);
}

#[test]
fn metadata_threshold_fires_once_per_crossing() {
    let (io, mut p) = format(2048, 100_000);
    p.create_thin(1).unwrap();
    p.commit().unwrap();
    let threshold = p.tm.sm_nr_free() - 20;
    p.tm.sm_register_threshold(threshold);
    // Free space falls one allocation at a time: the event comes with
    // the map that takes it to the threshold, then never again.
    let mut fired = Vec::new();
    let mut vb = 0u64;
    while p.tm.sm_nr_free() + 40 > threshold {
        let before = p.tm.sm_nr_free();
        p.map(1, vb).unwrap();
        vb += 1;
        let after = p.tm.sm_nr_free();
        if p.tm.sm_take_threshold_event() {
            fired.push((before, after));
        }
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (before, after) = fired[0];
    assert!(before > threshold && after <= threshold, "{fired:?}");
    // Free space comes back above the threshold: no event.
    p.delete(1).unwrap();
    p.commit().unwrap();
    p.commit().unwrap();
    assert!(p.tm.sm_nr_free() > threshold + 20);
    assert!(!p.tm.sm_take_threshold_event());
    check(&io, &p).unwrap();
    // Crossing again fires again, once.
    p.create_thin(2).unwrap();
    let mut n = 0;
    for vb in 0..100_000u64 {
        if p.tm.sm_nr_free() + 40 < threshold {
            break;
        }
        p.map(2, vb).unwrap();
        n += usize::from(p.tm.sm_take_threshold_event());
    }
    assert_eq!(n, 1);
}

/// The blocks on the path to `keys` in the (multi-level) tree at `root`,
/// top down.
fn path_to(tm: &TransactionManager<MemIo>, mut root: u64, keys: &[u64]) -> Vec<u64> {
    let mut path = vec![];
    for &k in keys {
        loop {
            path.push(root);
            let d = tm.read_lock(root, &BTREE_NODE_VALIDATOR).unwrap();
            let h = node::header(&d[..]).unwrap();
            let i = node::lower_bound(&d[..], k).max(0) as usize;
            root = node::value64(&d[..], i).unwrap();
            if h.is_leaf() {
                break;
            }
        }
    }
    path
}

/// Once an operation failed half way (here: the read of a leaf, after
/// the data block was allocated and the path above shadowed), the
/// in-core space maps no longer match any tree: commit must refuse and
/// leave the last commit on disk, until an abort (drop and reopen, as
/// dm-thin's `dm_pool_abort_metadata` does) starts over.
#[test]
fn commit_after_a_failed_insert_is_refused_until_abort() {
    let (io, mut p) = format(1024, 100_000);
    p.create_thin(1).unwrap();
    for vb in 0..2000u64 {
        p.map(1, vb * 2).unwrap();
    }
    p.commit().unwrap();
    let committed = p.mappings().unwrap();
    let mut p = reopen(&io, p);
    let path = path_to(&p.tm, p.mapping_root(), &[1, 1001]);
    assert!(path.len() >= 3, "{path:?}");
    io.fail_read_of(*path.last().unwrap());
    assert_eq!(p.map(1, 1001), Err(Error::Io));
    io.clear_faults();
    assert!(p.commit().is_err(), "commit accepted after a failed insert");
    // Nothing of the failed transaction is on disk.
    let durable = MemIo::from_image(io.durable_image());
    let d = open(&durable).unwrap();
    assert_eq!(d.mappings().unwrap(), committed);
    check(&durable, &d).unwrap();
    // Abort, then the pool works again.
    let mut p = reopen(&io, p);
    assert_eq!(p.mappings().unwrap(), committed);
    p.map(1, 1001).unwrap();
    p.commit().unwrap();
    check(&io, &p).unwrap();
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
        let (io, mut p) = format(1024, 10_000);
        p.create_thin(1).unwrap();
        for vb in 0..300u64 {
            p.map(1, vb).unwrap();
        }
        io.start_log();
        if pre_flush {
            p.commit().unwrap();
        } else {
            p.commit_without_pre_flush().unwrap();
        }
        assert_superblock_ordered(&io.take_log());
        // Blocks dirtied after pre_commit (here: a block re-written in
        // place) must reach the disk before the superblock too.
        p.tm.pre_commit().unwrap();
        let mut w = p.tm.bm_mut().write_lock_zero(1000, None).unwrap();
        w[0] = 1;
        p.tm.unlock(w);
        io.start_log();
        p.commit_without_pre_flush().unwrap();
        assert_superblock_ordered(&io.take_log());
    }
}

/// A pool with 200 mappings committed and 400 more not: with the
/// mappings of both states.
fn pool_with_a_transaction() -> (MemIo, common::Pool, Mappings, Mappings) {
    let (io, mut p) = format(1024, 10_000);
    p.create_thin(1).unwrap();
    for vb in 0..200u64 {
        p.map(1, vb).unwrap();
    }
    p.commit().unwrap();
    let old = p.mappings().unwrap();
    p.create_thin(2).unwrap();
    for vb in 200..600u64 {
        p.map(2, vb).unwrap();
    }
    let new = p.mappings().unwrap();
    (io, p, old, new)
}

#[test]
fn crash_during_commit_keeps_old_or_new_transaction() {
    let mut k = 0;
    loop {
        let (io, mut p, old, new) = pool_with_a_transaction();
        io.fail_writes_after(Some(k));
        let done = p.commit_without_pre_flush().is_ok();
        // Dropping the block manager writes back what is still dirty: that
        // fails too, as the device is "gone".
        drop(p);
        io.clear_faults();
        // Every write that happened reached the disk; nothing else did.
        io.crash(|_| true);
        let p = open(&io).unwrap();
        let got = p.mappings().unwrap();
        assert!(
            got == old || got == new,
            "crash after {k} writes left a third state"
        );
        check(&io, &p).unwrap();
        if done {
            assert_eq!(got, new);
            break;
        }
        k += 1;
    }
    assert!(k > 5);
}

/// A commit that returned an error is not on the device, then or later:
/// here the device lives on (an I/O error, not a power cut), so the
/// write-back of the pool's teardown reaches it, and must not carry the
/// superblock of the failed commit (dm-bufio does not retry a failed
/// write). Otherwise the reopened pool would stand on a superblock that
/// was never flushed, and its next transaction could overwrite blocks
/// the durable one still uses.
#[test]
fn failed_commit_is_never_written_later() {
    for k in 0.. {
        let (io, mut p, old, new) = pool_with_a_transaction();
        io.fail_writes_after(Some(k));
        let r = p.commit();
        io.clear_faults();
        let p = reopen(&io, p);
        if r.is_ok() {
            assert_eq!(p.mappings().unwrap(), new);
            assert!(k > 5);
            break;
        }
        let got = p.mappings().unwrap();
        assert!(
            got == old,
            "commit failed after {k} writes, yet its superblock was written ({} devices)",
            got.len()
        );
        check(&io, &p).unwrap();
    }
}

/// A data space map reopened from `root` after `edit`.
fn reopen_data_sm(p: &common::Pool, edit: impl FnOnce(&mut SmRoot)) -> DiskSpaceMap {
    let mut root = p.data.root(&p.tm);
    edit(&mut root);
    let mut bytes = [0u8; 32];
    root.pack(&mut bytes).unwrap();
    DiskSpaceMap::open(&bytes).unwrap()
}

#[test]
fn corrupt_allocated_count_does_not_overflow() {
    let (_io, mut p) = format(1024, 10_000);
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
    let (io, mut p) = format(1024, 10_000);
    let n = p.nr_data_blocks();
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
    check(&io, &p).unwrap();
}
