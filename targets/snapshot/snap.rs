// SPDX-License-Identifier: GPL-2.0

//! `snapshot <origin> <COW device> <P|PO|N> <chunk size> [0]` (also
//! `snapshot <origin> persistent|transient 2 <COW device> <chunk size>`):
//! the origin as it was when the snapshot was taken.
//!
//! Reads of a chunk with a completed exception go to its copy on the COW
//! device, others to the origin. A write first needs the chunk copied:
//! it allocates an exception, copies the origin chunk with kcopyd, commits
//! the exception and then goes to the copy; writes to a chunk whose copy is
//! in flight wait for it. The shared state is in
//! [`SnapCore`](super::exceptions::SnapCore).

use super::cow_io::CowIo;
use super::exceptions::{SnapCore, State, Waiter};
use super::features::Features;
use super::origins::{self, Refusal, Registration};
use super::shared_group::{CtrError, SharedSnap};
use super::store::{
    exception_store::fmt_table, BlockSizes, Chunk, ChunkSize, Exception, ExceptionStore,
    ExceptionTable, OpenError, Scope, SharedSpec, Store, StoreSpec, Tracked, Validity, WaiterKind,
};
use super::throttle::ThrottledBio;
use crate::dm::noio::noio_scope;
use crate::dm::{
    ArgSet, BioOp, BlkStatus, CtrResult, DeviceVisitor, DmDev, EndioBio, EndioResult, HeldBio,
    MapBio, MapResult, QueueLimits, StatusType, StatusWriter, Target, TargetCtx, TargetError,
};
use core::fmt::Write;
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Per-bio data: where a write parked on a copy goes once it is
/// committed, and whether a read sent to the origin is tracked.
#[derive(Default, Clone, Copy)]
pub(crate) struct Remap {
    pub(crate) cow_sector: u64,
    pub(crate) tracked: Tracked,
}

/// One snapshot target.
pub(crate) struct Snapshot {
    core: Arc<SnapCore>,
    /// What a discard does.
    features: Features,
    /// Dropped first (fields drop in order): no origin write starts a
    /// copy here once the destructor runs.
    registration: Option<Registration>,
    /// A snapshot in a shared exception store (`shared 3 ...`): its
    /// exceptions and copies are the group's; `core` only tracks its reads
    /// sent to the origin.
    shared: Option<SharedSnap>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // A table waiting to take over this one's exceptions will not get
        // them (upstream's handover cancelling in `snapshot_dtr`).
        let sharing = origins::sharing(&self.core.origin, &self.core.cow);
        if let (Some(src), Some(dest)) = (&sharing.src, &sharing.dest) {
            if Arc::ptr_eq(src, &self.core) {
                dest.state.lock().health.invalid = true;
                pr_err!("Cancelling snapshot handover.\n");
            }
        }
        drop(self.registration.take());
        drop(self.shared.take());
        self.core.stop();
    }
}

fn err(e: Error, msg: &'static CStr) -> TargetError {
    TargetError::new(e, msg)
}

/// The constructor's messages for a store that failed to open.
fn open_error(e: OpenError) -> TargetError {
    let msg = match e {
        OpenError::Message("Chunk size is not a power of 2") => {
            c_str!("Chunk size is not a power of 2")
        }
        OpenError::Message("Chunk size is not a multiple of device blocksize") => {
            c_str!("Chunk size is not a multiple of device blocksize")
        }
        OpenError::Message("Chunk size is too high") => c_str!("Chunk size is too high"),
        OpenError::Message("Chunk size not set") => c_str!("Chunk size not set"),
        OpenError::Message(_) => c_str!("Couldn't create exception store"),
        OpenError::Metadata(_) => c_str!("Failed to read snapshot metadata"),
    };
    err(EINVAL, msg)
}

