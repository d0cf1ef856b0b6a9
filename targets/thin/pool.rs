// SPDX-License-Identifier: GPL-2.0

//! The pool object (upstream's `struct pool`): the metadata of one pool
//! under a read-write semaphore, its data device, the thins bound to it,
//! and its worker. It outlives a table reload of the pool: the pool target
//! and every thin hold it through a [`PoolOwner`], found in [`POOLS`] by
//! the pool's own mapped device.
//!
//! Lifetime rules (no work item or kcopyd callback may drop the last
//! owner of the queue or client it runs on):
//! - Work items, the commit timer and kcopyd callbacks hold an
//!   `Arc<Pool>` only; the queue, the timer and the kcopyd client are
//!   stopped by [`PoolOwner`]'s `Drop` (in a target's destructor), which
//!   then drops the last `Arc<Pool>` itself.

use super::gate::IoEntries;
use super::metadata::{OpenOptions, PoolHooks, PoolMetadata, ThinDevice};
use super::mode::{PoolMode, PoolState};
use super::thin_target::ThinState;
use super::worker::{Gate, WorkerState, MAX_CELLS, MAX_WAITING};
use crate::dm::bufio::BufioClient;
use crate::dm::delayed_work::{new_delayed_work, Delayed, DelayedWork, DelayedWorkItem};
use crate::dm::dm_io::DmIoClient;
use crate::dm::kcopyd::KcopydClient;
use crate::dm::mapped_device::InternalSuspend;
use crate::dm::noio::noio_scope;
use crate::dm::registry::{DevKey, Registered, Registry};
use crate::dm::sync::{new_mutex, new_rwsem, Mutex, RwSemaphore};
use crate::dm::workqueue::{Concurrency, WorkQueue};
use crate::dm::{DmDev, IrqSpinLock, TargetHandle};
use crate::new_irq_spinlock;
use crate::persistent_data::block_manager::BlockManager;
use crate::persistent_data::error::Error as PdError;
use crate::persistent_data::shim::PVec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::msecs_to_jiffies;
use kernel::workqueue::{impl_has_work, new_work, Work, WorkItem};

/// Metadata blocks the engine keeps in its cache of dirty blocks.
const METADATA_CACHE_BLOCKS: usize = 128;
/// Commit at least this often (upstream's `COMMIT_PERIOD`, one second).
const COMMIT_PERIOD_MS: u32 = 1000;

/// The engine's error as a kernel error (upstream's errno).
pub(crate) fn kerr(e: PdError) -> Error {
    Error::from_errno(e.to_errno())
}

/// What the metadata calls back into: the data device is flushed before
/// every commit (no committed mapping may point at data not yet stable),
/// and a low metadata space raises a dm event.
pub(crate) struct Hooks {
    data_dev: DmDev,
    io: DmIoClient,
    /// The pool target bound now, for events.
    handle: Option<TargetHandle>,
}

impl PoolHooks for Hooks {
    fn pre_commit(&mut self) -> crate::persistent_data::error::Result<()> {
        self.io
            .flush(&self.data_dev)
            .map_err(|_| crate::persistent_data::error::Error::Io)
    }

    fn metadata_low(&mut self) {
        pr_warn!(
            "{}: reached low water mark for metadata device: sending event.\n",
            PoolName::of(self.handle.as_ref())
        );
        if let Some(h) = &self.handle {
            h.table_event();
        }
    }
}

/// The metadata as the pool keeps it.
pub(crate) type Metadata = PoolMetadata<BufioClient, Hooks>;

/// Pool-wide settings taken from the bound pool target's table line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bound {
    pub(crate) zero_new_blocks: bool,
    pub(crate) discard_enabled: bool,
    pub(crate) discard_passdown: bool,
    pub(crate) error_if_no_space: bool,
    pub(crate) low_water_blocks: u64,
    /// The pool target's length in sectors (upstream's `pool->ti->len`):
    /// what a thin reports of the pool device in `iterate_devices`.
    pub(crate) target_len: u64,
}

