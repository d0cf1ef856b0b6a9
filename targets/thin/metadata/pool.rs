// SPDX-License-Identifier: GPL-2.0

//! The pool metadata object (upstream's `dm_pool_metadata`): the engine
//! objects over one metadata device, the transaction's superblock fields
//! in core, and the open devices. This file has its life cycle: open or
//! format, commit, abort, close, and the pool-wide flags; the other
//! operations live in `devices.rs`, `mappings.rs`, `space.rs` and
//! `metadata_snap.rs`.
//!
//! Failure model. An operation that fails before changing anything (an
//! existing device id, an unmapped block, no free data block) leaves the
//! transaction usable. One that fails half way *poisons* it: commits and
//! changes are refused (`Poisoned`, `-EINVAL` as upstream's refusals in
//! fail mode) until [`PoolMetadata::abort`] throws
//! the transaction away and reopens the last commit, as thin-pool does on
//! any metadata failure. If that reopening fails too, the pool is failed
//! (upstream's `fail_io`): every call but close is refused.

use super::device_details::{DeviceDetails, DETAILS_SIZE, DETAILS_VALUES};
use super::mapping::DevTrees;
use super::superblock::{
    is_unformatted, valid_data_block_size, Superblock, NEEDS_CHECK_FLAG, SUPERBLOCK_LOCATION,
    SUPERBLOCK_VALIDATOR,
};
use super::thin_device::DeviceTable;
use crate::persistent_data::block_manager::BlockManager;
use crate::persistent_data::btree;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::shim::PBox;
use crate::persistent_data::space_map::{DiskSpaceMap, SpaceMap, SM_ROOT_SIZE};
use crate::persistent_data::transaction_manager::TransactionManager;

/// What the pool target plugs into its metadata.
pub trait PoolHooks {
    /// Runs at the start of every commit that writes anything; an error
    /// fails the commit before it changed anything. thin-pool flushes the
    /// data device here, so no committed mapping points at data that is
    /// not stable yet.
    fn pre_commit(&mut self) -> Result<()> {
        Ok(())
    }

    /// Free metadata space fell to the registered threshold (see
    /// [`PoolMetadata::register_metadata_threshold`]); thin-pool raises a
    /// dm event. Called once per crossing.
    fn metadata_low(&mut self) {}
}

/// No hooks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl PoolHooks for NoHooks {}

/// How to open a metadata device.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Data block size in 512-byte sectors; must match a formatted
    /// superblock's.
    pub data_block_size: u32,
    /// Format the device if it is blank (all zeros in block 0); without
    /// it a blank device is refused (`ReadOnly`, upstream's `-EPERM`).
    pub format: bool,
    /// The metadata device is read-only (read-only-compatible features
    /// are then acceptable).
    pub read_only_device: bool,
}

/// The engine objects, rebuilt from the superblock by an abort.
pub(super) struct Objects<IO: BlockIo> {
    pub(super) tm: TransactionManager<IO>,
    pub(super) data_sm: DiskSpaceMap,
}

/// The superblock fields a transaction changes, kept in core until the
/// commit writes them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Transaction {
    pub(super) time: u32,
    /// Two-level mapping tree.
    pub(super) root: u64,
    pub(super) details_root: u64,
    pub(super) held_root: u64,
    pub(super) trans_id: u64,
    pub(super) flags: u32,
    pub(super) data_block_size: u32,
}

impl Transaction {
    fn load(sb: &Superblock) -> Self {
        Transaction {
            time: sb.time,
            root: sb.mapping_root,
            details_root: sb.details_root,
            held_root: sb.held_root,
            trans_id: sb.trans_id,
            flags: sb.flags,
            data_block_size: sb.data_block_size,
        }
    }

    /// Details of a device created now with `mapped_blocks` mapped.
    pub(super) fn new_device(&self, mapped_blocks: u64) -> DeviceDetails {
        DeviceDetails {
            mapped_blocks,
            transaction_id: self.trans_id,
            creation_time: self.time,
            snapshotted_time: self.time,
        }
    }

    fn store(&self, sb: &mut Superblock) {
        sb.time = self.time;
        sb.mapping_root = self.root;
        sb.details_root = self.details_root;
        sb.held_root = self.held_root;
        sb.trans_id = self.trans_id;
        sb.flags = self.flags;
    }
}

