// SPDX-License-Identifier: GPL-2.0

//! One snapshot's exceptions as its target and the origin's writes share
//! them ([`SnapCore`]): the exception store, the table of completed
//! exceptions, the copies in flight with the bios waiting on them, and the
//! copy-then-commit cycle (upstream's `start_copy`, `copy_callback`,
//! `pending_complete`).
//!
//! Locking: [`SnapCore::state`] is a sleeping mutex, taken in `map`, in
//! kcopyd completions and in work items; it is never held across the
//! store's commit write, which goes under [`SnapCore::commit_io`] (taken
//! before `state`) so that `map` does not wait for it. Copies are submitted with it
//! released (kcopyd may wait for its own completions, which take it), and
//! bios are ended or resubmitted with it released. An origin write takes
//! the origin's snapshot list first, then one snapshot's state at a time.
//!
//! Lifetime: kcopyd completions and work items hold an `Arc` of the core,
//! and the core holds its origin's registry entry (so dropping the last
//! reference, which may happen in any of those or in `map`, takes the
//! registry's lock: process context).
//! The kcopyd client and the workqueue live in the core but are taken out
//! and destroyed by the snapshot target's destructor (which waits for every
//! copy and work item), so a completion or work item never drops the last
//! reference to the client or queue it runs on, and no code of ours runs
//! after the module is gone.

use super::cow_io::CowIo;
use super::merge::MergeState;
use super::origins::{self, OriginBio, OriginBios, OriginEntry};
use super::snap::Snapshot;
use super::store::{
    Chunk, ChunkSize, CopyCount, CopyThrottle, Exception, ExceptionStore, ExceptionTable, Health,
    Need, OnFull, PendingExceptions, Scope, Store, Tracked, TrackedChunks, TransientStore,
    WaiterKind,
};
use super::throttle::Throttled;
use crate::dm::dm_io::DmIoClient;
use crate::dm::kcopyd::{CopyDone, CopyResult, IntoDests, KcopydClient};
use crate::dm::noio::noio_scope;
use crate::dm::region::Region;
use crate::dm::registry::{DevKey, Registered};
use crate::dm::sync::{new_mutex, sleep_ms, Mutex};
use crate::dm::workqueue::{Concurrency, WorkQueue};
use crate::dm::{BioList, BlkStatus, DmDev, HeldBio, IrqSpinLock, TargetHandle};
use crate::new_irq_spinlock;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use kernel::c_str;
use kernel::new_condvar;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar};

/// A bio waiting for a copy to commit.
pub(crate) enum Waiter {
    /// A write to the snapshot: remapped to the new COW chunk.
    Snapshot(HeldBio<Snapshot>),
    /// A write to the origin: retried through the origin path.
    Origin(OriginBio),
}

/// What the state mutex protects.
pub(crate) struct State {
    pub(crate) store: Store<CowIo, Exception>,
    pub(crate) table: ExceptionTable,
    pub(crate) pending: PendingExceptions<Waiter>,
    pub(crate) health: Health,
    /// The snapshot went invalid and the store has not recorded it yet
    /// (that needs sleeping I/O, so it is done from a work item).
    drop_pending: bool,
    /// Resumed at least once: origin writes copy chunks to it (upstream's
    /// `active`). A snapshot loaded to take over a live one's exceptions
    /// stays inactive until its resume does that.
    pub(crate) active: bool,
    /// Its exceptions are being handed over to a new table: origin writes
    /// wait in `handover_held` until the new table has them.
    pub(crate) handing_over: bool,
    pub(crate) handover_held: OriginBios,
    /// The merge in progress (`snapshot-merge` only).
    pub(crate) merge: MergeState,
}

impl State {
    /// A store, its table filled from the store, and the snapshot's health.
    pub(crate) fn new(
        store: Store<CowIo, Exception>,
        table: ExceptionTable,
        invalid: bool,
    ) -> Self {
        State {
            store,
            table,
            pending: PendingExceptions::new(),
            health: Health {
                invalid,
                ..Health::default()
            },
            drop_pending: false,
            active: false,
            handing_over: false,
            handover_held: OriginBios::default(),
            merge: MergeState::default(),
        }
    }

