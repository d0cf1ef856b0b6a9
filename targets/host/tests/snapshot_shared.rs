//! The shared exception store against an in-memory model: random origin
//! writes, snapshot writes, members joining and leaving, copies in flight
//! while others commit, a full COW device, reopens and crashes (unflushed
//! writes dropped at random, also in the middle of a commit). After every
//! reopen each valid snapshot must read back exactly its expected image,
//! and the recount must find every chunk and metadata block accounted for.

mod snapshot_common;

use dm_rs_targets_host::persistent_data::io::mem::MemIo;
use dm_rs_targets_host::persistent_data::io::{BlockIo, BLOCK_SIZE};
use snapshot_common::{
    ChunkSize, CowCopy, Error, IdMask, Rng, SharedException, SharedSpec, SharedStore, SharedTable,
    SnapId, SnapshotWrite,
};
use std::collections::{BTreeMap, BTreeSet};

/// 4 KiB blocks per chunk (chunks of 16 sectors).
const HALVES: u64 = 2;
const CHUNK_SECTORS: u32 = 16;
/// Origin chunks.
const NCH: u64 = 24;
/// The ids the tests use (both ends of the range).
const IDS: [u32; 6] = [0, 1, 5, 17, 40, 63];

type Image = Vec<[u32; 2]>;

fn block_of(tag: u32) -> Box<[u8; BLOCK_SIZE]> {
    let mut b = Box::new([0u8; BLOCK_SIZE]);
    for w in b.chunks_exact_mut(4) {
        w.copy_from_slice(&tag.to_le_bytes());
    }
    b
}

/// The tag a block holds; `u32::MAX` if it is not one tag repeated.
fn tag_of(b: &[u8; BLOCK_SIZE]) -> u32 {
    let t = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if b.chunks_exact(4).all(|w| w == t.to_le_bytes()) {
        t
    } else {
        u32::MAX
    }
}

fn id(n: u32) -> SnapId {
    SnapId::new(n).unwrap()
}

/// A copy whose commit is still to come (the writes it holds wait).
#[derive(Clone, Copy, Debug)]
enum InFlight {
    Origin {
        c: u64,
        cow: u64,
        share: IdMask,
        half: usize,
        tag: u32,
    },
    Snap {
        id: u32,
        c: u64,
        cow: u64,
        half: usize,
        tag: u32,
    },
}

impl InFlight {
    fn chunk(&self) -> u64 {
        match *self {
            InFlight::Origin { c, .. } | InFlight::Snap { c, .. } => c,
        }
    }
}

struct Harness {
    mem: MemIo,
    store: Option<SharedStore<MemIo>>,
    sectors: u64,
    origin: Image,
    /// Expected image of each valid member.
    model: BTreeMap<u32, Image>,
    /// Members that lost a chunk to a full device.
    invalid: BTreeSet<u32>,
    /// The model as of the last point where everything was stable.
    durable: BTreeMap<u32, Image>,
    /// Values written in place since then: (id, chunk, half) -> values.
    volatile: BTreeMap<(u32, u64, usize), Vec<u32>>,
    in_flight: Vec<InFlight>,
    /// The in-core record the plumbing keeps (few buckets: collisions).
    table: SharedTable,
    next_tag: u32,
    rng: Rng,
    full_seen: bool,
}

impl Harness {
    fn new(seed: u64, blocks: u64) -> Self {
        let mem = MemIo::new(blocks);
        let sectors = blocks * 8;
        let chunk = ChunkSize::new(CHUNK_SECTORS, 1, 1).unwrap();
        let store = SharedStore::open(mem.clone(), chunk, sectors).unwrap();
        store.check().unwrap();
        let origin = (0..NCH)
            .map(|c| [1_000_000 + 2 * c as u32, 1_000_001 + 2 * c as u32])
            .collect();
        Harness {
            mem,
            store: Some(store),
            sectors,
            origin,
            model: BTreeMap::new(),
            invalid: BTreeSet::new(),
            durable: BTreeMap::new(),
            volatile: BTreeMap::new(),
            in_flight: Vec::new(),
            table: SharedTable::new(4).unwrap(),
            next_tag: 1,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            full_seen: false,
        }
    }

