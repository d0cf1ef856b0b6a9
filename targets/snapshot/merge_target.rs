// SPDX-License-Identifier: GPL-2.0

//! `snapshot-merge <origin> <COW device> <P|PO> <chunk size>`: a persistent
//! snapshot merging back into its origin, standing in for the origin while
//! it does (lvm2 loads it into the origin's device).
//!
//! A chunk that still has an exception is read from and written to its COW
//! copy (the merge brings it to the origin later; writes are tracked so the
//! merge waits for them), except that writes to the run being merged wait
//! for it and then go to the origin. Every other chunk is the origin's:
//! writes there go through the origin path, copying to the other snapshots
//! of the origin first. The merge itself is in [`super::merge`]; it starts
//! on resume (after taking over the exceptions of the live snapshot on the
//! same COW device) and stops on suspend.

use super::origins::{self, OriginBio};
use super::snap::{Remap, Snapshot};
use crate::dm::noio::noio_scope;
use crate::dm::{
    ArgSet, BioOp, BlkStatus, CtrResult, DeviceVisitor, EndioBio, EndioResult, MapBio, MapResult,
    QueueLimits, StatusType, StatusWriter, Target, TargetCtx, TargetError,
};
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;

/// One snapshot-merge target: a snapshot whose exceptions flow back.
pub(crate) struct SnapshotMerge {
    snap: Snapshot,
}

impl Drop for SnapshotMerge {
    fn drop(&mut self) {
        // No merge step runs once the snapshot's destructor starts.
        self.snap.core().stop_merge();
    }
}

#[vtable]
impl Target for SnapshotMerge {
    const NAME: &'static CStr = c_str!("snapshot-merge");
    const SHORT_NAME: &'static CStr = c_str!("snap-merge");
    const VERSION: [u32; 3] = [1, 5, 0];
    type PerBio = Remap;

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        let snap = Snapshot::construct(ti, args, true)?;
        KBox::pin(SnapshotMerge { snap }, GFP_KERNEL).map_err(|_| {
            TargetError::new(
                ENOMEM,
                c_str!("Cannot allocate snapshot context private structure"),
            )
        })
    }

    fn map(&self, mut bio: MapBio<'_, Self>) -> MapResult {
        let core = self.snap.core();
        let sector = bio.sector();
        if bio.is_empty_flush() {
            // One flush to each device.
            let dev = if bio.target_bio_nr() == 0 {
                &core.origin
            } else {
                &core.cow
            };
            return bio.remap(dev, sector);
        }
        if bio.op() == BioOp::Discard {
            // Once merging, discards no longer change anything.
            return bio.end(BlkStatus::OK);
        }
        let chunk = core.chunk.to_chunk(sector);
        {
            let mut st = core.state.lock();
            let cow_chunk = if st.health.invalid {
                // An invalid merging snapshot is the origin.
                None
            } else {
                st.table.lookup(chunk)
            };
            if let Some(new) = cow_chunk {
                if bio.is_write() && st.merge.merging(chunk) {
                    // The run is being copied back: this write goes to the
                    // origin once that is done.
                    let (held, r) = bio.hold();
                    st.merge.held.push(held);
                    return r;
                }
                let Some(s) = core.cow_sector(new, sector) else {
                    return bio.kill();
                };
                if bio.is_write() {
                    // The merge waits for it before copying this chunk.
                    bio.per_bio_mut().tracked = core.track(chunk);
                }
                return bio.remap(&core.cow, s);
            }
        }
        if !bio.is_write() {
            return bio.remap(&core.origin, sector);
        }
        // A write to the origin: the other snapshots copy the chunk first.
        let Some(snapshots) = noio_scope(|| origins::snapshots_of(&core.origin)) else {
            return bio.remap(&core.origin, sector);
        };
        let min_chunk = snapshots.min_chunk;
        let room = min_chunk - (sector & u64::from(min_chunk - 1)) as u32;
        if bio.sectors() > room && bio.accept_partial(room).is_err() {
            return bio.kill();
        }
        let (held, result) = bio.hold();
        let held = Some(OriginBio::Merge(held));
        if let (Some(b), _) = noio_scope(|| origins::origin_write(&snapshots, sector, held)) {
            b.submit_to(&core.origin, sector);
        }
        result
    }

    fn end_io(&self, bio: EndioBio<'_, Self>) -> EndioResult {
        self.snap.core().untrack(bio.per_bio().tracked);
        bio.done()
    }

    fn presuspend(&self) {
        self.snap.core().stop_merge();
    }

    fn preresume(&self) -> Result {
        Target::preresume(&self.snap)
    }

    fn resume(&self) {
        Target::resume(&self.snap);
        self.snap.core().start_merge();
    }

    fn status(&self, ty: StatusType, flags: u32, out: &mut StatusWriter<'_>) {
        Target::status(&self.snap, ty, flags, out);
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        Target::io_hints(&self.snap, limits);
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        Target::iterate_devices(&self.snap, visitor)
    }
}