/// The words of a table line as `&str`s.
fn words<'a>(args: &mut ArgSet<'a>) -> CtrResult<KVec<&'a CStr>> {
    let mut v = KVec::new();
    while let Some(w) = args.shift() {
        v.push(w, GFP_KERNEL).map_err(|_| {
            err(
                ENOMEM,
                c_str!("Cannot allocate snapshot context private structure"),
            )
        })?;
    }
    Ok(v)
}

/// Opens the store `spec` asks for on `cow`, filling the table from it.
fn open_store(spec: &StoreSpec<'_>, cow: &DmDev) -> CtrResult<State> {
    let io = CowIo::new(cow.clone())
        .map_err(|_| err(ENOMEM, c_str!("Couldn't create exception store")))?;
    let cow_chunks = cow.nr_sectors() / u64::from(spec.chunk_sectors.max(8));
    let mut table = ExceptionTable::new(ExceptionTable::buckets_for(cow_chunks))
        .map_err(|_| err(ENOMEM, c_str!("Unable to allocate hash table space")))?;
    let sizes = BlockSizes { cow: 1, origin: 1 };
    let (store, validity): (Store<CowIo, Exception>, _) =
        Store::open(spec, io, sizes, &mut |e| table.insert(e)).map_err(open_error)?;
    if validity == Validity::Invalid {
        pr_warn!("Snapshot is marked invalid.\n");
    }
    Ok(State::new(store, table, validity == Validity::Invalid))
}

impl Snapshot {
    /// The state it shares with its origin's writes.
    pub(super) fn core(&self) -> &Arc<SnapCore> {
        &self.core
    }

    /// [`Target::map`]'s work (under a noio scope, except for reads of a
    /// classic snapshot, which allocate nothing).
    fn map_bio(&self, mut bio: MapBio<'_, Self>) -> MapResult {
        let core = &self.core;
        let sector = bio.sector();
        if bio.is_empty_flush() {
            return bio.remap(&core.cow, sector);
        }
        if let Some(sh) = &self.shared {
            return sh.group().map_snapshot(sh.id, core, bio);
        }
        let chunk = core.chunk.to_chunk(sector);
        let discard = bio.op() == BioOp::Discard;
        if bio.is_write() && !discard && core.over_limit() {
            // Too many copies in flight: the write waits (throttle.rs).
            let (held, r) = bio.hold();
            write_again(core, held);
            return r;
        }
        let mut needed = CopyNeeded::default();
        let mut finished = None;
        let mut zero = None;
        let result = {
            let mut st = core.state.lock();
            if st.health.invalid || (st.health.overflowed && bio.is_write()) {
                bio.kill()
            } else if discard && self.features.discard_passdown_origin && bio.target_bio_nr() != 0 {
                // The origin's copy of the discard: straight to the origin,
                // copying no chunk (that would use the space the discard
                // is meant to free).
                bio.per_bio_mut().tracked = core.track(chunk);
                bio.remap(&core.origin, sector)
            } else if let Some(new) = st.table.lookup(chunk) {
                match core.cow_sector(new, sector) {
                    // A discard of the whole chunk zeroes its copy; a
                    // partial one goes to the COW device as a discard.
                    Some(s)
                        if discard && u64::from(bio.sectors()) == core.chunk.sectors().into() =>
                    {
                        let (held, r) = bio.hold();
                        zero = Some((s, held));
                        r
                    }
                    Some(s) => bio.remap(&core.cow, s),
                    None => bio.kill(),
                }
            } else if discard {
                // Nothing to free: done, without copying the chunk.
                let (held, r) = bio.hold();
                finished = Some(held);
                r
            } else if !bio.is_write() {
                // Tracked until it completes: a copy of this chunk
                // finishing meanwhile must not let an origin write
                // overtake it.
                bio.per_bio_mut().tracked = core.track(chunk);
                bio.remap(&core.origin, sector)
            } else if st.health.overflowed {
                bio.kill()
            } else {
                let (held, r) = bio.hold();
                needed = CopyNeeded::queue(&mut st, chunk, held);
                r
            }
        };
        if let Some(b) = finished {
            b.end(BlkStatus::OK);
        }
        if let Some((s, b)) = zero {
            core.zero_chunk(s, b);
        }
        needed.finish(core, chunk);
        result
    }