/// Most metadata blocks kept back from the reported free count (16 MiB):
/// room for the commit itself when userspace thinks the device is full.
const MAX_METADATA_RESERVE: u64 = 4096;

/// Thin-pool metadata open on one metadata device.
pub struct PoolMetadata<IO: BlockIo, H: PoolHooks = NoHooks> {
    /// `None` once an abort failed to reopen the metadata. On the heap, so
    /// the pool stays small to move (its users hold it by value).
    pub(super) pd: Option<PBox<Objects<IO>>>,
    pub(super) tx: Transaction,
    pub(super) devices: DeviceTable,
    hooks: H,
    pub(super) metadata_reserve: u64,
    pub(super) threshold: Option<u64>,
    /// Something changed the pool since it was opened (commits before
    /// that write nothing).
    in_service: bool,
    poisoned: bool,
    read_only_device: bool,
}

// Opening and formatting are not inlined into each other or their callers:
// inlined, their frames (each holding engine objects being built) added up
// to one frame of about 4 KiB on the kernel stack.
impl<IO: BlockIo> Objects<IO> {
    /// Formats a blank device: empty space maps and trees, then the
    /// initial superblock.
    #[inline(never)]
    fn format(bm: BlockManager<IO>, data_block_size: u32) -> Result<PBox<Self>> {
        if !valid_data_block_size(data_block_size) {
            return Err(Error::Invalid);
        }
        let device_blocks = bm.nr_blocks();
        let mut tm = TransactionManager::create(bm, SUPERBLOCK_LOCATION)?;
        // The pool sizes the data space map from its data device later.
        let data_sm = DiskSpaceMap::create(&mut tm, 0)?;
        let mapping_root = btree::empty(&mut tm, 8)?;
        let details_root = btree::empty(&mut tm, DETAILS_SIZE)?;
        let mut pd = PBox::try_new(Objects { tm, data_sm })?;
        let mut sb = Superblock::new(data_block_size, device_blocks);
        sb.mapping_root = mapping_root;
        sb.details_root = details_root;
        pd.commit(Some(sb), |_| ())?;
        Ok(pd)
    }

    /// The committed superblock on `bm`, if this pool can open it.
    fn committed_superblock(bm: &BlockManager<IO>, opts: &OpenOptions) -> Result<Superblock> {
        let sb = {
            let d = bm.read_lock(SUPERBLOCK_LOCATION, Some(&SUPERBLOCK_VALIDATOR))?;
            Superblock::unpack(&d[..])?
        };
        // Changing the data block size of a pool is not supported.
        if sb.data_block_size != opts.data_block_size {
            return Err(Error::Invalid);
        }
        sb.check_features(opts.read_only_device)?;
        sb.check_sizes()?;
        Ok(sb)
    }

    /// Opens formatted metadata.
    #[inline(never)]
    fn open(bm: BlockManager<IO>, opts: &OpenOptions) -> Result<PBox<Self>> {
        let sb = Self::committed_superblock(&bm, opts)?;
        let tm = TransactionManager::open(bm, &sb.metadata_sm_root)?;
        let data_sm = DiskSpaceMap::open(&sb.data_sm_root)?;
        PBox::try_new(Objects { tm, data_sm })
    }

    #[inline(never)]
    fn open_or_format(bm: BlockManager<IO>, opts: &OpenOptions) -> Result<PBox<Self>> {
        // No validator: a blank block 0 is not a superblock.
        let blank = is_unformatted(&*bm.read_lock(SUPERBLOCK_LOCATION, None)?);
        match (blank, opts.format) {
            (true, true) => Self::format(bm, opts.data_block_size),
            (true, false) => Err(Error::ReadOnly),
            (false, _) => Self::open(bm, opts),
        }
    }

    /// Stores `tree` (adopting the caller's reference on it) as `dev`'s
    /// mapping tree in the top level of the mapping tree at `root`;
    /// returns the new root.
    pub(super) fn set_device_tree(&mut self, root: u64, dev: u64, tree: u64) -> Result<u64> {
        let mut trees = DevTrees(&mut self.data_sm);
        btree::insert(&mut self.tm, &mut trees, root, &[dev], &tree.to_le_bytes())
    }

    /// Takes `dev` out of the top level of the mapping tree at `root`,
    /// dropping the entry's reference on its tree; returns the new root.
    pub(super) fn remove_device_tree(&mut self, root: u64, dev: u64) -> Result<u64> {
        btree::remove(&mut self.tm, &mut DevTrees(&mut self.data_sm), root, &[dev])
    }

