// SPDX-License-Identifier: GPL-2.0

//! `thin-pool <metadata dev> <data dev> <data block size> <low water mark>
//! [<#feature args> [<arg>]*]`: the pool's control target. Its own I/O
//! (what the thins remap to the pool device) goes straight to the data
//! device; its messages create and delete thin devices.

use super::io_limits::{pool_io_limits, StackedLimits};
use super::message::{parse_pool_message, PoolMessage};
use super::mode::{PoolMode, MESSAGES_REFUSED};
use super::pool::{self, find_or_create, Bound, PoolDevices, PoolEntry, PoolName};
use super::pool_table::{emit_pool_table, PoolFeatures, PoolTable};
use super::status::{
    emit_pool_status, emit_status_error, metadata_dev_blocks, metadata_low_water_blocks,
    EmitDevice, PoolStatus, StatusSink,
};
use crate::dm::noio::noio_scope;
use crate::dm::target::features;
use crate::dm::{
    ArgSet, CtrResult, DeviceVisitor, DmDev, MapBio, MapResult, QueueLimits, StatusType,
    StatusWriter, Target, TargetCtx, TargetError, TargetHandle,
};
use crate::persistent_data::error::Error as PdError;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;

/// Most words of a table line kept for parsing.
const MAX_WORDS: usize = 16;
/// dm's status flag asking not to commit (`DM_STATUS_NOFLUSH_FLAG`).
const STATUS_NOFLUSH: u32 = 1 << 0;

impl EmitDevice for DmDev {
    fn emit_device(&self, out: &mut dyn StatusSink) {
        out.put(self.name().as_bytes());
    }
}

/// A static error text from a NUL-terminated byte string.
pub(crate) fn ctr_error(err: Error, text: &'static [u8]) -> TargetError {
    let msg = CStr::from_bytes_with_nul(text).unwrap_or(c_str!("Invalid argument"));
    TargetError::new(err, msg)
}

/// One thin-pool target.
pub(crate) struct PoolTarget {
    entry: PoolEntry,
    metadata_dev: DmDev,
    data_dev: DmDev,
    block_size: u32,
    low_water_blocks: u64,
    requested: PoolFeatures,
    handle: TargetHandle,
    len: u64,
    /// Whether this table was bound to the pool (preresume) before.
    bound_once: AtomicBool,
    /// False once `io_hints` found the data device unable to take the
    /// discards passdown would send it (upstream's `adjusted_pf`): the pool
    /// is then bound without passdown, while the table line keeps what was
    /// asked for.
    passdown_possible: AtomicBool,
}

impl PoolTarget {
    fn bound(&self) -> Bound {
        let mut b = bound_of(&self.requested, self.low_water_blocks, self.len);
        b.discard_passdown &= self.passdown_possible.load(Ordering::Relaxed);
        b
    }

    /// Grows the data space to the target's length (upstream's
    /// `maybe_resize_data_dev`); returns whether it grew. Never while the
    /// metadata needs a check.
    fn resize_data(&self, name: &PoolName) -> Result<bool> {
        let pool = &self.entry.pool;
        let blocks = self
            .len
            .checked_div(u64::from(self.block_size))
            .unwrap_or(0);
        let mut md = pool.md.write();
        let current = md.data_dev_size().map_err(|e| {
            pr_err!("{}: failed to retrieve data device size\n", name);
            pool::kerr(e)
        })?;
        if !grows(name, "pool target", blocks, current)? {
            return Ok(false);
        }
        if md.needs_check() {
            pr_err!("{}: unable to grow the data device until repaired.\n", name);
            return Ok(false);
        }
        if current != 0 {
            pr_info!(
                "{}: growing the data device from {} to {} blocks\n",
                name,
                current,
                blocks
            );
        }
        if let Err(e) = noio_scope(|| md.resize_data_dev(blocks)) {
            drop(md);
            pool.metadata_operation_failed(&pool.thins.lock(), "dm_pool_resize_data_dev", e);
            return Err(pool::kerr(e));
        }
        pool.flags
            .low_water_triggered
            .store(false, Ordering::Release);
        Ok(true)
    }

