// SPDX-License-Identifier: GPL-2.0

//! The snapshots of each origin (upstream's `_origins` table and
//! `__origin_write`): a snapshot registers under its origin device when it
//! is constructed, and every write to that origin first has the chunk it
//! touches copied to each registered snapshot that has no exception for it.

use super::chunk_copy::ChunkCopies;
use super::exceptions::{SnapCore, Waiter};
use super::merge_target::SnapshotMerge;
use super::origin::Origin;
use super::store::{until_known, Exception, ExceptionStore, Published, Scope, WaiterKind};
use super::throttle::ThrottledBio;
use crate::dm::engine_alloc::PVec;
use crate::dm::noio::noio_scope;
use crate::dm::registry::{DevKey, Registered, Registry};
use crate::dm::sync::{new_mutex, sleep_ms, Mutex};
use crate::dm::{BioList, DmDev, HeldBio};
use crate::persistent_data::{Error as PdError, Result as PdResult};
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::new_condvar;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar};

/// The snapshots of one origin device.
#[pin_data]
pub(crate) struct OriginEntry {
    #[pin]
    snapshots: Mutex<PVec<Arc<SnapCore>>>,
    /// The list as origin writes read it, rebuilt (under `snapshots`)
    /// whenever it changes, so that a write takes a reference instead of
    /// copying the list.
    #[pin]
    view: Mutex<Published<Arc<SnapView>>>,
    /// Copies to this origin's snapshots that settled (committed,
    /// abandoned, or handed over), counted while a merge waits for them
    /// (upstream's `_pending_exceptions_done_count`, per origin).
    #[pin]
    settled: Mutex<u64>,
    /// Signalled when `settled` grows.
    #[pin]
    settled_grew: CondVar,
    /// How many snapshots the list holds, as last published: read without
    /// a lock by writes to an origin that has none.
    count: AtomicUsize,
}

/// The snapshots of an origin at one moment, and their smallest chunk
/// size; never empty.
pub(crate) struct SnapView {
    list: PVec<Arc<SnapCore>>,
    /// Sectors.
    pub(crate) min_chunk: u32,
}

impl core::ops::Deref for SnapView {
    type Target = [Arc<SnapCore>];

    fn deref(&self) -> &[Arc<SnapCore>] {
        &self.list
    }
}

impl SnapView {
    /// A view of `list`; `None` if it is empty.
    fn of(list: &[Arc<SnapCore>]) -> Result<Option<Arc<SnapView>>> {
        if list.is_empty() {
            return Ok(None);
        }
        let mut copy = PVec::try_with_capacity(list.len()).map_err(|_| ENOMEM)?;
        let mut min_chunk = u32::MAX;
        for s in list.iter() {
            min_chunk = min_chunk.min(s.chunk.sectors());
            copy.try_push(s.clone()).map_err(|_| ENOMEM)?;
        }
        let view = Arc::new(
            SnapView {
                list: copy,
                min_chunk,
            },
            GFP_KERNEL,
        )?;
        Ok(Some(view))
    }
}

impl OriginEntry {
    /// Publishes `list` (the `snapshots` it holds locked) as the view, and
    /// returns it; `NoMem` if it could not be built (it is then rebuilt by
    /// the next write).
    fn publish(&self, list: &[Arc<SnapCore>]) -> PdResult<Option<Arc<SnapView>>> {
        self.count.store(list.len(), Ordering::Release);
        let alone = list.len() == 1;
        for s in list {
            s.set_alone(alone);
        }
        let built = noio_scope(|| SnapView::of(list)).map_err(|_| PdError::NoMem);
        let mut view = self.view.lock();
        let old = core::mem::replace(&mut *view, Published::Stale);
        let seen = view.publish(built);
        // The old view is dropped after the lock is released.
        drop(view);
        drop(old);
        seen
    }

    /// The snapshots: `Ok(None)` if there are none, `NoMem` if there was
    /// no memory to tell (never to be taken for "none").
    fn try_snapshots(&self) -> PdResult<Option<Arc<SnapView>>> {
        if let Some(known) = self.view.lock().known() {
            return Ok(known);
        }
        let list = self.snapshots.lock();
        self.publish(&list)
    }

