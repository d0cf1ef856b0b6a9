// SPDX-License-Identifier: GPL-2.0

//! Random thin-pool histories over [`ThinPool`], with a model of what they
//! leave: runs of mappings (overwrites break sharing), single and range
//! removals (trees shrink and rebalance), snapshots of snapshots, device
//! deletes, metadata snapshots reserved and released. Seeded, so a test
//! and a tool can replay the same history.
//!
//! Every operation's outcome is checked against the model as it goes
//! (`Invalid` on a disagreement); a history never runs the data device out
//! of space.

use std::collections::BTreeMap;
use std::prelude::rust_2021::*;

use super::thin_writer::{Mappings, ThinPool};
use crate::error::{Error, Result};
use crate::io::BlockIo;
use crate::space_map::SpaceMap;

/// The size of a history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Device ids are `0..devices`; device 0 is never deleted.
    pub devices: u64,
    /// Virtual blocks per device.
    pub vblocks: u64,
    /// Longest run of blocks mapped at once.
    pub max_run: u64,
    /// Single blocks unmapped at once (those not mapped are tried too).
    pub unmaps: u64,
    /// Longest range removed at once.
    pub max_range: u64,
    /// Operations per transaction: 1 to this many.
    pub max_ops: u64,
}

/// Kinds of change, for [`History::done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A run of blocks mapped.
    MapRun,
    /// A single block unmapped.
    Unmap,
    /// A range with mappings in it removed.
    UnmapRange,
    /// A snapshot created.
    Snapshot,
    /// A device deleted.
    Delete,
    /// A metadata snapshot reserved.
    Reserve,
    /// A metadata snapshot released.
    Release,
}

const CHANGES: usize = 7;

impl Change {
    /// Every kind.
    pub const ALL: [Change; CHANGES] = [
        Change::MapRun,
        Change::Unmap,
        Change::UnmapRange,
        Change::Snapshot,
        Change::Delete,
        Change::Reserve,
        Change::Release,
    ];
}

/// A history in progress: the model and the random state.
pub struct History {
    shape: Shape,
    rng: u64,
    /// The live mappings (device -> virtual block -> data block).
    pub live: Mappings,
    /// What the metadata snapshot holds, if one is reserved.
    pub held: Option<Mappings>,
    done: [u32; CHANGES],
}

impl History {
    /// A history of `shape` from `seed`, for an empty pool.
    pub fn new(shape: Shape, seed: u64) -> History {
        History {
            shape,
            rng: seed | 1,
            live: Mappings::new(),
            held: None,
            done: [0; CHANGES],
        }
    }

    fn next(&mut self, below: u64) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below.max(1)
    }

    /// How many changes of `kind` took effect.
    pub fn done(&self, kind: Change) -> u32 {
        self.done.get(kind as usize).copied().unwrap_or(0)
    }

    fn count(&mut self, kind: Change) {
        if let Some(n) = self.done.get_mut(kind as usize) {
            *n += 1;
        }
    }

    /// Maps `n` random virtual blocks of `dev` (created if need be), one
    /// at a time, in random order.
    pub fn fill<IO: BlockIo>(&mut self, p: &mut ThinPool<IO>, dev: u64, n: u64) -> Result<()> {
        for _ in 0..n {
            let vb = self.next(self.shape.vblocks);
            self.map(p, dev, vb)?;
        }
        Ok(())
    }

    fn map<IO: BlockIo>(&mut self, p: &mut ThinPool<IO>, dev: u64, vb: u64) -> Result<()> {
        if !self.live.contains_key(&dev) {
            p.create_thin(dev)?;
        }
        let b = p.map(dev, vb)?;
        self.live.entry(dev).or_default().insert(vb, b);
        Ok(())
    }

    /// One transaction's worth of random changes (the caller commits).
    pub fn step<IO: BlockIo>(&mut self, p: &mut ThinPool<IO>) -> Result<()> {
        let ops = self.next(self.shape.max_ops) + 1;
        for _ in 0..ops {
            let dev = self.next(self.shape.devices);
            let vb = self.next(self.shape.vblocks);
            let kind = self.next(100);
            self.change(p, dev, vb, kind)?;
        }
        Ok(())
    }

    fn change<IO: BlockIo>(
        &mut self,
        p: &mut ThinPool<IO>,
        dev: u64,
        vb: u64,
        kind: u64,
    ) -> Result<()> {
        let vblocks = self.shape.vblocks;
        match kind {
            0..=39 => {
                let n = self.next(self.shape.max_run) + 1;
                let end = (vb + n).min(vblocks);
                // Never run out of data space: there is no way back from
                // that but an abort.
                if p.data.nr_free(&p.tm) < end - vb + 16 {
                    return Ok(());
                }
                // New devices only while at most half the ids are in use,
                // so snapshots find free ones.
                let n = self.shape.devices;
                let dev = if self.live.len() as u64 * 2 < n {
                    dev
                } else {
                    match (dev..dev + n)
                        .map(|d| d % n)
                        .find(|d| self.live.contains_key(d))
                    {
                        Some(d) => d,
                        None => dev,
                    }
                };
                for x in vb..end {
                    self.map(p, dev, x)?;
                }
                self.count(Change::MapRun);
            }
            40..=59 => {
                if !self.live.contains_key(&dev) {
                    return Ok(());
                }
                for _ in 0..self.shape.unmaps {
                    let x = self.next(vblocks);
                    let mapped = self.live.get_mut(&dev).and_then(|m| m.remove(&x));
                    match (p.remove(dev, x), mapped) {
                        (Ok(()), Some(_)) => self.count(Change::Unmap),
                        (Err(Error::NoData), None) => {}
                        (Err(e), _) => return Err(e),
                        _ => return Err(Error::Invalid),
                    }
                }
            }
            60..=74 => {
                let n = self.next(self.shape.max_range);
                let Some(m) = self.live.get_mut(&dev) else {
                    return Ok(());
                };
                let before = m.len();
                m.retain(|&x, _| !(vb..vb + n).contains(&x));
                let want = (before - m.len()) as u64;
                if p.remove_range(dev, vb, vb + n)? != want {
                    return Err(Error::Invalid);
                }
                if want > 0 {
                    self.count(Change::UnmapRange);
                }
            }
            75..=84 => {
                // Onto the first free id from `dev` on, if any.
                let n = self.shape.devices;
                let Some(dev) = (dev..dev + n)
                    .map(|d| d % n)
                    .find(|d| !self.live.contains_key(d))
                else {
                    return Ok(());
                };
                let origin = self.next(n);
                if self.live.contains_key(&origin) {
                    p.create_snap(dev, origin)?;
                    let m: BTreeMap<u64, u64> = self.live.get(&origin).cloned().unwrap_or_default();
                    self.live.insert(dev, m);
                    self.count(Change::Snapshot);
                }
            }
            85..=93 => {
                if dev != 0 && self.live.remove(&dev).is_some() {
                    p.delete(dev)?;
                    self.count(Change::Delete);
                }
            }
            _ => {
                if self.held.take().is_some() {
                    p.release_metadata_snap()?;
                    self.count(Change::Release);
                } else {
                    p.reserve_metadata_snap()?;
                    self.held = Some(self.live.clone());
                    self.count(Change::Reserve);
                }
            }
        }
        Ok(())
    }
}
