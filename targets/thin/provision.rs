// SPDX-License-Identifier: GPL-2.0

//! Preparing a new data block before a write lands in it: zeroing it (a
//! write to an unprovisioned block that does not cover it) or copying the
//! shared block it replaces (breaking sharing after a snapshot), with
//! kcopyd. The block's virtual address is held in a [`Cell`] meanwhile:
//! other bios to it wait there until the mapping is in. A block that
//! replaces a shared one is mapped only once the reads of shared blocks
//! in flight when it started are done (the old block may be freed then).

use super::pool::Pool;
use super::prison::CellHandle;
use super::thin_target::ThinTarget;
use super::worker::WorkerState;
use crate::dm::kcopyd::CopyResult;
use crate::dm::region::Region;
use crate::dm::{HeldBio, ReturnedBio};
use core::sync::atomic::{AtomicU8, Ordering};
use kernel::prelude::*;
use kernel::sync::Arc;

/// Whether a write of `sectors` at `within` sectors into a block of
/// `block_size` sectors covers all of it.
pub(crate) fn whole_block(within: u64, sectors: u32, block_size: u64) -> bool {
    within == 0 && u64::from(sectors) == block_size
}

/// How the new block is prepared.
#[derive(Clone, Copy)]
pub(crate) enum CellJob {
    /// Zeroed.
    Zero,
    /// Nothing: the write covers the block; mapped once it is done.
    Overwrite,
    /// A copy of data block `from`.
    Copy { from: u64 },
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

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// A virtual block being prepared: the bio that started it, the bios that
/// wait for it, and the copy job's outcome.
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
    status: Arc<AtomicU8>,
}

impl Cell {
    /// Starts preparing `block` for `holder`'s write to `vblock` of thin
    /// `thin`; on failure nothing started and the bio is handed back.
    pub(crate) fn start(
        pool: &Arc<Pool>,
        ws: &mut WorkerState,
        at: CellAt,
        holder: HeldBio<ThinTarget>,
        handle: CellHandle,
        job: CellJob,
    ) -> Result<(), (HeldBio<ThinTarget>, CellHandle)> {
        let Some(status) = Self::room(ws) else {
            return Err((holder, handle));
        };
        let Ok(waiting) = Self::quiesce(pool, ws, at) else {
            return Err((holder, handle));
        };
        let block = at.block;
        let bs = u64::from(pool.block_size);
        let region = |b: u64| Region::new(pool.data_dev.clone(), b.saturating_mul(bs), bs);
        let Ok(to) = region(block) else {
            return Err((holder, handle));
        };
        let done = {
            let status = status.clone();
            let pool = pool.clone();
            move |r: CopyResult| {
                let s = if r.is_ok() { DONE } else { FAILED };
                status.store(s, Ordering::Release);
                Pool::wake(&pool);
            }
        };
        let kc = pool.kcopyd.lock();
        let Some(kc) = kc.as_ref() else {
            return Err((holder, handle));
        };
        let submitted = match job {
            CellJob::Overwrite => Err(()),
            CellJob::Zero => kc.zero(core::slice::from_ref(&to), done).map_err(|_| ()),
            CellJob::Copy { from } => match region(from) {
                Ok(from) => kc
                    .copy(&from, core::slice::from_ref(&to), done)
                    .map_err(|_| ()),
                Err(_) => Err(()),
            },
        };
        if submitted.is_err() {
            return Err((holder, handle));
        }
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

    /// Room for one more cell, and its status flag.
    fn room(ws: &mut WorkerState) -> Option<Arc<AtomicU8>> {
        ws.cells.try_reserve(1).ok()?;
        Arc::new(AtomicU8::new(PENDING), GFP_KERNEL).ok()
    }

    /// Adds a cell; [`Self::room`] made room for it.
    fn push(
        ws: &mut WorkerState,
        at: CellAt,
        holder: Option<HeldBio<ThinTarget>>,
        handle: CellHandle,
        status: Arc<AtomicU8>,
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

    /// Whether the copy job finished.
    pub(crate) fn is_done(&self) -> bool {
        self.status.load(Ordering::Acquire) != PENDING
    }

    /// Whether it finished without errors.
    pub(crate) fn succeeded(&self) -> bool {
        self.status.load(Ordering::Acquire) == DONE
    }
}
