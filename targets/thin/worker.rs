// SPDX-License-Identifier: GPL-2.0

//! The pool's worker (upstream's `do_worker`): one ordered work item that
//! takes the bios the thins deferred, looks them up with I/O allowed,
//! provisions blocks (zeroing or copying them with kcopyd first), breaks
//! sharing after snapshots, zero-fills reads of holes, and commits before
//! it issues flushes and FUA writes.
//!
//! Concurrent bios to a block being provisioned wait in its cell (a
//! simple bio prison: one holder per virtual block, the rest queued) until
//! the mapping is in. Every bio sent to the data device is counted in the
//! pool's gate (`gate.rs`) until it completes: discards wait for the I/O
//! counted before them, copies that break sharing for the shared reads.

use super::gate::IoGate;
use super::mode::{DiscardHandling, MappingHandling, PoolMode, ReadOnlyAction, Unserviceable};
use super::pool::{Pool, PoolName};
use super::pool_mode::status_of;
use super::prison::{CellHandle, CellKey, DetainError, Detained};
use super::provision::{whole_block, Cell, CellAt, CellJob};
use super::thin_target::{ThinState, ThinTarget};
use crate::dm::ratelimit::dm_err_limit;
use crate::dm::{BioList, BioOp, BlkStatus, HeldBio};
use crate::persistent_data::error::Error as PdError;
use crate::persistent_data::shim::PVec;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Most virtual blocks locked at once, and most bios waiting for them.
pub(crate) const MAX_CELLS: u32 = 1024;
pub(crate) const MAX_WAITING: u32 = 4096;

/// A discard holding its range's cell until the I/O counted before it is
/// done (upstream's `all_io_ds` work).
pub(crate) struct QuiescingDiscard {
    thin: u64,
    bio: HeldBio<ThinTarget>,
    handle: CellHandle,
}

/// The pool's gate: cells hold bios; discards wait for earlier I/O.
pub(crate) type Gate = IoGate<HeldBio<ThinTarget>, QuiescingDiscard>;

/// The worker's own state, under the pool's `worker` mutex.
pub(crate) struct WorkerState {
    /// Virtual blocks being provisioned or unshared.
    pub(crate) cells: PVec<Cell>,
    /// The next token a copy waits for shared reads with.
    pub(crate) next_token: u64,
    /// Released bios went back to the deferred lists: run again.
    rerun: bool,
}

impl WorkerState {
    pub(crate) fn new() -> Self {
        WorkerState {
            cells: PVec::new(),
            next_token: 0,
            rerun: false,
        }
    }

    /// Unlocks a virtual block; the bios that waited go back to `thin`'s
    /// deferred list for the next run.
    fn release(&mut self, pool: &Pool, thin: &ThinState, handle: CellHandle) {
        let mut waiting = BioList::<ThinTarget>::new();
        if pool
            .gate
            .with(|g| g.release(handle, |b| waiting.push(b)))
            .is_err()
        {
            pr_err!("thin-pool: released a stale cell\n");
        }
        if !waiting.is_empty() {
            thin.lists.with(|l| {
                for b in waiting {
                    l.deferred.push(b);
                }
            });
            self.rerun = true;
        }
    }
}