/// One thin pool.
#[pin_data]
pub(crate) struct Pool {
    #[pin]
    pub(crate) md: RwSemaphore<Metadata>,
    pub(crate) data_dev: DmDev,
    metadata_key: DevKey,
    data_key: DevKey,
    /// Data block size in sectors.
    pub(crate) block_size: u32,
    pub(crate) wq: Arc<WorkQueue>,
    #[pin]
    work: Work<Pool>,
    /// The thins bound to the pool, for the worker.
    #[pin]
    pub(crate) thins: Mutex<PVec<Arc<ThinState>>>,
    /// The worker's own state (cells, pending flushes).
    #[pin]
    pub(crate) worker: Mutex<WorkerState>,
    /// Cells on virtual blocks and the I/O in flight (`gate.rs`): taken
    /// by `map`, `end_io` and the worker, never across a sleep.
    #[pin]
    pub(crate) gate: IrqSpinLock<Gate>,
    /// Taken out (and dropped, waiting for its jobs) by the owner's drop.
    #[pin]
    pub(crate) kcopyd: Mutex<Option<KcopydClient>>,
    #[pin]
    pub(crate) bound: Mutex<Bound>,
    /// The pool's mode and out-of-space state (`mode.rs` decides).
    #[pin]
    pub(crate) state: Mutex<PoolState>,
    /// The thins' devices suspended with the pool (presuspend to resume).
    #[pin]
    suspended_thins: Mutex<PVec<(DevKey, InternalSuspend)>>,
    /// Between presuspend and resume, and until the first resume (as
    /// upstream's `pool->suspended`): new thins are refused.
    suspended: AtomicBool,
    pub(crate) flags: PoolFlags,
}

/// The pool's lock-free state.
#[derive(Default)]
pub(crate) struct PoolFlags {
    /// The timer asked for a commit.
    pub(crate) commit_due: AtomicBool,
    /// A low-water-mark event was raised and not yet re-armed.
    pub(crate) low_water_triggered: AtomicBool,
    /// A copy of the mode for `map` (see `pool_mode.rs`).
    pub(crate) mode: AtomicU8,
    /// Seconds spent out of data space while queueing I/O.
    pub(crate) no_space_ticks: AtomicU32,
}

impl_has_work! {
    impl HasWork<Self> for Pool { self.work }
}

impl WorkItem for Pool {
    type Pointer = Arc<Pool>;

    fn run(this: Arc<Pool>) {
        noio_scope(|| super::worker::run(&this));
    }
}

impl Pool {
    /// Queues the worker (once: a queued worker runs once for every wake).
    pub(crate) fn wake(this: &Arc<Pool>) {
        let _ = this.wq.enqueue(this.clone());
    }

    /// A counted bio completed or was not sent after all: gives its counts
    /// back, and wakes the worker if work waited for them. Fine in
    /// interrupt context.
    pub(crate) fn exit_io(this: &Arc<Pool>, io: &mut IoEntries) {
        if io.is_empty() {
            return;
        }
        if this.gate.with(|g| g.exit(io)).any() {
            Pool::wake(this);
        }
    }

    /// The thin device `td`'s committed mapping count etc. are read under
    /// the semaphore; this opens `id` for a thin target.
    pub(crate) fn open_thin(&self, id: u64) -> Result<ThinDevice> {
        self.md.write().open_thin_device(id).map_err(kerr)
    }

    /// The pool target bound now, for events.
    pub(crate) fn handle(&self) -> Option<TargetHandle> {
        self.md.write().hooks_mut().handle.clone()
    }

    /// The pool's name for log lines. Takes the metadata semaphore.
    pub(crate) fn log_name(&self) -> PoolName {
        PoolName::of(self.handle().as_ref())
    }
}

/// A pool's name as upstream's log lines start (`dm_device_name`), or
/// "thin-pool" while no pool target is bound.
pub(crate) struct PoolName(Option<kernel::str::CString>);

impl PoolName {
    /// The name of the pool device `handle` belongs to.
    pub(crate) fn of(handle: Option<&TargetHandle>) -> Self {
        // The name is allocated; a suspended pool (preresume) must not
        // recurse into I/O on itself for reclaim.
        PoolName(handle.and_then(|h| noio_scope(|| h.device_name())))
    }
}

impl core::fmt::Display for PoolName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            Some(name) => core::fmt::Display::fmt(&**name, f),
            None => f.write_str("thin-pool"),
        }
    }
}

/// The periodic commit: wakes the worker with a commit due.
pub(crate) struct CommitTimer {
    pool: Arc<Pool>,
}