    /// Builds a `snapshot` (or, if `merging`, a `snapshot-merge`) from its
    /// table line: the two share it.
    pub(super) fn construct(
        ti: &mut TargetCtx,
        args: &mut ArgSet<'_>,
        merging: bool,
    ) -> CtrResult<Self> {
        let words = words(args)?;
        let Some((origin_path, rest)) = words.split_first() else {
            return Err(err(EINVAL, c_str!("requires 4 or more arguments")));
        };
        let mut strs: KVec<&str> = KVec::new();
        for w in rest {
            let s = w
                .to_str()
                .map_err(|_| err(EINVAL, c_str!("Couldn't create exception store")))?;
            strs.push(s, GFP_KERNEL)
                .map_err(|_| err(ENOMEM, c_str!("Cannot allocate memory")))?;
        }
        if strs.len() < 3 {
            return Err(err(EINVAL, c_str!("requires 4 or more arguments")));
        }
        if let Some((spec, used)) = SharedSpec::parse(&strs).map_err(shared_spec_error)? {
            return Self::construct_shared(
                ti,
                origin_path,
                rest,
                &spec,
                strs.len() - used,
                merging,
            );
        }
        // Upstream reports every bad store argument the same way.
        let (spec, used) = StoreSpec::parse(&strs)
            .map_err(|_| err(EINVAL, c_str!("Couldn't create exception store")))?;
        let features = Features::parse(strs.get(used..).unwrap_or(&[])).map_err(feature_error)?;
        let cow_index = if spec.generalised { 2 } else { 0 };
        let (origin, cow) = devices(ti, origin_path, rest, cow_index)?;
        // A live snapshot on this COW device hands its exceptions over when
        // this table resumes; the store is then not read here (it is in
        // use), and the chunk size is the live one's.
        let src = origins::handover_source(&origin, &cow, merging).map_err(refusal)?;
        let state = match &src {
            Some(src) => State::placeholder(&cow, src.chunk)
                .map_err(|_| err(ENOMEM, c_str!("Couldn't create exception store")))?,
            None => open_store(&spec, &cow)?,
        };
        if merging && src.is_none() && !ExceptionStore::<Exception>::supports_merge(&state.store) {
            return Err(err(
                EINVAL,
                c_str!("Snapshot exception store does not support snapshot-merge."),
            ));
        }
        let chunk = ExceptionStore::<Exception>::chunk_size(&state.store);
        ti.set_max_io_len(chunk.sectors().into())
            .map_err(|_| err(EINVAL, c_str!("Chunk size is too high")))?;
        // snapshot-merge sends flushes to the origin and to the COW device.
        ti.set_num_flush_bios(if merging { 2 } else { 1 });
        ti.set_num_discard_bios(features.discard_bios());
        let core = SnapCore::new(origin, cow, ti.len(), ti.handle(), state, merging)
            .map_err(|(e, msg)| err(e, msg))?;
        let registration = origins::register(&core, src.as_ref()).map_err(refusal)?;
        Ok(Snapshot {
            core,
            features,
            registration: Some(registration),
            shared: None,
        })
    }