    /// The state of a snapshot that has no exceptions of its own: one
    /// waiting for a handover, or the source after one. An empty transient
    /// store that nothing uses (the snapshot is inactive or invalid).
    pub(crate) fn placeholder(cow: &DmDev, chunk: ChunkSize) -> Result<Self> {
        let io = CowIo::new(cow.clone())?;
        let table = ExceptionTable::new(1).map_err(|_| ENOMEM)?;
        Ok(State::new(
            Store::Transient(TransientStore::new(io, chunk)),
            table,
            false,
        ))
    }

    /// Swaps the exceptions (store, table, copies in flight, health) with
    /// `other`, as a handover does (upstream's `__handover_exceptions`).
    fn swap_exceptions(&mut self, other: &mut State) {
        core::mem::swap(&mut self.store, &mut other.store);
        core::mem::swap(&mut self.table, &mut other.table);
        core::mem::swap(&mut self.pending, &mut other.pending);
        core::mem::swap(&mut self.health, &mut other.health);
        core::mem::swap(&mut self.drop_pending, &mut other.drop_pending);
    }

    /// Records a failed allocation on behalf of `scope`; true when the
    /// snapshot became invalid (the caller then calls
    /// [`SnapCore::record_invalid`] once the lock is released).
    pub(crate) fn cow_full(&mut self, scope: Scope) -> bool {
        let overflow = ExceptionStore::<Exception>::supports_overflow(&self.store);
        match self.health.cow_full(scope, overflow) {
            OnFull::Invalidate => {
                pr_err!("Invalidating snapshot: Unable to allocate exception.\n");
                self.invalidate()
            }
            OnFull::Overflow => {
                pr_err!("Snapshot overflowed: Unable to allocate exception.\n");
                false
            }
        }
    }

    /// Marks the snapshot invalid; true if it was valid.
    pub(crate) fn invalidate(&mut self) -> bool {
        let was = !self.health.invalid;
        self.health.invalid = true;
        self.drop_pending = true;
        was
    }

    /// What a write to origin chunk `old` (which has no exception) needs
    /// from this snapshot: the copy in flight is joined, or a COW chunk is
    /// allocated and the copy recorded as started; `waiter`, if given,
    /// waits on it. A COW device that is full, or no memory to track a
    /// copy, leaves no copy (see [`CopyNeed::invalidated`]).
    pub(crate) fn need_copy(
        &mut self,
        old: Chunk,
        scope: Scope,
        waiter: Option<(WaiterKind, Waiter)>,
    ) -> CopyNeed {
        let store = &mut self.store;
        let need = self.pending.need(old, waiter, || {
            ExceptionStore::<Exception>::prepare_exception(store, old, scope)
        });
        let mut out = CopyNeed::default();
        match need {
            Need::InFlight { refused } => {
                out.in_flight = true;
                out.refused = refused;
            }
            Need::Started(new) => {
                out.in_flight = true;
                out.start = Some(new);
            }
            Need::NotAllocated(_, w) => {
                out.invalidated = self.cow_full(scope);
                out.refused = w;
            }
            Need::NotTracked(w) => {
                // No memory to track a copy, so no write can wait for
                // one: the snapshot goes invalid.
                out.invalidated = self.invalidate();
                out.refused = w;
            }
        }
        out
    }
}

/// What [`State::need_copy`] leaves to the caller.
#[derive(Default)]
pub(crate) struct CopyNeed {
    /// A copy recorded just now, to this COW chunk: the caller issues it
    /// once the state lock is released.
    pub(crate) start: Option<Chunk>,
    /// A copy of the chunk is in flight (joined, or just recorded).
    pub(crate) in_flight: bool,
    /// The waiter, if it waits on no copy (none could be made, or there
    /// was no memory to queue it on the one in flight).
    pub(crate) refused: Option<Waiter>,
    /// The snapshot became invalid: the caller calls
    /// [`SnapCore::record_invalid`] once the lock is released.
    pub(crate) invalidated: bool,
}

