//! The pool API next to a model of it: each operation runs on both and
//! their answers must agree; commits, aborts and crashes (power cuts,
//! failed writes) check what the pool and the disk hold against the
//! model's current and last committed states.

use super::*;
use std::collections::BTreeSet;

/// What the pool holds, as the model sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub devs: Devs,
    pub time: u32,
    pub trans_id: u64,
    /// The metadata snapshot's devices.
    pub held: Option<Devs>,
}

impl State {
    /// Data blocks something references.
    fn refs(&self) -> BTreeSet<u64> {
        let maps = self
            .devs
            .values()
            .chain(self.held.iter().flat_map(|h| h.values()));
        maps.flat_map(|d| d.map.values().map(|&(b, _)| b)).collect()
    }
}

/// One step of a history.
#[derive(Clone, Debug)]
pub enum Op {
    CreateThin(u64),
    CreateSnap(u64, u64),
    Delete(u64),
    /// Maps `n` blocks, from `vb` on every `stride`th, to fresh data
    /// blocks.
    Map(u64, u64, u64, u64),
    Unmap(u64, u64),
    RemoveRange(u64, u64, u64),
    BumpTransactionId,
    Reserve,
    Release,
    /// Grows the data device by this much and commits.
    GrowData(u64),
    Commit,
    Abort,
    /// Power cut: the pool is dropped, unflushed writes survive by the
    /// seed's choice, and the pool reopens.
    Crash(u64),
    /// A `Map` (on the `dev % n`th existing device) during which
    /// metadata writes fail after this many.
    FailingMap(u64, u64, u64, u64, u64),
    /// A commit during which writes fail after this many, then a crash.
    CrashInCommit(u64, u64),
}

/// The pool, its device and the model.
pub struct Harness {
    pub io: MemIo,
    pub pool: Option<PoolMetadata<MemIo>>,
    pub cur: State,
    pub committed: State,
    pub nr_data: u64,
    /// Compare the pool's mappings with the model after every commit.
    pub deep: bool,
    pub commits: u64,
}

fn keep(seed: u64, b: u64) -> bool {
    let mut x = seed ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (x >> 32) & 1 == 1
}

impl Harness {
    pub fn new(nr_meta: u64, nr_data: u64) -> Self {
        let (io, pool) = format(nr_meta, nr_data);
        Harness {
            io,
            pool: Some(pool),
            cur: State::default(),
            committed: State::default(),
            nr_data,
            deep: true,
            commits: 0,
        }
    }

    pub fn pool(&mut self) -> &mut PoolMetadata<MemIo> {
        self.pool.as_mut().unwrap()
    }

    fn with_dev<T>(
        &mut self,
        dev: u64,
        f: impl FnOnce(&mut PoolMetadata<MemIo>, &ThinDevice) -> T,
    ) -> Result<T, Error> {
        let p = self.pool();
        let td = p.open_thin_device(dev)?;
        let r = f(p, &td);
        p.close_thin_device(td);
        Ok(r)
    }

