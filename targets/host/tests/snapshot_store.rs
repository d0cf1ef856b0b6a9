//! The snapshot exception stores on a memory COW device: the persistent
//! on-disk format (against upstream's layout and a COW device written by
//! the C dm-snapshot), commit batching, crashes at every write of the
//! commit protocol, merging, overflow, the transient store and the table
//! arguments.

mod snapshot_common;

use snapshot_common::*;
use std::collections::BTreeMap;

/// Exceptions per area for a chunk of `sectors`.
fn epa(sectors: u64) -> u64 {
    sectors * 512 / 16
}

/// Whether COW chunk `c` is a metadata area (or the header).
fn is_metadata(c: u64, sectors: u64) -> bool {
    c == 0 || c % (epa(sectors) + 1) == 1
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Commits `e` and returns the tokens completed by this call.
fn commit(s: &mut TestStore, e: Exception, token: u64) -> Vec<(u64, bool)> {
    let mut done = Vec::new();
    s.commit_exception(e, true, token, &mut |t, ok| done.push((t, ok)));
    done
}

/// Adds exceptions for `olds` one at a time (each commit durable before the
/// next), writing the data first as kcopyd would.
fn add_all(s: &mut TestStore, io: &MemCow, olds: &[u64]) -> Vec<Exception> {
    let bytes = ExceptionStore::<u64>::chunk_size(s).bytes();
    let sectors = u64::from(ExceptionStore::<u64>::chunk_size(s).sectors());
    let mut out = Vec::new();
    for &old in olds {
        let new = ExceptionStore::<u64>::prepare_exception(s, old, Scope::Origin).unwrap();
        io.clone()
            .write(
                new * sectors,
                &chunk_data(old, 0xA, bytes),
                Durability::Plain,
            )
            .unwrap();
        let e = Exception { old, new };
        assert_eq!(commit(s, e, old), vec![(old, true)]);
        out.push(e);
    }
    out
}

#[test]
fn new_store_is_formatted_as_upstream() {
    let io = MemCow::new(64 * 8);
    let (s, v, found) = open_persistent(&io, 8).unwrap();
    assert_eq!(v, Validity::Valid);
    assert!(found.is_empty());
    let img = io.image();
    // Header: "SnAp", valid 1, version 1, chunk size 8; the rest of the
    // chunk zero. Area 0 (chunk 1) zeroed.
    assert_eq!(&img[0..4], b"SnAp");
    assert_eq!(&img[4..16], &[1, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0]);
    assert!(img[16..2 * 4096].iter().all(|&b| b == 0));
    // Area 0 zeroed, then the header, flushed after it.
    let ops = io.ops();
    assert_eq!(ops.len(), 2);
    let op = |o: &Op| (o.sector, o.data.len(), o.durability);
    assert_eq!(op(&ops[0]), (8, 4096, Durability::Plain));
    assert_eq!(op(&ops[1]), (0, 4096, Durability::Flushed));
    // Header and first area, nothing allocated yet.
    assert_eq!(
        ExceptionStore::<u64>::usage(&s),
        Usage {
            allocated: 16,
            total: 512,
            metadata: 16
        }
    );
    assert_eq!(ExceptionStore::<u64>::usage(&s).to_string(), "16/512 16");
}

#[test]
fn exceptions_across_areas_reload_in_order_at_upstream_offsets() {
    let sectors = 8u64;
    let n = 700u64; // three areas of 256
    let io = MemCow::new((n + 10) * sectors);
    let (mut s, _, _) = open_persistent(&io, sectors as u32).unwrap();
    let mut rng = Rng(7);
    let mut olds: Vec<u64> = (0..5000).collect();
    for i in (1..olds.len()).rev() {
        olds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Some consecutive runs among the random ones.
    olds.truncate(n as usize - 100);
    olds.extend(10_000..10_100);
    let added = add_all(&mut s, &io, &olds);

    // COW chunks are handed out in order from 2, stepping over the areas
    // at 1 + 257 * i.
    let want_new: Vec<u64> = (2..)
        .filter(|&c| !is_metadata(c, sectors))
        .take(n as usize)
        .collect();
    assert_eq!(added.iter().map(|e| e.new).collect::<Vec<_>>(), want_new);

    // Records are le64 (old, new) pairs, area i at chunk 1 + 257 i.
    let img = io.image();
    for (i, e) in added.iter().enumerate() {
        let area = i as u64 / epa(sectors);
        let at = ((1 + (epa(sectors) + 1) * area) * 4096) as usize
            + (i as u64 % epa(sectors)) as usize * 16;
        assert_eq!(
            (le64(&img, at), le64(&img, at + 8)),
            (e.old, e.new),
            "record {i}"
        );
    }
    // The list ends with a zero record in the last (partial) area.
    let last_area_at = ((1 + 257 * 2) * 4096) as usize;
    let terminator = last_area_at + (n as usize % 256) * 16;
    assert_eq!(le64(&img, terminator + 8), 0);

    let usage = ExceptionStore::<u64>::usage(&s);
    let next_free = want_new.last().unwrap() + 1;
    assert_eq!(usage.allocated, next_free * sectors);
    assert_eq!(usage.metadata, (2 + 2) * sectors); // header + areas 0..=2

    let (mut s2, v, found) = open_persistent(&io, sectors as u32).unwrap();
    assert_eq!(v, Validity::Valid);
    assert_eq!(found, added);
    assert_eq!(ExceptionStore::<u64>::usage(&s2), usage);
    // The reloaded store continues where the first stopped.
    let more = add_all(&mut s2, &io, &[20_000, 20_001]);
    assert_eq!(more[0].new, next_free);
    let (_, _, found) = open_persistent(&io, sectors as u32).unwrap();
    assert_eq!(found.len(), added.len() + 2);
    assert_eq!(&found[added.len()..], &more[..]);
}

#[test]
fn commits_are_batched_until_nothing_is_pending() {
    let io = MemCow::new(1024);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    let news: Vec<u64> = (0..3)
        .map(|i| {
            ExceptionStore::<u64>::prepare_exception(&mut s, 100 + i, Scope::Snapshot).unwrap()
        })
        .collect();
    assert_eq!(news, [2, 3, 4]);
    let before = io.ops_len();
    assert!(commit(&mut s, Exception { old: 100, new: 2 }, 0).is_empty());
    assert!(commit(&mut s, Exception { old: 101, new: 3 }, 1).is_empty());
    assert_eq!(io.ops_len(), before, "no write while copies are pending");
    let done = commit(&mut s, Exception { old: 102, new: 4 }, 2);
    assert_eq!(done, [(0, true), (1, true), (2, true)]);
    let ops = io.ops();
    assert_eq!(ops.len(), before + 1);
    let area = &ops[before];
    assert_eq!((area.sector, area.durability), (8, Durability::Flushed));
}

#[test]
fn a_full_area_is_written_with_pending_copies_after_zeroing_the_next() {
    // 1-sector chunks: 32 exceptions per area.
    let io = MemCow::new(200);
    let (mut s, _, _) = open_persistent(&io, 1).unwrap();
    // Dirty the next area's chunk (1 + 33 = 34) to see it zeroed.
    io.clone()
        .write(34, &vec![0xff; 512], Durability::Plain)
        .unwrap();
    let news: Vec<u64> = (0..40)
        .map(|i| ExceptionStore::<u64>::prepare_exception(&mut s, i, Scope::Origin).unwrap())
        .collect();
    assert_eq!(news[31], 33);
    assert_eq!(news[32], 35, "chunk 34 is area 1");
    let before = io.ops_len();
    let mut done = Vec::new();
    for (i, &new) in news.iter().enumerate().take(32) {
        done.extend(commit(&mut s, Exception { old: i as u64, new }, i as u64));
    }
    assert_eq!(done, (0..32).map(|t| (t, true)).collect::<Vec<_>>());
    let ops = &io.ops()[before..];
    assert_eq!(ops.len(), 2);
    assert_eq!((ops[0].sector, ops[0].durability), (34, Durability::Plain));
    assert!(ops[0].data.iter().all(|&b| b == 0));
    assert_eq!((ops[1].sector, ops[1].durability), (1, Durability::Flushed));
    // The rest go to area 1.
    for (i, &new) in news.iter().enumerate().skip(32) {
        done.extend(commit(&mut s, Exception { old: i as u64, new }, i as u64));
    }
    assert_eq!(done.len(), 40);
    assert_eq!(io.ops().last().unwrap().sector, 34);
    let (_, _, found) = open_persistent(&io, 1).unwrap();
    assert_eq!(found.len(), 40);
}

#[test]
fn a_failed_copy_invalidates_and_fails_its_batch() {
    let io = MemCow::new(1024);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    let a = ExceptionStore::<u64>::prepare_exception(&mut s, 1, Scope::Origin).unwrap();
    let b = ExceptionStore::<u64>::prepare_exception(&mut s, 2, Scope::Origin).unwrap();
    let before = io.ops_len();
    assert!(commit(&mut s, Exception { old: 1, new: a }, 1).is_empty());
    let mut done = Vec::new();
    s.commit_exception(Exception { old: 2, new: b }, false, 2, &mut |t, ok| {
        done.push((t, ok))
    });
    assert_eq!(done, [(1, false), (2, false)]);
    assert_eq!(io.ops_len(), before, "an invalid store writes no area");
    assert!(!s.is_valid());
    ExceptionStore::<u64>::drop_snapshot(&mut s);
    let (_, v, found) = open_persistent(&io, 8).unwrap();
    assert_eq!(v, Validity::Invalid);
    assert!(found.is_empty());
    assert_eq!(le64(&io.image(), 0) >> 32, 0, "valid field cleared");
}

#[test]
fn an_abandoned_chunk_lets_its_batch_complete_failed() {
    // Two copies in flight: the first commits, the second is abandoned
    // (its copy could not be issued). The batch must not wait for a
    // commit that never comes.
    let io = MemCow::new(1024);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    let a = ExceptionStore::<u64>::prepare_exception(&mut s, 1, Scope::Origin).unwrap();
    let _b = ExceptionStore::<u64>::prepare_exception(&mut s, 2, Scope::Origin).unwrap();
    let c = ExceptionStore::<u64>::prepare_exception(&mut s, 3, Scope::Origin).unwrap();
    let before = io.ops_len();
    assert!(commit(&mut s, Exception { old: 1, new: a }, 1).is_empty());
    let mut done = Vec::new();
    ExceptionStore::<u64>::abandon_exception(&mut s, &mut |t, ok| done.push((t, ok)));
    assert_eq!(
        done,
        [(1, false)],
        "the batch fails: the snapshot is invalid"
    );
    assert!(!s.is_valid());
    // The copy still in flight completes too, failed, as the last pending.
    assert_eq!(
        commit(&mut s, Exception { old: 3, new: c }, 3),
        [(3, false)]
    );
    assert_eq!(io.ops_len(), before, "an invalid store writes no area");
    // The same through the table's store type.
    let io = MemCow::new(1024);
    let (ps, _, _) = open_persistent(&io, 8).unwrap();
    let mut s: Store<MemCow, u64> = Store::Persistent(ps);
    let a = ExceptionStore::<u64>::prepare_exception(&mut s, 1, Scope::Origin).unwrap();
    let _b = ExceptionStore::<u64>::prepare_exception(&mut s, 2, Scope::Origin).unwrap();
    let mut done = Vec::new();
    s.commit_exception(Exception { old: 1, new: a }, true, 1, &mut |t, ok| {
        done.push((t, ok))
    });
    assert!(done.is_empty());
    ExceptionStore::<u64>::abandon_exception(&mut s, &mut |t, ok| done.push((t, ok)));
    assert_eq!(done, [(1, false)]);
}

#[test]
fn a_pending_exception_allocates_its_chunk_only_once_it_is_tracked() {
    let mut p: PendingExceptions<u64> = PendingExceptions::new();
    assert_eq!(p.insert_with(7, || Ok(20)), Ok(Ok(20)));
    assert_eq!(p.get(7).map(|e| e.new_chunk()), Some(20));
    // Already pending: refused before anything is allocated.
    let mut allocated = false;
    let r = p.insert_with(7, || {
        allocated = true;
        Ok(21)
    });
    assert_eq!(r, Err(Error::Exists));
    assert!(!allocated);
    // The allocation's own failure comes back as it is, nothing recorded.
    assert_eq!(
        p.insert_with(8, || Err(Error::NoSpace)),
        Ok(Err(Error::NoSpace))
    );
    assert!(p.get(8).is_none());
    assert_eq!(p.len(), 1);
}

#[test]
fn a_write_needing_a_copy_joins_the_one_in_flight_or_starts_one() {
    let mut p: PendingExceptions<&str> = PendingExceptions::new();
    // A new copy: started, its chunk allocated, the waiter on it.
    assert_eq!(
        p.need(7, Some((WaiterKind::Origin, "o1")), || Ok(20)),
        Need::Started(20)
    );
    let e = p.get(7).unwrap();
    assert_eq!((e.new_chunk(), e.state()), (20, CopyState::Started));
    // The same chunk again: the copy in flight is joined, nothing is
    // allocated.
    let mut allocated = false;
    let r = p.need(7, Some((WaiterKind::Snapshot, "s1")), || {
        allocated = true;
        Ok(21)
    });
    assert_eq!(r, Need::InFlight { refused: None });
    assert!(!allocated);
    assert_eq!(p.need(7, None, || Ok(22)), Need::InFlight { refused: None });
    // The allocation fails: the waiter comes back, nothing is recorded.
    assert_eq!(
        p.need(8, Some((WaiterKind::Origin, "o2")), || Err(Error::NoSpace)),
        Need::NotAllocated(Error::NoSpace, Some("o2"))
    );
    assert!(p.get(8).is_none());
    // A second copy commits after the first, whatever finishes first.
    assert_eq!(p.need(3, None, || Ok(21)), Need::Started(21));
    p.copied(3, false).unwrap();
    assert_eq!(p.next_ready(), None);
    p.copied(7, false).unwrap();
    assert_eq!(p.next_ready().map(|r| r.old), Some(7));
    assert_eq!(p.next_ready().map(|r| r.old), Some(3));
    let (snap, origin) = p.remove(7).unwrap().into_waiters();
    assert_eq!(snap.iter().copied().collect::<Vec<_>>(), ["s1"]);
    assert_eq!(origin.iter().copied().collect::<Vec<_>>(), ["o1"]);
}

#[test]
fn cow_full_is_no_space_until_the_device_grows() {
    // Header, area 0 and 3 data chunks.
    let io = MemCow::new(5 * 8);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    for want in 2..5 {
        assert_eq!(
            ExceptionStore::<u64>::prepare_exception(&mut s, want, Scope::Snapshot),
            Ok(want)
        );
    }
    assert_eq!(
        ExceptionStore::<u64>::prepare_exception(&mut s, 9, Scope::Snapshot),
        Err(Error::NoSpace)
    );
    io.resize(6 * 8 + 7); // a partial chunk does not count
    assert_eq!(
        ExceptionStore::<u64>::prepare_exception(&mut s, 9, Scope::Snapshot),
        Ok(5)
    );
    assert_eq!(
        ExceptionStore::<u64>::prepare_exception(&mut s, 10, Scope::Snapshot),
        Err(Error::NoSpace)
    );
}

#[test]
fn merge_walks_back_through_runs_and_areas() {
    let io = MemCow::new(400);
    let (mut s, _, _) = open_persistent(&io, 1).unwrap(); // 32 per area
                                                          // 0..40 consecutive (COW 2..33, 35..42: the area at 34 splits the COW
                                                          // run), then 100, then 200..203.
    let olds: Vec<u64> = (0..40).chain([100]).chain(200..203).collect();
    let added = add_all(&mut s, &io, &olds);
    let mut left: Vec<Exception> = added.clone();
    let mut steps = Vec::new();
    while let Some(run) = ExceptionStore::<u64>::prepare_merge(&mut s).unwrap() {
        let tail: Vec<Exception> = left.split_off(left.len() - run.len as usize);
        assert_eq!(*tail.last().unwrap(), run.last);
        steps.push(run.len);
        ExceptionStore::<u64>::commit_merge(&mut s, run.len).unwrap();
        // What is on disk matches after every step.
        let (_, _, found) = open_persistent(&io, 1).unwrap();
        assert_eq!(found, left);
    }
    assert!(left.is_empty());
    // 200..203 | 100 | 32..40 (area 1) | 31 (COW 33) ... 0: area 0 holds
    // 0..32 at COW 2..33, one run.
    assert_eq!(steps, [3, 1, 8, 32]);
    let u = ExceptionStore::<u64>::usage(&s);
    assert_eq!(u.allocated, u.metadata, "merge complete");
}

#[test]
fn the_header_chunk_size_wins_and_bad_headers_are_refused() {
    let io = MemCow::new(1024);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    let added = add_all(&mut s, &io, &[5, 6, 7]);
    for table in [0, 16, 1] {
        let (s, _, found) = open_persistent(&io, table).unwrap();
        assert_eq!(
            ExceptionStore::<u64>::chunk_size(&s).sectors(),
            8,
            "table {table}"
        );
        assert_eq!(found, added);
    }
    let mut bad = io.image();
    bad[0] = b'X';
    assert!(matches!(
        open_persistent(&MemCow::from_image(bad), 8),
        Err(OpenError::Metadata(Error::Invalid))
    ));
    let mut bad = io.image();
    bad[8] = 2; // version
    assert!(matches!(
        open_persistent(&MemCow::from_image(bad), 8),
        Err(OpenError::Metadata(Error::Invalid))
    ));
    let mut bad = io.image();
    bad[12] = 3; // chunk size not a power of two
    assert!(matches!(
        open_persistent(&MemCow::from_image(bad), 8),
        Err(OpenError::Metadata(Error::Invalid))
    ));
    // A new store with no chunk size takes upstream's default, 32 sectors.
    let (s, _, _) = open_persistent(&MemCow::new(1024), 0).unwrap();
    assert_eq!(ExceptionStore::<u64>::chunk_size(&s).sectors(), 32);
}

#[test]
fn transient_store_allocates_from_the_start_and_commits_at_once() {
    let io = MemCow::new(3 * 8 + 4);
    let sp = StoreSpec {
        kind: StoreKind::Transient,
        ..spec(8)
    };
    let (mut s, v) =
        Store::<MemCow, u32>::open(&sp, io.clone(), BS, &mut |_| unreachable!()).unwrap();
    assert_eq!(v, Validity::Valid);
    let got: Vec<_> = (0..4)
        .map(|i| s.prepare_exception(i, Scope::Snapshot))
        .collect();
    assert_eq!(got, [Ok(0), Ok(1), Ok(2), Err(Error::NoSpace)]);
    let mut done = Vec::new();
    s.commit_exception(Exception { old: 0, new: 0 }, true, 7, &mut |t, ok| {
        done.push((t, ok))
    });
    assert_eq!(done, [(7, true)]);
    assert_eq!(s.usage().to_string(), "24/28 0");
    assert!(!s.supports_merge());
    assert_eq!(s.prepare_merge(), Err(Error::Invalid));
    assert!(io.ops().is_empty(), "nothing on disk");
    let no_chunk = StoreSpec {
        chunk_sectors: 0,
        ..sp
    };
    assert!(matches!(
        Store::<MemCow, u32>::open(&no_chunk, io, BS, &mut |_| Ok(())),
        Err(OpenError::Message("Chunk size not set"))
    ));
}

#[test]
fn store_arguments_parse_and_print_as_upstream() {
    let p = |a: &[&'static str]| StoreSpec::parse(a);
    let (s, used) = p(&["/dev/cow", "P", "8", "1", "discard_zeroes_cow"]).unwrap();
    assert_eq!(used, 3);
    assert_eq!(
        (s.cow, s.kind, s.chunk_sectors),
        ("/dev/cow", StoreKind::Persistent { overflow: false }, 8)
    );
    assert_eq!(
        p(&["c", "po", "16"]).unwrap().0.kind,
        StoreKind::Persistent { overflow: true }
    );
    assert_eq!(
        p(&["c", "POX", "16"]).unwrap().0.kind,
        StoreKind::Persistent { overflow: true }
    );
    assert_eq!(
        p(&["c", "nfoo", "16"]).unwrap().0.kind,
        StoreKind::Transient
    );
    assert_eq!(
        p(&["c", "PX", "16"]),
        Err("Exception store type constructor failed")
    );
    assert_eq!(
        p(&["c", "X", "16"]),
        Err("Exception store type is not P or N")
    );
    assert_eq!(p(&["c", "P", "x"]), Err("Invalid chunk size"));
    assert_eq!(p(&["c", "P", "12"]), Err("Chunk size is not a power of 2"));
    assert_eq!(
        p(&["c", "P"]),
        Err("Insufficient exception store arguments")
    );
    let (s, used) = p(&["persistent", "2", "/dev/cow", "32"]).unwrap();
    assert_eq!(used, 4);
    assert!(s.generalised);
    assert_eq!((s.cow, s.chunk_sectors), ("/dev/cow", 32));
    assert_eq!(
        p(&["transient", "2", "c", "8"]).unwrap().0.kind,
        StoreKind::Transient
    );
    assert_eq!(
        p(&["persistent", "3", "c", "8", "x"]),
        Err("Exception store type constructor failed")
    );
    // A COW device named "persistent" in the classic form.
    assert_eq!(p(&["persistent", "P", "8"]).unwrap().0.cow, "persistent");

    let show = |kind, gen, chunk| {
        let mut out = String::new();
        exception_store::fmt_table(kind, gen, "254:3", chunk, &mut out).unwrap();
        out
    };
    assert_eq!(
        show(StoreKind::Persistent { overflow: false }, false, 8),
        "254:3 P 8"
    );
    assert_eq!(
        show(StoreKind::Persistent { overflow: true }, false, 16),
        "254:3 PO 16"
    );
    assert_eq!(show(StoreKind::Transient, false, 8), "254:3 N 8");
    assert_eq!(
        show(StoreKind::Persistent { overflow: true }, true, 8),
        "persistent 2 254:3 8"
    );
    assert_eq!(show(StoreKind::Transient, true, 8), "transient 2 254:3 8");

    assert_eq!(ChunkSize::new(8, 8, 1).map(|c| c.shift()), Ok(3));
    assert_eq!(
        ChunkSize::new(8, 16, 1),
        Err("Chunk size is not a multiple of device blocksize")
    );
    assert_eq!(ChunkSize::new(1 << 22, 1, 1), Err("Chunk size is too high"));
    assert!(ChunkSize::new(1 << 21, 1, 1).is_ok());
}

/// Drives a workload with batched commits on 1-sector chunks (32 records
/// per area), logging what was committed and when each commit was
/// acknowledged (the number of device writes issued by then).
struct Workload {
    io: MemCow,
    /// Device writes before the workload started (formatting).
    start: usize,
    /// Every exception passed to commit, with the data tag written first.
    committed: BTreeMap<u64, Exception>,
    /// old -> number of device writes done when its commit was acked.
    acked_at: BTreeMap<u64, usize>,
}

fn run_workload(seed: u64, n: u64) -> Workload {
    // A reused COW device: stale bytes everywhere but in the header, which
    // userspace zeroes.
    let mut img = vec![0x5a; 400 * SECTOR];
    img[..SECTOR].fill(0);
    let io = MemCow::from_image(img);
    let (mut s, _, _) = open_persistent(&io, 1).unwrap();
    let start = io.ops_len();
    let mut rng = Rng(seed);
    let mut w = Workload {
        io: io.clone(),
        start,
        committed: BTreeMap::new(),
        acked_at: BTreeMap::new(),
    };
    let mut queue: Vec<Exception> = Vec::new();
    let mut old = 0u64;
    while old < n || !queue.is_empty() {
        // Start a few copies, then finish some in allocation order (as
        // dm-snapshot does), so batches of different sizes form.
        for _ in 0..rng.below(4) {
            if old < n {
                let new =
                    ExceptionStore::<u64>::prepare_exception(&mut s, old, Scope::Origin).unwrap();
                io.clone()
                    .write(new, &chunk_data(old, 0xA, 512), Durability::Plain)
                    .unwrap();
                queue.push(Exception { old, new });
                old += 1 + rng.below(3);
            }
        }
        for _ in 0..=rng.below(queue.len() as u64 + 1) {
            if queue.is_empty() {
                break;
            }
            let e = queue.remove(0);
            w.committed.insert(e.old, e);
            let mut acked = Vec::new();
            s.commit_exception(e, true, e.old, &mut |t, ok| {
                assert!(ok);
                acked.push(t);
            });
            for t in acked {
                w.acked_at.insert(t, io.ops_len());
            }
        }
    }
    assert_eq!(w.acked_at.len(), w.committed.len());
    w
}

/// Reloads a crash image and checks it against the workload: every
/// acknowledged exception present, every present one committed and
/// pointing at its data, and the reloaded store allocating past them all.
fn check_crash(w: &Workload, k: usize, img: Vec<u8>, what: &str) {
    let io = MemCow::from_image(img);
    let (mut s, v, found) = open_persistent(&io, 1).unwrap_or_else(|e| panic!("{what}: {e:?}"));
    assert_eq!(v, Validity::Valid, "{what}");
    let mut seen = BTreeMap::new();
    for e in &found {
        assert_eq!(
            w.committed.get(&e.old),
            Some(e),
            "{what}: uncommitted {e:?}"
        );
        assert!(
            seen.insert(e.old, e.new).is_none(),
            "{what}: duplicate {e:?}"
        );
        assert_eq!(
            io.bytes(e.new as usize * 512, 512),
            chunk_data(e.old, 0xA, 512),
            "{what}: data of {e:?}"
        );
    }
    for (old, &at) in &w.acked_at {
        if at <= k {
            assert!(
                seen.contains_key(old),
                "{what}: lost acknowledged exception of {old}"
            );
        }
    }
    let next = ExceptionStore::<u64>::prepare_exception(&mut s, 1 << 40, Scope::Origin).unwrap();
    assert!(
        !is_metadata(next, 1),
        "{what}: allocated metadata chunk {next}"
    );
    assert!(
        seen.values().all(|&n| n < next),
        "{what}: reallocates {next}"
    );
}

#[test]
fn crashes_at_every_write_keep_acknowledged_exceptions_and_expose_no_garbage() {
    for seed in 1..4 {
        let w = run_workload(seed, 200); // four areas
        let ops = w.io.ops();
        let mut rng = Rng(seed * 1000 + 1);
        for k in w.start..=ops.len() {
            let sectors = ops.get(k).map_or(0, |o| o.data.len() / SECTOR);
            for flushed in [false, true] {
                // Nothing volatile landed; everything landed; each prefix of
                // the write in flight, the rest volatile lost or kept.
                let what =
                    |c: &str| format!("seed {seed} crash at write {k} flushed {flushed}: {c}");
                check_crash(
                    &w,
                    k,
                    w.io.crash_image(k, flushed, &mut |_, _| false),
                    &what("none"),
                );
                check_crash(
                    &w,
                    k,
                    w.io.crash_image(k, flushed, &mut |_, _| true),
                    &what("all"),
                );
                for torn in 0..sectors {
                    for rest in [false, true] {
                        let img = w.io.crash_image(k, flushed, &mut |op, s| {
                            if op == k {
                                s < torn
                            } else {
                                rest
                            }
                        });
                        check_crash(
                            &w,
                            k,
                            img,
                            &what(&format!("first {torn} sectors, others {rest}")),
                        );
                    }
                }
                for r in 0..8 {
                    let img = w.io.crash_image(k, flushed, &mut |_, _| rng.below(2) == 0);
                    check_crash(&w, k, img, &what(&format!("random {r}")));
                }
            }
        }
    }
}

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A compressed image from `tests/data`.
fn fixture(name: &str) -> Vec<u8> {
    let xz = std::fs::read(data_dir().join(name)).expect("fixture");
    let mut img = Vec::new();
    lzma_rs::xz_decompress(&mut &xz[..], &mut img).unwrap();
    img
}

/// The COW device written by the C dm-snapshot (`data/make-c-snapshot-cow.sh`).
#[test]
fn a_cow_device_written_by_c_dm_snapshot_reads_back() {
    let img = fixture("c-snapshot-cow.bin.xz");
    let status = std::fs::read_to_string(data_dir().join("c-snapshot-cow.status")).unwrap();
    // What dm-snapshot reported: `0 <len> snapshot <allocated>/<total> <metadata>`.
    let fields: Vec<&str> = status.split_whitespace().collect();
    let (alloc, meta) = (fields[3].split('/').next().unwrap(), fields[4]);

    let io = MemCow::from_image(img.clone());
    // The table says nothing about the chunk size: the header gives 8.
    let (mut s, v, found) = open_persistent(&io, 0).unwrap();
    assert_eq!(v, Validity::Valid);
    assert_eq!(ExceptionStore::<u64>::chunk_size(&s).sectors(), 8);
    let u = ExceptionStore::<u64>::usage(&s);
    assert_eq!(u.allocated.to_string(), alloc);
    assert_eq!(u.metadata.to_string(), meta);

    let origin_writes: Vec<u64> = (0..400).map(|i| (7 * i) % 1000).chain(1200..1500).collect();
    let snap_writes: Vec<u64> = (0..20).map(|i| 2000 + 3 * i).collect();
    let mut want: Vec<u64> = origin_writes.iter().chain(&snap_writes).copied().collect();
    want.sort();
    want.dedup();
    let mut got: Vec<u64> = found.iter().map(|e| e.old).collect();
    got.sort();
    assert_eq!(got, want);
    for e in &found {
        let tag = if snap_writes.contains(&e.old) {
            0xC
        } else {
            0xA
        };
        assert_eq!(
            io.bytes(e.new as usize * 4096, 4096),
            chunk_data(e.old, tag, 4096),
            "{e:?}"
        );
    }
    // The in-core table built from it compresses the 1200..1500 run.
    let mut table = ExceptionTable::new(ExceptionTable::buckets_for(u.total / 8)).unwrap();
    for e in &found {
        table.insert(*e).unwrap();
    }
    assert_eq!(table.len(), want.len() as u64);
    assert!(table.runs().count() < found.len() - 250);
    // And dm-rs continues the store where C left it.
    io.resize(u.allocated + 64);
    let next = ExceptionStore::<u64>::prepare_exception(&mut s, 5000, Scope::Origin).unwrap();
    assert_eq!(next * 8, u.allocated);
}

/// The COW device dm-rs writes for `data/dmrs-snapshot-cow.bin.xz`: 4 KiB
/// chunks; origin chunks `(11 * i) % 1500` for i < 300 and 3000..3300
/// copied out (their original data, tag 0xA), chunks `2000 + 5 * i` for
/// i < 20 written through the snapshot (tag 0xC); commits in batches of up
/// to five. The image is cut after the last allocated chunk.
fn dm_rs_cow_image() -> (Vec<u8>, Usage) {
    let io = MemCow::new(16384);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    let copies = (0..300).map(|i| (11 * i) % 1500);
    let writes = (0..20).map(|i| (2000 + 5 * i, 0xC));
    let all: Vec<(u64, u64)> = copies.chain(3000..3300).map(|c| (c, 0xA)).collect();
    let all: Vec<(u64, u64)> = all.into_iter().chain(writes).collect();
    for batch in all.chunks(5) {
        let mut es = Vec::new();
        for &(old, tag) in batch {
            let new = s.prepare_exception(old, Scope::Origin).unwrap();
            io.clone()
                .write(new * 8, &chunk_data(old, tag, 4096), Durability::Plain)
                .unwrap();
            es.push(Exception { old, new });
        }
        let mut done = 0;
        for e in es {
            s.commit_exception(e, true, e.old, &mut |_, ok| {
                assert!(ok);
                done += 1;
            });
        }
        assert_eq!(done, batch.len());
    }
    let u = s.usage();
    let mut img = io.image();
    img.truncate(u.allocated as usize * 512);
    (img, u)
}

/// What dm-rs writes is what the C dm-snapshot read back in a guest
/// (`data/make-dmrs-snapshot-cow-check.sh`, its report beside the
/// fixture); regenerate with `DMRS_WRITE_FIXTURE=1` after a deliberate
/// format change, compress it, and rerun that script.
#[test]
fn a_cow_device_written_by_dm_rs_matches_the_one_c_dm_snapshot_read() {
    let dir = data_dir();
    let (img, u) = dm_rs_cow_image();
    if std::env::var_os("DMRS_WRITE_FIXTURE").is_some() {
        // Then `xz -9` it (lzma-rs does not compress).
        std::fs::write(dir.join("dmrs-snapshot-cow.bin"), &img).unwrap();
    }
    assert!(
        fixture("dmrs-snapshot-cow.bin.xz") == img,
        "dm-rs no longer writes the fixture's bytes"
    );
    // C's report: its status line and the result of reading every chunk.
    let report = std::fs::read_to_string(dir.join("dmrs-snapshot-cow.c-check")).unwrap();
    let mut lines = report.lines();
    let status: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        status[3].split('/').next().unwrap(),
        u.allocated.to_string()
    );
    assert_eq!(status[4], u.metadata.to_string());
    assert_eq!(
        lines.next(),
        Some("snapshot reads: 4096 chunks as expected")
    );
}

/// The C dm-snapshot appended to the store dm-rs wrote (same script): dm-rs
/// reads back its own exceptions, then C's, allocated right after them.
#[test]
fn c_dm_snapshot_appends_to_a_store_dm_rs_wrote() {
    let img = fixture("dmrs-then-c-cow.bin.xz");
    let (ours, u) = dm_rs_cow_image();
    let (_, _, ours) = open_persistent(&MemCow::from_image(ours), 8).unwrap();
    let io = MemCow::from_image(img);
    let (_, v, found) = open_persistent(&io, 8).unwrap();
    assert_eq!(v, Validity::Valid);
    assert_eq!(found[..ours.len()], ours[..]);
    let next = u.allocated / 8;
    let theirs = [
        Exception {
            old: 4000,
            new: next,
        },
        Exception {
            old: 4001,
            new: next + 1,
        },
    ];
    assert_eq!(found[ours.len()..], theirs);
    for e in &theirs {
        assert!(io.bytes(e.new as usize * 4096, 4096) == chunk_data(e.old, 0xA, 4096));
    }
}

#[test]
fn a_full_cow_device_overflows_only_po_snapshot_writes_and_status_says_so() {
    let usage = Usage {
        allocated: 48,
        total: 1024,
        metadata: 16,
    };
    let info = |h: &Health| {
        let mut s = String::new();
        h.fmt_info(usage, &mut s).unwrap();
        s
    };
    let mut h = Health::default();
    assert_eq!(info(&h), "48/1024 16");
    // P: any write finding the device full invalidates.
    assert_eq!(h.cow_full(Scope::Snapshot, false), OnFull::Invalidate);
    assert_eq!(info(&h), "Invalid");
    // PO: a snapshot write overflows, an origin write still invalidates.
    let mut h = Health::default();
    assert_eq!(h.cow_full(Scope::Snapshot, true), OnFull::Overflow);
    assert_eq!(info(&h), "Overflow");
    h.merge_failed = true;
    assert_eq!(info(&h), "Merge failed");
    assert_eq!(h.cow_full(Scope::Origin, true), OnFull::Invalidate);
    assert_eq!(info(&h), "Invalid");
    assert!(!usage.merge_complete());
    assert!(Usage {
        allocated: 16,
        ..usage
    }
    .merge_complete());
}

#[test]
fn crashes_while_merging_leave_a_prefix_of_the_exceptions() {
    let w = run_workload(9, 200);
    let (mut s, _, order) = open_persistent(&w.io, 1).unwrap();
    assert!(order.len() > 64, "several areas");
    let first = w.io.ops_len();
    // (device writes done, exceptions left) after each merge step.
    let mut steps = vec![(first, order.len())];
    let mut left = order.len();
    while let Some(run) = s.prepare_merge().unwrap() {
        s.commit_merge(run.len).unwrap();
        left -= run.len as usize;
        steps.push((w.io.ops_len(), left));
    }
    assert_eq!(left, 0);
    let mut rng = Rng(99);
    for k in first..w.io.ops_len() {
        // Exceptions left before write k and after it.
        let before = steps.iter().rev().find(|s| s.0 <= k).unwrap().1;
        let after = steps.iter().find(|s| s.0 > k).unwrap().1;
        for r in 0..16 {
            let img =
                w.io.crash_image(k, true, &mut |_, _| r == 0 || (r > 1 && rng.below(2) == 0));
            let io = MemCow::from_image(img);
            let (_, _, found) = open_persistent(&io, 1).unwrap();
            let m = found.len();
            assert!(
                (after..=before).contains(&m),
                "crash at {k}: {m} left, not in {after}..={before}"
            );
            assert_eq!(found[..], order[..m], "crash at {k}");
        }
    }
}

#[test]
fn corrupt_records_neither_panic_nor_allocate_over_them() {
    for new in [u64::MAX, u64::MAX - 1, 1 << 60] {
        let io = MemCow::new(1024);
        let (mut s, _, _) = open_persistent(&io, 8).unwrap();
        add_all(&mut s, &io, &[3]);
        let mut img = io.image();
        // A second record in area 0 (chunk 1) with a wild COW chunk.
        img[4096 + 16..4096 + 24].copy_from_slice(&9u64.to_le_bytes());
        img[4096 + 24..4096 + 32].copy_from_slice(&new.to_le_bytes());
        let io = MemCow::from_image(img);
        let (mut s, _, found) = open_persistent(&io, 8).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(s.prepare_exception(10, Scope::Origin), Err(Error::NoSpace));
        let _ = s.usage();
    }
    // An origin chunk past 56 bits cannot go in the in-core table.
    let io = MemCow::new(1024);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    add_all(&mut s, &io, &[1 << 56]);
    let mut t = ExceptionTable::new(64).unwrap();
    let r = PersistentStore::<MemCow, u64>::open(io.clone(), None, false, BS, &mut |e| t.insert(e));
    assert!(matches!(r, Err(OpenError::Metadata(Error::Invalid))));
}

#[test]
fn a_merge_run_is_one_copy_back_to_the_origin() {
    let chunk = ChunkSize::new(8, 1, 1).unwrap();
    let run = MergeRun {
        last: Exception { old: 12, new: 7 },
        len: 3,
    };
    assert_eq!(run.first(), Exception { old: 10, new: 5 });
    // COW chunks 5..8 go to origin chunks 10..13.
    assert_eq!(run.copy_extent(chunk, 1 << 20), Some((40, 80, 24)));
    // An origin ending inside the run's last chunk cuts the copy there.
    assert_eq!(run.copy_extent(chunk, 100), Some((40, 80, 20)));
    assert_eq!(run.copy_extent(chunk, 80), None);
    assert_eq!(
        run.chunks_last_first().collect::<Vec<_>>(),
        vec![12, 11, 10]
    );
    // Dropping them last first from a table holding the run leaves it empty
    // (each is an end of the table's run, never its middle).
    let mut t = ExceptionTable::new(64).unwrap();
    for i in 0..3 {
        t.insert(Exception {
            old: 10 + i,
            new: 5 + i,
        })
        .unwrap();
    }
    for c in run.chunks_last_first() {
        t.remove(c).unwrap();
    }
    assert!(t.is_empty());
    let single = MergeRun {
        last: Exception { old: 4, new: 2 },
        len: 1,
    };
    assert_eq!(single.first(), single.last);
    assert_eq!(single.copy_extent(chunk, 1 << 20), Some((16, 32, 8)));
}

/// The write a commit needs is handed out: the store stays usable (new
/// chunks are allocated, the area in memory moves on) while it is done
/// elsewhere, nothing is durable or acknowledged before it lands, and
/// batches staged after it are written after it, full areas included.
#[test]
fn a_commit_write_is_done_outside_the_store_and_in_order() {
    let io = MemCow::new(4096);
    // 2-sector chunks: 64 exceptions per area.
    let (mut s, _, _) = open_persistent(&io, 2).unwrap();
    let mut acked: Vec<(u64, bool)> = Vec::new();
    let mut want = Vec::new();
    let mut old = 0u64;
    let mut in_flight: Vec<Exception> = Vec::new();
    // Up to two allocations in flight: a commit that finds nothing else
    // pending, or fills the area, hands out a write.
    for round in 0..200u64 {
        while in_flight.len() < 2 && round % 3 != 2 {
            let new = ExceptionStore::<u64>::prepare_exception(&mut s, old, Scope::Origin).unwrap();
            in_flight.push(Exception { old, new });
            old += 1;
        }
        let e = in_flight.remove(0);
        let w = s.stage_commit(e, true, e.old, &mut |t, ok| acked.push((t, ok)));
        want.push(e);
        let Some(w) = w else {
            assert!(acked.is_empty(), "acknowledged before its area was written");
            continue;
        };
        // While the write is out: allocation goes on.
        let next = ExceptionStore::<u64>::prepare_exception(&mut s, old, Scope::Origin).unwrap();
        in_flight.push(Exception { old, new: next });
        old += 1;
        let before = io.ops_len();
        assert!(acked.is_empty(), "acknowledged before its area was written");
        // A crash before the write lands keeps only what was acknowledged.
        let (_, _, found) = open_persistent(&MemCow::from_image(io.image()), 2).unwrap();
        assert!(
            found.len() < want.len(),
            "round {round}: durable before its write"
        );
        w.write_to(&mut io.clone()).unwrap();
        assert!(io.ops_len() > before);
        s.commit_written(w, Ok(()), &mut |t, ok| acked.push((t, ok)));
        assert!(acked.iter().all(|&(_, ok)| ok));
        let got: Vec<u64> = acked.drain(..).map(|(t, _)| t).collect();
        let reopened = open_persistent(&MemCow::from_image(io.image()), 2)
            .unwrap()
            .2;
        let durable: Vec<u64> = reopened.iter().map(|e| e.old).collect();
        for t in &got {
            assert!(
                durable.contains(t),
                "round {round}: {t} acknowledged, not durable"
            );
        }
        assert_eq!(reopened, want, "round {round}: areas written out of order");
    }
    assert!(want.len() > 64, "the history crossed an area");
}

/// A failed area write fails its batch and leaves the store invalid.
#[test]
fn a_failed_commit_write_fails_its_batch() {
    let io = MemCow::new(1024);
    let (mut s, _, _) = open_persistent(&io, 8).unwrap();
    let new = ExceptionStore::<u64>::prepare_exception(&mut s, 3, Scope::Origin).unwrap();
    let e = Exception { old: 3, new };
    let mut acked = Vec::new();
    let w = s.stage_commit(e, true, 3, &mut |t, ok| acked.push((t, ok)));
    let w = w.expect("nothing else pending: the area is written");
    s.commit_written(w, Err(Error::Io), &mut |t, ok| acked.push((t, ok)));
    assert_eq!(acked, [(3, false)]);
    assert!(!s.is_valid());
}
