// SPDX-License-Identifier: GPL-2.0

//! Thin devices: create, snapshot, delete, open and close, and what the
//! pool knows about each.
//!
//! A device is an entry in the details tree and one in the top level of
//! the mapping tree, whose value is the root of the device's own mapping
//! tree. A snapshot is a second top-level entry with the same root: one
//! more reference, pushed down lazily as either side changes.

use super::device_details::{DeviceDetails, DETAILS_VALUES};
use super::pool::{lookup_details, PoolHooks, PoolMetadata};
use super::thin_device::ThinDevice;
use crate::persistent_data::btree;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;

impl<IO: BlockIo, H: PoolHooks> PoolMetadata<IO, H> {
    /// True if `dev` exists: in core (created or read in this transaction)
    /// or in the details tree.
    fn device_exists(&self, dev: u64) -> Result<bool> {
        if self.devices.get(dev).is_some() {
            return Ok(true);
        }
        let pd = self.objects()?;
        match lookup_details(&pd.tm, self.tx.details_root, dev) {
            Ok(_) => Ok(true),
            Err(Error::NoData) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Brings `dev`'s details into core; `NoData` if there is no such
    /// device. Changes nothing on disk.
    fn load_device(&mut self, dev: u64) -> Result<()> {
        if self.devices.get(dev).is_some() {
            return Ok(());
        }
        let pd = self.objects()?;
        let details = lookup_details(&pd.tm, self.tx.details_root, dev)?;
        self.devices.reserve()?;
        self.devices.add(dev, details, false)
    }

    /// The root of `dev`'s mapping tree.
    pub(super) fn device_root(&self, dev: u64) -> Result<u64> {
        let pd = self.objects()?;
        let mut v = [0u8; 8];
        btree::lookup(&pd.tm, self.tx.root, &[dev], &mut v)?;
        Ok(u64::from_le_bytes(v))
    }

    /// Creates thin device `dev` with nothing mapped; `Exists` if it does.
    pub fn create_thin(&mut self, dev: u64) -> Result<()> {
        self.objects()?;
        if self.device_exists(dev)? {
            return Err(Error::Exists);
        }
        self.devices.reserve()?;
        self.mutate(|pd, tx, devices| {
            let tree = btree::empty(&mut pd.tm, 8)?;
            tx.root = pd.set_device_tree(tx.root, dev, tree)?;
            devices.add(dev, tx.new_device(0), true)
        })
    }

    /// Creates `dev` as a snapshot of `origin` (which should be
    /// suspended): they share every mapping. The pool's time moves on, so
    /// the origin's existing blocks count as shared from now on.
    /// `Exists` if `dev` exists, `NoData` if `origin` does not.
    pub fn create_snap(&mut self, dev: u64, origin: u64) -> Result<()> {
        self.objects()?;
        if self.device_exists(dev)? {
            return Err(Error::Exists);
        }
        let origin_root = self.device_root(origin)?;
        self.load_device(origin)?;
        self.devices.live(origin)?;
        self.devices.reserve()?;
        self.mutate(|pd, tx, devices| {
            pd.tm.inc(origin_root)?;
            tx.root = pd.set_device_tree(tx.root, dev, origin_root)?;
            tx.time = tx.time.wrapping_add(1);
            let o = devices.live_mut(origin)?;
            o.details.snapshotted_time = tx.time;
            o.changed = true;
            let details = tx.new_device(o.details.mapped_blocks);
            devices.add(dev, details, true)
        })
    }

    /// Deletes `dev` and its mappings (data blocks no other device maps
    /// are freed). `NoData` if there is no such device, `Busy` while it is
    /// open.
    pub fn delete_thin_device(&mut self, dev: u64) -> Result<()> {
        self.load_device(dev)?;
        let td = self.devices.live(dev)?;
        if td.open_count > 0 {
            return Err(Error::Busy);
        }
        self.mutate(|pd, tx, devices| {
            devices.remove(dev);
            // A device created in this transaction has no details on disk
            // yet (removal checks before it changes anything).
            let mut vt = DETAILS_VALUES;
            match btree::remove(&mut pd.tm, &mut vt, tx.details_root, &[dev]) {
                Ok(root) => tx.details_root = root,
                Err(Error::NoData) => {}
                Err(e) => return Err(e),
            }
            tx.root = pd.remove_device_tree(tx.root, dev)?;
            Ok(())
        })
    }

    /// Opens `dev` for I/O; `NoData` if there is no such device.
    pub fn open_thin_device(&mut self, dev: u64) -> Result<ThinDevice> {
        self.load_device(dev)?;
        let td = self.devices.live_mut(dev)?;
        td.open_count = td.open_count.checked_add(1).ok_or(Error::Invalid)?;
        Ok(ThinDevice::new(dev))
    }

    /// Closes a device opened with [`Self::open_thin_device`].
    pub fn close_thin_device(&mut self, td: ThinDevice) {
        if let Some(t) = self.devices.get_mut(td.id()) {
            t.open_count = t.open_count.saturating_sub(1);
        }
    }

    /// `td`'s details as they stand in this transaction.
    pub fn device_details(&self, td: &ThinDevice) -> Result<DeviceDetails> {
        self.objects()?;
        Ok(self.devices.live(td.id())?.details)
    }

    /// Blocks `td` maps.
    pub fn mapped_count(&self, td: &ThinDevice) -> Result<u64> {
        Ok(self.device_details(td)?.mapped_blocks)
    }

    /// The highest block `td` maps; `NoData` if none.
    pub fn highest_mapped_block(&self, td: &ThinDevice) -> Result<u64> {
        self.devices.live(td.id())?;
        let root = self.device_root(td.id())?;
        let mut key = [0u64; 1];
        match btree::find_highest_key(&self.objects()?.tm, root, &mut key)? {
            0 => Err(Error::NoData),
            _ => {
                let [k] = key;
                Ok(k)
            }
        }
    }

    /// True if `td` changed in this transaction.
    pub fn thin_changed_this_transaction(&self, td: &ThinDevice) -> bool {
        self.devices.get(td.id()).is_some_and(|t| t.changed)
    }

    /// True if any device changed in this transaction.
    pub fn changed_this_transaction(&self) -> bool {
        self.devices.iter().any(|t| t.changed)
    }

    /// True if the last abort threw away changes to `td`.
    pub fn thin_aborted_changes(&self, td: &ThinDevice) -> bool {
        self.devices
            .get(td.id())
            .is_some_and(|t| t.aborted_with_changes)
    }
}
