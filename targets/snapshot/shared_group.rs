// SPDX-License-Identifier: GPL-2.0

//! The plumbing of the shared exception store
//! (`snapshot <origin> shared 3 <COW> <chunk> <id>`): one [`SharedGroup`]
//! per COW device, shared by every snapshot target using it.
//!
//! `map` decides on the in-core [`SharedTable`] (under `state`, never
//! sleeping): snapshot reads go to their copy or the origin, a write to a
//! snapshot's own copy goes there; everything that needs a copy (a
//! snapshot write without its own copy, an origin write to a chunk some
//! valid member has no exception for) is held and queued on the group's
//! ordered workqueue. The worker handles one request at a time, with the
//! store (sleeping metadata I/O, under `store`): it copies the chunk with
//! kcopyd (waiting for it), records the exception, commits, updates the
//! in-core table and only then lets the held write go. One queue per
//! COW device keeps it simple: requests for one chunk are done in order,
//! and an origin write queued behind a snapshot's copy of the origin chunk
//! waits for it.
//!
//! Lock order: `store`, then `state`; `map` takes only `state`.

use super::exceptions::SnapCore;
use super::origins::{self, OriginBio, OriginBios};
use super::snap::Snapshot;
use super::store::exception_store::Usage;
use super::store::{
    until_known, Chunk, ChunkSize, CowCopy, IdMask, SharedException, SharedSpec, SharedStore,
    SharedTable, SnapId, SnapshotWrite,
};
use crate::dm::bufio::BufioClient;
use crate::dm::engine_alloc::PVec;
use crate::dm::kcopyd::{CopyResult, KcopydClient};
use crate::dm::noio::noio_scope;
use crate::dm::region::Region;
use crate::dm::registry::{DevKey, Registered, Registry};
use crate::dm::sync::{new_mutex, sleep_ms, Mutex};
use crate::dm::workqueue::{Concurrency, WorkQueue};
use crate::dm::{BlkStatus, DmDev, HeldBio};
use crate::persistent_data::{Error as PdError, Result as PdResult};
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::c_str;
use kernel::new_condvar;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar};
use kernel::workqueue::{impl_has_work, new_work, Work, WorkItem};

/// Why a shared snapshot could not be constructed.
pub(crate) enum CtrError {
    NoMem,
    Metadata,
    OtherOrigin,
    ChunkSize,
    IdInUse,
    Closing,
}

/// The kcopyd client and the request queue.
struct Workers {
    kcopyd: KcopydClient,
    wq: WorkQueue,
}

/// A target using the group.
struct User {
    id: SnapId,
    /// The mapped device (a reload of the same device may hold the id
    /// twice for a while).
    md: DevKey,
    /// Its core, for the snapshot reads it sends to the origin.
    core: Arc<SnapCore>,
}

/// What `map` reads (the in-core view of the last commit).
pub(crate) struct GroupState {
    table: SharedTable,
    members: IdMask,
    /// Valid members: those origin writes copy for.
    live: IdMask,
    usage: Usage,
    users: PVec<User>,
    /// The last user left: the workers are gone.
    closed: bool,
    /// Held writes for the worker, oldest first.
    queue: PVec<Request>,
    /// A worker item is serving `queue`.
    draining: bool,
    /// Ids destroyed (`ES_DESTROY`) while a target of theirs is loaded:
    /// those targets stay invalid (a later resume does not make the id a
    /// member again; a new table does).
    destroyed: IdMask,
    /// The worker could not be started: every snapshot is invalid, which
    /// the store records when the group closes.
    broken: bool,
}

/// One shared store and its copies.
#[pin_data]
pub(crate) struct SharedGroup {
    origin: DmDev,
    cow: DmDev,
    chunk: ChunkSize,
    #[pin]
    store: Mutex<SharedStore<BufioClient>>,
    #[pin]
    state: Mutex<GroupState>,
    #[pin]
    workers: Mutex<Option<Workers>>,
    /// Serves `queue` on the workers' queue: queued without allocating, so
    /// a request is never left unserved for want of memory.
    #[pin]
    work: Work<SharedGroup>,
}

impl_has_work! {
    impl HasWork<Self> for SharedGroup { self.work }
}

impl WorkItem for SharedGroup {
    type Pointer = Arc<SharedGroup>;