    fn st(&mut self) -> &mut SharedStore<MemIo> {
        self.store.as_mut().unwrap()
    }

    fn tag(&mut self) -> u32 {
        self.next_tag += 1;
        self.next_tag
    }

    fn write_block(&mut self, b: u64, tag: u32) {
        self.mem.write(b, &block_of(tag), None).unwrap();
    }

    fn read_block(&self, b: u64) -> u32 {
        tag_of(&self.mem.read(b, None).unwrap())
    }

    fn copy_chunk(&mut self, from: Option<u64>, c: u64, to: u64) {
        for h in 0..HALVES {
            let t = match from {
                Some(src) => self.read_block(src * HALVES + h),
                None => self.origin[c as usize][h as usize],
            };
            self.write_block(to * HALVES + h, t);
        }
    }

    /// Everything written so far is stable (a commit or a flush).
    fn stable(&mut self) {
        self.durable = self.model.clone();
        self.volatile.clear();
    }

    fn commit(&mut self) {
        self.st().commit().unwrap();
        self.stable();
    }

    /// A full device: the ids that needed the chunk are invalid now.
    fn lose(&mut self, ids: IdMask) {
        self.full_seen = true;
        for i in ids.iter() {
            self.st().invalidate_id(i);
            self.model.remove(&i.get());
            self.invalid.insert(i.get());
        }
        self.commit();
    }

    fn busy(&self, c: u64) -> bool {
        self.in_flight.iter().any(|f| f.chunk() == c)
    }

    /// Starts a write to origin chunk `c`: a copy for every member
    /// without an exception, its commit left for later.
    fn origin_write(&mut self, c: u64, half: usize) {
        let tag = self.tag();
        let share = self.st().origin_copy_set(c).unwrap();
        let live = self.st().live();
        assert_eq!(
            live.without(self.table.covered(c)),
            share,
            "in-core record of chunk {c}"
        );
        if share.is_empty() {
            self.origin[c as usize][half] = tag;
            return;
        }
        match self.st().reserve() {
            Ok(cow) => {
                self.copy_chunk(None, c, cow);
                self.in_flight.push(InFlight::Origin {
                    c,
                    cow,
                    share,
                    half,
                    tag,
                });
            }
            Err(Error::NoSpace) => {
                self.lose(share);
                self.origin[c as usize][half] = tag;
            }
            Err(e) => panic!("reserve: {e:?}"),
        }
    }

    /// Starts a write by `i` to its chunk `c`.
    fn snap_write(&mut self, i: u32, c: u64, half: usize) {
        let tag = self.tag();
        let need = self.st().snapshot_write(id(i), c).unwrap();
        let in_core = match self.table.lookup(id(i), c) {
            Some(CowCopy { cow, own: true }) => SnapshotWrite::Remap(cow),
            Some(CowCopy { cow, own: false }) => SnapshotWrite::CopyCow(cow),
            None => SnapshotWrite::CopyOrigin,
        };
        assert_eq!(in_core, need, "in-core view of id {i} chunk {c}");
        let from = match need {
            SnapshotWrite::Remap(cow) => {
                self.write_block(cow * HALVES + half as u64, tag);
                self.model.get_mut(&i).unwrap()[c as usize][half] = tag;
                self.volatile.entry((i, c, half)).or_default().push(tag);
                return;
            }
            SnapshotWrite::CopyCow(src) => Some(src),
            SnapshotWrite::CopyOrigin => None,
        };
        match self.st().reserve() {
            Ok(cow) => {
                self.copy_chunk(from, c, cow);
                self.in_flight.push(InFlight::Snap {
                    id: i,
                    c,
                    cow,
                    half,
                    tag,
                });
            }
            Err(Error::NoSpace) => self.lose(id(i).mask()),
            Err(e) => panic!("reserve: {e:?}"),
        }
    }

