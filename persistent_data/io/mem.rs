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
//! Host-only test double: it indexes its own images directly (after
//! range-checking block numbers).

#![allow(clippy::indexing_slicing)]

use super::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::error::{Error, Result};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct State {
    current: Vec<u8>,
    durable: Vec<u8>,
    unflushed: Vec<bool>,
    cached: Vec<bool>,
    model_cache: bool,
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

/// A shared in-memory block device.
#[derive(Clone)]
pub struct MemIo(Arc<Mutex<State>>);

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
        MemIo(Arc::new(Mutex::new(State {
            durable: image.clone(),
            current: image,
            unflushed: vec![false; n],
            cached: vec![false; n],
            ..State::default()
        })))
    }

    fn st(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means another test thread panicked.
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
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
        s.cached.iter_mut().for_each(|c| *c = false);
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

    /// Makes reads of `b` fail with `Io`.
    pub fn fail_read_of(&self, b: u64) {
        self.st().fail_reads.push(b);
    }

    /// Clears every injected fault.
    pub fn clear_faults(&self) {
        let mut s = self.st();
        s.fail_writes_after = None;
        s.fail_flush = false;
        s.fail_reads.clear();
    }

    /// Models a cache for `try_read`: when on, only blocks read or written
    /// since the last [`MemIo::drop_cache`] are "cached".
    pub fn model_cache(&self, on: bool) {
        self.st().model_cache = on;
    }

    /// Forgets which blocks are cached.
    pub fn drop_cache(&self) {
        self.st().cached.iter_mut().for_each(|c| *c = false);
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

    /// Overwrites part of block `b` in both images (corruption tests).
    pub fn poke(&self, b: u64, offset: usize, bytes: &[u8]) {
        let mut s = self.st();
        let at = b as usize * BLOCK_SIZE + offset;
        s.current[at..at + bytes.len()].copy_from_slice(bytes);
        s.durable[at..at + bytes.len()].copy_from_slice(bytes);
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
    fn nr_blocks(&self) -> u64 {
        self.st().unflushed.len() as u64
    }

    fn read(&self, b: u64, buf: &mut Block) -> Result<()> {
        let mut s = self.st();
        if s.fail_reads.contains(&b) {
            return Err(Error::Io);
        }
        let r = range(&s, b)?;
        buf.copy_from_slice(&s.current[r]);
        s.cached[b as usize] = true;
        s.reads += 1;
        Ok(())
    }

    fn try_read(&self, b: u64, buf: &mut Block) -> Result<()> {
        {
            let s = self.st();
            range(&s, b)?;
            if s.model_cache && !s.cached[b as usize] {
                return Err(Error::WouldBlock);
            }
        }
        self.read(b, buf)
    }

    fn write(&self, b: u64, buf: &Block) -> Result<()> {
        let mut s = self.st();
        let r = range(&s, b)?;
        match s.fail_writes_after {
            Some(0) => return Err(Error::Io),
            Some(n) => s.fail_writes_after = Some(n - 1),
            None => {}
        }
        s.current[r].copy_from_slice(buf);
        s.unflushed[b as usize] = true;
        s.cached[b as usize] = true;
        s.writes += 1;
        if let Some(l) = s.log.as_mut() {
            l.push(IoEvent::Write(b));
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
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
}
