// SPDX-License-Identifier: GPL-2.0

//! `thin <pool dev> <dev id> [<external origin dev>]`: one thin device of a
//! pool. Bios to provisioned blocks are remapped in `map` (the fast path:
//! a lookup in cached metadata that never sleeps on I/O) to the pool
//! device, which passes them to the data device; everything else goes to
//! the pool's worker. `map` counts the bios it remaps in the pool's gate
//! (unless the worker holds the block's cell: then the bio goes to the
//! worker too), and `end_io` gives the counts back.

use super::external_origin::ExternalOrigin;
use super::gate::IoEntries;
use super::metadata::ThinDevice;
use super::mode::PoolMode;
use super::pool::{Pool, PoolOwner, POOLS};
use super::pool_target::ctr_error;
use super::prison::{CellKey, MAX_KEY_RANGE};
use super::status::{emit_status_error, emit_thin_fail, emit_thin_status, EmitDevice, StatusSink};
use super::thin_table::{emit_thin_table, ThinTable};
use crate::dm::noio::noio_scope;
use crate::dm::registry::DevKey;
use crate::dm::{
    ArgSet, BioList, BioOp, BlkStatus, CtrResult, DeviceVisitor, DmDev, EndioBio, EndioResult,
    IrqSpinLock, MapBio, MapResult, QueueLimits, ReturnedBio, StatusType, StatusWriter, Target,
    TargetCtx, TargetError, TargetHandle,
};
use crate::new_irq_spinlock;
use crate::persistent_data::error::Error as PdError;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;
use kernel::sync::Arc;

/// What the thin keeps with each bio.
#[derive(Clone, Copy, Default)]
pub(crate) struct ThinPerBio {
    /// Sector of the pool device a bio waiting for a commit goes to.
    pub(crate) dest: u64,
    /// A write covering a new block: its block is mapped when it is done.
    pub(crate) overwrite: bool,
    /// The overwrite's virtual block.
    pub(crate) vblock: u64,
    /// The bio's counts in the pool's gate while it is at the data device.
    pub(crate) io: IoEntries,
    /// Unused: pads the per-bio data to upstream's size (see below).
    _slab_class: [u64; 5],
}

/// The per-bio data's size decides the size of the thin's clone bios (dm
/// core puts it in front of each), so the slab they come from. 6.12's bio
/// slabs free their pages through RCU, and with the exact 24 bytes the
/// clone (256 bytes) churned its slab: under the benchmark's provisioned
/// 4 KiB random writes, twice upstream's new slabs and softirq time, 4% of
/// the guest's instructions. The same size as upstream's per-bio data
/// (`struct dm_thin_endio_hook`) gives the clone upstream's slab size.
const _: () = assert!(core::mem::size_of::<ThinPerBio>() == 64);

/// Most blocks `map` looks up for one bio before cutting it (a 1 MiB bio
/// over 64 KiB blocks is 16).
const MAX_SPAN_BLOCKS: u64 = 64;

/// What [`ThinTarget::map_span`] mapped: the first `sectors` of the bio go
/// to `dest`, counted in `io`.
struct Span {
    io: IoEntries,
    dest: u64,
    sectors: u32,
}

/// Bios a thin hands to the worker.
#[derive(Default)]
pub(crate) struct ThinLists {
    /// From `map`, not looked at yet.
    pub(crate) deferred: BioList<ThinTarget>,
    /// Mapped flushes and FUA writes, issued after the next commit.
    pub(crate) after_commit: BioList<ThinTarget>,
    /// Writes waiting for data space (out-of-data-space mode, queueing).
    pub(crate) retry: BioList<ThinTarget>,
    /// Completed overwrites, taken back in `end_io` until their block is
    /// mapped.
    pub(crate) overwritten: BioList<ThinTarget, ReturnedBio<ThinTarget>>,
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
    /// The external origin from the table line, if any.
    pub(crate) origin: Option<ExternalOrigin>,
    pub(crate) lists: Pin<KBox<IrqSpinLock<ThinLists>>>,
    /// A noflush suspend is under way: bios go back to dm core.
    pub(crate) requeue_mode: AtomicBool,
    /// The thin target, for the pool to suspend its device.
    pub(crate) handle: TargetHandle,
    /// The thin's mapped device (shared by its live and inactive tables):
    /// what the pool's suspend of it is kept under.
    pub(crate) md_key: DevKey,
}