/// What committed (or failed) exceptions released, for
/// [`SnapCore::release`] once the state lock is dropped.
#[derive(Default)]
struct Settled {
    /// Snapshot writes remapped to their new COW chunk.
    ready: BioList<Snapshot>,
    /// Snapshot writes whose exception failed.
    failed: BioList<Snapshot>,
    /// Origin writes to check again.
    retry: OriginBios,
    /// Origin writes whose only copy just committed, to submit as they
    /// are (see `SnapCore::alone`).
    pass: OriginBios,
    /// The snapshot became invalid.
    invalidated: bool,
    /// Some pending exception is gone.
    settled: bool,
}

impl State {
    /// The store, and what the store's `done` callback for a committed
    /// exception `e` does: the exception enters the table (or the snapshot
    /// goes invalid), its pending entry goes, and its waiters go to `out`.
    fn settler<'a>(
        &'a mut self,
        core: &'a SnapCore,
        out: &'a mut Settled,
    ) -> (
        &'a mut Store<CowIo, Exception>,
        impl FnMut(Exception, bool) + 'a,
    ) {
        let State {
            store,
            table,
            pending,
            health,
            drop_pending,
            ..
        } = self;
        let settle = move |e: Exception, success: bool| {
            let success = success && table.insert(e).is_ok();
            if success {
                // Snapshot reads sent to the origin before the exception
                // existed finish before any origin write this copy held
                // overwrites the chunk.
                core.wait_for_tracked(e.old);
            }
            if !success && !health.invalid {
                pr_err!("Invalidating snapshot: Error reading/writing.\n");
                health.invalid = true;
                *drop_pending = true;
                out.invalidated = true;
            }
            let Some(p) = pending.remove(e.old) else {
                return;
            };
            out.settled = true;
            p.drain_waiters(|w| {
                match w {
                    Waiter::Snapshot(mut b) => {
                        match core.cow_sector(e.new, b.sector()).filter(|_| success) {
                            Some(s) => {
                                b.per_bio_mut().cow_sector = s;
                                out.ready.push(b);
                            }
                            None => out.failed.push(b),
                        }
                    }
                    // The only snapshot of the origin now has the chunk:
                    // checking the write again would find exactly that.
                    Waiter::Origin(b) if success && core.is_alone() => out.pass.push(b),
                    Waiter::Origin(b) => out.retry.push(b),
                }
            });
        };
        (store, settle)
    }
}

/// Distinct chunks with snapshot reads in flight that are tracked one by
/// one; more are counted together (see [`TrackedChunks`]).
const TRACKED_CHUNKS: usize = 256;

/// What copies chunks and runs the work that may not run in `map`.
struct Workers {
    kcopyd: KcopydClient,
    wq: WorkQueue,
}