    fn run(this: Arc<SharedGroup>) {
        // The copies and commits run on a reclaim path too.
        noio_scope(|| this.drain());
    }
}

/// The groups, by COW device.
static GROUPS: Registry<DevKey, SharedGroup> = Registry::new();

/// The groups of one origin, one entry per target using them.
#[pin_data]
pub(crate) struct OriginGroups {
    #[pin]
    list: Mutex<PVec<Arc<SharedGroup>>>,
}

/// By origin device.
static ORIGIN_GROUPS: Registry<DevKey, OriginGroups> = Registry::new();

/// Groups listed under origins, all origins together: while there are
/// none, an origin write skips the lookup. (A group is listed while its
/// origin is suspended, so no write is in flight that could miss it.)
static LISTED: AtomicUsize = AtomicUsize::new(0);

/// A snapshot target's hold on its group.
pub(crate) struct SharedSnap {
    pub(crate) id: SnapId,
    group: Registered<DevKey, SharedGroup>,
    listed: Registered<DevKey, OriginGroups>,
    core: Arc<SnapCore>,
}

/// Metadata blocks the store's bufio client uses.
const METADATA_BLOCK: u32 = 4096;

impl SharedGroup {
    /// Opens the store on `cow` and reads its exceptions.
    fn open(origin: &DmDev, cow: &DmDev, chunk: ChunkSize) -> Result<Arc<Self>, CtrError> {
        let client = BufioClient::new(cow, METADATA_BLOCK).map_err(|_| CtrError::NoMem)?;
        let store = SharedStore::open(client, chunk, cow.nr_sectors()).map_err(|e| match e {
            PdError::NoMem => CtrError::NoMem,
            _ => CtrError::Metadata,
        })?;
        let chunks = cow.nr_sectors() / u64::from(chunk.sectors());
        let mut table = SharedTable::new(super::store::ExceptionTable::buckets_for(chunks))
            .map_err(|_| CtrError::NoMem)?;
        store
            .for_each_exception(&mut |e| table.insert(e))
            .map_err(|_| CtrError::Metadata)?;
        let state = GroupState {
            table,
            members: store.members(),
            live: store.live(),
            usage: store.usage(),
            users: PVec::new(),
            closed: false,
            queue: PVec::new(),
            draining: false,
            destroyed: IdMask::EMPTY,
            broken: false,
        };
        let workers = Workers {
            kcopyd: KcopydClient::new(100).map_err(|_| CtrError::NoMem)?,
            wq: WorkQueue::new(c_str!("dmrs_shared"), Concurrency::Ordered)
                .map_err(|_| CtrError::NoMem)?,
        };
        Arc::pin_init(
            pin_init!(SharedGroup {
                origin: origin.clone(),
                cow: cow.clone(),
                chunk,
                store <- new_mutex!(store, "shared_store"),
                state <- new_mutex!(state, "shared_state"),
                workers <- new_mutex!(Some(workers), "shared_workers"),
                work <- new_work!("shared_drain"),
            }),
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::NoMem)
    }

    /// The chunk size.
    pub(crate) fn chunk(&self) -> ChunkSize {
        self.chunk
    }

    /// Copies `from` to `to` and waits for it; true on success.
    fn copy_sync(&self, from: Region, to: Region) -> bool {
        let Ok(wait) = Arc::pin_init(
            pin_init!(CopyWait {
                result <- new_mutex!(None, "shared_copy_result"),
                done <- new_condvar!("shared_copy_done"),
            }),
            GFP_KERNEL,
        ) else {
            return false;
        };
        let w = wait.clone();
        let done = move |r: CopyResult| {
            *w.result.lock() = Some(r.is_ok());
            w.done.notify_all();
        };
        let submitted = {
            let workers = self.workers.lock();
            match &*workers {
                Some(k) => k.kcopyd.copy(&from, &[to], done).is_ok(),
                None => false,
            }
        };
        if !submitted {
            return false;
        }
        let mut r = wait.result.lock();
        while r.is_none() {
            wait.done.wait(&mut r);
        }
        r.unwrap_or(false)
    }

    /// The region of `dev` holding chunk `c` (cut at the origin's end).
    fn chunk_region(&self, dev: &DmDev, c: Chunk, limit: u64) -> Option<Region> {
        let from = self.chunk.to_sector(c)?;
        let count = limit.checked_sub(from)?.min(self.chunk.sectors().into());
        Region::new(dev.clone(), from, count).ok()
    }