    /// Grows the metadata space to the metadata device (upstream's
    /// `maybe_resize_metadata_dev`), leaving out-of-metadata-space mode
    /// first; returns whether it grew. Never while the metadata needs a
    /// check.
    fn resize_metadata(&self, name: &PoolName) -> Result<bool> {
        let pool = &self.entry.pool;
        let blocks = metadata_dev_blocks(self.metadata_dev.nr_sectors());
        let current = pool.md.read().metadata_dev_size().map_err(|e| {
            pr_err!("{}: failed to retrieve metadata device size\n", name);
            pool::kerr(e)
        })?;
        if !grows(name, "metadata device", blocks, current)? {
            return Ok(false);
        }
        if pool.md.read().needs_check() {
            pr_err!(
                "{}: unable to grow the metadata device until repaired.\n",
                name
            );
            return Ok(false);
        }
        pr_info!(
            "{}: growing the metadata device from {} to {} blocks\n",
            name,
            current,
            blocks
        );
        let thins = pool.thins.lock();
        // Write mode first: out of metadata space the metadata is read-only.
        let ctx = pool.mode_ctx();
        let change = pool.state.lock().metadata_grown(&ctx);
        if let Some(change) = change {
            pool.carry_out(&thins, change);
        }
        let r = noio_scope(|| pool.md.write().resize_metadata_dev(blocks));
        if let Err(e) = r {
            pool.metadata_operation_failed(&thins, "dm_pool_resize_metadata_dev", e);
            return Err(pool::kerr(e));
        }
        Ok(true)
    }

    fn info(&self, flags: u32, out: &mut StatusWriter<'_>) {
        let pool = &self.entry.pool;
        if pool.mode() == PoolMode::Fail {
            return emit_pool_status(out, &fail_status());
        }
        if flags & STATUS_NOFLUSH == 0 && !self.handle.suspended() {
            let _ = pool.commit_now(&pool.thins.lock());
        }
        let md = pool.md.read();
        let numbers = (|| -> Result<_, PdError> {
            Ok((
                md.transaction_id()?,
                md.free_metadata_blocks()?,
                md.metadata_dev_size()?,
                md.free_data_blocks()?,
                md.data_dev_size()?,
                md.metadata_snap()?,
                md.needs_check(),
            ))
        })();
        drop(md);
        let Ok((tid, free_meta, nr_meta, free_data, nr_data, held, needs_check)) = numbers else {
            return emit_status_error(out);
        };
        let f = pool.features();
        let state = *pool.state.lock();
        let status = PoolStatus {
            transaction_id: tid,
            free_metadata_blocks: free_meta,
            total_metadata_blocks: nr_meta,
            free_data_blocks: free_data,
            total_data_blocks: nr_data,
            held_root: held,
            mode: state.mode(),
            discard_enabled: f.discard_enabled,
            discard_passdown: f.discard_passdown,
            error_if_no_space: state.error_if_no_space(),
            needs_check,
            metadata_low_water: metadata_low_water_blocks(metadata_dev_blocks(
                self.metadata_dev.nr_sectors(),
            )),
        };
        emit_pool_status(out, &status);
    }

    fn run_message(&self, message: PoolMessage) -> core::result::Result<(), PdError> {
        let mut md = self.entry.pool.md.write();
        match message {
            PoolMessage::CreateThin { dev_id } => md.create_thin(dev_id.into()),
            PoolMessage::CreateSnap { dev_id, origin_id } => {
                md.create_snap(dev_id.into(), origin_id.into())
            }
            PoolMessage::Delete { dev_id } => md.delete_thin_device(dev_id.into()),
            PoolMessage::SetTransactionId { current, new } => md.set_transaction_id(current, new),
            PoolMessage::ReserveMetadataSnap => md.reserve_metadata_snap(),
            PoolMessage::ReleaseMetadataSnap => md.release_metadata_snap(),
        }
    }
}

