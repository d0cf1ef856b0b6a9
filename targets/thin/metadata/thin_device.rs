// SPDX-License-Identifier: GPL-2.0

//! Thin devices in core (upstream's `dm_thin_device` list): the details of
//! every device opened, created or changed in this transaction. Details
//! change in core (every insert changes `mapped_blocks`) and reach the
//! details tree only at commit.

use super::device_details::DeviceDetails;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::shim::PVec;

/// A thin device opened on the pool: the handle per-device calls take.
/// Given back with `close_thin_device`; not `Clone`, so each open is
/// closed once.
#[derive(Debug, PartialEq, Eq)]
pub struct ThinDevice {
    id: u64,
}

impl ThinDevice {
    pub(super) fn new(id: u64) -> Self {
        ThinDevice { id }
    }

    /// The device id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// One device's in-core state.
#[derive(Clone, Copy, Debug)]
pub(super) struct Td {
    pub(super) id: u64,
    pub(super) open_count: u32,
    /// The details differ from the details tree's.
    pub(super) changed: bool,
    /// The last abort threw away changes to this device.
    pub(super) aborted_with_changes: bool,
    /// The device vanished in an abort (it was created in the aborted
    /// transaction): its handles only get `NoData`.
    pub(super) gone: bool,
    pub(super) details: DeviceDetails,
}

/// The in-core devices, sorted by id.
pub(super) struct DeviceTable {
    tds: PVec<Td>,
}

impl DeviceTable {
    pub(super) const fn new() -> Self {
        DeviceTable { tds: PVec::new() }
    }

    fn position(&self, id: u64) -> core::result::Result<usize, usize> {
        self.tds.binary_search_by_key(&id, |td| td.id)
    }

    /// The device `id`, if in core (never allocates: the map path uses it).
    pub(super) fn get(&self, id: u64) -> Option<&Td> {
        self.position(id).ok().and_then(|i| self.tds.get(i))
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Td> {
        match self.position(id) {
            Ok(i) => self.tds.get_mut(i),
            Err(_) => None,
        }
    }

    /// An open device's state: `NoData` if it vanished in an abort,
    /// `Invalid` if it is not in core (a handle from another pool).
    pub(super) fn live(&self, id: u64) -> Result<&Td> {
        match self.get(id) {
            Some(td) if td.gone => Err(Error::NoData),
            Some(td) => Ok(td),
            None => Err(Error::Invalid),
        }
    }

    pub(super) fn live_mut(&mut self, id: u64) -> Result<&mut Td> {
        match self.get_mut(id) {
            Some(td) if td.gone => Err(Error::NoData),
            Some(td) => Ok(td),
            None => Err(Error::Invalid),
        }
    }

    /// Makes room for one more device, so that [`Self::add`] cannot fail
    /// once a change is under way.
    pub(super) fn reserve(&mut self) -> Result<()> {
        self.tds.try_reserve(1)
    }

    /// Adds device `id` (not yet in core) with `details`.
    pub(super) fn add(&mut self, id: u64, details: DeviceDetails, changed: bool) -> Result<()> {
        let i = match self.position(id) {
            Ok(_) => return Err(Error::Exists),
            Err(i) => i,
        };
        self.tds.try_insert(
            i,
            Td {
                id,
                open_count: 0,
                changed,
                aborted_with_changes: false,
                gone: false,
                details,
            },
        )
    }

    /// Forgets device `id`.
    pub(super) fn remove(&mut self, id: u64) {
        if let Ok(i) = self.position(id) {
            self.tds.remove(i);
        }
    }

    /// Every device in core.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Td> {
        self.tds.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Td> {
        self.tds.iter_mut()
    }

    /// Devices currently open.
    pub(super) fn nr_open(&self) -> usize {
        self.tds.iter().filter(|td| td.open_count > 0).count()
    }

    /// Forgets the devices nobody has open.
    pub(super) fn drop_closed(&mut self) {
        let mut i = 0;
        while let Some(td) = self.tds.get(i) {
            if td.open_count == 0 {
                self.tds.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// After a commit: nothing is changed any more, and closed devices
    /// need not stay in core.
    pub(super) fn committed(&mut self) {
        self.drop_closed();
        self.tds.iter_mut().for_each(|td| td.changed = false);
    }
}
