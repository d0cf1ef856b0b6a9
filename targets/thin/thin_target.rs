// SPDX-License-Identifier: GPL-2.0

//! `thin <pool dev> <dev id> [<external origin dev>]`: one thin device of a
//! pool. Bios to provisioned blocks are remapped in `map` (the fast path:
//! a lookup in cached metadata that never sleeps on I/O) to the pool
//! device, which passes them to the data device; everything else goes to
//! the pool's worker.

use super::metadata::ThinDevice;
use super::pool::{Pool, PoolOwner, POOLS};
use crate::dm::args::parse_u64;
use crate::dm::noio::noio_scope;
use crate::dm::registry::DevKey;
use crate::dm::{
    ArgSet, BioList, BioOp, BlkStatus, CtrResult, DeviceVisitor, DmDev, IrqSpinLock, MapBio,
    MapResult, StatusType, StatusWriter, Target, TargetCtx, TargetError,
};
use crate::new_irq_spinlock;
use crate::persistent_data::error::Error as PdError;
use core::fmt::Write;
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::Arc;

/// What the thin keeps with each bio.
#[derive(Clone, Copy, Default)]
pub(crate) struct ThinPerBio {
    /// Sector of the pool device a bio waiting for a commit goes to.
    pub(crate) dest: u64,
}

/// Bios a thin hands to the worker.
#[derive(Default)]
pub(crate) struct ThinLists {
    /// From `map`, not looked at yet.
    pub(crate) deferred: BioList<ThinTarget>,
    /// Mapped flushes and FUA writes, issued after the next commit.
    pub(crate) after_commit: BioList<ThinTarget>,
}

/// A thin device's state shared with the pool's worker.
pub(crate) struct ThinState {
    pub(crate) pool: Arc<Pool>,
    /// Always `Some` until the state is dropped (which closes it).
    td: Option<ThinDevice>,
    pub(crate) id: u64,
    /// The pool's mapped device, opened from this thin's table line.
    pub(crate) pool_dev: DmDev,
    /// The thin target's first sector in its mapped device.
    pub(crate) begin: u64,
    pub(crate) lists: Pin<KBox<IrqSpinLock<ThinLists>>>,
}

impl ThinState {
    /// The open thin device.
    pub(crate) fn td(&self) -> Result<&ThinDevice> {
        self.td.as_ref().ok_or(EINVAL)
    }

    /// The virtual block and the offset in it of a bio at `sector`.
    pub(crate) fn locate(&self, sector: u64) -> (u64, u64) {
        let offset = sector.saturating_sub(self.begin);
        let bs = u64::from(self.pool.block_size);
        match (offset.checked_div(bs), offset.checked_rem(bs)) {
            (Some(b), Some(o)) => (b, o),
            _ => (0, offset),
        }
    }
}

impl Drop for ThinState {
    fn drop(&mut self) {
        if let Some(td) = self.td.take() {
            self.pool.md.write().close_thin_device(td);
        }
    }
}

/// One thin target.
pub(crate) struct ThinTarget {
    state: Arc<ThinState>,
    // Dropped after the state (fields drop in order): the last owner stops
    // the pool (see `PoolOwner`).
    _owner: Arc<PoolOwner>,
}

impl ThinTarget {
    /// Hands `bio` to the pool's worker.
    fn defer(&self, bio: MapBio<'_, Self>) -> MapResult {
        let (held, result) = bio.hold();
        self.state.lists.with(|l| l.deferred.push(held));
        Pool::wake(&self.state.pool);
        result
    }
}