/// One snapshot's shared state.
#[pin_data]
pub(crate) struct SnapCore {
    pub(crate) origin: DmDev,
    /// The origin's snapshot list, held so that an origin write retried
    /// after a commit needs no lookup (the list holds this core only
    /// while its target lives, so the two references make no cycle past
    /// the destructor).
    pub(crate) origin_entry: Registered<DevKey, OriginEntry>,
    pub(crate) cow: DmDev,
    pub(crate) chunk: ChunkSize,
    /// Sectors of the origin the snapshot covers (its table length).
    pub(crate) len: u64,
    pub(crate) handle: TargetHandle,
    /// A `snapshot-merge` target's: origin writes make no exceptions in
    /// it, and it merges its exceptions back into the origin.
    pub(crate) merging: bool,
    /// Flushes the origin after each merged run (`snapshot-merge` only).
    pub(crate) dm_io: Option<DmIoClient>,
    #[pin]
    pub(crate) state: Mutex<State>,
    /// Signalled when a merge stops running.
    #[pin]
    pub(crate) merge_stopped: CondVar,
    /// Snapshot reads in flight to the origin (taken in `end_io`, which
    /// may run in interrupt context; nested inside `state` in `map`).
    #[pin]
    tracked: IrqSpinLock<TrackedChunks>,
    /// How many bios `tracked` holds, changed under its lock: a commit
    /// finding none takes no lock.
    tracked_out: AtomicUsize,
    /// Copies in flight, counted without a lock (`throttle.rs`).
    pub(super) copies: CopyCount,
    /// The only snapshot on its origin's list, as last published there
    /// (`origins.rs`): an origin write parked on a copy of this snapshot's
    /// that commits is then submitted without being checked again (the
    /// check would find just that exception). A snapshot that joins the
    /// list after the commit read this (until the write is resubmitted,
    /// once the commit round ends) is as one that joined after the write
    /// was resubmitted: upstream's retry has such a window too, and a new
    /// snapshot copies nothing before its resume, for which the origin is
    /// suspended (which waits for the held write).
    alone: AtomicBool,
    /// The writes parked on the limit on copies in flight.
    #[pin]
    pub(super) throttle: Mutex<CopyThrottle<Throttled>>,
    /// Taken out (and so destroyed, waiting for every copy and work item)
    /// by the snapshot target's destructor.
    #[pin]
    workers: Mutex<Option<Workers>>,
    /// Copies of this snapshot's running in another snapshot's kcopyd job
    /// (`chunk_copy.rs`): joined while `workers` is there, waited for by
    /// the destructor.
    joined: AtomicUsize,
    /// Serialises commits (taken before `state`): the store's metadata
    /// writes are done under it alone, through this handle on the COW
    /// device.
    #[pin]
    pub(super) commit_io: Mutex<CowIo>,
}

