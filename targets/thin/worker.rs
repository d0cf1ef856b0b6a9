// SPDX-License-Identifier: GPL-2.0

//! The pool's worker (upstream's `do_worker`): one ordered work item that
//! takes the bios the thins deferred, looks them up with I/O allowed,
//! provisions blocks (zeroing or copying them with kcopyd first), breaks
//! sharing after snapshots, zero-fills reads of holes, and commits before
//! it issues flushes and FUA writes.
//!
//! Concurrent bios to a block being provisioned wait in its cell (a
//! simple bio prison: one holder per virtual block, the rest queued) until
//! the mapping is in.

use super::pool::{commit, Metadata, Pool};
use super::provision::{whole_block, Cell, CellJob};
use super::thin_target::{ThinState, ThinTarget};
use crate::dm::{BioOp, BlkStatus, HeldBio};
use crate::persistent_data::error::Error as PdError;
use crate::persistent_data::shim::PVec;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The worker's own state, under the pool's `worker` mutex.
pub(crate) struct WorkerState {
    /// Virtual blocks being provisioned or unshared.
    pub(crate) cells: PVec<Cell>,
}

impl WorkerState {
    pub(crate) const fn new() -> Self {
        WorkerState { cells: PVec::new() }
    }

    fn cell_mut(&mut self, thin: u64, vblock: u64) -> Option<&mut Cell> {
        self.cells
            .iter_mut()
            .find(|c| c.thin == thin && c.vblock == vblock)
    }
}

/// One run of the worker.
pub(crate) fn run(pool: &Arc<Pool>) {
    // Lock order: thins, worker, metadata.
    let thins = pool.thins.lock();
    let mut ws = pool.worker.lock();
    finish_cells(pool, &thins, &mut ws);
    for thin in thins.iter() {
        let bios = thin.lists.with(|l| l.deferred.take_all());
        for bio in bios {
            process(pool, thin, &mut ws, bio);
        }
    }
    let commit_due = pool.commit_due.swap(false, Ordering::AcqRel);
    let waiting = thins
        .iter()
        .any(|t| t.lists.with(|l| !l.after_commit.is_empty()));
    if !commit_due && !waiting {
        return;
    }
    let committed = pool.commit_if_changed();
    for thin in thins.iter() {
        let bios = thin.lists.with(|l| l.after_commit.take_all());
        for bio in bios {
            if committed.is_ok() {
                let dest = bio.per_bio().dest;
                bio.submit_to(&thin.pool_dev, dest);
            } else {
                bio.end(BlkStatus::IO_ERROR);
            }
        }
    }
}

/// Sends a mapped bio to `dest` on the pool device, after the next commit
/// if it is a flush or FUA write.
fn issue(thin: &ThinState, mut bio: HeldBio<ThinTarget>, dest: u64) {
    if bio.is_preflush() || bio.is_fua() {
        bio.per_bio_mut().dest = dest;
        thin.lists.with(|l| l.after_commit.push(bio));
    } else {
        bio.submit_to(&thin.pool_dev, dest);
    }
}

/// Looks up, provisions or unshares for one bio.
pub(crate) fn process(
    pool: &Arc<Pool>,
    thin: &ThinState,
    ws: &mut WorkerState,
    mut bio: HeldBio<ThinTarget>,
) {
    let op = bio.op();
    if bio.is_empty_flush() {
        return issue(thin, bio, 0);
    }
    if !matches!(op, BioOp::Read | BioOp::Write) {
        // Discards and the rest are not supported yet.
        return bio.end(BlkStatus::IO_ERROR);
    }
    let (vblock, within) = thin.locate(bio.sector());
    if let Some(cell) = ws.cell_mut(thin.id, vblock) {
        cell.waiters.push(bio);
        return;
    }
    let Ok(td) = thin.td() else {
        return bio.end(BlkStatus::IO_ERROR);
    };
    let bs = u64::from(pool.block_size);
    let found = pool.md.read().find_block(td, vblock, true);
    match found {
        Ok(m) if !(m.shared && op == BioOp::Write) => {
            let dest = m.block.saturating_mul(bs).saturating_add(within);
            issue(thin, bio, dest);
        }
        Ok(m) => provision(pool, thin, ws, bio, vblock, Some(m.block)),
        Err(PdError::NoData) if op == BioOp::Read => {
            if bio.zero_fill().is_ok() {
                bio.end_ok();
            } else {
                bio.end(BlkStatus::IO_ERROR);
            }
        }
        Err(PdError::NoData) => provision(pool, thin, ws, bio, vblock, None),
        Err(e) => {
            pr_err!("thin: lookup of block {} failed: {}\n", vblock, e.name());
            bio.end(BlkStatus::IO_ERROR);
        }
    }
}