    /// Copies origin chunk `old` (or COW chunk `src`) to COW chunk `cow`.
    fn copy_chunk(&self, old: Chunk, src: Option<Chunk>, cow: Chunk) -> bool {
        let limit = self.origin.nr_sectors();
        let Some(count_from) = self.chunk.to_sector(old) else {
            return false;
        };
        let count = match limit.checked_sub(count_from) {
            Some(left) => left.min(self.chunk.sectors().into()),
            None => return false,
        };
        let from = match src {
            Some(s) => self
                .chunk
                .to_sector(s)
                .and_then(|f| Region::new(self.cow.clone(), f, count).ok()),
            None => self.chunk_region(&self.origin, old, limit),
        };
        let to = self
            .chunk
            .to_sector(cow)
            .and_then(|t| Region::new(self.cow.clone(), t, count).ok());
        match (from, to) {
            (Some(f), Some(t)) => self.copy_sync(f, t),
            _ => false,
        }
    }

    /// Commits and publishes the store's view to `map`: the caller's
    /// table change `update` is applied only if the commit succeeded; if
    /// it fails the in-core table no longer matches the store and the
    /// group breaks (every snapshot invalid) rather than serve a wrong
    /// read. Raises a table event on every user if validity changed.
    fn commit(
        &self,
        store: &mut SharedStore<BufioClient>,
        update: impl FnOnce(&mut SharedTable) -> core::result::Result<(), PdError>,
    ) -> bool {
        self.publish(store, None, update)
    }

    /// [`Self::commit`] for a change to origin chunk `reads`: snapshot
    /// reads of it sent to the origin finish first, under the same `state`
    /// hold that publishes the change, so no origin write let through by
    /// the new view (`map`'s fast path or the held one) can overtake them.
    fn publish(
        &self,
        store: &mut SharedStore<BufioClient>,
        reads: Option<Chunk>,
        update: impl FnOnce(&mut SharedTable) -> core::result::Result<(), PdError>,
    ) -> bool {
        let ok = store.commit().is_ok();
        if !ok {
            pr_err!("shared snapshot store: commit failed, every snapshot of it is invalid\n");
        }
        let mut st = self.state.lock();
        if let Some(old) = reads {
            // Tracked reads end without `state`: this wait ends.
            for u in st.users.iter() {
                u.core.wait_for_tracked(old);
            }
        }
        if ok && update(&mut st.table).is_err() {
            pr_err!("shared snapshot store: in-core table update failed, invalidating\n");
            st.broken = true;
            // On disk now too, not only when the group closes.
            store.invalidate_store();
            let _ = store.commit();
        }
        // A broken group serves no snapshot (recorded when it closes).
        let live = if st.broken {
            IdMask::EMPTY
        } else {
            store.live()
        };
        let changed = st.live != live || st.members != store.members();
        st.members = store.members();
        st.live = live;
        st.usage = store.usage();
        if changed {
            for u in st.users.iter() {
                u.core.handle.table_event();
            }
        }
        ok
    }

    /// Worker: an origin write to `sector` that needs copies.
    fn origin_copy(&self, sector: u64, bio: OriginBio) {
        let old = self.chunk.to_chunk(sector);
        {
            let mut store = self.store.lock();
            let need = {
                let st = self.state.lock();
                st.live.without(st.table.covered(old))
            };
            if !need.is_empty() {
                let added = self.origin_exception(&mut store, old, need);
                if added.is_none() {
                    // The origin write goes on: the ids that needed the
                    // old contents must not read it as theirs.
                    for id in need.iter() {
                        store.invalidate_id(id);
                    }
                }
                self.publish(&mut store, Some(old), |t| match added {
                    Some(e) => t.insert(e),
                    None => Ok(()),
                });
            }
        }
        resubmit(&self.origin, sector, bio);
    }