impl ThinState {
    /// The open thin device.
    pub(crate) fn td(&self) -> Result<&ThinDevice> {
        self.td.as_ref().ok_or(EINVAL)
    }

    /// The device id (below 2^24, checked by the constructor).
    pub(crate) fn id_u32(&self) -> u32 {
        u32::try_from(self.id).unwrap_or(u32::MAX)
    }

    /// The thin's own sector (an external origin's too) of a bio at
    /// `sector`.
    pub(crate) fn virt(&self, sector: u64) -> u64 {
        sector.saturating_sub(self.begin)
    }

    /// Sectors from `sector` to the end of its block (at least 1).
    pub(crate) fn room(&self, sector: u64) -> u32 {
        let (_, within) = self.locate(sector);
        let left = u64::from(self.pool.block_size).saturating_sub(within);
        u32::try_from(left).unwrap_or(u32::MAX).max(1)
    }

    /// The virtual block and the offset in it of a bio at `sector`.
    pub(crate) fn locate(&self, sector: u64) -> (u64, u64) {
        let offset = self.virt(sector);
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
    handle: TargetHandle,
    // Dropped after the state (fields drop in order): the last owner stops
    // the pool (see `PoolOwner`).
    _owner: Arc<PoolOwner>,
}

impl ThinTarget {
    /// The fast path for a read or write over several blocks: the longest
    /// run of them, from the first, that is mapped to consecutive data
    /// blocks, locked by no cell and (for a write) unshared, counted as one
    /// bio, if it is at least two blocks long (else `None`: the bio goes
    /// the block-by-block way). Nothing sleeps.
    fn map_span(&self, bio: &MapBio<'_, Self>, op: BioOp) -> Option<Span> {
        let st = &*self.state;
        let (first, within) = st.locate(bio.sector());
        let bs = u64::from(st.pool.block_size);
        let end = within.checked_add(bio.sectors().into())?;
        // One cell key covers the run: it stays in one range unit.
        let unit_left = MAX_KEY_RANGE - first % MAX_KEY_RANGE;
        let blocks = end.div_ceil(bs).min(MAX_SPAN_BLOCKS).min(unit_left);
        if blocks < 2 {
            return None;
        }
        let td = st.td().ok()?;
        let md = st.pool.md.try_read()?;
        let (mut n, mut data, mut shared) = (0, 0, false);
        noio_scope(|| {
            for i in 0..blocks {
                let Ok(m) = md.find_block(td, first + i, false) else {
                    break;
                };
                if m.shared && op == BioOp::Write {
                    break;
                }
                if i == 0 {
                    data = m.block;
                } else if Some(m.block) != data.checked_add(i) {
                    break;
                }
                shared |= m.shared;
                n = i + 1;
            }
        });
        if n < 2 {
            return None;
        }
        // Counted under the metadata read lock, as a single block is.
        let key = CellKey::span(true, st.id, first, first + n);
        let io = st.pool.gate.with(|g| g.enter_mapped(&key, shared))?;
        drop(md);
        let covered = n.saturating_mul(bs).saturating_sub(within);
        Some(Span {
            io,
            dest: data.saturating_mul(bs).saturating_add(within),
            sectors: u32::try_from(covered)
                .unwrap_or(u32::MAX)
                .min(bio.sectors()),
        })
    }

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
        let mut words: [&[u8]; 4] = [&[]; 4];
        let n = args.len().min(words.len());
        for (i, w) in words.iter_mut().enumerate().take(n) {
            *w = args.peek(i).map_or(&[][..], |c| c.as_bytes());
        }
        let parsed = ThinTable::parse(words.iter().take(n).copied());
        if let Err(e) = parsed {
            if !e.found_after_open() {
                return Err(ctr_error(EINVAL, e.text_with_nul()));
            }
        }
        // Upstream's order: the origin (read-only), the pool, the id.
        let origin = match args.peek(2) {
            Some(path) => Some(ExternalOrigin::new(
                ti.get_device_read_only(path, c_str!("Error opening origin device"))?,
            )),
            None => None,
        };
        let pool_path = args.shift_or(c_str!("Invalid argument count"))?;
        let pool_dev = ti.get_device(pool_path, c_str!("Error opening pool device"))?;
        let table = parsed.map_err(|e| ctr_error(EINVAL, e.text_with_nul()))?;
        let id = u64::from(table.dev_id);
        let owner = POOLS.lookup(DevKey::of(&pool_dev)).ok_or(TargetError::new(
            EINVAL,
            c_str!("Couldn't find pool object"),
        ))?;
        let pool = owner.pool.clone();
        // No max_io_len: `map` cuts bios at block boundaries itself, unless
        // their blocks are consecutive on the data device.
        ti.set_num_flush_bios(1);
        ti.set_limit_swap_bios(true);
        ti.set_flush_supported(true);
        // Bios held for provisioning are counted from when they go on to
        // the data device, as upstream's thin.
        ti.set_accounts_remapped_io(true);
        if pool.features().discard_enabled {
            ti.set_discards_supported(true);
            ti.set_num_discard_bios(1);
            ti.set_max_discard_granularity(true);
        }
        if pool.mode() == PoolMode::Fail {
            return Err(TargetError::new(
                EINVAL,
                c_str!("Couldn't open thin device, Pool is in fail mode"),
            ));
        }
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
                origin,
                lists,
                requeue_mode: AtomicBool::new(false),
                handle: ti.handle(),
                md_key: ti.md_dev_key(),
            },
            GFP_KERNEL,
        )
        .map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))?;
        {
            // Under the list's lock, which the pool's presuspend takes
            // after raising the flag: a thin listed here is suspended with
            // the others, a later one is refused (as upstream).
            let mut thins = pool.thins.lock();
            if pool.is_suspended() {
                return Err(TargetError::new(
                    EINVAL,
                    c_str!("Unable to activate thin device while pool is suspended"),
                ));
            }
            thins
                .try_push(state.clone())
                .map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))?;
        }
        KBox::pin(
            ThinTarget {
                state,
                handle: ti.handle(),
                _owner: owner,
            },
            GFP_KERNEL,
        )
        .map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))
    }

    fn map(&self, mut bio: MapBio<'_, Self>) -> MapResult {
        let st = &*self.state;
        if st.requeue_mode.load(Ordering::Acquire) {
            return bio.requeue();
        }
        if st.pool.mode() == PoolMode::Fail {
            return bio.kill();
        }
        let op = bio.op();
        let data = matches!(op, BioOp::Read | BioOp::Write) && bio.sectors() > 0;
        if data {
            // dm core does not split at block boundaries (no max_io_len):
            // a bio over several blocks goes through in one piece when they
            // are mapped to consecutive data blocks, else it is cut at the
            // first boundary and dm core maps the rest again.
            let room = st.room(bio.sector());
            if bio.sectors() > room {
                if !bio.is_preflush() && !bio.is_fua() {
                    if let Some(span) = self.map_span(&bio, op) {
                        let mut io = span.io;
                        if span.sectors < bio.sectors() && bio.accept_partial(span.sectors).is_err()
                        {
                            Pool::exit_io(&st.pool, &mut io);
                            return bio.kill();
                        }
                        bio.per_bio_mut().io = io;
                        return bio.remap(&st.pool_dev, span.dest);
                    }
                }
                if bio.accept_partial(room).is_err() {
                    return bio.kill();
                }
            }
        }
        if bio.is_preflush() || bio.is_fua() || !matches!(op, BioOp::Read | BioOp::Write) {
            return self.defer(bio);
        }
        if let (BioOp::Read, Some(origin)) = (op, &st.origin) {
            let virt = st.virt(bio.sector());
            origin.cut_read(&mut bio, virt);
        }
        let (vblock, within) = st.locate(bio.sector());
        let Ok(td) = st.td() else {
            return bio.kill();
        };
        // Counted after the lookup, still under the metadata read lock, as
        // upstream holds the cell across it: the worker takes a block's cell
        // before a discard or a copy breaking sharing, and changes the
        // mapping only under the write lock, so a bio that sees no cell here
        // is counted before that work and waited for (see `gate.rs`).
        let key = CellKey::block(true, st.id, vblock);
        let Some(md) = st.pool.md.try_read() else {
            return self.defer(bio);
        };
        let r = noio_scope(|| md.find_block(td, vblock, false));
        let entered = match &r {
            // A write to a shared block breaks the sharing in the worker.
            Ok(m) if !m.shared || op == BioOp::Read => {
                st.pool.gate.with(|g| g.enter_mapped(&key, m.shared))
            }
            _ => None,
        };
        drop(md);
        if let (Some(io), Ok(m)) = (entered, &r) {
            let bs = u64::from(st.pool.block_size);
            let dest = m.block.saturating_mul(bs).saturating_add(within);
            bio.per_bio_mut().io = io;
            return bio.remap(&st.pool_dev, dest);
        }
        match r {
            Err(PdError::NoData) if op == BioOp::Read => {
                // Unprovisioned: reads the origin, or zeros.
                if let Some(origin) = &st.origin {
                    let virt = st.virt(bio.sector());
                    return origin.map_read(bio, virt);
                }
                if bio.zero_fill().is_err() {
                    return bio.kill();
                }
                bio.end(BlkStatus::OK)
            }
            _ => self.defer(bio),
        }
    }

    fn end_io(&self, mut bio: EndioBio<'_, Self>) -> EndioResult {
        if !bio.per_bio().overwrite {
            let pb = bio.per_bio_mut();
            let mut io = core::mem::take(&mut pb.io);
            Pool::exit_io(&self.state.pool, &mut io);
            return bio.done();
        }
        // Interrupt context: the worker maps the block, then ends the bio.
        let (bio, result) = bio.hold();
        self.state.lists.with(|l| l.overwritten.push(bio));
        Pool::wake(&self.state.pool);
        result
    }

    fn presuspend(&self) {
        if !self.handle.noflush_suspending() {
            // Only dm core's destroy reaches here while the pool keeps
            // this thin suspended (a flushing suspend by the user waits
            // for the pool's resume; the pool's own is noflush).
            self.state.pool.forget_suspended_thin(self.state.md_key);
        }
        if self.handle.noflush_suspending() {
            let st = &*self.state;
            st.requeue_mode.store(true, Ordering::Release);
            let (deferred, retry) = st
                .lists
                .with(|l| (l.deferred.take_all(), l.retry.take_all()));
            for bio in Iterator::chain(deferred, retry) {
                bio.requeue();
            }
        }
    }

    fn preresume(&self) -> Result {
        if let Some(origin) = &self.state.origin {
            origin.refresh_size();
        }
        Ok(())
    }

    fn resume(&self) {
        self.state.requeue_mode.store(false, Ordering::Release);
        Pool::wake(&self.state.pool);
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        let st = &*self.state;
        if st.pool.mode() == PoolMode::Fail {
            return emit_thin_fail(out);
        }
        match ty {
            StatusType::Info => {
                let Ok(td) = st.td() else {
                    return out.put(b"-");
                };
                let md = st.pool.md.read();
                let Ok(mapped) = md.mapped_count(td) else {
                    return emit_status_error(out);
                };
                let highest = match md.highest_mapped_block(td) {
                    Ok(h) => Some(h),
                    Err(PdError::NoData) => None,
                    Err(_) => return emit_status_error(out),
                };
                emit_thin_status(out, mapped, highest, st.pool.block_size);
            }
            StatusType::Table => emit_thin_table(
                out,
                &st.pool_dev,
                st.id_u32(),
                st.origin.as_ref().map(|o| o.dev() as &dyn EmitDevice),
            ),
            StatusType::Ima => {}
        }
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        let bs = self.state.pool.block_size;
        if self.state.pool.features().discard_enabled {
            limits.set_discard_granularity(bs.saturating_mul(512));
            limits.set_max_hw_discard_sectors(bs.saturating_mul(1024));
        }
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        let st = &*self.state;
        let bs = u64::from(st.pool.block_size);
        // The bound pool target's length, as upstream (not the pool
        // device's size, which a reload may not have reached yet).
        let sectors = st.pool.features().target_len;
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