/// One run of the worker.
pub(crate) fn run(pool: &Arc<Pool>) {
    // Lock order: thins, worker, metadata.
    let thins = pool.thins.lock();
    let mut ws = pool.worker.lock();
    ws.rerun = false;
    take_quiesced(pool, &mut ws);
    finish_overwrites(&thins, &mut ws);
    finish_cells(pool, &thins, &mut ws);
    run_quiesced_discards(pool, &thins, &mut ws);
    for thin in thins.iter() {
        let bios = thin.lists.with(|l| l.deferred.take_all());
        for bio in bios {
            process(pool, &thins, thin, &mut ws, bio);
        }
    }
    if ws.rerun {
        Pool::wake(pool);
    }
    pool.check_no_space_timeout(&thins);
    let commit_due = pool.flags.commit_due.swap(false, Ordering::AcqRel);
    let waiting = thins
        .iter()
        .any(|t| t.lists.with(|l| !l.after_commit.is_empty()));
    if !commit_due && !waiting {
        return;
    }
    let committed = pool.commit_and_check(&thins);
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
/// if it is a flush or FUA write; counted in the gate until it completes
/// (`shared_read`: a read of a shared block). The caller holds the bio's
/// cell, or the bio has no block (an empty flush).
fn issue(
    pool: &Pool,
    thin: &ThinState,
    mut bio: HeldBio<ThinTarget>,
    dest: u64,
    shared_read: bool,
) {
    bio.per_bio_mut().io = pool.gate.with(|g| g.enter(shared_read));
    if bio.is_preflush() || bio.is_fua() {
        bio.per_bio_mut().dest = dest;
        thin.lists.with(|l| l.after_commit.push(bio));
    } else {
        bio.submit_to(&thin.pool_dev, dest);
    }
}

/// A bio the pool cannot serve now (no data space, read-only): queued
/// until there is space, or failed.
fn unserviceable(thin: &ThinState, bio: HeldBio<ThinTarget>, what: Unserviceable) {
    match what {
        Unserviceable::Queue => thin.lists.with(|l| l.retry.push(bio)),
        Unserviceable::Error(e) => bio.end(status_of(e)),
    }
}

/// Looks up, provisions or unshares for one bio.
pub(crate) fn process(
    pool: &Arc<Pool>,
    thins: &[Arc<ThinState>],
    thin: &ThinState,
    ws: &mut WorkerState,
    bio: HeldBio<ThinTarget>,
) {
    if thin.requeue_mode.load(Ordering::Acquire) {
        return bio.requeue();
    }
    let mode = pool.mode();
    if mode == PoolMode::Fail {
        return bio.end(BlkStatus::IO_ERROR);
    }
    let op = bio.op();
    if bio.is_empty_flush() {
        return issue(pool, thin, bio, 0, false);
    }
    if op == BioOp::Discard {
        return match mode.discard_handling() {
            DiscardHandling::Process => discard(pool, thin, ws, bio),
            DiscardHandling::Succeed => bio.end_ok(),
            DiscardHandling::Error => bio.end(BlkStatus::IO_ERROR),
        };
    }
    if !matches!(op, BioOp::Read | BioOp::Write) {
        return bio.end(BlkStatus::IO_ERROR);
    }
    let (vblock, _) = thin.locate(bio.sector());
    let key = CellKey::block(true, thin.id, vblock);
    let detained = pool.gate.with(|g| g.detain(&key, bio));
    match detained {
        Ok(Detained::Queued) => {}
        Ok(Detained::Holder(handle, bio)) => {
            if let Some(handle) = process_held(pool, thins, thin, ws, bio, handle) {
                ws.release(pool, thin, handle);
            }
        }
        // No room: try again once a cell is released.
        Err(DetainError::Full(bio)) => thin.lists.with(|l| l.deferred.push(bio)),
        Err(DetainError::InvalidKey(bio)) => bio.end(BlkStatus::IO_ERROR),
    }
}

/// Looks up, provisions or unshares for a bio holding its virtual
/// block's cell; returns the cell unless provisioning keeps it.
fn process_held(
    pool: &Arc<Pool>,
    thins: &[Arc<ThinState>],
    thin: &ThinState,
    ws: &mut WorkerState,
    bio: HeldBio<ThinTarget>,
    handle: CellHandle,
) -> Option<CellHandle> {
    let op = bio.op();
    let mode = pool.mode();
    let (vblock, within) = thin.locate(bio.sector());
    let Ok(td) = thin.td() else {
        bio.end(BlkStatus::IO_ERROR);
        return Some(handle);
    };
    let bs = u64::from(pool.block_size);
    let found = pool.md.read().find_block(td, vblock, true);
    let mapped = match found {
        Ok(m) => Some(m),
        Err(PdError::NoData) => None,
        Err(e) => {
            dm_err_limit!("thin: lookup of block {} failed: {}\n", vblock, e.name());
            bio.end(BlkStatus::IO_ERROR);
            return Some(handle);
        }
    };
    if mode != PoolMode::Write {
        let action = pool.state.lock().read_only_action(
            mapped.map(|m| m.shared),
            op == BioOp::Write,
            bio.size() > 0,
        );
        match (action, mapped) {
            (ReadOnlyAction::Remap, Some(m)) => {
                let dest = m.block.saturating_mul(bs).saturating_add(within);
                issue(pool, thin, bio, dest, m.shared)
            }
            (ReadOnlyAction::Unserviceable(u), _) => unserviceable(thin, bio, u),
            _ => unprovisioned_read(thin, bio),
        }
        return Some(handle);
    }
    match mapped {
        Some(m) if !(m.shared && op == BioOp::Write) => {
            let dest = m.block.saturating_mul(bs).saturating_add(within);
            issue(pool, thin, bio, dest, m.shared);
            Some(handle)
        }
        Some(m) => provision(pool, thins, thin, ws, (bio, handle), vblock, Some(m.block)),
        None if op == BioOp::Read => {
            unprovisioned_read(thin, bio);
            Some(handle)
        }
        None => provision(pool, thins, thin, ws, (bio, handle), vblock, None),
    }
}

/// A read of an unprovisioned block: the external origin's data, or zeros.
fn unprovisioned_read(thin: &ThinState, bio: HeldBio<ThinTarget>) {
    match &thin.origin {
        Some(origin) => {
            let virt = thin.virt(bio.sector());
            origin.read(bio, virt)
        }
        None => zero_read(bio),
    }
}

/// A read of an unprovisioned block without an origin: zeros.
fn zero_read(mut bio: HeldBio<ThinTarget>) {
    if bio.zero_fill().is_ok() {
        bio.end_ok();
    } else {
        bio.end(BlkStatus::IO_ERROR);
    }
}

/// Locks the whole blocks a discard covers (parts of blocks stay mapped)
/// and queues it behind the I/O in flight: a bio remapped before the
/// discard may still be using the blocks it unmaps and frees.
fn discard(pool: &Arc<Pool>, thin: &ThinState, ws: &mut WorkerState, bio: HeldBio<ThinTarget>) {
    let (begin, end) = discard_range(thin, &bio);
    if begin >= end {
        return bio.end_ok();
    }
    let key = CellKey {
        virt: true,
        dev: thin.id,
        begin,
        end,
    };
    if !key.is_valid() {
        dm_err_limit!("thin: Discard doesn't respect bio prison limits\n");
        return bio.end_ok();
    }
    let detained = pool.gate.with(|g| g.detain(&key, bio));
    let (handle, bio) = match detained {
        Ok(Detained::Holder(handle, bio)) => (handle, bio),
        Ok(Detained::Queued) => return,
        // No room: try again once a cell is released.
        Err(DetainError::Full(bio)) => return thin.lists.with(|l| l.deferred.push(bio)),
        Err(DetainError::InvalidKey(bio)) => return bio.end_ok(),
    };
    let work = QuiescingDiscard {
        thin: thin.id,
        bio,
        handle,
    };
    match pool.gate.with(|g| g.after_all_io(work)) {
        Ok(Some(work)) => run_discard(pool, thin, ws, work),
        Ok(None) => {}
        // Every waiting discard holds a cell and the set has room for as
        // many: not reached.
        Err(work) => {
            pr_err!("thin-pool: no room to queue a discard\n");
            work.bio.end(BlkStatus::IO_ERROR);
            ws.release(pool, thin, work.handle);
        }
    }
}

/// The whole virtual blocks a discard covers.
fn discard_range(thin: &ThinState, bio: &HeldBio<ThinTarget>) -> (u64, u64) {
    let (first, within) = thin.locate(bio.sector());
    let (end, _) = thin.locate(bio.sector().saturating_add(u64::from(bio.sectors())));
    let begin = if within == 0 {
        first
    } else {
        first.saturating_add(1)
    };
    (begin, end)
}

/// Discards whose earlier I/O is done.
fn run_quiesced_discards(pool: &Arc<Pool>, thins: &[Arc<ThinState>], ws: &mut WorkerState) {
    while let Some(work) = pool.gate.with(|g| g.pop_all_io_ready()) {
        match thins.iter().find(|t| t.id == work.thin) {
            Some(thin) => run_discard(pool, thin, ws, work),
            // Not reached (a thin goes only once its bios are done); the
            // bios end with errors as they drop.
            None => release_orphan(pool, work.handle),
        }
    }
}

/// Unmaps a discard's blocks and, with passdown, discards the data blocks
/// no other device maps; then unlocks the range.
fn run_discard(pool: &Arc<Pool>, thin: &ThinState, ws: &mut WorkerState, work: QuiescingDiscard) {
    let QuiescingDiscard { bio, handle, .. } = work;
    discard_blocks(pool, thin, bio);
    ws.release(pool, thin, handle);
}

/// Unlocks the cell of a thin that is gone; its waiting bios end with
/// errors.
fn release_orphan(pool: &Pool, handle: CellHandle) {
    let mut waiting = BioList::<ThinTarget>::new();
    let _ = pool.gate.with(|g| g.release(handle, |b| waiting.push(b)));
    drop(waiting);
}

/// The body of [`run_discard`]: unmaps, passes down, ends the bio.
fn discard_blocks(pool: &Arc<Pool>, thin: &ThinState, bio: HeldBio<ThinTarget>) {
    let Ok(td) = thin.td() else {
        return bio.end(BlkStatus::IO_ERROR);
    };
    let bs = u64::from(pool.block_size);
    let (begin, end) = discard_range(thin, &bio);
    let passdown = pool.features().discard_passdown;
    // The data blocks the range maps, found before they are unmapped.
    let mut mapped = DataRuns::new();
    let mut md = pool.md.write();
    if passdown {
        let mut next = begin;
        while next < end {
            let Ok(r) = md.find_mapped_range(td, next, end) else {
                break;
            };
            let len = r.thin_end.saturating_sub(r.thin_begin);
            for b in r.pool_begin..r.pool_begin.saturating_add(len) {
                mapped.add(b);
            }
            next = r.thin_end;
        }
    }
    if let Err(e) = md.remove_range(td, begin, end) {
        dm_err_limit!(
            "thin-pool: unmapping a discarded range failed: {}\n",
            e.name()
        );
        drop(md);
        return bio.end(BlkStatus::IO_ERROR);
    }
    // Pass down only what no device maps any more. Sharing is judged after
    // the unmapping: right after a snapshot the two devices share tree
    // nodes, not data blocks (a count of one), and unmapping through a
    // shared node is what raises the counts of the blocks it still maps.
    // (Only the worker allocates, so none of them is reused before the
    // discards below are done.)
    let mut runs = DataRuns::new();
    for &(first, len) in mapped.runs.iter() {
        for b in first..first.saturating_add(len) {
            if md.data_block_count(b) == Ok(0) {
                runs.add(b);
            }
        }
    }
    drop(md);
    for &(b, len) in runs.runs.iter() {
        let _ = pool
            .data_dev
            .discard(b.saturating_mul(bs), len.saturating_mul(bs));
    }
    bio.end_ok();
}

/// A write to an unmapped block (`from` None) or a shared one: a new data
/// block, zeroed or copied first unless the write covers it (mapped when
/// it is done) or zeroing is off (mapped at once).
fn provision(
    pool: &Arc<Pool>,
    thins: &[Arc<ThinState>],
    thin: &ThinState,
    ws: &mut WorkerState,
    (bio, handle): (HeldBio<ThinTarget>, CellHandle),
    vblock: u64,
    from: Option<u64>,
) -> Option<CellHandle> {
    let bs = u64::from(pool.block_size);
    let (_, within) = thin.locate(bio.sector());
    let covers = whole_block(within, bio.sectors(), bs);
    let block = {
        let mut md = pool.md.write();
        match md.alloc_data_block() {
            Ok(b) => b,
            Err(PdError::NoSpace) => {
                drop(md);
                match alloc_after_commit(pool, thins) {
                    Some(b) => b,
                    None => {
                        let what = pool.state.lock().unserviceable();
                        unserviceable(thin, bio, what);
                        return Some(handle);
                    }
                }
            }
            Err(e) => {
                drop(md);
                pool.metadata_operation_failed(thins, "dm_pool_alloc_data_block", e);
                bio.end(BlkStatus::IO_ERROR);
                return Some(handle);
            }
        }
    };
    check_low_water(pool);
    if !commit_before_reserve(pool, thins) {
        // Out of write mode now: the block is never mapped (upstream
        // leaks it too, counted by the commit; thin_repair drops it).
        let e = pool.state.lock().io_error();
        bio.end(status_of(e));
        return Some(handle);
    }
    let zero = pool.features().zero_new_blocks;
    // A write covering the block needs nothing copied or zeroed; it is
    // mapped once it is done, unless it must wait for a commit (flush,
    // FUA), which then prepares the block like any other write.
    let overwrite = covers && !bio.is_preflush() && !bio.is_fua();
    // An unprovisioned block an external origin has data for starts as a
    // copy of it (zeroing or not only what lies past the origin's end).
    let origin = match from {
        None => thin.origin.as_ref().and_then(|o| o.copy_source(vblock, bs)),
        Some(_) => None,
    };
    let job = match (from, origin) {
        (Some(_), _) | (None, Some(_)) if overwrite => CellJob::Overwrite,
        (Some(old), _) => CellJob::Copy { from: old },
        (None, Some((origin, sector, len))) => CellJob::CopyOrigin {
            origin,
            sector,
            len,
            zero_rest: zero,
        },
        (None, None) if !zero => {
            map_and_issue(pool, thins, thin, bio, (vblock, block, within));
            return Some(handle);
        }
        (None, None) if overwrite => CellJob::Overwrite,
        (None, None) => CellJob::Zero,
    };
    let at = CellAt {
        thin: thin.id,
        vblock,
        block,
        unshare: from.is_some(),
    };
    if let CellJob::Overwrite = job {
        return start_overwrite(pool, thin, ws, bio, handle, at);
    }
    match Cell::start(pool, ws, at, bio, handle, job, &thin.pool_dev) {
        Ok(()) => None,
        Err((bio, handle)) => {
            let _ = pool
                .md
                .write()
                .dec_data_range(block, block.saturating_add(1));
            bio.end(BlkStatus::IO_ERROR);
            Some(handle)
        }
    }
}

/// Zeroing is off: maps `block` now and writes (what upstream does too:
/// the rest of the block keeps whatever it held).
fn map_and_issue(
    pool: &Arc<Pool>,
    thins: &[Arc<ThinState>],
    thin: &ThinState,
    bio: HeldBio<ThinTarget>,
    (vblock, block, within): (u64, u64, u64),
) {
    let Ok(td) = thin.td() else {
        return bio.end(BlkStatus::IO_ERROR);
    };
    let inserted = pool.md.write().insert_block(td, vblock, block);
    if let Err(e) = inserted {
        pool.metadata_operation_failed(thins, "dm_thin_insert_block", e);
        return bio.end(BlkStatus::IO_ERROR);
    }
    let bs = u64::from(pool.block_size);
    issue(
        pool,
        thin,
        bio,
        block.saturating_mul(bs).saturating_add(within),
        false,
    );
}

/// Writes a whole new block in place; `end_io` hands the completed bio
/// back to the worker, which maps the block before ending it.
fn start_overwrite(
    pool: &Arc<Pool>,
    thin: &ThinState,
    ws: &mut WorkerState,
    mut bio: HeldBio<ThinTarget>,
    handle: CellHandle,
    at: CellAt,
) -> Option<CellHandle> {
    let CellAt { vblock, block, .. } = at;
    if let Err(handle) = Cell::overwrite(pool, ws, at, handle) {
        let _ = pool
            .md
            .write()
            .dec_data_range(block, block.saturating_add(1));
        bio.end(BlkStatus::IO_ERROR);
        return Some(handle);
    }
    let io = pool.gate.with(|g| g.enter(false));
    let pb = bio.per_bio_mut();
    pb.overwrite = true;
    pb.vblock = vblock;
    pb.io = io;
    let bs = u64::from(pool.block_size);
    bio.submit_to(&thin.pool_dev, block.saturating_mul(bs));
    None
}

/// Copies that waited for shared reads which are now done.
fn take_quiesced(pool: &Pool, ws: &mut WorkerState) {
    while let Some(token) = pool.gate.with(|g| g.pop_shared_ready()) {
        // A token without a cell is one whose copy never started.
        if let Some(cell) = ws.cells.iter_mut().find(|c| c.waits_for(token)) {
            cell.quiesced();
        }
    }
}

/// Overwrites that completed go back to their cells, which map their
/// blocks (in [`finish_cells`]) and end them.
fn finish_overwrites(thins: &[Arc<ThinState>], ws: &mut WorkerState) {
    for thin in thins {
        let done = thin.lists.with(|l| l.overwritten.take_all());
        for mut bio in done {
            let vblock = bio.per_bio().vblock;
            bio.per_bio_mut().overwrite = false;
            let cell = ws
                .cells
                .iter_mut()
                .find(|c| c.thin == thin.id && c.vblock == vblock && c.holder.is_none());
            match cell {
                Some(cell) => cell.overwritten = Some(bio),
                None => {
                    pr_err!("thin-pool: no cell for a completed overwrite\n");
                    bio.end(BlkStatus::IO_ERROR);
                }
            }
        }
    }
}

/// Maps a prepared cell's block (`ok`), or gives the block back; returns
/// whether it is mapped. Out of write mode (and out of data space) the
/// mapping just fails, as upstream's `process_prepared_mapping_fail`.
fn finish_cell(
    pool: &Pool,
    thins: &[Arc<ThinState>],
    thin: &ThinState,
    cell: &Cell,
    ok: bool,
) -> bool {
    if pool.mode().mapping_handling() == MappingHandling::Error {
        return false;
    }
    if let (true, Ok(td)) = (ok, thin.td()) {
        let inserted = pool.md.write().insert_block(td, cell.vblock, cell.block);
        match inserted {
            Ok(()) => return true,
            Err(e) => {
                pool.metadata_operation_failed(thins, "dm_thin_insert_block", e);
                return false;
            }
        }
    }
    dm_err_limit!("thin-pool: preparing data block {} failed\n", cell.block);
    let _ = pool
        .md
        .write()
        .dec_data_range(cell.block, cell.block.saturating_add(1));
    false
}

/// Maps the blocks whose zeroing, copy or overwrite finished (and whose
/// shared reads are done), issues or ends their writes and looks at the
/// bios that waited for them again.
fn finish_cells(pool: &Arc<Pool>, thins: &[Arc<ThinState>], ws: &mut WorkerState) {
    let bs = u64::from(pool.block_size);
    let mut i = 0;
    while let Some(cell) = ws.cells.get(i) {
        if !cell.is_ready() {
            i += 1;
            continue;
        }
        let Some(mut cell) = ws.cells.remove(i) else {
            break;
        };
        let Some(thin) = thins.iter().find(|t| t.id == cell.thin) else {
            // The thin is gone: its bios end with errors as the cell drops.
            release_orphan(pool, cell.handle);
            continue;
        };
        if let Some(bio) = cell.overwritten.take() {
            let status = bio.status();
            let mapped = finish_cell(pool, thins, thin, &cell, status.is_ok());
            bio.end(if mapped { status } else { BlkStatus::IO_ERROR });
        } else if let Some(holder) = cell.holder.take() {
            if finish_cell(pool, thins, thin, &cell, cell.succeeded()) {
                let (_, within) = thin.locate(holder.sector());
                let dest = cell.block.saturating_mul(bs).saturating_add(within);
                issue(pool, thin, holder, dest, false);
            } else {
                holder.end(BlkStatus::IO_ERROR);
            }
        }
        ws.release(pool, thin, cell.handle);
    }
}

/// No free data block: commit (blocks freed in this transaction become
/// free) and try again; still none: out-of-data-space mode. A failed
/// commit has already changed the mode (read-only or fail, as upstream):
/// out-of-data-space must not replace it.
fn alloc_after_commit(pool: &Arc<Pool>, thins: &[Arc<ThinState>]) -> Option<u64> {
    pool.commit_and_check(thins).ok()?;
    // The guard must be gone before `metadata_operation_failed` takes the
    // lock again (a guard in the scrutinee lives to the end of the match).
    let allocated = pool.md.write().alloc_data_block();
    match allocated {
        Ok(b) => Some(b),
        Err(PdError::NoSpace) => {
            pool.out_of_data_space(thins);
            None
        }
        Err(e) => {
            pool.metadata_operation_failed(thins, "dm_pool_alloc_data_block", e);
            None
        }
    }
}

/// Runs of consecutive data blocks, built block by block.
struct DataRuns {
    runs: PVec<(u64, u64)>,
}

impl DataRuns {
    fn new() -> Self {
        DataRuns { runs: PVec::new() }
    }

    /// Adds block `b`; a block that cannot be recorded is left out (it is
    /// then not discarded, which is harmless).
    fn add(&mut self, b: u64) {
        if let Some(last) = self.runs.last_mut() {
            if last.0.saturating_add(last.1) == b {
                last.1 = last.1.saturating_add(1);
                return;
            }
        }
        let _ = self.runs.try_push((b, 1));
    }
}

/// Raises a dm event once free data space falls to the low-water mark
/// (re-armed when the pool is resized).
fn check_low_water(pool: &Pool) {
    let low = pool.features().low_water_blocks;
    let free = pool.md.read().free_data_blocks();
    if let Ok(free) = free {
        if free <= low && !pool.flags.low_water_triggered.swap(true, Ordering::AcqRel) {
            let handle = pool.handle();
            let name = PoolName::of(handle.as_ref());
            pr_warn!(
                "{}: reached low water mark for data device: sending event.\n",
                name
            );
            if let Some(h) = handle {
                h.table_event();
            }
        }
    }
}

/// Commits before the metadata reserve is touched, as upstream's
/// `alloc_data_block` does once no free metadata block is left outside
/// it: the commit then switches to out-of-metadata-space mode, with the
/// reserve still there to complete it. Returns whether a block allocated
/// just before may still be mapped.
fn commit_before_reserve(pool: &Arc<Pool>, thins: &[Arc<ThinState>]) -> bool {
    let free = pool.md.read().free_metadata_blocks();
    match free {
        Ok(0) => {
            let _ = pool.commit_now(thins);
        }
        Ok(_) => {}
        Err(e) => pool.metadata_operation_failed(thins, "dm_pool_get_free_metadata_block_count", e),
    }
    pool.mode().mapping_handling() == MappingHandling::Insert
}