    /// Commits one copy in flight and lets its write go.
    fn finish(&mut self, k: usize) {
        let f = self.in_flight.remove(k);
        self.record(f).unwrap();
        self.commit();
        self.apply(f);
    }

    fn record(&mut self, f: InFlight) -> Result<(), Error> {
        match f {
            InFlight::Origin { c, cow, share, .. } => {
                self.st().add_origin_exception(c, cow, share)?;
                self.table.insert(SharedException { old: c, cow, share })
            }
            InFlight::Snap { id: i, c, cow, .. } => {
                self.st().add_snapshot_exception(id(i), c, cow)?;
                self.table.leave(id(i), c);
                self.table.insert(SharedException {
                    old: c,
                    cow,
                    share: id(i).mask(),
                })
            }
        }
    }

    /// The held write, once its commit is durable.
    fn apply(&mut self, f: InFlight) {
        match f {
            InFlight::Origin { c, half, tag, .. } => self.origin[c as usize][half] = tag,
            InFlight::Snap {
                id: i,
                c,
                cow,
                half,
                tag,
            } => {
                self.write_block(cow * HALVES + half as u64, tag);
                // Unless a full device invalidated it meanwhile.
                if let Some(img) = self.model.get_mut(&i) {
                    img[c as usize][half] = tag;
                }
                self.volatile.entry((i, c, half)).or_default().push(tag);
            }
        }
    }

    fn finish_all(&mut self) {
        while !self.in_flight.is_empty() {
            self.finish(0);
        }
    }

    fn join(&mut self, i: u32) {
        self.finish_all();
        assert!(self.st().join(id(i)).unwrap());
        self.model.insert(i, self.origin.clone());
        self.invalid.remove(&i);
        self.commit();
    }

    fn destroy(&mut self, i: u32) {
        self.finish_all();
        self.st().destroy(id(i)).unwrap();
        self.table.forget(id(i));
        self.model.remove(&i);
        self.invalid.remove(&i);
        self.commit();
    }

    fn reopen(&mut self) {
        self.store = None;
        let chunk = ChunkSize::new(CHUNK_SECTORS, 1, 1).unwrap();
        let s = SharedStore::open(self.mem.clone(), chunk, self.sectors).unwrap();
        s.check().unwrap();
        let mut table = SharedTable::new(4).unwrap();
        s.for_each_exception(&mut |e| table.insert(e)).unwrap();
        self.table = table;
        self.store = Some(s);
    }

    /// What the store says `i` reads.
    fn image(&self, i: u32) -> Image {
        let s = self.store.as_ref().unwrap();
        (0..NCH)
            .map(|c| match s.lookup(id(i), c).unwrap() {
                Some(cow) => [
                    self.read_block(cow * HALVES),
                    self.read_block(cow * HALVES + 1),
                ],
                None => self.origin[c as usize],
            })
            .collect()
    }

    fn members(&self) -> BTreeSet<u32> {
        let m = self.store.as_ref().unwrap().members();
        m.iter().map(|i| i.get()).collect()
    }

    /// Every valid member reads its model image; members and validity
    /// agree with the model.
    fn verify(&self) {
        let s = self.store.as_ref().unwrap();
        let expected: BTreeSet<u32> = self.model.keys().chain(&self.invalid).copied().collect();
        assert_eq!(self.members(), expected);
        for (&i, img) in &self.model {
            assert!(s.is_valid(id(i)), "id {i} should be valid");
            assert_eq!(&self.image(i), img, "image of id {i}");
        }
        for &i in &self.invalid {
            assert!(!s.is_valid(id(i)), "id {i} should be invalid");
        }
        for c in 0..NCH {
            assert_eq!(self.table.covered(c), s.sharers(c).unwrap(), "chunk {c}");
            for &i in &IDS {
                let cow = self.table.lookup(id(i), c).map(|f| f.cow);
                assert_eq!(cow, s.lookup(id(i), c).unwrap(), "id {i} chunk {c}");
            }
        }
    }