    /// Copies origin chunk `old` for the ids in `need` and records the
    /// exception in the store (not yet committed), with room for it in
    /// the in-core table; `None` (the chunk given back) if any step fails.
    fn origin_exception(
        &self,
        store: &mut SharedStore<BufioClient>,
        old: Chunk,
        need: IdMask,
    ) -> Option<SharedException> {
        // Room in core before anything is committed.
        if self.state.lock().table.reserve(old).is_err() {
            pr_err!("Invalidating snapshot: Unable to allocate exception.\n");
            return None;
        }
        let cow = match store.reserve() {
            Ok(cow) => cow,
            Err(e) => {
                if e == PdError::NoSpace {
                    pr_err!("Invalidating snapshot: Unable to allocate exception.\n");
                }
                return None;
            }
        };
        if !self.copy_chunk(old, None, cow) {
            pr_err!("shared snapshot store: copy failed, invalidating snapshots\n");
            let _ = store.release(cow);
            return None;
        }
        if store.add_origin_exception(old, cow, need).is_err() {
            pr_err!(
                "shared snapshot store: recording an exception failed, invalidating snapshots\n"
            );
            let _ = store.release(cow);
            return None;
        }
        Some(SharedException {
            old,
            cow,
            share: need,
        })
    }

    /// Worker: a write by `id` that needs its own copy of the chunk.
    fn snapshot_copy(&self, id: SnapId, mut bio: HeldBio<Snapshot>) {
        let old = self.chunk.to_chunk(bio.sector());
        let target = {
            let mut store = self.store.lock();
            self.own_copy(&mut store, id, old)
        };
        match target.and_then(|cow| self.cow_sector(cow, bio.sector())) {
            Some(s) => {
                bio.per_bio_mut().cow_sector = s;
                bio.submit_to(&self.cow, s);
            }
            None => bio.end(BlkStatus::IO_ERROR),
        }
    }

    /// `id`'s own copy of `old`, made (and committed) if needed.
    fn own_copy(
        &self,
        store: &mut SharedStore<BufioClient>,
        id: SnapId,
        old: Chunk,
    ) -> Option<Chunk> {
        let src = match store.snapshot_write(id, old).ok()? {
            SnapshotWrite::Remap(cow) => return Some(cow),
            SnapshotWrite::CopyCow(src) => Some(src),
            SnapshotWrite::CopyOrigin => None,
        };
        let room = self.state.lock().table.reserve(old).is_ok();
        let cow = match store.reserve() {
            Ok(cow) if room => cow,
            reserved => {
                if let Ok(cow) = reserved {
                    let _ = store.release(cow);
                }
                pr_err!("Invalidating snapshot: Unable to allocate exception.\n");
                store.invalidate_id(id);
                self.commit(store, |_| Ok(()));
                return None;
            }
        };
        if !self.copy_chunk(old, src, cow) {
            pr_err!("Invalidating snapshot: Error reading/writing.\n");
            let _ = store.release(cow);
            store.invalidate_id(id);
            self.commit(store, |_| Ok(()));
            return None;
        }
        if store.add_snapshot_exception(id, old, cow).is_err() {
            pr_err!("Invalidating snapshot: recording an exception failed.\n");
            let _ = store.release(cow);
            store.invalidate_id(id);
            self.commit(store, |_| Ok(()));
            return None;
        }
        let own = SharedException {
            old,
            cow,
            share: id.mask(),
        };
        self.publish(store, Some(old), |t| {
            t.leave(id, old);
            // Room was reserved above.
            t.insert(own)
        })
        .then_some(cow)
    }

    /// Where `sector` of the chunk copied to COW chunk `cow` is.
    fn cow_sector(&self, cow: Chunk, sector: u64) -> Option<u64> {
        let offset = sector & u64::from(self.chunk.sectors() - 1);
        self.chunk.to_sector(cow)?.checked_add(offset)
    }

    /// An origin write to `sector` (`map` of the origin): `Some(bio)` if
    /// the group needs no copy for it, else the group holds it.
    pub(crate) fn origin_write(self: &Arc<Self>, sector: u64, bio: OriginBio) -> Option<OriginBio> {
        let old = self.chunk.to_chunk(sector);
        {
            let st = self.state.lock();
            if st.closed || st.live.without(st.table.covered(old)).is_empty() {
                return Some(bio);
            }
        }
        match self.enqueue(Request::Origin(sector, bio)) {
            Ok(()) => None,
            Err(Request::Origin(_, b)) => Some(b),
            Err(Request::Snap(_, b)) => {
                b.end(BlkStatus::IO_ERROR);
                None
            }
        }
    }