    /// The committed superblock.
    fn superblock(&self) -> Result<Superblock> {
        let d = self
            .tm
            .read_lock(SUPERBLOCK_LOCATION, &SUPERBLOCK_VALIDATOR)?;
        Superblock::unpack(&d[..])
    }

    /// Commits both space maps and writes the superblock: `fresh` as
    /// given (format), else the current one changed by `update`.
    fn commit(
        &mut self,
        fresh: Option<Superblock>,
        update: impl FnOnce(&mut Superblock),
    ) -> Result<()> {
        self.data_sm.commit(&mut self.tm)?;
        self.tm.pre_commit()?;
        // Copy the roots before locking the superblock (as upstream).
        let mut data_root = [0u8; SM_ROOT_SIZE];
        self.data_sm.copy_root(&self.tm, &mut data_root)?;
        let mut metadata_root = [0u8; SM_ROOT_SIZE];
        self.tm.sm_copy_root(&mut metadata_root)?;
        let bm = self.tm.bm_mut();
        let mut wb = match fresh {
            Some(_) => bm.write_lock_zero(SUPERBLOCK_LOCATION, Some(&SUPERBLOCK_VALIDATOR))?,
            None => bm.write_lock(SUPERBLOCK_LOCATION, Some(&SUPERBLOCK_VALIDATOR))?,
        };
        let packed = match fresh {
            Some(sb) => Ok(sb),
            None => Superblock::unpack(&wb[..]),
        }
        .and_then(|mut sb| {
            update(&mut sb);
            sb.data_sm_root = data_root;
            sb.metadata_sm_root = metadata_root;
            sb.pack(&mut wb[..])
        });
        if let Err(e) = packed {
            // Never let a half-updated superblock reach the disk; the first
            // error is the one to report.
            let _ = self.tm.bm_mut().discard(wb);
            return Err(e);
        }
        self.tm.commit(wb)
    }
}

impl<IO: BlockIo, H: PoolHooks> PoolMetadata<IO, H> {
    /// Opens the metadata on `bm`'s device, formatting it first if it is
    /// blank and `opts.format` allows. Nothing is written to an existing
    /// pool until something changes it.
    #[inline(never)]
    pub fn open(bm: BlockManager<IO>, opts: OpenOptions, hooks: H) -> Result<Self> {
        let pd = Objects::open_or_format(bm, &opts)?;
        let mut pmd = PoolMetadata {
            pd: Some(pd),
            tx: Transaction::default(),
            devices: DeviceTable::new(),
            hooks,
            metadata_reserve: 0,
            threshold: None,
            in_service: false,
            poisoned: false,
            read_only_device: opts.read_only_device,
        };
        pmd.begin_transaction()?;
        pmd.set_metadata_reserve();
        Ok(pmd)
    }

    /// Prepares the pool to be dropped, as upstream's close: commits
    /// unless it is read-only, poisoned or failed. Refused (`Busy`) while
    /// thin devices are open. Dropping the pool without this keeps only
    /// what was committed.
    pub fn close(&mut self) -> Result<()> {
        if self.devices.nr_open() > 0 {
            return Err(Error::Busy);
        }
        match self.pd.as_deref() {
            Some(pd) if !pd.tm.bm().is_read_only() && !self.poisoned => self.commit(),
            _ => Ok(()),
        }
    }

    /// The engine objects, unless the pool failed.
    pub(super) fn objects(&self) -> Result<&Objects<IO>> {
        self.pd.as_deref().ok_or(Error::Invalid)
    }