    /// Builds a snapshot in a shared exception store; `extra` arguments
    /// followed the store's.
    fn construct_shared(
        ti: &mut TargetCtx,
        origin_path: &CStr,
        rest: &[&CStr],
        spec: &SharedSpec<'_>,
        extra: usize,
        merging: bool,
    ) -> CtrResult<Self> {
        if merging {
            return Err(err(
                EINVAL,
                c_str!("snapshot-merge is not supported with a shared exception store"),
            ));
        }
        if extra != 0 {
            return Err(err(
                EINVAL,
                c_str!("shared exception store: unexpected arguments"),
            ));
        }
        let chunk = ChunkSize::new(spec.chunk_sectors, 1, 1)
            .map_err(|m| open_error(OpenError::Message(m)))?;
        let (origin, cow) = devices(ti, origin_path, rest, 2)?;
        ti.set_max_io_len(chunk.sectors().into())
            .map_err(|_| err(EINVAL, c_str!("Chunk size is too high")))?;
        ti.set_num_flush_bios(1);
        ti.set_num_discard_bios(0);
        let state = State::placeholder(&cow, chunk)
            .map_err(|_| err(ENOMEM, c_str!("Couldn't create exception store")))?;
        let core = SnapCore::new(
            origin.clone(),
            cow.clone(),
            ti.len(),
            ti.handle(),
            state,
            false,
        )
        .map_err(|(e, msg)| err(e, msg))?;
        let shared = SharedSnap::new(spec, &origin, &cow, ti.md_dev_key(), &core).map_err(|e| {
            let msg = match e {
                CtrError::NoMem => c_str!("Cannot allocate shared exception store"),
                CtrError::Metadata => c_str!("Failed to read snapshot metadata"),
                CtrError::OtherOrigin => {
                    c_str!("shared exception store is in use with another origin")
                }
                CtrError::ChunkSize => c_str!("Chunk size differs from the shared store's"),
                CtrError::IdInUse => c_str!("Snapshot id is in use by another device"),
                CtrError::Closing => c_str!("shared exception store is closing, retry"),
            };
            err(EINVAL, msg)
        })?;
        Ok(Snapshot {
            core,
            features: Features::default(),
            registration: None,
            shared: Some(shared),
        })
    }
}

/// The origin and the COW device (`rest[cow_index]`) of a table line.
fn devices(
    ti: &mut TargetCtx,
    origin_path: &CStr,
    rest: &[&CStr],
    cow_index: usize,
) -> CtrResult<(DmDev, DmDev)> {
    let cow_path = rest.get(cow_index).ok_or(err(
        EINVAL,
        c_str!("Insufficient exception store arguments"),
    ))?;
    let origin = ti.get_device(origin_path, c_str!("Cannot get origin device"))?;
    let cow = ti.get_device(cow_path, c_str!("Cannot get COW device"))?;
    if origin.name().as_bytes() == cow.name().as_bytes() {
        return Err(err(
            EINVAL,
            c_str!("COW device cannot be the same as origin device"),
        ));
    }
    Ok((origin, cow))
}

/// The constructor's message for a bad `shared 3 ...`.
fn shared_spec_error(m: &'static str) -> TargetError {
    let msg = match m {
        "Chunk size not set" => c_str!("Chunk size not set"),
        "Chunk size is not a power of 2" => c_str!("Chunk size is not a power of 2"),
        "Invalid chunk size" => c_str!("Invalid chunk size"),
        "Insufficient exception store arguments" => {
            c_str!("Insufficient exception store arguments")
        }
        "Invalid shared snapshot id (0..63)" => c_str!("Invalid shared snapshot id (0..63)"),
        _ => c_str!("shared exception store takes 3 arguments"),
    };
    err(EINVAL, msg)
}

/// The constructor's message for bad feature arguments.
fn feature_error(m: &'static str) -> TargetError {
    let msg = match m {
        "Unrecognised feature requested" => c_str!("Unrecognised feature requested"),
        "discard_passdown_origin feature depends on discard_zeroes_cow" => {
            c_str!("discard_passdown_origin feature depends on discard_zeroes_cow")
        }
        _ => c_str!("Invalid number of feature arguments"),
    };
    err(EINVAL, msg)
}