/// A write to an unmapped block (`from` None) or a shared one: a new data
/// block, zeroed or copied unless the write covers it (or zeroing is
/// off), mapped before the write is issued.
fn provision(
    pool: &Arc<Pool>,
    thin: &ThinState,
    ws: &mut WorkerState,
    bio: HeldBio<ThinTarget>,
    vblock: u64,
    from: Option<u64>,
) {
    let Ok(td) = thin.td() else {
        return bio.end(BlkStatus::IO_ERROR);
    };
    let bs = u64::from(pool.block_size);
    let (_, within) = thin.locate(bio.sector());
    let covers = whole_block(within, bio.sectors(), bs);
    let block = {
        let mut md = pool.md.write();
        match md.alloc_data_block() {
            Ok(b) => b,
            Err(PdError::NoSpace) => {
                drop(md);
                pr_warn!("thin-pool: out of data space\n");
                return bio.end(BlkStatus::NO_SPACE);
            }
            Err(e) => {
                pr_err!("thin-pool: data block allocation failed: {}\n", e.name());
                drop(md);
                return bio.end(BlkStatus::IO_ERROR);
            }
        }
    };
    check_low_water(pool);
    let zero = pool.features().zero_new_blocks;
    let job = match from {
        Some(old) if !covers => Some(CellJob::Copy { from: old }),
        None if zero && !covers => Some(CellJob::Zero),
        _ => None,
    };
    let Some(job) = job else {
        // Nothing to prepare: map now and write.
        let mut md = pool.md.write();
        if let Err(e) = md.insert_block(td, vblock, block) {
            return fail_insert(&mut md, bio, e);
        }
        drop(md);
        return issue(thin, bio, block.saturating_mul(bs).saturating_add(within));
    };
    if let Err(bio) = Cell::start(pool, ws, thin.id, vblock, block, bio, job) {
        let mut md = pool.md.write();
        let _ = md.dec_data_range(block, block.saturating_add(1));
        drop(md);
        bio.end(BlkStatus::IO_ERROR);
    }
}

fn fail_insert(md: &mut Metadata, bio: HeldBio<ThinTarget>, e: PdError) {
    pr_err!("thin-pool: inserting a mapping failed: {}\n", e.name());
    let _ = commit(md);
    bio.end(BlkStatus::IO_ERROR);
}

/// Maps the blocks whose zeroing or copy finished, issues their writes
/// and looks at the bios that waited for them again.
fn finish_cells(pool: &Arc<Pool>, thins: &PVec<Arc<ThinState>>, ws: &mut WorkerState) {
    let bs = u64::from(pool.block_size);
    let mut i = 0;
    while let Some(cell) = ws.cells.get(i) {
        if !cell.is_done() {
            i += 1;
            continue;
        }
        let Some(cell) = ws.cells.remove(i) else {
            break;
        };
        let Some(thin) = thins.iter().find(|t| t.id == cell.thin) else {
            // The thin is gone: its bios end with errors as the cell drops.
            continue;
        };
        let ok = cell.succeeded();
        let Cell {
            vblock,
            block,
            holder,
            waiters,
            ..
        } = cell;
        let mut mapped = false;
        if let (true, Ok(td)) = (ok, thin.td()) {
            let mut md = pool.md.write();
            match md.insert_block(td, vblock, block) {
                Ok(()) => mapped = true,
                Err(e) => {
                    pr_err!("thin-pool: inserting a mapping failed: {}\n", e.name());
                    let _ = commit(&mut md);
                }
            }
        } else {
            pr_err!("thin-pool: preparing data block {} failed\n", block);
            let _ = pool
                .md
                .write()
                .dec_data_range(block, block.saturating_add(1));
        }
        if mapped {
            let (_, within) = thin.locate(holder.sector());
            issue(
                thin,
                holder,
                block.saturating_mul(bs).saturating_add(within),
            );
        } else {
            holder.end(BlkStatus::IO_ERROR);
        }
        for w in waiters {
            process(pool, thin, ws, w);
        }
    }
}

/// Raises a dm event once free data space falls to the low-water mark
/// (re-armed when the pool is resized).
fn check_low_water(pool: &Pool) {
    let low = pool.features().low_water_blocks;
    let free = pool.md.read().free_data_blocks();
    if let Ok(free) = free {
        if free <= low && !pool.low_water_triggered.swap(true, Ordering::AcqRel) {
            pr_info!("thin-pool: reached low water mark for data device: sending event\n");
            if let Some(h) = pool.handle() {
                h.table_event();
            }
        }
    }
}