    /// After a crash: the store holds `model` (members and images), where a
    /// value written in place since the last stable point may or may not
    /// have survived. Adopts what survived.
    fn matches_after_crash(&mut self, model: &BTreeMap<u32, Image>) -> bool {
        let expected: BTreeSet<u32> = model.keys().chain(&self.invalid).copied().collect();
        if self.members() != expected {
            eprintln!("members {:?} expected {:?}", self.members(), expected);
            return false;
        }
        let mut adopted = model.clone();
        for (&i, img) in model {
            let got = self.image(i);
            for c in 0..NCH as usize {
                for h in 0..2 {
                    let ok = got[c][h] == img[c][h]
                        || self
                            .volatile
                            .get(&(i, c as u64, h))
                            .is_some_and(|v| v.contains(&got[c][h]));
                    if !ok {
                        eprintln!(
                            "id {i} chunk {c} half {h}: {} expected {}",
                            got[c][h], img[c][h]
                        );
                        return false;
                    }
                }
            }
            adopted.insert(i, got);
        }
        self.model = adopted;
        true
    }

    /// Power cut now: unflushed writes kept at random, copies in flight
    /// lost (their writes were never acknowledged).
    fn crash(&mut self) {
        self.in_flight.clear();
        let keep_pct = self.rng.below(101);
        let mut r = Rng(self.rng.next() | 1);
        self.mem.crash(|_| r.below(100) < keep_pct);
        self.reopen();
        let durable = self.durable.clone();
        assert!(self.matches_after_crash(&durable), "lost a durable state");
        self.stable();
    }

    /// A commit cut by a power failure after a random number of writes:
    /// the store then holds the state before or after it.
    fn crash_in_commit(&mut self) {
        let i = IDS[self.rng.below(IDS.len() as u64) as usize];
        let joining = !self.members().contains(&i);
        if joining {
            self.finish_all();
        }
        let before = self.durable.clone();
        // The in-memory effect of the operation, whose commit fails.
        let mut after = self.model.clone();
        let n = self.rng.below(40);
        if joining {
            self.st().join(id(i)).unwrap();
            after.insert(i, self.origin.clone());
        } else if !self.in_flight.is_empty() {
            let f = self.in_flight.remove(0);
            self.record(f).unwrap();
        } else {
            return;
        }
        self.mem.fail_writes_after(Some(n));
        let committed = self.st().commit().is_ok();
        self.mem.clear_faults();
        self.crash_with(before, after, committed);
    }

    fn crash_with(
        &mut self,
        before: BTreeMap<u32, Image>,
        after: BTreeMap<u32, Image>,
        committed: bool,
    ) {
        self.in_flight.clear();
        let mut r = Rng(self.rng.next() | 1);
        self.mem.crash(|_| r.below(2) == 0);
        self.reopen();
        let ok =
            self.matches_after_crash(&after) || (!committed && self.matches_after_crash(&before));
        assert!(ok, "neither the state before nor after the cut commit");
        let members = self.members();
        self.invalid.retain(|i| members.contains(i));
        self.stable();
    }

    fn step(&mut self) {
        let c = self.rng.below(NCH);
        let half = self.rng.below(2) as usize;
        let i = IDS[self.rng.below(IDS.len() as u64) as usize];
        match self.rng.below(100) {
            0..=29 if !self.busy(c) => self.origin_write(c, half),
            30..=54 if !self.busy(c) && self.model.contains_key(&i) => self.snap_write(i, c, half),
            55..=69 if !self.in_flight.is_empty() => {
                let k = self.rng.below(self.in_flight.len() as u64) as usize;
                self.finish(k);
            }
            70..=76 if !self.members().contains(&i) => self.join(i),
            77..=79 if self.members().contains(&i) => self.destroy(i),
            80..=84 => {
                self.mem.flush().unwrap();
                self.stable();
            }
            85..=87 => {
                self.finish_all();
                self.reopen();
                self.verify();
            }
            88..=89 => self.crash(),
            90..=91 => self.crash_in_commit(),
            _ => {}
        }
    }
}