/// The constructor's message for a refused registration.
fn refusal(r: Refusal) -> TargetError {
    match r {
        Refusal::Pairing => err(
            EINVAL,
            c_str!("Snapshot cow pairing for exception table handover failed"),
        ),
        Refusal::AlreadyMerging => err(EINVAL, c_str!("A snapshot is already merging.")),
        Refusal::CannotMerge => err(
            EINVAL,
            c_str!("Snapshot exception store does not support snapshot-merge."),
        ),
        Refusal::NoMem => err(ENOMEM, c_str!("Snapshot origin struct allocation failed")),
    }
}

/// What a write to a chunk without an exception leaves to do once the
/// state lock is released.
#[derive(Default)]
struct CopyNeeded {
    /// The copy to start (origin chunk to the COW chunk given).
    copy: Option<Chunk>,
    invalidated: bool,
    /// The write, if it could not wait for the copy (ended with an I/O
    /// error when dropped).
    refused: Option<Waiter>,
}

impl CopyNeeded {
    /// Queues `held` on the copy of `chunk`, allocating that copy if none
    /// is in flight.
    fn queue(st: &mut State, chunk: Chunk, held: HeldBio<Snapshot>) -> Self {
        let w = Waiter::Snapshot(held);
        let need = st.need_copy(chunk, Scope::Snapshot, Some((WaiterKind::Snapshot, w)));
        CopyNeeded {
            copy: need.start,
            invalidated: need.invalidated,
            refused: need.refused,
        }
    }

    /// With the lock released: fails a refused write, starts the copy,
    /// records an invalidation.
    fn finish(self, core: &Arc<SnapCore>, chunk: Chunk) {
        drop(self.refused);
        if let Some(new) = self.copy {
            core.start_copy(chunk, new);
        }
        if self.invalidated {
            core.record_invalid();
        }
    }
}

/// A write to the snapshot (not a discard) that met the limit on copies in
/// flight: parked while the limit holds, else sent to its chunk's copy or
/// queued on the copy it needs.
pub(super) fn write_again(core: &Arc<SnapCore>, b: HeldBio<Snapshot>) {
    let Err(b) = core.throttle(b, ThrottledBio::Snapshot) else {
        return;
    };
    let sector = b.sector();
    let chunk = core.chunk.to_chunk(sector);
    let mut needed = CopyNeeded::default();
    let mut to_cow = None;
    {
        let mut st = core.state.lock();
        if st.health.invalid || st.health.overflowed {
            needed.refused = Some(Waiter::Snapshot(b));
        } else if let Some(new) = st.table.lookup(chunk) {
            match core.cow_sector(new, sector) {
                Some(s) => to_cow = Some((b, s)),
                None => needed.refused = Some(Waiter::Snapshot(b)),
            }
        } else {
            needed = CopyNeeded::queue(&mut st, chunk, b);
        }
    }
    if let Some((b, s)) = to_cow {
        b.submit_to(&core.cow, s);
    }
    needed.finish(core, chunk);
}