impl SnapCore {
    /// A core over `state`; on failure, the error and the constructor's
    /// message for it (upstream's, where upstream has the step).
    pub(crate) fn new(
        origin: DmDev,
        cow: DmDev,
        len: u64,
        handle: TargetHandle,
        state: State,
        merging: bool,
    ) -> core::result::Result<Arc<Self>, (Error, &'static CStr)> {
        const KCOPYD: &CStr = c_str!("Could not create kcopyd client");
        const PRIVATE: &CStr = c_str!("Cannot allocate private snapshot structure");
        let dm_io = if merging {
            Some(DmIoClient::new().map_err(|e| (e, KCOPYD))?)
        } else {
            None
        };
        let chunk = ExceptionStore::<Exception>::chunk_size(&state.store);
        let tracked = TrackedChunks::new(TRACKED_CHUNKS).map_err(|_| (ENOMEM, PRIVATE))?;
        let workers = Workers {
            kcopyd: KcopydClient::new(100).map_err(|e| (e, KCOPYD))?,
            wq: WorkQueue::new(c_str!("dmrs_snapshot"), Concurrency::Ordered)
                .map_err(|e| (e, PRIVATE))?,
        };
        let commit_io = CowIo::new(cow.clone()).map_err(|e| (e, PRIVATE))?;
        let origin_entry = origins::entry_for(&origin)
            .map_err(|e| (e, c_str!("Snapshot origin struct allocation failed")))?;
        Arc::pin_init(
            pin_init!(SnapCore {
                origin,
                origin_entry,
                cow,
                chunk,
                len,
                handle,
                merging,
                dm_io,
                state <- new_mutex!(state, "snapshot_state"),
                merge_stopped <- new_condvar!("snapshot_merge_stopped"),
                tracked <- new_irq_spinlock!(tracked, "snapshot_tracked_chunks"),
                tracked_out: AtomicUsize::new(0),
                copies: CopyCount::new(),
                alone: AtomicBool::new(false),
                throttle <- new_mutex!(CopyThrottle::new(), "snapshot_copy_throttle"),
                workers <- new_mutex!(Some(workers), "snapshot_workers"),
                joined: AtomicUsize::new(0),
                commit_io <- new_mutex!(commit_io, "snapshot_commit"),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| (e, PRIVATE))
    }

    /// Destroys the kcopyd client and the workqueue, waiting for every
    /// copy, completion and work item, then records an invalidation still
    /// unrecorded. Called by the snapshot's destructor, after it left its
    /// origin's list.
    pub(crate) fn stop(&self) {
        let workers = self.workers.lock().take();
        // No copy joins another's job any more; those joined are over once
        // their completion is (upstream waits for pending exceptions the
        // same way).
        let mut waited = 0u32;
        while self.joined.load(Ordering::Acquire) != 0 {
            sleep_ms(1);
            waited = waited.saturating_add(1);
            if waited == 10_000 {
                pr_warn!("snapshot: still waiting for copies in other snapshots' jobs\n");
            }
        }
        if let Some(w) = workers {
            // The copies first: their completions may queue work.
            drop(w.kcopyd);
            drop(w.wq);
        }
        self.drop_store();
    }

    /// Takes over the exceptions of `src`, a live snapshot of the same
    /// origin on the same COW device whose table is being replaced by this
    /// one (upstream's `__handover_exceptions`, from the new table's
    /// resume). `src` is suspended, so no bio of its own is in flight, but
    /// origin writes may still be copying to it: new ones are held off
    /// (`handing_over`), those started are waited for, then the exceptions
    /// move here and `src` goes invalid, receiving no more I/O. The held
    /// origin writes are retried against this snapshot.
    pub(crate) fn take_over(self: &Arc<Self>, src: &Arc<SnapCore>) {
        // What `src` is left with.
        let Ok(mut moving) = noio_scope(|| State::placeholder(&src.cow, self.chunk)) else {
            pr_err!("Cancelling snapshot handover: out of memory.\n");
            self.state.lock().health.invalid = true;
            return;
        };
        src.state.lock().handing_over = true;
        while !src.state.lock().pending.is_empty() {
            sleep_ms(1);
        }
        // One state lock at a time (all are of one lock class): the
        // exceptions pass through `moving`, and origin writes keep waiting
        // on `src` until this snapshot has them.
        {
            let mut from = src.state.lock();
            moving.swap_exceptions(&mut from);
            from.health.invalid = true;
            from.drop_pending = false;
        }
        let record = {
            let mut to = self.state.lock();
            to.swap_exceptions(&mut moving);
            // The store goes on with this table's handle on the COW device
            // (the old table's is released with the old table).
            core::mem::swap(to.store.io(), moving.store.io());
            to.active = true;
            to.drop_pending
        };
        let held = {
            let mut from = src.state.lock();
            from.handing_over = false;
            from.handover_held.take_all()
        };
        drop(moving);
        if record {
            self.record_invalid();
        }
        // A merge found the handover in its way.
        origins::copy_settled(&src.origin);
        origins::retry_on(&self.origin_entry, &self.origin, held);
    }

    /// Copies `from` to `to` with the snapshot's kcopyd client; `done`
    /// comes back with the error if nothing was submitted (the snapshot
    /// is being destroyed, or no memory).
    pub(super) fn copy<F, D>(
        &self,
        from: Region,
        to: D,
        done: F,
    ) -> core::result::Result<(), (Error, F)>
    where
        F: CopyDone,
        D: IntoDests,
    {
        let workers = self.workers.lock();
        match &*workers {
            Some(w) => noio_scope(|| w.kcopyd.copy_to(from, to, done)),
            None => Err((EIO, done)),
        }
    }

    /// Whether it is the only snapshot of its origin (see the `alone`
    /// field).
    pub(crate) fn is_alone(&self) -> bool {
        self.alone.load(Ordering::Relaxed)
    }

    /// Records whether it is the only snapshot of its origin; called
    /// under the origin's list lock whenever the list changes.
    pub(crate) fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Ordering::Relaxed);
    }