fn run(seed: u64, blocks: u64, steps: usize) -> bool {
    let mut h = Harness::new(seed, blocks);
    for &i in &IDS[..3] {
        h.join(i);
    }
    for _ in 0..steps {
        h.step();
    }
    h.finish_all();
    h.verify();
    h.reopen();
    h.verify();
    h.full_seen
}

#[test]
fn random_histories_read_back_their_images() {
    for seed in 0..16 {
        run(seed, 1024, 300);
    }
}

#[test]
fn a_full_device_invalidates_only_the_snapshots_losing_a_chunk() {
    let mut full = 0;
    for seed in 100..116 {
        full += usize::from(run(seed, 180, 250));
    }
    assert!(full > 5, "the device filled up in only {full} runs");
}

#[test]
fn an_origin_write_copies_once_for_every_member() {
    let mut h = Harness::new(1, 1024);
    for &i in &IDS {
        h.join(i);
    }
    h.st().destroy(id(63)).unwrap();
    h.model.remove(&63);
    h.commit();
    let before = h.st().usage().allocated;
    h.origin_write(3, 0);
    h.finish_all();
    let after = h.st().usage().allocated;
    assert_eq!(
        after - before,
        u64::from(CHUNK_SECTORS),
        "one chunk for all"
    );
    let e = h.st().find(id(0), 3).unwrap().unwrap();
    assert_eq!(
        e.share,
        IdMask(0b1_0000_0000_0000_0000_0000_0010_0000_0000_0010_0011)
    );
    // A second write to the chunk copies nothing.
    h.origin_write(3, 1);
    assert!(h.in_flight.is_empty());
    h.verify();
}

#[test]
fn a_snapshot_write_leaves_the_shared_exception() {
    let mut h = Harness::new(2, 1024);
    for &i in &IDS[..3] {
        h.join(i);
    }
    h.origin_write(7, 0);
    h.finish_all();
    // id 0 is the shared exception's lowest id: it is re-keyed under 1.
    h.snap_write(0, 7, 1);
    h.finish_all();
    let shared = h.st().find(id(1), 7).unwrap().unwrap();
    assert_eq!(shared.share, IdMask(0b10_0010));
    let own = h.st().find(id(0), 7).unwrap().unwrap();
    assert_eq!(own.share, IdMask(1));
    assert_ne!(own.cow, shared.cow);
    assert_eq!(
        h.st().snapshot_write(id(0), 7).unwrap(),
        SnapshotWrite::Remap(own.cow)
    );
    // Destroying the others frees the shared chunk.
    let used = h.st().usage().allocated;
    h.destroy(1);
    h.destroy(5);
    assert_eq!(h.st().usage().allocated, used - u64::from(CHUNK_SECTORS));
    h.reopen();
    h.verify();
}

#[test]
fn a_copy_in_flight_leaks_nothing_across_a_crash() {
    let mut h = Harness::new(3, 1024);
    h.join(0);
    let used = h.st().usage().allocated;
    h.origin_write(1, 0);
    h.snap_write(0, 2, 0);
    h.origin_write(4, 0);
    assert_eq!(h.in_flight.len(), 3);
    // A commit while the two others are in flight.
    h.finish(1);
    h.crash();
    let one = u64::from(CHUNK_SECTORS);
    assert_eq!(
        h.st().usage().allocated,
        used + one,
        "the reserved chunks are free again"
    );
    assert!(h.st().lookup(id(0), 2).unwrap().is_some());
    assert!(h.st().lookup(id(0), 1).unwrap().is_none());
    h.verify();
}