impl DelayedWorkItem for CommitTimer {
    fn run(this: &Delayed<Self>) {
        this.pool.flags.commit_due.store(true, Ordering::Release);
        if this.pool.mode() == PoolMode::OutOfDataSpace {
            this.pool
                .flags
                .no_space_ticks
                .fetch_add(1, Ordering::AcqRel);
        }
        Pool::wake(&this.pool);
        this.queue(msecs_to_jiffies(COMMIT_PERIOD_MS));
    }
}

/// What the pool's targets hold: stops the worker, the timer and the copy
/// jobs, then commits and closes the metadata, when the last one goes.
pub(crate) struct PoolOwner {
    pub(crate) pool: Arc<Pool>,
    timer: Option<DelayedWork<CommitTimer>>,
    // Dropped after the metadata is closed (in `drop`): only then may
    // another pool open the device.
    _metadata_claim: Registered<DevKey, MetadataUser>,
}

/// Every pool, by its mapped device.
pub(crate) static POOLS: Registry<DevKey, PoolOwner> = Registry::new();

/// The pool using a metadata device (upstream finds pools by their
/// metadata device too). Claimed before the metadata is opened, so no two
/// pools ever open one device, even when built at the same time.
struct MetadataUser {
    /// The pool's mapped device.
    md_key: DevKey,
    data_key: DevKey,
}

/// Every pool's metadata device.
static METADATA_USERS: Registry<DevKey, MetadataUser> = Registry::new();

/// A pool target's hold on its pool (and on its registry entry).
pub(crate) type PoolEntry = Registered<DevKey, PoolOwner>;

/// Where a pool lives and what it is made of.
pub(crate) struct PoolDevices<'a> {
    pub(crate) md_key: DevKey,
    pub(crate) metadata_dev: &'a DmDev,
    pub(crate) data_dev: &'a DmDev,
    pub(crate) block_size: u32,
    pub(crate) read_only: bool,
}

/// Finds the pool of mapped device `d.md_key` (a reload) or creates it,
/// by upstream's rules (`__pool_find`): a metadata device belongs to one
/// pool, with one data device, and a pool keeps its devices. Returns the
/// entry and whether the pool was created.
pub(crate) fn find_or_create(
    d: &PoolDevices<'_>,
    bound: Bound,
) -> core::result::Result<(PoolEntry, bool), (Error, &'static CStr)> {
    const IN_USE: &CStr = c_str!("metadata device already in use by a pool");
    let metadata_key = DevKey::of(d.metadata_dev);
    let data_key = DevKey::of(d.data_dev);
    if let Some(user) = METADATA_USERS.lookup(metadata_key) {
        if user.md_key != d.md_key {
            return Err((EBUSY, IN_USE));
        }
        if user.data_key != data_key {
            return Err((EBUSY, c_str!("data device already in use by a pool")));
        }
        // Gone meanwhile: the pool is being closed.
        return POOLS
            .join(d.md_key)
            .map(|entry| (entry, false))
            .ok_or((EBUSY, IN_USE));
    }
    if let Some(entry) = POOLS.join(d.md_key) {
        let pool = &entry.pool;
        if pool.metadata_key != metadata_key || pool.data_key != data_key {
            return Err((EINVAL, c_str!("different pool cannot replace a pool")));
        }
        return Ok((entry, false));
    }
    let user = MetadataUser {
        md_key: d.md_key,
        data_key,
    };
    let user = Arc::new(user, GFP_KERNEL)
        .map_err(|_| (ENOMEM, c_str!("Error allocating memory for pool")))?;
    // Taken by a pool built at the same time: refused as upstream, whose
    // pool table lock makes the second one find the first.
    let claim = METADATA_USERS
        .insert(metadata_key, user)
        .map_err(|_| (EBUSY, IN_USE))?;
    let owner = PoolOwner::new(d, bound, claim)?;
    let owner = Arc::new(owner, GFP_KERNEL)
        .map_err(|_| (ENOMEM, c_str!("Error allocating memory for pool")))?;
    let entry = POOLS
        .insert(d.md_key, owner)
        .map_err(|e| (e, c_str!("metadata device already in use by a pool")))?;
    Ok((entry, true))
}