    /// True if the list held no snapshot when last published (a snapshot
    /// joining right after is as one joining after the caller's write:
    /// reading the list under its lock has the same window).
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// The snapshots, if there are any; sleeps until there is memory to
    /// tell (an origin write must not pass snapshots it could not see).
    #[inline]
    pub(crate) fn snapshots(&self) -> Option<Arc<SnapView>> {
        // Nearly always published: one lock, no call.
        if let Some(known) = self.view.lock().known() {
            return known;
        }
        self.snapshots_slow()
    }

    #[inline(never)]
    fn snapshots_slow(&self) -> Option<Arc<SnapView>> {
        until_known(|| self.try_snapshots(), sleep_ms)
    }
}

/// Merges waiting in [`wait_for_copies`]: while there are none, a settled
/// copy costs no lookup.
static MERGES_WAITING: AtomicUsize = AtomicUsize::new(0);

/// Every origin with snapshots, keyed by the origin device.
static ORIGINS: Registry<DevKey, OriginEntry> = Registry::new();

/// A snapshot's registration with its origin; dropping it (in the
/// snapshot's destructor) takes the snapshot off the origin's list.
pub(crate) struct Registration {
    core: Arc<SnapCore>,
    entry: Registered<DevKey, OriginEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut list = self.entry.snapshots.lock();
        if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, &self.core)) {
            let _ = list.remove(i);
        }
        self.core.set_alone(false);
        // On failure the next write rebuilds it.
        let _ = self.entry.publish(&list);
    }
}

/// The snapshots of one origin on one COW device (upstream's
/// `__find_snapshots_sharing_cow`): at most two, a live one and one loaded
/// in a new table waiting to take its exceptions over on resume.
#[derive(Default)]
pub(crate) struct Sharing {
    /// How many snapshots use the COW device.
    pub(crate) count: usize,
    /// The active one (the handover source).
    pub(crate) src: Option<Arc<SnapCore>>,
    /// One not yet resumed (the handover destination).
    pub(crate) dest: Option<Arc<SnapCore>>,
    /// A `snapshot-merge` of the origin (on any COW device).
    pub(crate) merging: Option<Arc<SnapCore>>,
}

/// Why a snapshot cannot join its origin's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A handover is already waiting on the COW device (or the list
    /// changed while the snapshot was built).
    Pairing,
    /// A `snapshot-merge` would take over while another one merges.
    AlreadyMerging,
    /// A `snapshot-merge` would take over a store that cannot merge.
    CannotMerge,
    /// No memory.
    NoMem,
}

impl Sharing {
    fn of(list: &[Arc<SnapCore>], cow: DevKey) -> Self {
        let mut found = Sharing::default();
        for s in list.iter() {
            if s.merging {
                found.merging = Some(s.clone());
            }
            if DevKey::of(&s.cow) != cow {
                continue;
            }
            if s.state.lock().active {
                found.src = Some(s.clone());
            } else {
                found.dest = Some(s.clone());
            }
            found.count += 1;
        }
        found
    }

    /// Upstream's `__validate_exception_handover` for a new snapshot
    /// (`merging` for `snapshot-merge`): the snapshot it takes over from,
    /// if any.
    fn validate(self, merging: bool) -> core::result::Result<Option<Arc<SnapCore>>, Refusal> {
        if self.count == 2 || self.dest.is_some() {
            return Err(Refusal::Pairing);
        }
        let Some(src) = self.src else {
            return Ok(None);
        };
        if merging {
            if self.merging.is_some() {
                return Err(Refusal::AlreadyMerging);
            }
            if !ExceptionStore::<Exception>::supports_merge(&src.state.lock().store) {
                return Err(Refusal::CannotMerge);
            }
        }
        Ok(Some(src))
    }
}

/// The snapshots of `origin` on `cow`.
pub(crate) fn sharing(origin: &DmDev, cow: &DmDev) -> Sharing {
    match ORIGINS.lookup(DevKey::of(origin)) {
        Some(entry) => Sharing::of(&entry.snapshots.lock(), DevKey::of(cow)),
        None => Sharing::default(),
    }
}

/// The live snapshot of `origin` on `cow` a new snapshot table (a
/// `snapshot-merge` one if `merging`) would take over from on resume.
pub(crate) fn handover_source(
    origin: &DmDev,
    cow: &DmDev,
    merging: bool,
) -> core::result::Result<Option<Arc<SnapCore>>, Refusal> {
    sharing(origin, cow).validate(merging)
}

