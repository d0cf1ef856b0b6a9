// SPDX-License-Identifier: GPL-2.0

//! The snapshots of each origin (upstream's `_origins` table and
//! `__origin_write`): a snapshot registers under its origin device when it
//! is constructed, and every write to that origin first has the chunk it
//! touches copied to each registered snapshot that has no exception for it.

use super::exceptions::{SnapCore, Waiter};
use super::origin::Origin;
use super::store::{Scope, WaiterKind};
use crate::dm::engine_alloc::PVec;
use crate::dm::registry::{DevKey, Registered, Registry};
use crate::dm::sync::{new_mutex, Mutex};
use crate::dm::{BioList, DmDev, HeldBio};
use kernel::prelude::*;
use kernel::sync::Arc;

/// The snapshots of one origin device.
#[pin_data]
pub(crate) struct OriginEntry {
    #[pin]
    snapshots: Mutex<PVec<Arc<SnapCore>>>,
}

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
    }
}

/// Registers `core` with its origin. `EBUSY` if a snapshot of that origin
/// already uses the same COW device (dm-rs does not hand a store over
/// between tables yet).
pub(crate) fn register(core: &Arc<SnapCore>) -> Result<Registration> {
    let key = DevKey::of(&core.origin);
    let entry = loop {
        if let Some(r) = ORIGINS.join(key) {
            break r;
        }
        let fresh = Arc::pin_init(
            pin_init!(OriginEntry {
                snapshots <- new_mutex!(PVec::new(), "snapshot_origin_list"),
            }),
            GFP_KERNEL,
        )?;
        match ORIGINS.insert(key, fresh) {
            Ok(r) => break r,
            Err(e) if e == EEXIST => continue,
            Err(e) => return Err(e),
        }
    };
    {
        let mut list = entry.snapshots.lock();
        let cow = DevKey::of(&core.cow);
        if list.iter().any(|s| DevKey::of(&s.cow) == cow) {
            return Err(EBUSY);
        }
        list.try_push(core.clone()).map_err(|_| ENOMEM)?;
    }
    Ok(Registration {
        core: core.clone(),
        entry,
    })
}

/// The snapshots of `origin` and their smallest chunk size, if it has any.
pub(crate) fn snapshots_of(origin: &DmDev) -> Option<(PVec<Arc<SnapCore>>, u32)> {
    let entry = ORIGINS.lookup(DevKey::of(origin))?;
    let list = entry.snapshots.lock();
    let mut copy = PVec::try_with_capacity(list.len()).ok()?;
    let mut min = u32::MAX;
    for s in list.iter() {
        min = min.min(s.chunk.sectors());
        copy.try_push(s.clone()).ok()?;
    }
    if copy.is_empty() {
        return None;
    }
    Some((copy, min))
}

/// Sends an origin write on its way unless a copy must be made first:
/// starts the copy of its chunk to each snapshot without an exception for
/// it and parks the bio on one of those copies (it comes back through
/// [`retry`] once that copy is committed, and is checked again). Returns
/// the bio if it may be submitted now. The bio lies within one chunk of
/// every snapshot.
pub(crate) fn origin_write(
    snapshots: &[Arc<SnapCore>],
    bio: HeldBio<Origin>,
) -> Option<HeldBio<Origin>> {
    let sector = bio.sector();
    let mut bio = Some(bio);
    let mut refused = None;
    for s in snapshots {
        if sector >= s.len {
            continue;
        }
        let chunk = s.chunk.to_chunk(sector);
        let mut invalidated = false;
        let mut copy = None;
        {
            let mut st = s.state.lock();
            if st.health.invalid || st.table.lookup(chunk).is_some() {
                continue;
            }
            if st.pending.get(chunk).is_none() {
                copy = st.new_pending(chunk, Scope::Origin, &mut invalidated);
            }
            if st.pending.get(chunk).is_some() {
                if let Some(b) = bio.take() {
                    if let Err(Waiter::Origin(b)) =
                        SnapCore::park(&mut st, chunk, WaiterKind::Origin, Waiter::Origin(b))
                    {
                        // No memory to wait: give up on this snapshot.
                        refused = Some(s.clone());
                        bio = Some(b);
                    }
                }
            }
        }
        if let Some(new) = copy {
            s.start_copy(chunk, new);
        }
        if refused.as_ref().is_some_and(|r| Arc::ptr_eq(r, s)) {
            invalidated |= s.state.lock().invalidate();
        }
        if invalidated {
            s.record_invalid();
        }
    }
    bio
}

/// Origin writes whose copy was committed: checked again, and submitted to
/// `origin` when no other copy is needed.
pub(crate) fn retry(origin: &DmDev, bios: BioList<Origin>) {
    if bios.is_empty() {
        return;
    }
    let snapshots = snapshots_of(origin);
    for b in bios {
        let sector = b.sector();
        let b = match &snapshots {
            Some((list, _)) => origin_write(list, b),
            None => Some(b),
        };
        if let Some(b) = b {
            b.submit_to(origin, sector);
        }
    }
}