impl PoolOwner {
    // Each step is its own frame (`inline(never)`): inlined into the pool
    // target's constructor they made one frame of about 2 KiB, live while
    // opening the metadata goes down into bufio and dm-io.
    #[inline(never)]
    fn new(
        d: &PoolDevices<'_>,
        bound: Bound,
        metadata_claim: Registered<DevKey, MetadataUser>,
    ) -> core::result::Result<Self, (Error, &'static CStr)> {
        let md = open_metadata(d)?;
        let pool = Pool::new(d, bound, md)?;
        let wq = pool.wq.clone();
        let timer = new_delayed_work!(wq, CommitTimer { pool: pool.clone() }, "thin-pool commit")
            .map_err(|e| (e, c_str!("Out of memory")))?;
        timer.queue(msecs_to_jiffies(COMMIT_PERIOD_MS));
        Ok(PoolOwner {
            pool,
            timer: Some(timer),
            _metadata_claim: metadata_claim,
        })
    }
}

impl Pool {
    /// The pool around the opened metadata `md`: its worker's queue,
    /// kcopyd client and state, and the gate.
    #[inline(never)]
    fn new(
        d: &PoolDevices<'_>,
        bound: Bound,
        md: Metadata,
    ) -> core::result::Result<Arc<Self>, (Error, &'static CStr)> {
        let wq = WorkQueue::new(c_str!("dm-thin"), Concurrency::Ordered)
            .map_err(|e| (e, c_str!("Error creating pool's workqueue")))?;
        let wq = Arc::new(wq, GFP_KERNEL).map_err(|e| (e.into(), c_str!("Out of memory")))?;
        let kcopyd = KcopydClient::new(100)
            .map_err(|e| (e, c_str!("Error creating pool's kcopyd client")))?;
        let ws = WorkerState::new();
        let gate = Gate::try_new(MAX_CELLS, MAX_WAITING)
            .map_err(|e| (kerr(e), c_str!("Error creating pool's bio prison")))?;
        Arc::pin_init(
            pin_init!(Pool {
                md <- new_rwsem!(md, "thin-pool metadata"),
                data_dev: d.data_dev.clone(),
                metadata_key: DevKey::of(d.metadata_dev),
                data_key: DevKey::of(d.data_dev),
                block_size: d.block_size,
                wq,
                work <- new_work!("thin-pool worker"),
                thins <- new_mutex!(PVec::new(), "thin-pool thins"),
                worker <- new_mutex!(ws, "thin-pool worker state"),
                gate <- new_irq_spinlock!(gate, "thin-pool io gate"),
                kcopyd <- new_mutex!(Some(kcopyd), "thin-pool kcopyd"),
                bound <- new_mutex!(bound, "thin-pool features"),
                state <- new_mutex!(PoolState::new(), "thin-pool mode"),
                suspended_thins <- new_mutex!(PVec::new(), "thin-pool suspended thins"),
                suspended: AtomicBool::new(true),
                flags: PoolFlags::default(),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| (e, c_str!("Error creating metadata object")))
    }
}

#[inline(never)]
fn open_metadata(d: &PoolDevices<'_>) -> core::result::Result<Metadata, (Error, &'static CStr)> {
    const ERR: &CStr = c_str!("Error creating metadata object");
    let client = BufioClient::new(d.metadata_dev, 4096).map_err(|e| (e, ERR))?;
    let io = DmIoClient::new().map_err(|e| (e, ERR))?;
    let hooks = Hooks {
        data_dev: d.data_dev.clone(),
        io,
        handle: None,
    };
    let opts = OpenOptions {
        data_block_size: d.block_size,
        format: !d.read_only,
        read_only_device: d.read_only,
    };
    let bm = BlockManager::new(client, METADATA_CACHE_BLOCKS);
    let mut md = noio_scope(|| PoolMetadata::open(bm, opts, hooks)).map_err(|e| (kerr(e), ERR))?;
    if d.read_only {
        md.set_read_only();
    }
    Ok(md)
}

impl Pool {
    /// Binds the pool target whose table is live now (upstream's
    /// `bind_control_target`).
    pub(crate) fn bind(&self, bound: Bound, handle: Option<TargetHandle>) {
        *self.bound.lock() = bound;
        self.md.write().hooks_mut().handle = handle;
    }

    /// The bound features.
    pub(crate) fn features(&self) -> Bound {
        *self.bound.lock()
    }

    /// Suspends the mapped device of every thin of the pool (upstream's
    /// `pool_suspend_active_thins`), so that no thin I/O reaches the pool
    /// while it is suspended; kept until [`Self::resume_active_thins`].
    ///
    /// For the pool's presuspend, in the process that suspends the pool:
    /// each suspend waits for the thin's in-flight bios, which may need
    /// the worker, so no pool lock is held meanwhile.
    pub(crate) fn suspend_active_thins(&self) {
        self.suspended.store(true, Ordering::SeqCst);
        let handles = {
            let thins = self.thins.lock();
            let Ok(mut handles) = PVec::try_with_capacity(thins.len()) else {
                pr_err!("thin-pool: no memory to suspend the thin devices\n");
                return;
            };
            for t in thins.iter() {
                // One suspend per device, whose live and inactive tables
                // are both listed. Capacity is reserved: cannot fail.
                if !handles.iter().any(|(k, _)| *k == t.md_key) {
                    let _ = handles.try_push((t.md_key, t.handle.clone()));
                }
            }
            handles
        };
        let Ok(mut suspended) = PVec::try_with_capacity(handles.len()) else {
            pr_err!("thin-pool: no memory to suspend the thin devices\n");
            return;
        };
        // A thin gone meanwhile (destructor, device being freed) is skipped.
        for (key, h) in handles.iter() {
            let Some(md) = h.mapped_device() else {
                continue;
            };
            let guard = md.internal_suspend_noflush();
            if h.mapped_device().is_none() {
                // Its destroy began meanwhile and may have passed the
                // presuspend that forgets the suspend: let it go now.
                guard.abandon();
                continue;
            }
            // Capacity is reserved: cannot fail (a failure would resume).
            let _ = suspended.try_push((*key, guard));
        }
        let earlier = core::mem::replace(&mut *self.suspended_thins.lock(), suspended);
        // A suspend that was never resumed (not expected): resumed here,
        // outside the lock.
        drop(earlier);
    }

    /// Resumes the thins [`Self::suspend_active_thins`] suspended
    /// (upstream's `pool_resume_active_thins`), outside the pool's locks,
    /// and lets new thins in again.
    pub(crate) fn resume_active_thins(&self) {
        let suspended = core::mem::take(&mut *self.suspended_thins.lock());
        drop(suspended);
        self.suspended.store(false, Ordering::SeqCst);
    }

    /// Whether the pool is suspended (new thins are refused).
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// The thin device `md_key` is being destroyed while the pool keeps it
    /// suspended: its device reference goes now, so dm core's destroy need
    /// not wait for the pool's resume, and the device is never resumed (as
    /// upstream).
    pub(crate) fn forget_suspended_thin(&self, md_key: DevKey) {
        let found = {
            let mut suspended = self.suspended_thins.lock();
            let i = suspended.iter().position(|(k, _)| *k == md_key);
            i.and_then(|i| suspended.remove(i))
        };
        if let Some((_, guard)) = found {
            guard.abandon();
        }
    }
}

impl PoolOwner {
    /// Stops the periodic commit and waits for a run in progress (the
    /// pool's postsuspend, as upstream cancels its waker).
    pub(crate) fn stop_commit_timer(&self) {
        if let Some(t) = &self.timer {
            t.cancel_sync();
        }
    }

    /// Restarts the periodic commit (a no-op if it is running).
    pub(crate) fn start_commit_timer(&self) {
        if let Some(t) = &self.timer {
            t.queue(msecs_to_jiffies(COMMIT_PERIOD_MS));
        }
    }
}

impl Drop for PoolOwner {
    fn drop(&mut self) {
        // Stop the timer, then the worker and every copy job; only then
        // is this the last `Arc<Pool>` (see the module comment).
        drop(self.timer.take());
        self.pool.wq.flush();
        let kc = self.pool.kcopyd.lock().take();
        drop(kc);
        self.pool.wq.flush();
        let mut md = self.pool.md.write();
        md.hooks_mut().handle = None;
        if let Err(e) = noio_scope(|| md.close()) {
            pr_err!("thin-pool: closing the metadata failed: {}\n", e.name());
        }
    }
}