#[vtable]
impl Target for ThinTarget {
    const NAME: &'static CStr = c_str!("thin");
    const VERSION: [u32; 3] = [1, 23, 0];
    type PerBio = ThinPerBio;

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        if args.len() != 2 && args.len() != 3 {
            return Err(TargetError::new(EINVAL, c_str!("Invalid argument count")));
        }
        let pool_path = args.shift_or(c_str!("Invalid argument count"))?;
        let id_word = args.shift_or(c_str!("Invalid argument count"))?;
        if args.len() == 1 {
            return Err(TargetError::new(
                EINVAL,
                c_str!("external origins are not supported yet"),
            ));
        }
        let pool_dev = ti.get_device(pool_path, c_str!("Error opening pool device"))?;
        let id = parse_u64(id_word)
            .filter(|&v| v < (1 << 24))
            .ok_or(TargetError::new(EINVAL, c_str!("Invalid device id")))?;
        let owner = POOLS.lookup(DevKey::of(&pool_dev)).ok_or(TargetError::new(
            EINVAL,
            c_str!("Couldn't find pool object"),
        ))?;
        let pool = owner.pool.clone();
        ti.set_max_io_len(u64::from(pool.block_size))
            .map_err(|e| TargetError::new(e, c_str!("Invalid block size")))?;
        ti.set_num_flush_bios(1);
        ti.set_flush_supported(true);
        let td = pool
            .open_thin(id)
            .map_err(|e| TargetError::new(e, c_str!("Couldn't open thin internal device")))?;
        let lists = KBox::pin_init(
            new_irq_spinlock!(ThinLists::default(), "thin bio lists"),
            GFP_KERNEL,
        );
        let lists = match lists {
            Ok(l) => l,
            Err(_) => {
                pool.md.write().close_thin_device(td);
                return Err(TargetError::new(ENOMEM, c_str!("Out of memory")));
            }
        };
        // From here on dropping the state closes the device.
        let state = Arc::new(
            ThinState {
                pool: pool.clone(),
                td: Some(td),
                id,
                pool_dev,
                begin: ti.begin(),
                lists,
            },
            GFP_KERNEL,
        )
        .map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))?;
        pool.thins
            .lock()
            .try_push(state.clone())
            .map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))?;
        KBox::pin(
            ThinTarget {
                state,
                _owner: owner,
            },
            GFP_KERNEL,
        )
        .map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))
    }

    fn map(&self, mut bio: MapBio<'_, Self>) -> MapResult {
        let st = &*self.state;
        let op = bio.op();
        if bio.is_preflush() || bio.is_fua() || !matches!(op, BioOp::Read | BioOp::Write) {
            return self.defer(bio);
        }
        let (vblock, within) = st.locate(bio.sector());
        let Ok(td) = st.td() else {
            return bio.kill();
        };
        let Some(md) = st.pool.md.try_read() else {
            return self.defer(bio);
        };
        let r = noio_scope(|| md.find_block(td, vblock, false));
        drop(md);
        match r {
            Ok(m) if !(m.shared && op == BioOp::Write) => {
                let bs = u64::from(st.pool.block_size);
                let dest = m.block.saturating_mul(bs).saturating_add(within);
                bio.remap(&st.pool_dev, dest)
            }
            Err(PdError::NoData) if op == BioOp::Read => {
                // Unprovisioned: reads as zeros.
                if bio.zero_fill().is_err() {
                    return bio.kill();
                }
                bio.end(BlkStatus::OK)
            }
            _ => self.defer(bio),
        }
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        let st = &*self.state;
        match ty {
            StatusType::Info => {
                let Ok(td) = st.td() else {
                    let _ = write!(out, "Error");
                    return;
                };
                let md = st.pool.md.read();
                let bs = u64::from(st.pool.block_size);
                match md.mapped_count(td) {
                    Ok(n) => {
                        let _ = write!(out, "{} ", n.saturating_mul(bs));
                    }
                    Err(_) => {
                        let _ = write!(out, "Error");
                        return;
                    }
                }
                match md.highest_mapped_block(td) {
                    Ok(h) => {
                        let _ = write!(
                            out,
                            "{}",
                            h.saturating_add(1).saturating_mul(bs).saturating_sub(1)
                        );
                    }
                    Err(_) => {
                        let _ = write!(out, "-");
                    }
                }
            }
            StatusType::Table => {
                out.push_bytes(st.pool_dev.name().as_bytes());
                let _ = write!(out, " {}", st.id);
            }
            StatusType::Ima => {}
        }
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        let st = &*self.state;
        let bs = u64::from(st.pool.block_size);
        let sectors = st.pool_dev.nr_sectors();
        let whole = sectors.checked_div(bs).unwrap_or(0).saturating_mul(bs);
        if whole == 0 {
            return 0;
        }
        visitor.visit(&st.pool_dev, 0, whole)
    }
}

impl Drop for ThinTarget {
    fn drop(&mut self) {
        let pool = &self.state.pool;
        let mut thins = pool.thins.lock();
        if let Some(i) = thins.iter().position(|t| Arc::ptr_eq(t, &self.state)) {
            let _ = thins.remove(i);
        }
        // The worker runs under the list's lock and keeps no clone: the
        // state goes with this target (closing the thin device).
        drop(thins);
    }
}
