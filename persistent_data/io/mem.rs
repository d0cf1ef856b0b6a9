// SPDX-License-Identifier: GPL-2.0

//! In-memory block device for host tests, with fault and crash injection.
//!
//! Two images are kept: what a reader sees now (`current`) and what would
//! survive a power cut (`durable`). `flush` copies written blocks to
//! `durable`; [`MemIo::crash`] decides, block by block, which unflushed
//! writes reached the disk, which is how a write-back cache can fail.
//! Handles are cheap clones sharing one device, so a test can keep one
//! while the engine owns another.
//!
//! Each handle reads through its own [`HostCache`], as each dm-bufio client
//! has its own: a block is loaded from `current` once, checked by a
//! validator once, and handed out without a copy ([`MemIo::stats`] counts
//! loads as reads). A clone starts with an empty cache. Caches stay
//! coherent: a write through any handle, [`MemIo::poke`],
//! [`MemIo::crash`] and [`MemIo::drop_cache`] empty every other handle's
//! cache. The per-handle cache is a `RefCell` (no lock on a cached read),
//! so a handle is `Send` but not `Sync`.
//!
//! Host-only test double: it indexes its own images directly (after
//! range-checking block numbers).

#![allow(clippy::indexing_slicing)]

use super::cache::{HostBuf, HostCache};
use super::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::validator::ValidatorRef;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

struct State {
    current: Vec<u8>,
    durable: Vec<u8>,
    unflushed: Vec<bool>,
    fail_writes_after: Option<u64>,
    fail_flush: bool,
    fail_reads: Vec<u64>,
    reads: u64,
    writes: u64,
    flushes: u64,
    log: Option<Vec<IoEvent>>,
}

/// One entry of a [`MemIo`]'s I/O log (see [`MemIo::start_log`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEvent {
    /// A successful write of this block.
    Write(u64),
    /// A successful flush.
    Flush,
}

/// Counters of the I/O a [`MemIo`] has served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Successful reads.
    pub reads: u64,
    /// Successful writes.
    pub writes: u64,
    /// Successful flushes.
    pub flushes: u64,
}

/// Blocks a [`MemIo`] caches by default (256 MiB, far more than the
/// tests' working sets; [`MemIo::set_cache_blocks`] changes it).
pub const DEFAULT_MEM_CACHE_BLOCKS: usize = 65536;

/// What the handles of one device share.
struct Shared {
    state: Mutex<State>,
    /// Bumped whenever cached blocks may have gone stale.
    generation: AtomicU64,
    model_cache: AtomicBool,
}

/// One handle's cache, valid while `generation` is the device's.
struct LocalCache {
    cache: HostCache,
    generation: u64,
}

impl LocalCache {
    /// The cache, emptied first if the device changed under it.
    #[inline]
    fn current(&mut self, shared: &Shared) -> &mut HostCache {
        let g = shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.cache.clear();
            self.generation = g;
        }
        &mut self.cache
    }
}

/// A handle on a shared in-memory block device.
pub struct MemIo {
    shared: Arc<Shared>,
    local: RefCell<LocalCache>,
}

impl Clone for MemIo {
    /// Another handle on the same device, with an empty cache.
    fn clone(&self) -> Self {
        Self::handle(Arc::clone(&self.shared))
    }
}

impl MemIo {
    /// A zero-filled device of `nr_blocks` blocks.
    pub fn new(nr_blocks: u64) -> Self {
        let n = nr_blocks as usize;
        Self::from_image(vec![0u8; n * BLOCK_SIZE])
    }

    /// A device holding `image` (its length is rounded down to blocks);
    /// the image is considered durable.
    pub fn from_image(mut image: Vec<u8>) -> Self {
        let n = image.len() / BLOCK_SIZE;
        image.truncate(n * BLOCK_SIZE);
        let state = State {
            durable: image.clone(),
            current: image,
            unflushed: vec![false; n],
            fail_writes_after: None,
            fail_flush: false,
            fail_reads: Vec::new(),
            reads: 0,
            writes: 0,
            flushes: 0,
            log: None,
        };
        Self::handle(Arc::new(Shared {
            state: Mutex::new(state),
            generation: AtomicU64::new(0),
            model_cache: AtomicBool::new(false),
        }))
    }