#[test]
fn bad_requests_are_refused_without_damage() {
    let mut h = Harness::new(4, 1024);
    h.join(0);
    h.origin_write(0, 0);
    let InFlight::Origin { cow, .. } = h.in_flight[0] else {
        unreachable!()
    };
    // Not a member, not reserved, overlapping an existing exception.
    assert_eq!(
        h.st().add_origin_exception(0, cow, id(9).mask()),
        Err(Error::Invalid)
    );
    assert_eq!(
        h.st().add_origin_exception(0, cow + 1, id(0).mask()),
        Err(Error::Invalid)
    );
    h.finish_all();
    let cow = h.st().reserve().unwrap();
    assert_eq!(
        h.st().add_origin_exception(0, cow, id(0).mask()),
        Err(Error::Invalid)
    );
    h.st().release(cow).unwrap();
    assert_eq!(h.st().snapshot_write(id(2), 0), Err(Error::Invalid));
    assert!(!h.st().is_failed());
    h.commit();
    h.reopen();
    h.verify();
    // Another chunk size is refused.
    let other = ChunkSize::new(32, 1, 1).unwrap();
    assert!(SharedStore::open(h.mem.clone(), other, h.sectors).is_err());
}

#[test]
fn invalidating_the_store_survives_reopen() {
    let mut h = Harness::new(5, 1024);
    h.join(0);
    h.st().invalidate_store();
    h.commit();
    h.reopen();
    assert!(h.st().is_invalid());
    assert!(!h.st().is_valid(id(0)));
    assert!(h.st().origin_copy_set(0).unwrap().is_empty());
}

#[test]
fn table_lines() {
    let p = |s: &'static str| {
        let v: Vec<&str> = s.split(' ').collect();
        SharedSpec::parse(&v)
    };
    let (spec, used) = p("shared 3 /dev/vdc 16 63 discard_zeroes_cow")
        .unwrap()
        .unwrap();
    assert_eq!(
        (spec.cow, spec.chunk_sectors, spec.id.get(), used),
        ("/dev/vdc", 16, 63, 5)
    );
    let mut line = String::new();
    spec.fmt_table("253:3", &mut line).unwrap();
    assert_eq!(line, "shared 3 253:3 16 63");
    assert_eq!(p("/dev/vdc P 16"), Ok(None));
    for bad in [
        "shared 3 /dev/vdc 16 64",
        "shared 3 /dev/vdc 16 -1",
        "shared 3 /dev/vdc 16 +1",
        "shared 3 /dev/vdc 16 01",
        "shared 3 /dev/vdc 16 x",
        "shared 3 /dev/vdc 16",
        "shared 2 /dev/vdc 16 1",
        "shared 3 /dev/vdc 12 1",
        "shared 3 /dev/vdc 0 1",
    ] {
        assert!(p(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn in_core_table_leave_and_forget() {
    let mut t = SharedTable::new(2).unwrap();
    let e = |old, cow, share| SharedException {
        old,
        cow,
        share: IdMask(share),
    };
    for old in 0..10 {
        t.insert(e(old, 100 + old, 0b101)).unwrap();
    }
    assert_eq!(t.insert(e(3, 200, 0b110)), Err(Error::Invalid));
    assert_eq!(
        t.lookup(id(2), 3),
        Some(CowCopy {
            cow: 103,
            own: false
        })
    );
    assert!(t.leave(id(0), 3));
    assert_eq!(
        t.lookup(id(2), 3),
        Some(CowCopy {
            cow: 103,
            own: true
        })
    );
    t.insert(e(3, 200, 0b1)).unwrap();
    t.forget(id(2));
    assert_eq!(t.covered(3), IdMask(0b1));
    assert_eq!(
        t.lookup(id(0), 3),
        Some(CowCopy {
            cow: 200,
            own: true
        })
    );
    assert!(t.leave(id(0), 4));
    assert_eq!(t.covered(4), IdMask::EMPTY);
    assert!(!t.leave(id(0), 4));
    assert_eq!(t.covered(5), IdMask(0b1));
}