    /// Queues `r` for the worker; gives it back if the group is closing or
    /// broken. Sleeps while there is no memory to queue it: an origin
    /// write given back would pass the copy it needs (upstream's writes
    /// sleep in `mempool_alloc` too).
    fn enqueue(self: &Arc<Self>, r: Request) -> core::result::Result<(), Request> {
        let mut r = Some(r);
        let queued = until_known(
            || {
                let mut st = self.state.lock();
                if st.closed || st.broken {
                    return Ok(None);
                }
                st.queue.try_reserve(1).map_err(|_| PdError::NoMem)?;
                if let Some(r) = r.take() {
                    // Room was reserved: this push does not fail.
                    let _ = st.queue.try_push(r);
                }
                Ok(Some(!core::mem::replace(&mut st.draining, true)))
            },
            sleep_ms,
        );
        let Some(start) = queued else {
            return r.map_or(Ok(()), Err);
        };
        if start {
            // Queuing the group's own work item allocates nothing; if it
            // is queued already, that run serves this request too. Only a
            // group whose workers are gone (closing) cannot queue it.
            let queued = match &*self.workers.lock() {
                Some(w) => {
                    let _ = w.wq.enqueue(self.clone());
                    true
                }
                None => false,
            };
            if !queued {
                // Nothing will serve the queue: the snapshots are lost
                // (recorded on disk as the group closes), origin writes
                // go on, snapshot writes fail.
                pr_err!("shared snapshot store: no worker to queue a copy, invalidating\n");
                let queued = {
                    let mut st = self.state.lock();
                    st.broken = true;
                    st.live = IdMask::EMPTY;
                    st.draining = false;
                    core::mem::take(&mut st.queue)
                };
                let mut queued = queued;
                while let Some(r) = queued.remove(0) {
                    match r {
                        Request::Origin(sector, b) => resubmit(&self.origin, sector, b),
                        Request::Snap(_, b) => b.end(BlkStatus::IO_ERROR),
                    }
                }
            }
        }
        Ok(())
    }

    /// Worker: serves the queue until it is empty.
    fn drain(&self) {
        loop {
            let r = {
                let mut st = self.state.lock();
                match st.queue.remove(0) {
                    Some(r) => r,
                    None => {
                        st.draining = false;
                        return;
                    }
                }
            };
            match r {
                Request::Origin(sector, b) => self.origin_copy(sector, b),
                Request::Snap(id, b) => self.snapshot_copy(id, b),
            }
        }
    }

    /// `map` of a shared snapshot `id`, for a bio that is not an empty
    /// flush (those go to the COW device).
    pub(crate) fn map_snapshot(
        self: &Arc<Self>,
        id: SnapId,
        core: &SnapCore,
        mut bio: crate::dm::MapBio<'_, Snapshot>,
    ) -> crate::dm::MapResult {
        let sector = bio.sector();
        let old = self.chunk.to_chunk(sector);
        let copy = {
            let st = self.state.lock();
            if !st.live.has(id) {
                drop(st);
                return bio.kill();
            }
            let copy = st.table.lookup(id, old);
            if copy.is_none() && !bio.is_write() {
                // Tracked until it completes: an origin write copying
                // this chunk meanwhile waits for it.
                bio.per_bio_mut().tracked = core.track(old);
                drop(st);
                return bio.remap(&self.origin, sector);
            }
            if let Some(CowCopy { own: false, .. }) = copy {
                if !bio.is_write() {
                    // A chunk other snapshots share: once this snapshot
                    // has its own copy, the last one sharing it writes it
                    // in place, which waits (`publish`) for this read.
                    bio.per_bio_mut().tracked = core.track(old);
                }
            }
            copy
        };
        match copy {
            Some(CowCopy { cow, own }) if own || !bio.is_write() => {
                match self.cow_sector(cow, sector) {
                    Some(s) => bio.remap(&self.cow, s),
                    None => bio.kill(),
                }
            }
            _ => {
                let (held, result) = bio.hold();
                if let Err(Request::Snap(_, b)) = self.enqueue(Request::Snap(id, held)) {
                    b.end(BlkStatus::IO_ERROR);
                }
                result
            }
        }
    }