/// Logs a warning that `emit` writes, as upstream's `DMWARN`.
fn warn(emit: impl FnOnce(&mut StatusWriter<'_>)) {
    let mut buf = [0u8; 160];
    emit(&mut StatusWriter::new(&mut buf));
    let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
    let text = buf.get(..len).unwrap_or(&[]);
    pr_warn!("{}\n", core::str::from_utf8(text).unwrap_or("?"));
}

/// Whether a space of `current` blocks grows to `blocks`; shrinking is
/// refused (logged as upstream does).
fn grows(name: &PoolName, what: &str, blocks: u64, current: u64) -> Result<bool> {
    if blocks < current {
        pr_err!(
            "{}: {} ({} blocks) too small: expected {}\n",
            name,
            what,
            blocks,
            current
        );
        return Err(EINVAL);
    }
    Ok(blocks > current)
}

fn bound_of(f: &PoolFeatures, low_water_blocks: u64, target_len: u64) -> Bound {
    Bound {
        zero_new_blocks: f.zero_new_blocks,
        discard_enabled: f.discard_enabled,
        discard_passdown: f.discard_passdown,
        error_if_no_space: f.error_if_no_space,
        low_water_blocks,
        target_len,
    }
}

#[vtable]
impl Target for PoolTarget {
    const NAME: &'static CStr = c_str!("thin-pool");
    const VERSION: [u32; 3] = [1, 23, 0];
    // As upstream: alone in its table, never replaced by another type, and
    // refused in a read-only table (its metadata is always written).
    const FEATURES: u64 = features::SINGLETON | features::ALWAYS_WRITEABLE | features::IMMUTABLE;
    type PerBio = ();

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        let mut words: [&[u8]; MAX_WORDS] = [&[]; MAX_WORDS];
        let n = args.len().min(MAX_WORDS);
        for (i, w) in words.iter_mut().enumerate().take(n) {
            *w = args.peek(i).map_or(&[][..], |c| c.as_bytes());
        }
        let parsed = PoolTable::parse(words.iter().take(n).copied());
        let table = match parsed {
            Ok(t) => Some(t),
            Err(e) if e.found_after_open() => None,
            Err(e) => return Err(ctr_error(EINVAL, e.text_with_nul())),
        };
        let meta_path = args
            .peek(0)
            .ok_or(TargetError::new(EINVAL, c_str!("Invalid argument count")))?;
        let data_path = args
            .peek(1)
            .ok_or(TargetError::new(EINVAL, c_str!("Invalid argument count")))?;
        let metadata_dev =
            ti.get_device(meta_path, c_str!("Error opening metadata block device"))?;
        let data_dev = ti.get_device(data_path, c_str!("Error getting data device"))?;
        let table = match (table, parsed) {
            (Some(t), _) => t,
            (None, Err(e)) => return Err(ctr_error(EINVAL, e.text_with_nul())),
            (None, Ok(t)) => t,
        };
        // No length until a table is bound (preresume), as upstream's
        // unset `pool->ti`: thins then report no device.
        let bound = bound_of(&table.features, table.low_water_blocks, 0);
        let devices = PoolDevices {
            md_key: ti.md_dev_key(),
            metadata_dev: &metadata_dev,
            data_dev: &data_dev,
            block_size: table.data_block_size,
            read_only: table.features.read_only,
        };
        let (entry, created) =
            find_or_create(&devices, bound).map_err(|(e, msg)| TargetError::new(e, msg))?;
        if !created && entry.pool.features().discard_enabled != table.features.discard_enabled {
            return Err(TargetError::new(
                EINVAL,
                c_str!("Discard support cannot be disabled once enabled"),
            ));
        }
        // The metadata low-water event fires when free metadata falls to a
        // quarter of this table's metadata device (at most 4 MiB). A pool
        // whose metadata is closed after a failure has nothing to watch.
        let threshold = metadata_low_water_blocks(metadata_dev_blocks(metadata_dev.nr_sectors()));
        let _ = entry.pool.md.write().register_metadata_threshold(threshold);
        ti.set_num_flush_bios(1);
        ti.set_limit_swap_bios(true);
        if table.features.discard_enabled && table.features.discard_passdown {
            ti.set_num_discard_bios(1);
            ti.set_discards_supported(true);
            ti.set_max_discard_granularity(true);
        }
        let target = PoolTarget {
            entry,
            metadata_dev,
            data_dev,
            block_size: table.data_block_size,
            low_water_blocks: table.low_water_blocks,
            requested: table.features,
            handle: ti.handle(),
            len: ti.len(),
            bound_once: AtomicBool::new(false),
            passdown_possible: AtomicBool::new(true),
        };
        KBox::pin(target, GFP_KERNEL).map_err(|_| TargetError::new(ENOMEM, c_str!("Out of memory")))
    }

    fn map(&self, bio: MapBio<'_, Self>) -> MapResult {
        // A singleton target: it always starts at sector 0.
        let sector = bio.sector();
        bio.remap(&self.data_dev, sector)
    }

    fn preresume(&self) -> Result {
        let pool = &self.entry.pool;
        pool.bind(self.bound(), Some(self.handle.clone()));
        // A newly loaded table asks for its mode; a plain resume keeps the
        // mode the pool is in.
        let requested = if self.bound_once.swap(true, Ordering::AcqRel) {
            pool.mode()
        } else {
            PoolMode::requested_by(&self.requested)
        };
        let thins = pool.thins.lock();
        let ctx = pool.mode_ctx();
        let change = pool.state.lock().bind(requested, &ctx);
        pool.carry_out(&thins, change);
        drop(thins);
        let name = PoolName::of(Some(&self.handle));
        let grown = self
            .resize_data(&name)
            .and_then(|d| Ok(self.resize_metadata(&name)? || d));
        match grown {
            Ok(true) => {
                let _ = pool.commit_now(&pool.thins.lock());
                Ok(())
            }
            Ok(false) => Ok(()),
            // A failed pool must resume, so its queued bios are failed.
            Err(_) if pool.mode() == PoolMode::Fail => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn resume(&self) {
        // Bios queued while out of data space get another chance, before
        // the thins' own I/O starts again (upstream's order).
        let pool = &self.entry.pool;
        pool.requeue_retries(&pool.thins.lock());
        pool.resume_active_thins();
        self.entry.start_commit_timer();
        pool::Pool::wake(pool);
    }

    fn presuspend(&self) {
        // dm core calls this in the process suspending the pool, holding
        // only the pool device's suspend lock, which no thin I/O needs.
        self.entry.pool.suspend_active_thins();
    }

    fn presuspend_undo(&self) {
        self.entry.pool.resume_active_thins();
    }

    fn postsuspend(&self) {
        let pool = &self.entry.pool;
        self.entry.stop_commit_timer();
        pool.wq.flush();
        let _ = pool.commit_now(&pool.thins.lock());
    }

    fn status(&self, ty: StatusType, flags: u32, out: &mut StatusWriter<'_>) {
        match ty {
            StatusType::Info => self.info(flags, out),
            StatusType::Table => emit_pool_table(
                out,
                &self.metadata_dev,
                &self.data_dev,
                self.block_size,
                self.low_water_blocks,
                &self.requested,
            ),
            StatusType::Ima => {}
        }
    }

    fn message(&self, args: &mut ArgSet<'_>, _out: &mut StatusWriter<'_>) -> Result {
        let pool = &self.entry.pool;
        if !pool.mode().accepts_messages() {
            pr_err!(
                "{}: {}\n",
                PoolName::of(Some(&self.handle)),
                MESSAGES_REFUSED
            );
            return Err(Error::from_errno(-(kernel::bindings::EOPNOTSUPP as i32)));
        }
        let words = (0..args.len()).filter_map(|i| args.peek(i).map(|w| w.as_bytes()));
        let parsed = match parse_pool_message(words) {
            Ok(p) => p,
            Err(e) => {
                warn(|out| e.emit(out));
                return Err(EINVAL);
            }
        };
        if let Err(e) = noio_scope(|| self.run_message(parsed.message)) {
            warn(|out| parsed.emit_failure(out));
            return Err(pool::kerr(e));
        }
        // Always commit, as upstream: a set transaction id or a metadata
        // snapshot changes no device but must reach the disk.
        let _ = pool.commit_now(&pool.thins.lock());
        Ok(())
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        visitor.visit(&self.data_dev, 0, self.len)
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        // The pool's block size (a reload may name another; the pool keeps
        // its own, as upstream's hints use).
        let block_size = self.entry.pool.block_size;
        let adjusted = pool_io_limits(
            block_size,
            StackedLimits {
                max_sectors: limits.max_sectors(),
                io_min: limits.io_min(),
                io_opt: limits.io_opt(),
            },
        );
        limits.set_max_sectors(adjusted.max_sectors);
        limits.set_io_min(adjusted.io_min);
        limits.set_io_opt(adjusted.io_opt);
        if !self.requested.discard_enabled {
            // Not stacked from the data device: the pool takes none.
            limits.set_discard_granularity(0);
            return;
        }
        if self.requested.discard_passdown && self.passdown_possible.load(Ordering::Relaxed) {
            let max = self.data_dev.max_discard_sectors();
            let reason = if max == 0 {
                Some("discard unsupported")
            } else if max < block_size {
                Some("max discard sectors smaller than a block")
            } else {
                None
            };
            if let Some(reason) = reason {
                pr_warn!(
                    "thin-pool: Data device ({}) {}: Disabling discard passdown.\n",
                    self.data_dev.name(),
                    reason
                );
                self.passdown_possible.store(false, Ordering::Relaxed);
            }
        }
        if !self.requested.discard_passdown || !self.passdown_possible.load(Ordering::Relaxed) {
            limits.set_max_hw_discard_sectors(0);
        }
    }
}

/// A status that emits as upstream's `Fail`.
fn fail_status() -> PoolStatus {
    PoolStatus {
        transaction_id: 0,
        free_metadata_blocks: 0,
        total_metadata_blocks: 0,
        free_data_blocks: 0,
        total_data_blocks: 0,
        held_root: 0,
        mode: PoolMode::Fail,
        discard_enabled: false,
        discard_passdown: false,
        error_if_no_space: false,
        needs_check: false,
        metadata_low_water: 0,
    }
}
