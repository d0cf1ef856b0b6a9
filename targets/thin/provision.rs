// SPDX-License-Identifier: GPL-2.0

//! Preparing a new data block before a write lands in it: zeroing it (a
//! write to an unprovisioned block that does not cover it), copying the
//! shared block it replaces (breaking sharing after a snapshot) or the
//! external origin's part of it (zeroing the rest), with kcopyd. The
//! block's virtual address is held in a [`Cell`] meanwhile: other bios to
//! it wait there until the mapping is in. A block that replaces a shared
//! one is mapped only once the reads of shared blocks in flight when it
//! started are done (the old block may be freed then).

use super::pool::Pool;
use super::prison::CellHandle;
use super::thin_target::ThinTarget;
use super::worker::WorkerState;
use crate::dm::kcopyd::CopyResult;
use crate::dm::region::Region;
use crate::dm::{DmDev, HeldBio, ReturnedBio};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// Whether a write of `sectors` at `within` sectors into a block of
/// `block_size` sectors covers all of it.
pub(crate) fn whole_block(within: u64, sectors: u32, block_size: u64) -> bool {
    within == 0 && u64::from(sectors) == block_size
}

/// How the new block is prepared.
pub(crate) enum CellJob<'a> {
    /// Zeroed.
    Zero,
    /// Nothing: the write covers the block; mapped once it is done.
    Overwrite,
    /// A copy of data block `from`.
    Copy { from: u64 },
    /// A copy of `len` sectors at `sector` of an external origin (its part
    /// of the block); the rest of the block zeroed if `zero_rest`.
    CopyOrigin {
        origin: &'a DmDev,
        sector: u64,
        len: u64,
        zero_rest: bool,
    },
}

/// Where a cell's block goes: thin `thin`'s `vblock`, to data `block`;
/// `unshare`: it replaces a shared block.
#[derive(Clone, Copy)]
pub(crate) struct CellAt {
    pub(crate) thin: u64,
    pub(crate) vblock: u64,
    pub(crate) block: u64,
    pub(crate) unshare: bool,
}

/// A cell's copy jobs: how many are still running, and whether one
/// failed.
struct Progress {
    running: AtomicU8,
    failed: AtomicBool,
}

impl Progress {
    /// One job ended; the last one wakes the worker.
    fn job_done(&self, ok: bool, pool: &Arc<Pool>) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            Pool::wake(pool);
        }
    }
}

/// A virtual block being prepared: the bio that started it, the bios that
/// wait for it, and the progress of the jobs preparing it.
pub(crate) struct Cell {
    pub(crate) thin: u64,
    pub(crate) vblock: u64,
    /// The new data block.
    pub(crate) block: u64,
    /// The write waiting for the copy; `None` for an overwrite, which is
    /// in flight itself (its completion, seen by `end_io`, finishes the
    /// cell).
    pub(crate) holder: Option<HeldBio<ThinTarget>>,
    /// The overwrite, once it completed.
    pub(crate) overwritten: Option<ReturnedBio<ThinTarget>>,
    /// The gate's token while shared reads in flight are waited for.
    waiting: Option<u64>,
    /// The virtual block's cell in the worker's prison: later bios to the
    /// block wait there until the mapping is in.
    pub(crate) handle: CellHandle,
    status: Arc<Progress>,
}