    /// Runs `op` on the pool and the model.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::CreateThin(dev) => {
                let want = if self.cur.devs.contains_key(&dev) {
                    Err(Error::Exists)
                } else {
                    Ok(())
                };
                assert_eq!(self.pool().create_thin(dev), want, "{op:?}");
                if want.is_ok() {
                    let details = self.new_details(0);
                    self.cur.devs.insert(
                        dev,
                        Dev {
                            details,
                            map: Default::default(),
                        },
                    );
                }
            }
            Op::CreateSnap(dev, origin) => {
                let want = if self.cur.devs.contains_key(&dev) {
                    Err(Error::Exists)
                } else if !self.cur.devs.contains_key(&origin) {
                    Err(Error::NoData)
                } else {
                    Ok(())
                };
                assert_eq!(self.pool().create_snap(dev, origin), want, "{op:?}");
                if want.is_ok() {
                    self.cur.time += 1;
                    let time = self.cur.time;
                    let o = self.cur.devs.get_mut(&origin).unwrap();
                    o.details.snapshotted_time = time;
                    let mut snap = o.clone();
                    snap.details = self.new_details(snap.details.mapped_blocks);
                    self.cur.devs.insert(dev, snap);
                }
            }
            Op::Delete(dev) => {
                let want = if self.cur.devs.remove(&dev).is_some() {
                    Ok(())
                } else {
                    Err(Error::NoData)
                };
                assert_eq!(self.pool().delete_thin_device(dev), want, "{op:?}");
            }
            Op::Map(dev, vb, n, stride) => {
                if let Err(e) = self.map(dev, vb, n, stride) {
                    panic!("{op:?}: {e}");
                }
            }
            Op::Unmap(dev, vb) => {
                let want = match self.cur.devs.get_mut(&dev) {
                    None => Err(Error::NoData),
                    Some(d) => match d.map.remove(&vb) {
                        None => Ok(Err(Error::NoData)),
                        Some(_) => {
                            d.details.mapped_blocks -= 1;
                            Ok(Ok(()))
                        }
                    },
                };
                assert_eq!(
                    self.with_dev(dev, |p, td| p.remove_block(td, vb)),
                    want,
                    "{op:?}"
                );
            }
            Op::RemoveRange(dev, vb, len) => {
                let want = match self.cur.devs.get_mut(&dev) {
                    None => Err(Error::NoData),
                    Some(d) => {
                        let before = d.map.len();
                        d.map.retain(|&k, _| k < vb || k >= vb + len);
                        let n = (before - d.map.len()) as u64;
                        d.details.mapped_blocks -= n;
                        Ok(Ok(n))
                    }
                };
                assert_eq!(
                    self.with_dev(dev, |p, td| p.remove_range(td, vb, vb + len)),
                    want,
                    "{op:?}"
                );
            }
            Op::BumpTransactionId => {
                let t = self.cur.trans_id;
                self.pool().set_transaction_id(t, t + 1).unwrap();
                self.cur.trans_id += 1;
            }
            Op::Reserve => {
                if self.cur.held.is_some() {
                    assert_eq!(self.pool().reserve_metadata_snap(), Err(Error::Busy));
                } else {
                    self.pool().reserve_metadata_snap().unwrap();
                    self.committed = self.cur.clone();
                    self.cur.held = Some(self.cur.devs.clone());
                }
            }
            Op::Release => {
                let want = if self.cur.held.take().is_some() {
                    Ok(())
                } else {
                    Err(Error::Invalid)
                };
                assert_eq!(self.pool().release_metadata_snap(), want);
            }
            Op::GrowData(extra) => {
                self.nr_data += extra;
                let n = self.nr_data;
                self.pool().resize_data_dev(n).unwrap();
                self.commit();
                assert_eq!(self.pool().data_dev_size(), Ok(n));
            }
            Op::Commit => self.commit(),
            Op::Abort => self.abort(),
            Op::Crash(seed) => {
                self.crash(seed);
                self.check_reopened(std::slice::from_ref(&self.committed.clone()));
            }
            Op::FailingMap(dev, vb, n, stride, after) => {
                // On a device that exists, if any.
                let devs: Vec<u64> = self.cur.devs.keys().copied().collect();
                let dev = devs
                    .get(dev as usize % devs.len().max(1))
                    .copied()
                    .unwrap_or(dev);
                self.io.fail_writes_after(Some(after));
                let r = self.map(dev, vb, n, stride);
                self.io.clear_faults();
                match r {
                    Ok(()) => assert!(!self.pool().is_poisoned()),
                    Err(e) => {
                        assert_eq!(e, Error::Io, "{op:?}");
                        assert!(self.pool().is_poisoned(), "{op:?}");
                        assert_eq!(self.pool().commit(), Err(Error::Poisoned), "{op:?}");
                        self.abort();
                    }
                }
            }
            Op::CrashInCommit(after, seed) => {
                self.io.fail_writes_after(Some(after));
                let r = self.pool().commit();
                self.io.clear_faults();
                self.crash(seed);
                // A failed commit may or may not have reached the disk.
                let outcomes = match r {
                    Ok(()) => vec![self.cur.clone()],
                    Err(_) => vec![self.committed.clone(), self.cur.clone()],
                };
                self.check_reopened(&outcomes);
            }
        }
        if let Some(p) = self.pool.as_ref() {
            if !p.is_poisoned() {
                let used = self.cur.refs().len() as u64;
                assert_eq!(
                    p.free_data_blocks(),
                    Ok(self.nr_data - used),
                    "after {op:?}"
                );
            }
        }
    }

    fn new_details(&self, mapped_blocks: u64) -> DeviceDetails {
        DeviceDetails {
            mapped_blocks,
            transaction_id: self.cur.trans_id,
            creation_time: self.cur.time,
            snapshotted_time: self.cur.time,
        }
    }

    /// Maps `n` blocks of `dev` from `vb`; an error from the pool other
    /// than the model's expected ones is returned (after a failed write).
    fn map(&mut self, dev: u64, vb: u64, n: u64, stride: u64) -> Result<(), Error> {
        let exists = self.cur.devs.contains_key(&dev);
        let p = self.pool.as_mut().unwrap();
        let td = match p.open_thin_device(dev) {
            Ok(td) => td,
            Err(e) => {
                assert!(!exists && e == Error::NoData, "open {dev}: {e}");
                return Ok(());
            }
        };
        // Neither the current nor the committed state may use a new block.
        let mut taken: BTreeSet<u64> = self
            .cur
            .refs()
            .union(&self.committed.refs())
            .copied()
            .collect();
        let r = (|| {
            for v in (0..n).map(|i| vb + i * stride) {
                let b = match p.alloc_data_block() {
                    Ok(b) => b,
                    Err(Error::NoSpace) => {
                        assert_eq!(taken.len() as u64, self.nr_data, "NoSpace with free blocks");
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                assert!(
                    b < self.nr_data && taken.insert(b),
                    "allocated block {b} is in use"
                );
                p.insert_block(&td, v, b)?;
                let d = self.cur.devs.get_mut(&dev).unwrap();
                if d.map.insert(v, (b, self.cur.time)).is_none() {
                    d.details.mapped_blocks += 1;
                }
            }
            Ok(())
        })();
        p.close_thin_device(td);
        r
    }

    fn commit(&mut self) {
        self.pool().commit().unwrap();
        self.committed = self.cur.clone();
        self.commits += 1;
        if self.deep {
            self.check_disk();
            self.check_pool();
        }
    }

    fn abort(&mut self) {
        self.pool().abort().unwrap();
        self.cur = self.committed.clone();
        self.check_pool();
    }

    fn crash(&mut self, seed: u64) {
        drop(self.pool.take());
        self.io.crash(|b| keep(seed, b));
        self.pool = Some(open(&self.io).unwrap());
    }

    /// After a crash the disk holds one of `outcomes`; the model follows.
    fn check_reopened(&mut self, outcomes: &[State]) {
        let on_disk = self.disk_state();
        let s = outcomes
            .iter()
            .find(|s| **s == on_disk)
            .unwrap_or_else(|| {
                panic!("after the crash the disk holds none of the expected states:\n{on_disk:?}")
            })
            .clone();
        self.cur = s.clone();
        self.committed = s;
        self.check_pool();
        pdata_check(&self.io.image());
    }

    fn disk_state(&self) -> State {
        let c = committed(self.io.image());
        State {
            devs: c.devs,
            time: c.sb.time,
            trans_id: c.sb.trans_id,
            held: c.held,
        }
    }

    /// The last commit on disk is the model's, and both checkers pass.
    pub fn check_disk(&self) {
        assert_eq!(
            self.disk_state(),
            self.committed,
            "on disk after commit {}",
            self.commits
        );
        pdata_check(&self.io.image());
    }

    /// The pool's answers agree with the model's current state.
    pub fn check_pool(&mut self) {
        let cur = self.cur.clone();
        let p = self.pool();
        assert_eq!(p.time(), cur.time);
        assert_eq!(p.transaction_id(), Ok(cur.trans_id));
        assert_eq!(p.metadata_snap().unwrap() != 0, cur.held.is_some());
        for (&id, d) in &cur.devs {
            check_device(p, id, d);
        }
    }

    /// Upstream's tools on the disk: `thin_check` passes and `thin_dump
    /// -m` reads the held root's mappings, if one is held.
    pub fn check_tools(&self) {
        let img = self.io.image();
        tools::thin_check(&img);
        if let Some(held) = &self.committed.held {
            let m = thin_dump::parse_dump(&tools::thin_dump(&img, &["-m"]));
            let got: BTreeMap<u64, &Map> = m.devs.iter().map(|(&k, d)| (k, &d.map)).collect();
            let want: BTreeMap<u64, &Map> = held.iter().map(|(&k, d)| (k, &d.map)).collect();
            assert!(got == want, "thin_dump -m differs from the held devices");
        }
    }

    /// Ends the history: commit, both checkers, upstream's tools.
    pub fn finish(mut self) {
        self.apply(&Op::Commit);
        pdata_check(&self.io.image());
        self.check_tools();
        let p = self.pool();
        assert_eq!(p.block_manager().unwrap().leaked_write_locks(), 0);
    }
}