    /// Counts a copy of this snapshot's that runs in another snapshot's
    /// kcopyd job; false (nothing counted) once the destructor started.
    pub(super) fn join_copy(&self) -> bool {
        let workers = self.workers.lock();
        if workers.is_none() {
            return false;
        }
        self.joined.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// A copy counted by [`Self::join_copy`] is over (its completion ran,
    /// or it was never submitted).
    pub(super) fn leave_copy(&self) {
        self.joined.fetch_sub(1, Ordering::AcqRel);
    }

    /// Zeroes the whole COW chunk starting at `sector` for a discard that
    /// covers it (`discard_zeroes_cow`); `bio` ends with the result.
    pub(crate) fn zero_chunk(self: &Arc<Self>, sector: u64, bio: HeldBio<Snapshot>) {
        self.copy_started();
        let core = self.clone();
        let done = move |r: CopyResult| {
            bio.end(if r.write_err != 0 {
                BlkStatus::IO_ERROR
            } else {
                BlkStatus::OK
            });
            core.copy_ended();
        };
        let failed = CopyResult {
            read_err: false,
            write_err: 1,
        };
        let to = match Region::new(self.cow.clone(), sector, self.chunk.sectors().into()) {
            Ok(to) => to,
            Err(_) => return done(failed),
        };
        let workers = self.workers.lock();
        let submitted = match &*workers {
            Some(w) => noio_scope(|| w.kcopyd.zero_to(to, done)),
            None => Err((EIO, done)),
        };
        drop(workers);
        if let Err((_, done)) = submitted {
            done(failed);
        }
    }

    /// Runs `f` on the snapshot's workqueue; false if the queue is gone
    /// (the snapshot is being destroyed) or there is no memory.
    pub(super) fn spawn(&self, f: impl FnOnce() + Send + 'static) -> bool {
        let workers = self.workers.lock();
        let Some(w) = &*workers else {
            return false;
        };
        // The work runs on a reclaim path too.
        noio_scope(|| w.wq.try_spawn(GFP_KERNEL, move || noio_scope(f))).is_ok()
    }

    /// Where `sector` (of the origin chunk copied to COW chunk `new`) is
    /// on the COW device.
    #[inline(always)]
    pub(crate) fn cow_sector(&self, new: Chunk, sector: u64) -> Option<u64> {
        let offset = sector & u64::from(self.chunk.sectors() - 1);
        self.chunk.to_sector(new)?.checked_add(offset)
    }

    /// Has the store record the invalidation and raises a table event,
    /// from a work item (the store's I/O sleeps; this may be called from
    /// `map`).
    pub(crate) fn record_invalid(self: &Arc<Self>) {
        let core = self.clone();
        // If this fails, the destructor records it.
        let _ = self.spawn(move || {
            core.drop_store();
            core.handle.table_event();
        });
    }

    /// Records a snapshot read of `chunk` sent to the origin; the result
    /// goes into the bio's per-bio data for [`Self::untrack`].
    pub(crate) fn track(&self, chunk: Chunk) -> Tracked {
        self.tracked.with(|t| {
            let r = t.track(chunk);
            if r != Tracked::No {
                self.tracked_out.fetch_add(1, Ordering::SeqCst);
            }
            r
        })
    }

    /// A bio [`Self::track`] recorded as `t` finished (from `end_io`).
    pub(crate) fn untrack(&self, t: Tracked) {
        if t != Tracked::No {
            self.tracked.with(|c| {
                c.untrack(t);
                self.tracked_out.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// Waits until no tracked read is on origin `chunk` (upstream polls
    /// too: the overlap is rare and short); tracked reads finish without
    /// any lock of ours. The caller holds, or has just released, the lock
    /// under which the bios it must wait for are tracked (the snapshot's
    /// state lock for a commit or a merge run, the shared group's for its
    /// publish): a bio tracked before that is counted in `tracked_out` by
    /// the time of the lock-free look at it, and one tracked after found
    /// the new exception (or the merge holding its chunk) and is not one
    /// to wait for.
    pub(super) fn wait_for_tracked(&self, chunk: Chunk) {
        if self.tracked_out.load(Ordering::SeqCst) == 0 {
            return;
        }
        while self.tracked.with(|t| t.is_tracked(chunk)) {
            sleep_ms(1);
        }
    }

    /// Marks the store invalid on disk if that is still to be done.
    fn drop_store(&self) {
        let mut st = self.state.lock();
        if st.drop_pending {
            st.drop_pending = false;
            ExceptionStore::<Exception>::drop_snapshot(&mut st.store);
        }
    }

    /// Copies origin chunk `old` to COW chunk `new` (the pending exception
    /// is already started); the result arrives in [`Self::copy_done`].
    pub(crate) fn start_copy(self: &Arc<Self>, old: Chunk, new: Chunk) {
        // Ended in `copy_done` or `abandon`.
        self.copy_started();
        self.submit_copy(old, new);
    }

    /// [`Self::start_copy`] for a copy already counted as started.
    pub(super) fn submit_copy(self: &Arc<Self>, old: Chunk, new: Chunk) {
        let done = move |core: Arc<SnapCore>, r: CopyResult| core.copy_done(old, r.is_ok());
        let failed = {
            let workers = self.workers.lock();
            match &*workers {
                // The job holds the core, so the origin and COW device with
                // it; its allocations are `GFP_NOIO` (no noio scope needed).
                Some(w) => w
                    .kcopyd
                    .copy_within(
                        self.clone(),
                        |core| {
                            let from = core.source_of(old)?;
                            let to = core.dest_of(new, from.count())?;
                            Ok((from, to))
                        },
                        done,
                    )
                    .err(),
                None => Some((EIO, self.clone(), done)),
            }
        };
        let Some((_, core, done)) = failed else {
            return;
        };
        // Commit the exception as failed, but not from here: this may be
        // `map`, and committing does the store's I/O.
        let failure = CopyResult {
            read_err: true,
            write_err: 0,
        };
        if !self.spawn(move || done(core, failure)) {
            self.abandon(old);
        }
    }

    /// Gives up on the copy of `old` without committing it (the snapshot is
    /// being destroyed, or there is no memory): the snapshot goes invalid,
    /// its writes fail and the origin writes go on.
    fn abandon(self: &Arc<Self>, old: Chunk) {
        // Runs in kcopyd's completion or on a reclaim path: no allocation
        // may recurse into I/O.
        noio_scope(|| self.abandon_noio(old))
    }

    fn abandon_noio(self: &Arc<Self>, old: Chunk) {
        let mut out = Settled {
            // The merge waiting on copies of the origin looks again.
            settled: true,
            ..Settled::default()
        };
        let (invalidated, ready) = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let invalidated = st.invalidate();
            if let Some(p) = st.pending.remove(old) {
                p.drain_waiters(|w| match w {
                    Waiter::Snapshot(b) => out.failed.push(b),
                    Waiter::Origin(b) => out.retry.push(b),
                });
            }
            // The store stops waiting for the chunk: the commits batched
            // behind it fail now instead of never completing.
            {
                let (store, mut settle) = st.settler(self, &mut out);
                store.abandon_exception(&mut settle);
            }
            // A copy that finished while this one was older waited for it
            // (commits go in order): it is first in line now, and no
            // completion is left to commit it.
            (invalidated, st.pending.has_ready())
        };
        if invalidated {
            pr_err!("Invalidating snapshot: Unable to copy a chunk.\n");
            self.record_invalid();
        }
        self.release(&mut out);
        self.copy_ended();
        if ready {
            // The store is invalid now: the round fails those commits
            // without writing.
            self.commit_ready(None);
        }
    }

    /// The source of the copy of origin chunk `old`; the origin's last
    /// chunk may be short.
    fn source_of(&self, old: Chunk) -> Result<Region<&DmDev>> {
        let from = self.chunk.to_sector(old).ok_or(EINVAL)?;
        let left = self.origin.nr_sectors().checked_sub(from).ok_or(EINVAL)?;
        let count = left.min(self.chunk.sectors().into());
        Region::of(&self.origin, from, count)
    }

    /// The destination of a copy of `count` sectors to COW chunk `new`.
    fn dest_of(&self, new: Chunk, count: u64) -> Result<Region<&DmDev>> {
        let to = self.chunk.to_sector(new).ok_or(EINVAL)?;
        Region::of(&self.cow, to, count)
    }

    /// [`Self::source_of`], holding its own reference on the origin.
    pub(super) fn copy_source(&self, old: Chunk) -> Result<Region> {
        Ok(self.source_of(old)?.to_counted())
    }

    /// [`Self::dest_of`], holding its own reference on the COW device.
    pub(super) fn copy_dest(&self, new: Chunk, count: u64) -> Result<Region> {
        Ok(self.dest_of(new, count)?.to_counted())
    }

    /// A copy finished: commit every exception whose turn has come, then
    /// release the bios that waited on them.
    pub(super) fn copy_done(self: &Arc<Self>, old: Chunk, ok: bool) {
        // kcopyd's completion, a reclaim path: the commit's allocations
        // must not recurse into I/O.
        noio_scope(|| self.copy_done_noio(old, ok))
    }

    fn copy_done_noio(self: &Arc<Self>, old: Chunk, ok: bool) {
        // The copy is over; its commit does not count against the limit
        // (upstream ends the count before the store commits).
        self.copy_ended();
        self.commit_ready(Some((old, ok)));
    }

    /// Commits every exception whose turn has come, after marking the copy
    /// of `copied` (chunk, success) as finished. Commits go one at a time,
    /// in the order the store stages them; the metadata write is done with
    /// only the commit lock held, so `map` can start new copies meanwhile.
    /// What a round releases is handed on once the commit lock is dropped
    /// too.
    fn commit_ready(self: &Arc<Self>, copied: Option<(Chunk, bool)>) {
        let mut copied = copied;
        loop {
            // What this round settles, staged or written, released
            // together once the locks are dropped.
            let mut out = Settled::default();
            let more = {
                let mut commit_io = self.commit_io.lock();
                let write = {
                    let mut guard = self.state.lock();
                    let st = &mut *guard;
                    if let Some((old, ok)) = copied.take() {
                        if st.pending.copied(old, !ok).is_err() {
                            pr_warn!("snapshot: completion for chunk {} not in flight\n", old);
                        }
                    }
                    let mut write = None;
                    while write.is_none() {
                        let Some(r) = st.pending.next_ready() else {
                            break;
                        };
                        let e = Exception {
                            old: r.old,
                            new: r.new,
                        };
                        let (store, mut settle) = st.settler(self, &mut out);
                        write = store.stage_commit(e, r.valid, e, &mut settle);
                    }
                    write
                };
                match write {
                    Some(w) => {
                        let result = w.write_to(&mut *commit_io);
                        let mut guard = self.state.lock();
                        let st = &mut *guard;
                        {
                            let (store, mut settle) = st.settler(self, &mut out);
                            store.commit_written(w, result, &mut settle);
                        }
                        // Another round only if a copy that completed
                        // meanwhile is next in line: every completion
                        // marks its copy under `commit_io` and runs its
                        // own round after, and an abandoned copy that
                        // leaves a finished one first in line runs one
                        // too (`abandon_noio`).
                        st.pending.has_ready()
                    }
                    None => false,
                }
            };
            self.release(&mut out);
            if !more {
                break;
            }
        }
    }

    /// Ends or resubmits what committed exceptions released (with no lock
    /// held).
    fn release(self: &Arc<Self>, out: &mut Settled) {
        if out.invalidated {
            self.drop_store();
            self.handle.table_event();
        }
        for b in out.ready.by_ref() {
            let s = b.per_bio().cow_sector;
            b.submit_to(&self.cow, s);
        }
        for b in out.failed.by_ref() {
            b.end(BlkStatus::IO_ERROR);
        }
        for b in out.pass.by_ref() {
            let s = b.sector();
            b.submit_to(&self.origin, s);
        }
        if out.settled {
            origins::copy_settled(&self.origin);
        }
        origins::retry_on(&self.origin_entry, &self.origin, out.retry.take_all());
    }
}