/// Registers `core` with its origin, `src` being what
/// [`handover_source`] found when `core` was built; refused as that would
/// be now, or if the source changed since.
pub(crate) fn register(
    core: &Arc<SnapCore>,
    src: Option<&Arc<SnapCore>>,
) -> core::result::Result<Registration, Refusal> {
    let entry = entry_for(&core.origin).map_err(|_| Refusal::NoMem)?;
    {
        let mut list = entry.snapshots.lock();
        let now = Sharing::of(&list, DevKey::of(&core.cow)).validate(core.merging)?;
        let same = match (&now, src) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same {
            return Err(Refusal::Pairing);
        }
        // Appended: a handover source always comes before its destination
        // in the list, which the handover relies on.
        list.try_push(core.clone()).map_err(|_| Refusal::NoMem)?;
        // On failure the next write rebuilds it.
        let _ = entry.publish(&list);
    }
    Ok(Registration {
        core: core.clone(),
        entry,
    })
}

/// The entry of `origin`'s snapshots, made if it has none: a
/// `snapshot-origin` target keeps it for its writes, and each snapshot
/// for its registration.
pub(crate) fn entry_for(origin: &DmDev) -> Result<Registered<DevKey, OriginEntry>> {
    let key = DevKey::of(origin);
    loop {
        if let Some(r) = ORIGINS.join(key) {
            return Ok(r);
        }
        let fresh = Arc::pin_init(
            pin_init!(OriginEntry {
                snapshots <- new_mutex!(PVec::new(), "snapshot_origin_list"),
                view <- new_mutex!(Published::Empty, "snapshot_origin_view"),
                settled <- new_mutex!(0, "snapshot_origin_settled"),
                settled_grew <- new_condvar!("snapshot_origin_settled_grew"),
                count: AtomicUsize::new(0),
            }),
            GFP_KERNEL,
        )?;
        match ORIGINS.insert(key, fresh) {
            Ok(r) => return Ok(r),
            Err(e) if e == EEXIST => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The snapshots of `origin`, if it has any; may sleep, until there is
/// memory to tell.
pub(crate) fn snapshots_of(origin: &DmDev) -> Option<Arc<SnapView>> {
    ORIGINS.lookup(DevKey::of(origin))?.snapshots()
}

/// A write to the origin: through `snapshot-origin`, or through a
/// `snapshot-merge` target for a chunk it has no exception for.
pub(crate) enum OriginBio {
    /// From `snapshot-origin`.
    Origin(HeldBio<Origin>),
    /// From `snapshot-merge`.
    Merge(HeldBio<SnapshotMerge>),
}

impl OriginBio {
    /// Its first sector (on the origin device).
    pub(crate) fn sector(&self) -> u64 {
        match self {
            OriginBio::Origin(b) => b.sector(),
            OriginBio::Merge(b) => b.sector(),
        }
    }

    /// Sends it to `dev` at `sector`.
    pub(crate) fn submit_to(self, dev: &DmDev, sector: u64) {
        match self {
            OriginBio::Origin(b) => b.submit_to(dev, sector),
            OriginBio::Merge(b) => b.submit_to(dev, sector),
        }
    }
}

/// Origin writes of either kind, held together without allocating.
#[derive(Default)]
pub(crate) struct OriginBios {
    origin: BioList<Origin>,
    merge: BioList<SnapshotMerge>,
}

impl OriginBios {
    /// Adds `b`.
    pub(crate) fn push(&mut self, b: OriginBio) {
        match b {
            OriginBio::Origin(b) => self.origin.push(b),
            OriginBio::Merge(b) => self.merge.push(b),
        }
    }

    /// Takes every bio out, leaving this empty.
    pub(crate) fn take_all(&mut self) -> Self {
        OriginBios {
            origin: self.origin.take_all(),
            merge: self.merge.take_all(),
        }
    }

    /// True when it holds none.
    pub(crate) fn is_empty(&self) -> bool {
        self.origin.is_empty() && self.merge.is_empty()
    }
}

impl Iterator for OriginBios {
    type Item = OriginBio;

    fn next(&mut self) -> Option<OriginBio> {
        self.origin
            .pop()
            .map(OriginBio::Origin)
            .or_else(|| self.merge.pop().map(OriginBio::Merge))
    }
}

/// Makes origin sector `sector` safe to overwrite (upstream's
/// `__origin_write`): starts the copy of its chunk to each snapshot without
/// an exception for it, and parks `bio` (if given) on one of those copies
/// (it comes back through [`retry`] once that copy is committed, and is
/// checked again). Snapshots of one chunk size get their copies from one
/// kcopyd job, which reads the chunk once ([`ChunkCopies`]); the copy the
/// bio parks on is started last, so the others are usually committed by
/// the time it comes back, and one retry finds nothing left to wait for.
/// Returns the bio if it may be submitted now, and whether some copy of
/// the chunk is in flight. The bio lies within one chunk of every
/// snapshot. Merging snapshots get no new exceptions.
pub(crate) fn origin_write(
    snapshots: &[Arc<SnapCore>],
    sector: u64,
    bio: Option<OriginBio>,
) -> (Option<OriginBio>, bool) {
    let mut bio = bio;
    let mut in_flight = false;
    let mut start_last = None;
    // Empty (a few words set, nothing to drop) until the first copy.
    let mut shared = ChunkCopies::new();
    for s in snapshots {
        if sector >= s.len || s.merging {
            continue;
        }
        let chunk = s.chunk.to_chunk(sector);
        let mut parked = false;
        let need = {
            let mut st = s.state.lock();
            if st.handing_over {
                // Its exceptions are moving to a new table: wait for that
                // (retried once the new table has them).
                if let Some(b) = bio.take() {
                    st.handover_held.push(b);
                }
                in_flight = true;
                continue;
            }
            if !st.active || st.health.invalid || st.table.lookup(chunk).is_some() {
                continue;
            }
            let waiter = bio.take().map(|b| (WaiterKind::Origin, Waiter::Origin(b)));
            let had_bio = waiter.is_some();
            let mut need = st.need_copy(chunk, Scope::Origin, waiter);
            if let Some(Waiter::Origin(b)) = need.refused.take() {
                if need.in_flight {
                    // No memory to wait on the copy: give up on this
                    // snapshot.
                    need.invalidated |= st.invalidate();
                }
                bio = Some(b);
            }
            // (A snapshot waiter is never given here.)
            if need.in_flight {
                in_flight = true;
                parked = had_bio && bio.is_none();
            }
            need
        };
        if let Some(new) = need.start {
            match shared.add(s, chunk, new) {
                Ok(()) => {}
                Err(new) if parked => start_last = Some((s, chunk, new)),
                Err(new) => s.start_copy(chunk, new),
            }
        }
        if need.invalidated {
            s.record_invalid();
        }
    }
    shared.start();
    if let Some((s, chunk, new)) = start_last {
        s.start_copy(chunk, new);
    }
    (bio, in_flight)
}

/// True if a write at origin sector `sector` needs nothing of any of
/// `snapshots`: none is over its copy limit, and each has the chunk copied
/// already or takes no copies (inactive, invalid, merging, or shorter).
/// Such a write goes on to the origin at once, unheld; it allocates
/// nothing. A snapshot handing its exceptions over is never passed here.
#[inline]
pub(crate) fn nothing_to_copy(snapshots: &[Arc<SnapCore>], sector: u64) -> bool {
    snapshots.iter().all(|s| {
        if s.over_limit() {
            return false;
        }
        if sector >= s.len || s.merging {
            return true;
        }
        let chunk = s.chunk.to_chunk(sector);
        let st = s.state.lock();
        !st.handing_over && (!st.active || st.health.invalid || st.table.lookup(chunk).is_some())
    })
}

/// A write through `snapshot-origin` (upstream's `do_origin` with its
/// limit): parked on the first snapshot with too many copies in flight
/// (mapped again by [`origin_write_again`]), else as [`origin_write`].
#[inline]
pub(crate) fn origin_write_limited(
    snapshots: &[Arc<SnapCore>],
    sector: u64,
    bio: HeldBio<Origin>,
) -> Option<OriginBio> {
    let mut bio = bio;
    for s in snapshots {
        // Most writes find no snapshot over its limit: no call.
        if !s.over_limit() {
            continue;
        }
        match s.throttle(bio, ThrottledBio::Origin) {
            Ok(()) => return None,
            Err(b) => bio = b,
        }
    }
    origin_write(snapshots, sector, Some(OriginBio::Origin(bio))).0
}

/// A `snapshot-origin` write parked on a snapshot's limit, mapped again.
pub(crate) fn origin_write_again(origin: &DmDev, bio: HeldBio<Origin>) {
    let sector = bio.sector();
    let bio = match snapshots_of(origin) {
        Some(list) => origin_write_limited(&list, sector, bio),
        None => Some(OriginBio::Origin(bio)),
    };
    if let Some(b) = bio {
        b.submit_to(origin, sector);
    }
}

/// Origin writes whose copy was committed: checked again, and submitted to
/// `origin` when no other copy is needed.
pub(crate) fn retry(origin: &DmDev, bios: OriginBios) {
    if bios.is_empty() {
        return;
    }
    // From a copy's completion: no allocation may recurse into I/O.
    noio_scope(|| retry_noio(origin, bios))
}

/// As [`retry`], with the origin's snapshot list at hand.
pub(crate) fn retry_on(entry: &OriginEntry, origin: &DmDev, bios: OriginBios) {
    if bios.is_empty() {
        return;
    }
    noio_scope(|| retry_with(entry.snapshots(), origin, bios))
}

fn retry_noio(origin: &DmDev, bios: OriginBios) {
    retry_with(snapshots_of(origin), origin, bios)
}

fn retry_with(snapshots: Option<Arc<SnapView>>, origin: &DmDev, bios: OriginBios) {
    for b in bios {
        let sector = b.sector();
        let b = match &snapshots {
            Some(list) => origin_write(list, sector, Some(b)).0,
            None => Some(b),
        };
        if let Some(b) = b {
            b.submit_to(origin, sector);
        }
    }
}

/// Starts the copies the origin chunks of `sectors` sectors from `sector`
/// need in the other snapshots before a merge overwrites them (upstream's
/// `origin_write_extent`); true while some are in flight.
fn origin_write_extent(origin: &DmDev, sector: u64, sectors: u64) -> bool {
    let Some(snapshots) = snapshots_of(origin) else {
        return false;
    };
    // Only the merging snapshot (the usual case): nothing to copy.
    if snapshots.iter().all(|s| s.merging) {
        return false;
    }
    let min_chunk = snapshots.min_chunk;
    let mut in_flight = false;
    let mut n = 0;
    while n < sectors {
        in_flight |= origin_write(&snapshots, sector + n, None).1;
        n += u64::from(min_chunk);
    }
    in_flight
}

/// Has the other snapshots of `origin` copy the origin chunks of `sectors`
/// sectors from `sector` and waits, sleeping, until none of those copies is
/// in flight (upstream's wait in `snapshot_merge_next_chunks`): after each
/// copy of the origin that settles, the extent is checked again. Process
/// context.
pub(crate) fn wait_for_copies(origin: &DmDev, sector: u64, sectors: u64) {
    let Some(entry) = ORIGINS.lookup(DevKey::of(origin)) else {
        return;
    };
    // Counted before the first check: a copy settling after it is seen.
    MERGES_WAITING.fetch_add(1, Ordering::SeqCst);
    loop {
        let seen = *entry.settled.lock();
        if !origin_write_extent(origin, sector, sectors) {
            break;
        }
        let mut settled = entry.settled.lock();
        while *settled == seen {
            entry.settled_grew.wait(&mut settled);
        }
    }
    MERGES_WAITING.fetch_sub(1, Ordering::SeqCst);
}

/// A copy to a snapshot of `origin` settled (its pending exception is gone
/// from the snapshot's state, or the snapshot's handover ended): wakes the
/// merges waiting in [`wait_for_copies`]. Call it with no snapshot state
/// lock held.
pub(crate) fn copy_settled(origin: &DmDev) {
    if MERGES_WAITING.load(Ordering::SeqCst) == 0 {
        return;
    }
    if let Some(entry) = ORIGINS.lookup(DevKey::of(origin)) {
        let mut settled = entry.settled.lock();
        *settled = settled.wrapping_add(1);
        entry.settled_grew.notify_all();
    }
}
