// SPDX-License-Identifier: GPL-2.0

//! A thin device's mappings: lookups (blocking, or the map path's
//! non-blocking one), inserts and removals.

use super::device_details::DeviceDetails;
use super::mapping::{pack_block_time, unpack_block_time, BlockTime, DATA_BLOCK_LIMIT};
use super::pool::{PoolHooks, PoolMetadata};
use super::thin_device::ThinDevice;
use crate::persistent_data::btree;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::transaction_manager::BlockReader;

/// Where a virtual block is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupResult {
    /// The data block.
    pub block: u64,
    /// The block was mapped before the device's last snapshot, so another
    /// device may map it too (writing it must break sharing).
    pub shared: bool,
}

/// A run of mapped virtual blocks on consecutive data blocks, all shared
/// or all not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedRange {
    /// First virtual block of the run.
    pub thin_begin: u64,
    /// One past its last virtual block.
    pub thin_end: u64,
    /// The data block `thin_begin` maps to.
    pub pool_begin: u64,
    /// Whether the run's blocks may be shared.
    pub maybe_shared: bool,
}

fn result(details: &DeviceDetails, value: [u8; 8]) -> LookupResult {
    let (block, time) = unpack_block_time(u64::from_le_bytes(value));
    LookupResult {
        block,
        shared: details.shared_since(time),
    }
}

/// Looks `[dev, vblock]` up through `r`; allocates nothing.
fn lookup_in<R: BlockReader>(
    r: &R,
    root: u64,
    dev: u64,
    details: &DeviceDetails,
    vblock: u64,
) -> Result<LookupResult> {
    let mut v = [0u8; 8];
    btree::lookup(r, root, &[dev, vblock], &mut v)?;
    Ok(result(details, v))
}

impl<IO: BlockIo, H: PoolHooks> PoolMetadata<IO, H> {
    /// Where `td` maps `vblock`: `NoData` if unmapped. With
    /// `can_issue_io` false only cached metadata is read, never sleeping
    /// or allocating: `WouldBlock` (the missing block is queued for
    /// [`Self::issue_prefetches`]) or `NoMem` then mean "try again from
    /// the worker".
    pub fn find_block(
        &self,
        td: &ThinDevice,
        vblock: u64,
        can_issue_io: bool,
    ) -> Result<LookupResult> {
        let pd = self.objects()?;
        let details = &self.devices.live(td.id())?.details;
        if can_issue_io {
            lookup_in(&pd.tm, self.tx.root, td.id(), details, vblock)
        } else {
            lookup_in(
                &pd.tm.non_blocking(),
                self.tx.root,
                td.id(),
                details,
                vblock,
            )
        }
    }

    /// The first run of mapped blocks in `[begin, end)` whose data blocks
    /// are consecutive and equally shared; `NoData` if nothing in the range
    /// is mapped.
    pub fn find_mapped_range(&self, td: &ThinDevice, begin: u64, end: u64) -> Result<MappedRange> {
        let pd = self.objects()?;
        let details = &self.devices.live(td.id())?.details;
        if end < begin {
            return Err(Error::NoData);
        }
        let mut v = [0u8; 8];
        let first = btree::lookup_next(&pd.tm, self.tx.root, &[td.id(), begin], &mut v)?;
        if first >= end {
            return Err(Error::NoData);
        }
        let start = result(details, v);
        let mut range = MappedRange {
            thin_begin: first,
            thin_end: first + 1,
            pool_begin: start.block,
            maybe_shared: start.shared,
        };
        while range.thin_end < end {
            let next = match lookup_in(&pd.tm, self.tx.root, td.id(), details, range.thin_end) {
                Ok(r) => r,
                Err(Error::NoData) => break,
                Err(e) => return Err(e),
            };
            let expected = range.pool_begin + (range.thin_end - range.thin_begin);
            if next.block != expected || next.shared != range.maybe_shared {
                break;
            }
            range.thin_end += 1;
        }
        Ok(range)
    }

    /// Maps `td`'s `vblock` to `data_block`, adopting the caller's
    /// reference on it (from [`Self::alloc_data_block`]); a previous
    /// mapping's data block loses its reference.
    pub fn insert_block(&mut self, td: &ThinDevice, vblock: u64, data_block: u64) -> Result<()> {
        if data_block >= DATA_BLOCK_LIMIT {
            return Err(Error::Invalid);
        }
        let dev = td.id();
        self.devices.live(dev)?;
        self.mutate(|pd, tx, devices| {
            let value = pack_block_time(data_block, tx.time).to_le_bytes();
            let (root, inserted) = btree::insert_notify(
                &mut pd.tm,
                &mut BlockTime(&mut pd.data_sm),
                tx.root,
                &[dev, vblock],
                &value,
            )?;
            tx.root = root;
            let t = devices.live_mut(dev)?;
            t.changed = true;
            if inserted {
                t.details.mapped_blocks += 1;
            }
            Ok(())
        })
    }

    /// Unmaps `td`'s `vblock`, dropping its data block's reference;
    /// `NoData` if it was not mapped.
    pub fn remove_block(&mut self, td: &ThinDevice, vblock: u64) -> Result<()> {
        self.find_block(td, vblock, true)?;
        let dev = td.id();
        self.mutate(|pd, tx, devices| {
            tx.root = btree::remove(
                &mut pd.tm,
                &mut BlockTime(&mut pd.data_sm),
                tx.root,
                &[dev, vblock],
            )?;
            let t = devices.live_mut(dev)?;
            t.changed = true;
            t.details.mapped_blocks = t.details.mapped_blocks.saturating_sub(1);
            Ok(())
        })
    }

    /// Unmaps every block of `td` in `[begin, end)`, as upstream: the
    /// device's tree is taken out of the top level, trimmed run by run,
    /// and put back. Returns how many blocks were unmapped.
    pub fn remove_range(&mut self, td: &ThinDevice, begin: u64, end: u64) -> Result<u64> {
        let dev = td.id();
        self.devices.live(dev)?;
        let dev_root = self.device_root(dev)?;
        self.mutate(|pd, tx, devices| {
            // One more reference, so taking it out does not delete it.
            pd.tm.inc(dev_root)?;
            tx.root = pd.remove_device_tree(tx.root, dev)?;
            let mut root = dev_root;
            let mut next = begin;
            let mut total = 0u64;
            let mut v = [0u8; 8];
            while next < end {
                next = match btree::lookup_next(&pd.tm, root, &[next], &mut v) {
                    Ok(k) => k,
                    Err(Error::NoData) => break,
                    Err(e) => return Err(e),
                };
                if next >= end {
                    break;
                }
                let (r, n) = btree::remove_leaves(
                    &mut pd.tm,
                    &mut BlockTime(&mut pd.data_sm),
                    root,
                    &[next],
                    end,
                )?;
                root = r;
                if n == 0 {
                    // The key just found was not removed: damaged tree.
                    return Err(Error::Invalid);
                }
                total += u64::from(n);
            }
            let t = devices.live_mut(dev)?;
            t.changed = true;
            t.details.mapped_blocks = t.details.mapped_blocks.saturating_sub(total);
            tx.root = pd.set_device_tree(tx.root, dev, root)?;
            Ok(total)
        })
    }
}
