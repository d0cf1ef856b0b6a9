// SPDX-License-Identifier: GPL-2.0

//! `snapshot-origin <dev>`: the device that snapshots are taken of.
//!
//! Every bio goes to the origin device at the same sector (like upstream, the
//! target's start in the table is not subtracted: an origin always covers the
//! whole device). Reads pass through; a write to a chunk that some
//! snapshot of this device has not copied yet waits until the copies are
//! committed ([`origins::origin_write`]), or, while a snapshot has too
//! many copies in flight, until it has fewer (`throttle.rs`). With no
//! snapshots, it is a pass-through.

use super::{origins, shared_group};
use crate::dm::engine_alloc::PVec;
use crate::dm::noio::noio_scope;
use crate::dm::registry::{DevKey, Registered};
use crate::dm::{
    ArgSet, CtrResult, DeviceVisitor, DmDev, MapBio, MapResult, StatusType, StatusWriter, Target,
    TargetCtx, TargetError,
};
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::Arc;

/// One snapshot-origin target instance.
pub(crate) struct Origin {
    dev: DmDev,
    len: u64,
    /// The device's snapshot list, held so that a write needs no lookup.
    snapshots: Registered<DevKey, origins::OriginEntry>,
}

#[vtable]
impl Target for Origin {
    const NAME: &'static CStr = c_str!("snapshot-origin");
    const SHORT_NAME: &'static CStr = c_str!("snap-origin");
    const VERSION: [u32; 3] = [1, 9, 0];
    type PerBio = ();

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        if args.len() != 1 {
            return Err(TargetError::new(
                EINVAL,
                c_str!("origin: incorrect number of arguments"),
            ));
        }
        let path = args.shift_or(c_str!("origin: incorrect number of arguments"))?;
        let dev = ti.get_device(path, c_str!("Cannot get target device"))?;
        ti.set_num_flush_bios(1);
        let no_mem =
            || TargetError::new(ENOMEM, c_str!("Cannot allocate private origin structure"));
        let snapshots = origins::entry_for(&dev).map_err(|_| no_mem())?;
        KBox::pin(
            Origin {
                dev,
                len: ti.len(),
                snapshots,
            },
            GFP_KERNEL,
        )
        .map_err(|_| no_mem())
    }

    fn map(&self, bio: MapBio<'_, Self>) -> MapResult {
        let sector = bio.sector();
        if !bio.is_write() || bio.is_empty_flush() {
            return bio.remap(&self.dev, sector);
        }
        // A device without snapshots of either kind: a pass-through, with
        // no lock taken.
        if self.snapshots.is_empty() && !shared_group::any_listed() {
            return bio.remap(&self.dev, sector);
        }
        self.map_write(bio, sector)
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        if ty == StatusType::Table {
            out.push_bytes(self.dev.name().as_bytes());
        }
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        visitor.visit(&self.dev, 0, self.len)
    }
}

impl Origin {
    /// A write: through the shared groups, then the classic snapshots.
    fn map_write(&self, mut bio: MapBio<'_, Self>, sector: u64) -> MapResult {
        // Both lists wait for memory to be built rather than pass the
        // write on unprotected (upstream sleeps in `mempool_alloc` here).
        let classic = self.snapshots.snapshots();
        // Snapshots in shared exception stores, one group per store.
        let shared = shared_group::groups_of(&self.dev);
        let min_chunk = match (&classic, &shared) {
            (None, None) => return bio.remap(&self.dev, sector),
            (Some(a), Some((_, b))) => a.min_chunk.min(*b),
            (Some(a), None) => a.min_chunk,
            (None, Some((_, m))) => *m,
        };
        // A write goes to one chunk of every snapshot: split at the
        // smallest chunk size (min_chunk is a power of two).
        let room = min_chunk - (sector & u64::from(min_chunk - 1)) as u32;
        if bio.sectors() > room && bio.accept_partial(room).is_err() {
            return bio.kill();
        }
        // A chunk every snapshot has copied already (a rewrite): on to the
        // origin as it is, as upstream's `__origin_write` finding every
        // exception in place.
        if let (Some(snapshots), None) = (&classic, &shared) {
            if origins::nothing_to_copy(snapshots, sector) {
                return bio.remap(&self.dev, sector);
            }
        }
        // Nothing a write does from here may recurse into I/O when it
        // allocates.
        noio_scope(|| self.map_write_held(bio, sector, classic, shared))
    }

    /// A write some snapshot may need a copy for: held until they are done.
    fn map_write_held(
        &self,
        bio: MapBio<'_, Self>,
        sector: u64,
        classic: Option<Arc<origins::SnapView>>,
        shared: Option<(PVec<Arc<shared_group::SharedGroup>>, u32)>,
    ) -> MapResult {
        let (held, result) = bio.hold();
        let held = origins::OriginBio::Origin(held);
        // A group that holds the write sends it on through the classic
        // snapshots once its copy is committed. (A write the classic
        // limit parks below has passed the groups: no snapshot can join a
        // group while it is in flight, as that needs the origin suspended.)
        let held = match &shared {
            Some((groups, _)) => shared_group::origin_write(groups, sector, held),
            None => Some(held),
        };
        let Some(b) = held else {
            return result;
        };
        let b = match (&classic, b) {
            (Some(snapshots), origins::OriginBio::Origin(h)) => {
                origins::origin_write_limited(snapshots, sector, h)
            }
            (Some(snapshots), b) => origins::origin_write(snapshots, sector, Some(b)).0,
            (None, b) => Some(b),
        };
        if let Some(b) = b {
            b.submit_to(&self.dev, sector);
        }
        result
    }
}