    /// First resume of `id`: it becomes a member, a snapshot of the origin
    /// as it is now (the origin is suspended meanwhile).
    pub(crate) fn join(&self, id: SnapId) -> Result {
        let mut store = self.store.lock();
        if store.members().has(id) || self.state.lock().destroyed.has(id) {
            return Ok(());
        }
        store.join(id).map_err(|_| EIO)?;
        if self.commit(&mut store, |_| Ok(())) {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// `ES_DESTROY`: `id` leaves the store, its own chunks are freed.
    pub(crate) fn destroy(&self, id: SnapId) -> Result {
        let mut store = self.store.lock();
        store.destroy(id).map_err(|_| EIO)?;
        {
            let mut st = self.state.lock();
            st.destroyed = st.destroyed.with(id.mask());
        }
        if self.commit(&mut store, |t| {
            t.forget(id);
            Ok(())
        }) {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// `ES_INVALIDATE`: the whole store goes invalid.
    pub(crate) fn invalidate(&self) -> Result {
        let mut store = self.store.lock();
        store.invalidate_store();
        if self.commit(&mut store, |_| Ok(())) {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// The status line of snapshot `id`.
    pub(crate) fn status(&self, id: SnapId) -> Option<Usage> {
        let st = self.state.lock();
        st.live.has(id).then_some(st.usage)
    }
}

/// A held write waiting for the worker.
enum Request {
    /// A write to the origin at this sector.
    Origin(u64, OriginBio),
    /// A write by this snapshot that needs its own copy.
    Snap(SnapId, HeldBio<Snapshot>),
}

/// Sends an origin write on once the group that held it is done with it:
/// through the other shared groups and the classic snapshots, then to the
/// origin.
fn resubmit(origin: &DmDev, sector: u64, bio: OriginBio) {
    let bio = match groups_of(origin) {
        Some((groups, _)) => origin_write(&groups, sector, bio),
        None => Some(bio),
    };
    if let Some(b) = bio {
        let mut bios = OriginBios::default();
        bios.push(b);
        origins::retry(origin, bios);
    }
}

/// A synchronous wait for one kcopyd copy.
#[pin_data]
struct CopyWait {
    #[pin]
    result: Mutex<Option<bool>>,
    #[pin]
    done: CondVar,
}

/// True once some shared store exists (a cheap check before
/// [`groups_of`]).
#[inline]
pub(crate) fn any_listed() -> bool {
    LISTED.load(Ordering::Acquire) != 0
}

/// The shared groups an origin write must go through, deduplicated, and
/// their smallest chunk size; `None` if there are none. May sleep, until
/// there is memory to tell (an origin write must not pass groups it could
/// not see).
#[inline]
pub(crate) fn groups_of(origin: &DmDev) -> Option<(PVec<Arc<SharedGroup>>, u32)> {
    // No shared store anywhere (most systems): no lookup, no call.
    if LISTED.load(Ordering::Acquire) == 0 {
        return None;
    }
    groups_of_listed(origin)
}

/// [`groups_of`] once some shared store exists; out of line, so that the
/// check above stays in the caller.
#[inline(never)]
fn groups_of_listed(origin: &DmDev) -> Option<(PVec<Arc<SharedGroup>>, u32)> {
    // Called from `map`: the list's allocation must not recurse into I/O.
    noio_scope(|| until_known(|| try_groups_of(origin), sleep_ms))
}

/// As [`groups_of`], but `NoMem` if there is no memory to tell now.
fn try_groups_of(origin: &DmDev) -> PdResult<Option<(PVec<Arc<SharedGroup>>, u32)>> {
    if LISTED.load(Ordering::Acquire) == 0 {
        return Ok(None);
    }
    let Some(entry) = ORIGIN_GROUPS.lookup(DevKey::of(origin)) else {
        return Ok(None);
    };
    let list = entry.list.lock();
    let mut out: PVec<Arc<SharedGroup>> = PVec::new();
    let mut min = u32::MAX;
    for g in list.iter() {
        if out.iter().any(|o| Arc::ptr_eq(o, g)) {
            continue;
        }
        min = min.min(g.chunk.sectors());
        out.try_push(g.clone()).map_err(|_| PdError::NoMem)?;
    }
    Ok((!out.is_empty()).then_some((out, min)))
}

/// An origin write through every shared group: `Some(bio)` once none
/// holds it.
pub(crate) fn origin_write(
    groups: &[Arc<SharedGroup>],
    sector: u64,
    bio: OriginBio,
) -> Option<OriginBio> {
    let mut bio = bio;
    for g in groups {
        bio = g.origin_write(sector, bio)?;
    }
    Some(bio)
}

impl SharedSnap {
    /// Joins (or opens) the group of `spec`'s COW device for a snapshot
    /// target of mapped device `md` whose core is `core`.
    pub(crate) fn new(
        spec: &SharedSpec<'_>,
        origin: &DmDev,
        cow: &DmDev,
        md: DevKey,
        core: &Arc<SnapCore>,
    ) -> core::result::Result<Self, CtrError> {
        let chunk = ChunkSize::new(spec.chunk_sectors, 1, 1).map_err(|_| CtrError::ChunkSize)?;
        let key = DevKey::of(cow);
        let group = loop {
            if let Some(r) = GROUPS.join(key) {
                break r;
            }
            let fresh = SharedGroup::open(origin, cow, chunk)?;
            match GROUPS.insert(key, fresh) {
                Ok(r) => break r,
                Err(e) if e == EEXIST => continue,
                Err(_) => return Err(CtrError::NoMem),
            }
        };
        if DevKey::of(&group.origin) != DevKey::of(origin) {
            return Err(CtrError::OtherOrigin);
        }
        if group.chunk != chunk {
            return Err(CtrError::ChunkSize);
        }
        let listed = list(origin, group.value())?;
        let user = User {
            id: spec.id,
            md,
            core: core.clone(),
        };
        let added = {
            let mut st = group.state.lock();
            if st.closed {
                Err(CtrError::Closing)
            } else if st.users.iter().any(|u| u.id == spec.id && u.md != md) {
                Err(CtrError::IdInUse)
            } else {
                // A new table of a destroyed id makes it a member again.
                st.destroyed = st.destroyed.without(spec.id.mask());
                st.users.try_push(user).map_err(|_| CtrError::NoMem)
            }
        };
        if let Err(e) = added {
            unlist(&listed, group.value());
            return Err(e);
        }
        Ok(SharedSnap {
            id: spec.id,
            group,
            listed,
            core: core.clone(),
        })
    }

    /// The group.
    pub(crate) fn group(&self) -> &Arc<SharedGroup> {
        self.group.value()
    }
}

impl Drop for SharedSnap {
    fn drop(&mut self) {
        let g = self.group.value().clone();
        unlist(&self.listed, &g);
        let last = {
            let mut st = g.state.lock();
            if let Some(i) = st
                .users
                .iter()
                .position(|u| Arc::ptr_eq(&u.core, &self.core))
            {
                st.users.remove(i);
            }
            st.closed = st.users.is_empty();
            st.closed
        };
        if !last {
            return;
        }
        // No new request is queued now; let the worker finish the queue
        // (it needs kcopyd), then stop it.
        while {
            let st = g.state.lock();
            st.draining || !st.queue.is_empty()
        } {
            sleep_ms(1);
        }
        let workers = g.workers.lock().take();
        drop(workers);
        if g.state.lock().broken {
            let mut store = g.store.lock();
            store.invalidate_store();
            let _ = store.commit();
        }
    }
}

/// Adds `group` to `origin`'s list (one entry per target).
fn list(
    origin: &DmDev,
    group: &Arc<SharedGroup>,
) -> core::result::Result<Registered<DevKey, OriginGroups>, CtrError> {
    let key = DevKey::of(origin);
    let entry = loop {
        if let Some(r) = ORIGIN_GROUPS.join(key) {
            break r;
        }
        let fresh = Arc::pin_init(
            pin_init!(OriginGroups {
                list <- new_mutex!(PVec::new(), "shared_origin_groups"),
            }),
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::NoMem)?;
        match ORIGIN_GROUPS.insert(key, fresh) {
            Ok(r) => break r,
            Err(e) if e == EEXIST => continue,
            Err(_) => return Err(CtrError::NoMem),
        }
    };
    entry
        .list
        .lock()
        .try_push(group.clone())
        .map_err(|_| CtrError::NoMem)?;
    LISTED.fetch_add(1, Ordering::AcqRel);
    Ok(entry)
}

/// Takes one of `group`'s entries out of an origin's list.
fn unlist(entry: &Registered<DevKey, OriginGroups>, group: &Arc<SharedGroup>) {
    let mut list = entry.list.lock();
    if let Some(i) = list.iter().position(|g| Arc::ptr_eq(g, group)) {
        list.remove(i);
        LISTED.fetch_sub(1, Ordering::AcqRel);
    }
}