    fn handle(shared: Arc<Shared>) -> Self {
        let generation = shared.generation.load(Ordering::Acquire);
        MemIo {
            shared,
            local: RefCell::new(LocalCache {
                cache: HostCache::new(DEFAULT_MEM_CACHE_BLOCKS),
                generation,
            }),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another test thread panicked.
        match self.shared.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Every handle's cache is stale from now on.
    fn invalidate(&self) {
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// What a reader sees now.
    pub fn image(&self) -> Vec<u8> {
        self.st().current.clone()
    }

    /// What would survive a crash right now.
    pub fn durable_image(&self) -> Vec<u8> {
        self.st().durable.clone()
    }

    /// Simulates a power cut: every unflushed write either reached the disk
    /// (`keep(block)` true) or is lost. Afterwards reads see the result.
    pub fn crash(&self, mut keep: impl FnMut(u64) -> bool) {
        let mut s = self.st();
        let n = s.unflushed.len();
        for i in 0..n {
            if !s.unflushed[i] {
                continue;
            }
            let r = i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE;
            if keep(i as u64) {
                let blk = s.current[r.clone()].to_vec();
                s.durable[r].copy_from_slice(&blk);
            } else {
                let blk = s.durable[r.clone()].to_vec();
                s.current[r].copy_from_slice(&blk);
            }
            s.unflushed[i] = false;
        }
        // After a power cut nothing is cached.
        self.invalidate();
    }

    /// Blocks written since the last flush.
    pub fn unflushed_blocks(&self) -> Vec<u64> {
        let s = self.st();
        (0..s.unflushed.len() as u64)
            .filter(|&i| s.unflushed[i as usize])
            .collect()
    }

    /// After `n` more successful writes, every write fails with `Io`.
    pub fn fail_writes_after(&self, n: Option<u64>) {
        self.st().fail_writes_after = n;
    }

    /// Makes every flush fail with `Io` (or succeed again).
    pub fn fail_flush(&self, fail: bool) {
        self.st().fail_flush = fail;
    }

    /// Makes reads of `b` from the device fail with `Io`, and empties every
    /// handle's cache, so the next read of `b` does go to the device.
    pub fn fail_read_of(&self, b: u64) {
        self.st().fail_reads.push(b);
        self.invalidate();
    }

    /// Makes reads of `b` from the device fail with `Io` but leaves the
    /// caches as they are: a device going bad under a cache that still
    /// holds `b`.
    pub fn fail_device_read_of(&self, b: u64) {
        self.st().fail_reads.push(b);
    }

    /// Clears every injected fault.
    pub fn clear_faults(&self) {
        let mut s = self.st();
        s.fail_writes_after = None;
        s.fail_flush = false;
        s.fail_reads.clear();
    }

    /// Makes `try_read` behave as dm-bufio's does: when on, it returns only
    /// blocks in the cache (read, written or prefetched since the last
    /// [`MemIo::drop_cache`]) and `WouldBlock` for the others. When off (the
    /// default), `try_read` loads a missing block like `read`.
    pub fn model_cache(&self, on: bool) {
        self.shared.model_cache.store(on, Ordering::Relaxed);
    }

    /// Empties every handle's cache (buffers still held stay valid).
    pub fn drop_cache(&self) {
        self.invalidate();
    }

    /// Sets how many blocks this handle's cache keeps (held ones are never
    /// evicted).
    pub fn set_cache_blocks(&self, n: usize) {
        self.local.borrow_mut().cache.set_capacity(n);
    }

    /// I/O counters.
    pub fn stats(&self) -> IoStats {
        let s = self.st();
        IoStats {
            reads: s.reads,
            writes: s.writes,
            flushes: s.flushes,
        }
    }

    /// Starts (or restarts, emptying it) a log of successful writes and
    /// flushes, in the order they happen.
    pub fn start_log(&self) {
        self.st().log = Some(Vec::new());
    }

    /// Stops logging and returns the log.
    pub fn take_log(&self) -> Vec<IoEvent> {
        self.st().log.take().unwrap_or_default()
    }

    /// Overwrites part of block `b` in both images (corruption tests) and
    /// drops it from the cache, so the next read sees the change.
    pub fn poke(&self, b: u64, offset: usize, bytes: &[u8]) {
        let mut s = self.st();
        let at = b as usize * BLOCK_SIZE + offset;
        s.current[at..at + bytes.len()].copy_from_slice(bytes);
        s.durable[at..at + bytes.len()].copy_from_slice(bytes);
        self.invalidate();
    }

    /// Block `b` through this handle's cache; `try_only`: only if cached.
    #[inline]
    fn cached(&self, b: u64, v: Option<ValidatorRef>, try_only: bool) -> Result<HostBuf> {
        let mut local = self.local.borrow_mut();
        let cache = local.current(&self.shared);
        if try_only {
            return cache.try_read(b, v);
        }
        cache.read(b, v, |buf| self.st().load(b, buf))
    }
}

impl State {
    /// A device read of block `b` into `buf`.
    fn load(&mut self, b: u64, buf: &mut Block) -> Result<()> {
        let r = range(self, b)?;
        if self.fail_reads.contains(&b) {
            return Err(Error::Io);
        }
        buf.copy_from_slice(&self.current[r]);
        self.reads += 1;
        Ok(())
    }
}

fn range(s: &State, b: u64) -> Result<core::ops::Range<usize>> {
    let i = usize::try_from(b).map_err(|_| Error::Io)?;
    if i >= s.unflushed.len() {
        return Err(Error::Io);
    }
    Ok(i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE)
}

impl BlockIo for MemIo {
    type Held<'a> = HostBuf;

    fn nr_blocks(&self) -> u64 {
        self.st().unflushed.len() as u64
    }

    #[inline]
    fn read(&self, b: u64, v: Option<ValidatorRef>) -> Result<HostBuf> {
        self.cached(b, v, false)
    }

    fn try_read(&self, b: u64, v: Option<ValidatorRef>) -> Result<HostBuf> {
        let model = self.shared.model_cache.load(Ordering::Relaxed);
        self.cached(b, v, model)
    }

    fn write(&mut self, b: u64, buf: &Block, v: Option<ValidatorRef>) -> Result<()> {
        {
            let mut s = self.st();
            let r = range(&s, b)?;
            match s.fail_writes_after {
                Some(0) => return Err(Error::Io),
                Some(n) => s.fail_writes_after = Some(n - 1),
                None => {}
            }
            s.current[r].copy_from_slice(buf);
            s.unflushed[b as usize] = true;
            s.writes += 1;
            if let Some(l) = s.log.as_mut() {
                l.push(IoEvent::Write(b));
            }
        }
        // Other handles' copies are stale; this one's gets the new block.
        let shared = &self.shared;
        let local = self.local.get_mut();
        local.current(shared).written(b, buf, v);
        local.generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut s = self.st();
        if s.fail_flush {
            return Err(Error::Io);
        }
        let st = &mut *s;
        for (i, u) in st.unflushed.iter_mut().enumerate() {
            if *u {
                let r = i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE;
                st.durable[r.clone()].copy_from_slice(&st.current[r]);
                *u = false;
            }
        }
        st.flushes += 1;
        if let Some(l) = st.log.as_mut() {
            l.push(IoEvent::Flush);
        }
        Ok(())
    }

    fn prefetch(&self, b: u64) {
        let mut local = self.local.borrow_mut();
        local
            .current(&self.shared)
            .prefetch(b, |buf| self.st().load(b, buf));
    }

    fn drop_clean(&mut self) {
        // Writes go straight to the device image: nothing cached is dirty.
        self.local.get_mut().cache.clear();
    }
}