impl Cell {
    /// Starts preparing `block` for `holder`'s write to `vblock` of thin
    /// `thin`; on failure nothing started and the bio is handed back.
    /// `pool_dev` is the pool's mapped device as the thin opened it: the
    /// block is zeroed through it (see below).
    pub(crate) fn start(
        pool: &Arc<Pool>,
        ws: &mut WorkerState,
        at: CellAt,
        holder: HeldBio<ThinTarget>,
        handle: CellHandle,
        job: CellJob<'_>,
        pool_dev: &DmDev,
    ) -> Result<(), (HeldBio<ThinTarget>, CellHandle)> {
        let Some(status) = Self::room(ws) else {
            return Err((holder, handle));
        };
        let Ok(waiting) = Self::quiesce(pool, ws, at) else {
            return Err((holder, handle));
        };
        let bs = u64::from(pool.block_size);
        let block_start = at.block.saturating_mul(bs);
        let data = |sector: u64, len: u64| Region::new(pool.data_dev.clone(), sector, len);
        // Zeroes go through the pool's own device (which maps sector for
        // sector onto the data device), as upstream's: it takes no
        // WRITE_ZEROES, so kcopyd writes zero pages. Sent straight to the
        // data device, kcopyd would use WRITE_ZEROES whenever that device
        // advertises it, and a stacked data device keeps advertising it
        // after the device under it gave it up (a loop device on a file
        // system without zero-range does on its first one): every
        // provisioned block would then fail.
        let zeroes = |sector: u64, len: u64| Region::new(pool_dev.clone(), sector, len);
        // The jobs to run: a copy (from a data block or the origin) and/or
        // a zeroing, each with the destination it writes.
        let (copy, zero) = match job {
            CellJob::Overwrite => return Err((holder, handle)),
            CellJob::Zero => (None, Some(zeroes(block_start, bs))),
            CellJob::Copy { from } => (
                Some((data(from.saturating_mul(bs), bs), data(block_start, bs))),
                None,
            ),
            CellJob::CopyOrigin {
                origin,
                sector,
                len,
                zero_rest,
            } => (
                Some((
                    Region::new(origin.clone(), sector, len),
                    data(block_start, len),
                )),
                (zero_rest && len < bs)
                    .then(|| zeroes(block_start.saturating_add(len), bs.saturating_sub(len))),
            ),
        };
        let copy = match copy {
            Some((Ok(from), Ok(to))) => Some((from, to)),
            Some(_) => return Err((holder, handle)),
            None => None,
        };
        let zero = match zero {
            Some(Ok(to)) => Some(to),
            Some(Err(_)) => return Err((holder, handle)),
            None => None,
        };
        let jobs = u8::from(copy.is_some()) + u8::from(zero.is_some());
        status.running.store(jobs, Ordering::Release);
        let done = || {
            let status = status.clone();
            let pool = pool.clone();
            move |r: CopyResult| status.job_done(r.is_ok(), &pool)
        };
        let client = pool.kcopyd.lock();
        let Some(kc) = client.as_ref() else {
            return Err((holder, handle));
        };
        // Nothing may be in flight when the bio is handed back: only the
        // first job's failure does that; a later one counts as failed.
        let mut started = false;
        if let Some((from, to)) = copy {
            if kc.copy_to(from, to, done()).is_err() {
                return Err((holder, handle));
            }
            started = true;
        }
        if let Some(to) = zero {
            if kc.zero_to(to, done()).is_err() {
                if !started {
                    return Err((holder, handle));
                }
                status.job_done(false, pool);
            }
        }
        drop(client);
        Self::push(ws, at, Some(holder), handle, status, waiting);
        Ok(())
    }

    /// A block replacing a shared one waits for the shared reads counted
    /// so far: the token it waits with, if any.
    fn quiesce(pool: &Pool, ws: &mut WorkerState, at: CellAt) -> Result<Option<u64>, ()> {
        if !at.unshare {
            return Ok(None);
        }
        let token = ws.next_token;
        ws.next_token = token.wrapping_add(1);
        match pool.gate.with(|g| g.after_shared_reads(token)) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(token)),
            // Every waiting copy holds a cell and the set has room for as
            // many: not reached.
            Err(()) => Err(()),
        }
    }

    /// Room for one more cell, and its jobs' progress.
    fn room(ws: &mut WorkerState) -> Option<Arc<Progress>> {
        ws.cells.try_reserve(1).ok()?;
        let status = Progress {
            running: AtomicU8::new(1),
            failed: AtomicBool::new(false),
        };
        Arc::new(status, GFP_KERNEL).ok()
    }

    /// Adds a cell; [`Self::room`] made room for it.
    fn push(
        ws: &mut WorkerState,
        at: CellAt,
        holder: Option<HeldBio<ThinTarget>>,
        handle: CellHandle,
        status: Arc<Progress>,
        waiting: Option<u64>,
    ) {
        let cell = Cell {
            thin: at.thin,
            vblock: at.vblock,
            block: at.block,
            holder,
            overwritten: None,
            waiting,
            handle,
            status,
        };
        if let Err(e) = ws.cells.try_push(cell) {
            pr_err!("thin-pool: lost a cell: {}\n", e.name());
        }
    }

    /// Holds `vblock` while a write covering all of new data block
    /// `block` is in flight (nothing to prepare: the mapping goes in once
    /// the write is done). Fails only without memory.
    pub(crate) fn overwrite(
        pool: &Pool,
        ws: &mut WorkerState,
        at: CellAt,
        handle: CellHandle,
    ) -> Result<(), CellHandle> {
        let Some(status) = Self::room(ws) else {
            return Err(handle);
        };
        let Ok(waiting) = Self::quiesce(pool, ws, at) else {
            return Err(handle);
        };
        Self::push(ws, at, None, handle, status, waiting);
        Ok(())
    }

    /// Whether the cell waits for shared reads with `token`.
    pub(crate) fn waits_for(&self, token: u64) -> bool {
        self.waiting == Some(token)
    }

    /// The shared reads it waited for are done.
    pub(crate) fn quiesced(&mut self) {
        self.waiting = None;
    }

    /// Whether the block is prepared (copied, zeroed or overwritten) and
    /// no shared read is waited for: it can be mapped.
    pub(crate) fn is_ready(&self) -> bool {
        let prepared = self.overwritten.is_some() || (self.holder.is_some() && self.is_done());
        self.waiting.is_none() && prepared
    }

    /// Whether the copy and zeroing jobs finished.
    pub(crate) fn is_done(&self) -> bool {
        self.status.running.load(Ordering::Acquire) == 0
    }

    /// Whether it finished without errors.
    pub(crate) fn succeeded(&self) -> bool {
        self.is_done() && !self.status.failed.load(Ordering::Acquire)
    }
}