#[vtable]
impl Target for Snapshot {
    const NAME: &'static CStr = c_str!("snapshot");
    const SHORT_NAME: &'static CStr = c_str!("snapshot");
    const VERSION: [u32; 3] = [1, 16, 0];
    type PerBio = Remap;

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        let snap = Snapshot::construct(ti, args, false)?;
        KBox::pin(snap, GFP_KERNEL).map_err(|_| {
            err(
                ENOMEM,
                c_str!("Cannot allocate snapshot context private structure"),
            )
        })
    }

    fn map(&self, bio: MapBio<'_, Self>) -> MapResult {
        // A read of a classic snapshot allocates nothing (it is remapped,
        // at most tracked); the rest may queue on a copy, which allocates:
        // never recursing into I/O from here.
        if !bio.is_write() && self.shared.is_none() {
            return self.map_bio(bio);
        }
        noio_scope(move || self.map_bio(bio))
    }

    fn preresume(&self) -> Result {
        if let Some(sh) = &self.shared {
            // The first resume makes the id a member of its store.
            return sh.group().join(sh.id);
        }
        let sharing = origins::sharing(&self.core.origin, &self.core.cow);
        if let (Some(src), Some(_)) = (&sharing.src, &sharing.dest) {
            if Arc::ptr_eq(src, &self.core) {
                pr_err!("Unable to resume snapshot source until handover completes.\n");
                return Err(EINVAL);
            }
            if !src.handle.suspended() {
                pr_err!("Unable to perform snapshot handover until source is suspended.\n");
                return Err(EINVAL);
            }
        }
        Ok(())
    }

    fn resume(&self) {
        let sharing = origins::sharing(&self.core.origin, &self.core.cow);
        if let (Some(src), Some(dest)) = (&sharing.src, &sharing.dest) {
            if Arc::ptr_eq(dest, &self.core) {
                self.core.take_over(src);
            }
        }
        // From now on origin writes copy chunks to it.
        self.core.state.lock().active = true;
    }

    fn end_io(&self, bio: EndioBio<'_, Self>) -> EndioResult {
        self.core.untrack(bio.per_bio().tracked);
        bio.done()
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        if let Some(sh) = &self.shared {
            let g = sh.group();
            let _ = match ty {
                StatusType::Info => match g.status(sh.id) {
                    Some(usage) => write!(out, "{usage}"),
                    None => write!(out, "Invalid"),
                },
                StatusType::Table => {
                    out.push_bytes(self.core.origin.name().as_bytes());
                    out.push_bytes(b" ");
                    let spec = SharedSpec {
                        cow: "",
                        chunk_sectors: g.chunk().sectors(),
                        id: sh.id,
                    };
                    spec.fmt_table(self.core.cow.name().to_str().unwrap_or("?"), out)
                }
                _ => Ok(()),
            };
            return;
        }
        let st = self.core.state.lock();
        let _ = match ty {
            StatusType::Info => st
                .health
                .fmt_info(ExceptionStore::<Exception>::usage(&st.store), out),
            StatusType::Table => {
                out.push_bytes(self.core.origin.name().as_bytes());
                out.push_bytes(b" ");
                let kind = ExceptionStore::<Exception>::kind(&st.store);
                let chunk = ExceptionStore::<Exception>::chunk_size(&st.store).sectors();
                let cow = self.core.cow.name().to_str().unwrap_or("?");
                // Upstream prints the classic form whichever was given.
                fmt_table(kind, false, cow, chunk, out).and_then(|()| self.features.fmt_table(out))
            }
            _ => Ok(()),
        };
    }

    fn message(&self, args: &mut ArgSet<'_>, _out: &mut StatusWriter<'_>) -> Result {
        let Some(sh) = &self.shared else {
            return Err(EINVAL);
        };
        let word = args.peek(0).map(|w| w.as_bytes());
        match (word, args.len()) {
            (Some(b"ES_DESTROY"), 1) => {
                // Suspended, no write of this snapshot is in flight to a
                // chunk the destroy frees.
                if !self.core.handle.suspended() {
                    pr_err!("shared snapshot: ES_DESTROY needs the snapshot device suspended\n");
                    return Err(EBUSY);
                }
                sh.group().destroy(sh.id)
            }
            (Some(b"ES_INVALIDATE"), 1) => sh.group().invalidate(),
            _ => {
                pr_err!("shared snapshot: unknown message\n");
                Err(EINVAL)
            }
        }
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        if self.features.discard_zeroes_cow {
            // Discards split on chunk boundaries. The chunk size (the live
            // table's during a handover: this one took it) goes into the
            // byte-valued granularity unscaled, as upstream does.
            let chunk = self.core.chunk.sectors();
            limits.set_discard_granularity(chunk);
            limits.set_max_hw_discard_sectors(chunk);
        }
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        match visitor.visit(&self.core.origin, 0, self.core.len) {
            0 => visitor.visit(&self.core.cow, 0, self.core.cow.nr_sectors()),
            r => r,
        }
    }
}