    /// Runs `f`, a change to the transaction: refused on a poisoned or
    /// failed pool (or a read-only one); a failure poisons the transaction.
    /// Callers check everything that can fail cleanly before.
    pub(super) fn mutate<T>(
        &mut self,
        f: impl FnOnce(&mut Objects<IO>, &mut Transaction, &mut DeviceTable) -> Result<T>,
    ) -> Result<T> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let pd = self.pd.as_deref_mut().ok_or(Error::Invalid)?;
        if pd.tm.bm().is_read_only() {
            return Err(Error::ReadOnly);
        }
        self.in_service = true;
        let r = f(pd, &mut self.tx, &mut self.devices);
        if r.is_err() {
            self.poisoned = true;
        }
        if pd.tm.sm_take_threshold_event() {
            self.hooks.metadata_low();
        }
        r
    }

    /// Like [`Self::mutate`] for a change to the engine's state only (no
    /// in-core state of ours), when the engine keeps its own in-core state
    /// right on failure: the transaction is poisoned only if the engine
    /// changed something before failing.
    pub(super) fn mutate_engine<T>(
        &mut self,
        f: impl FnOnce(&mut Objects<IO>) -> Result<T>,
    ) -> Result<T> {
        let r = self.mutate(|pd, _, _| f(pd));
        if r.is_err() {
            self.poisoned = self.pd.as_deref().map_or(true, |pd| pd.tm.is_poisoned());
        }
        r
    }

    /// True once a change failed half way: commit is refused until abort.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// True once an abort failed: only close is left (upstream's `fail_io`).
    pub fn is_failed(&self) -> bool {
        self.pd.is_none()
    }

    /// Re-reads the transaction's fields from the committed superblock.
    fn begin_transaction(&mut self) -> Result<()> {
        let sb = self.objects()?.superblock()?;
        self.tx = Transaction::load(&sb);
        Ok(())
    }

    /// Writes the changed device details and commits (upstream's
    /// `__commit_transaction`). Does nothing until the pool is in service.
    pub(super) fn commit_transaction(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let pd = self.pd.as_deref_mut().ok_or(Error::Invalid)?;
        if !self.in_service {
            return Ok(());
        }
        self.hooks.pre_commit()?;
        let (tx, devices) = (&mut self.tx, &mut self.devices);
        let r = (|| {
            let mut vt = DETAILS_VALUES;
            for td in devices.iter().filter(|td| td.changed) {
                tx.details_root = btree::insert(
                    &mut pd.tm,
                    &mut vt,
                    tx.details_root,
                    &[td.id],
                    &td.details.pack(),
                )?;
            }
            let t = *tx;
            pd.commit(None, |sb| t.store(sb))
        })();
        if pd.tm.sm_take_threshold_event() {
            self.hooks.metadata_low();
        }
        match r {
            Ok(()) => {
                self.devices.committed();
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// Commits the transaction and starts the next one.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_transaction()?;
        self.begin_transaction()
    }

    /// Throws the transaction away and reopens the last commit (the same
    /// block manager, its cache reset). Devices open stay open, with their
    /// committed details; a device the aborted transaction created is gone
    /// (its handle sees `NoData`). Upstream keeps the aborted transaction's
    /// time, transaction id and in-core details instead; here all of the
    /// transaction goes. If reopening fails the pool is failed.
    pub fn abort(&mut self) -> Result<()> {
        let pd = self.pd.as_deref_mut().ok_or(Error::Invalid)?;
        self.in_service = true;
        for td in self.devices.iter_mut() {
            td.aborted_with_changes = td.changed;
        }
        let opts = OpenOptions {
            data_block_size: self.tx.data_block_size,
            format: false,
            read_only_device: self.read_only_device,
        };
        let reopened = pd
            .tm
            .abort(|bm| Objects::committed_superblock(bm, &opts).map(|sb| sb.metadata_sm_root))
            .and_then(|()| {
                let sb = pd.superblock()?;
                pd.data_sm = DiskSpaceMap::open(&sb.data_sm_root)?;
                Ok(())
            });
        if let Err(e) = reopened {
            self.pd = None;
            return Err(e);
        }
        // The flag is written in place when set: an abort does not undo it.
        let needs_check = self.tx.flags & NEEDS_CHECK_FLAG;
        if let Err(e) = self
            .begin_transaction()
            .and_then(|()| self.reload_devices())
        {
            self.pd = None;
            return Err(e);
        }
        self.tx.flags |= needs_check;
        self.poisoned = false;
        if let (Some(t), Some(pd)) = (self.threshold, self.pd.as_deref_mut()) {
            pd.tm.sm_register_threshold(t);
        }
        self.set_metadata_reserve();
        Ok(())
    }

    /// After an abort: open devices get their committed details back.
    fn reload_devices(&mut self) -> Result<()> {
        let pd = self.pd.as_deref().ok_or(Error::Invalid)?;
        let root = self.tx.details_root;
        self.devices.drop_closed();
        for td in self.devices.iter_mut() {
            td.changed = false;
            match lookup_details(&pd.tm, root, td.id) {
                Ok(d) => {
                    td.details = d;
                    td.gone = false;
                }
                Err(Error::NoData) => td.gone = true,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The userspace transaction id.
    pub fn transaction_id(&self) -> Result<u64> {
        self.objects()?;
        Ok(self.tx.trans_id)
    }

    /// Sets the transaction id to `new` if it is `current` (else
    /// `Invalid`, as upstream).
    pub fn set_transaction_id(&mut self, current: u64, new: u64) -> Result<()> {
        self.objects()?;
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.tx.trans_id != current {
            return Err(Error::Invalid);
        }
        self.in_service = true;
        self.tx.trans_id = new;
        Ok(())
    }

    /// The pool's time (bumped by every snapshot).
    pub fn time(&self) -> u32 {
        self.tx.time
    }

    /// Data block size in sectors.
    pub fn data_block_size(&self) -> u32 {
        self.tx.data_block_size
    }

    /// Sets the needs-check flag, writing it into the superblock at once
    /// (it reaches the disk with the next write-back, commit or not).
    pub fn set_needs_check(&mut self) -> Result<()> {
        let pd = self.pd.as_deref_mut().ok_or(Error::Invalid)?;
        self.in_service = true;
        self.tx.flags |= NEEDS_CHECK_FLAG;
        let bm = pd.tm.bm_mut();
        let mut wb = bm.write_lock(SUPERBLOCK_LOCATION, Some(&SUPERBLOCK_VALIDATOR))?;
        let r = Superblock::unpack(&wb[..]).and_then(|mut sb| {
            sb.flags |= NEEDS_CHECK_FLAG;
            sb.pack(&mut wb[..])
        });
        match r {
            Ok(()) => {
                bm.unlock(wb);
                r
            }
            Err(e) => {
                // The superblock change did not happen; report the first error.
                let _ = bm.discard(wb);
                Err(e)
            }
        }
    }

    /// Clears the needs-check flag at the next commit. (thin-pool never
    /// does: `thin_check --clear-needs-check-flag` does, in userspace.)
    pub fn clear_needs_check(&mut self) -> Result<()> {
        self.objects()?;
        self.in_service = true;
        self.tx.flags &= !NEEDS_CHECK_FLAG;
        Ok(())
    }

    /// True if the metadata must be checked before use.
    pub fn needs_check(&self) -> bool {
        self.tx.flags & NEEDS_CHECK_FLAG != 0
    }

    /// Refuses every change from now on (the block manager's read-only
    /// mode).
    pub fn set_read_only(&mut self) {
        if let Some(pd) = self.pd.as_deref_mut() {
            pd.tm.bm_mut().set_read_only();
        }
    }

    /// Allows changes again.
    pub fn set_read_write(&mut self) {
        if let Some(pd) = self.pd.as_deref_mut() {
            pd.tm.bm_mut().set_read_write();
        }
    }

    /// True in read-only mode.
    pub fn is_read_only(&self) -> bool {
        self.pd
            .as_ref()
            .map_or(true, |pd| pd.tm.bm().is_read_only())
    }

    /// Reads in the blocks that non-blocking lookups missed.
    pub fn issue_prefetches(&self) {
        if let Some(pd) = self.pd.as_deref() {
            pd.tm.issue_prefetches();
        }
    }

    /// The hooks.
    pub fn hooks_mut(&mut self) -> &mut H {
        &mut self.hooks
    }

    /// The block manager (for tests and tools: leak counts, the device).
    pub fn block_manager(&self) -> Result<&BlockManager<IO>> {
        Ok(self.objects()?.tm.bm())
    }

    pub(super) fn set_metadata_reserve(&mut self) {
        let total = self.pd.as_deref().map_or(0, |pd| pd.tm.sm_nr_blocks());
        self.metadata_reserve = MAX_METADATA_RESERVE.min(total / 10);
    }
}

/// Device `dev`'s details from the details tree at `root`.
pub(super) fn lookup_details<IO: BlockIo>(
    tm: &TransactionManager<IO>,
    root: u64,
    dev: u64,
) -> Result<DeviceDetails> {
    let mut v = [0u8; DETAILS_SIZE];
    btree::lookup(tm, root, &[dev], &mut v)?;
    DeviceDetails::unpack(&v)
}
