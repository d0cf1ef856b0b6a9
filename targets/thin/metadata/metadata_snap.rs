// SPDX-License-Identifier: GPL-2.0

//! The metadata snapshot ("held root"): a frozen copy of the superblock
//! holding references on the mapping and details trees as they were, so
//! userspace (`thin_dump -m`) can read a consistent pool while it runs.
//! At most one at a time.

use super::device_details::DETAILS_VALUES;
use super::mapping::BlockTime;
use super::pool::{PoolHooks, PoolMetadata};
use super::superblock::{Superblock, SUPERBLOCK_LOCATION, SUPERBLOCK_VALIDATOR};
use crate::persistent_data::btree;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;

impl<IO: BlockIo, H: PoolHooks> PoolMetadata<IO, H> {
    /// Takes the metadata snapshot, as upstream: commits (so the copied
    /// roots are current), then shadows the superblock after taking an
    /// extra reference on it, which makes the shadow a copy at a new
    /// block; the copy loses its space map roots and takes a reference on
    /// its two trees. Its location is the held root, recorded by the next
    /// commit. `Busy` if one is held already.
    pub fn reserve_metadata_snap(&mut self) -> Result<()> {
        self.objects()?;
        if self.tx.held_root != 0 {
            return Err(Error::Busy);
        }
        self.commit_transaction()?;
        self.mutate(|pd, tx, _| {
            pd.tm.inc(SUPERBLOCK_LOCATION)?;
            let (mut copy, copied) = pd
                .tm
                .shadow_block(SUPERBLOCK_LOCATION, &SUPERBLOCK_VALIDATOR)?;
            if !copied {
                // The extra reference did not stick: this is the live
                // superblock itself, unchanged.
                pd.tm.unlock(copy);
                return Err(Error::Invalid);
            }
            let held = copy.loc();
            let roots = Superblock::unpack(&copy[..]).and_then(|sb| {
                Superblock::clear_space_map_roots(&mut copy[..])?;
                Ok((sb.mapping_root, sb.details_root))
            });
            pd.tm.unlock(copy);
            let (mapping_root, details_root) = roots?;
            pd.tm.inc(mapping_root)?;
            pd.tm.inc(details_root)?;
            tx.held_root = held;
            Ok(())
        })
    }

    /// Drops the metadata snapshot: its trees lose the references it held
    /// (what only it still used is freed), then its superblock copy.
    /// `Invalid` if none is held.
    pub fn release_metadata_snap(&mut self) -> Result<()> {
        let held = self.tx.held_root;
        if held == 0 {
            return Err(Error::Invalid);
        }
        let sb = {
            let pd = self.objects()?;
            let copy = pd.tm.read_lock(held, &SUPERBLOCK_VALIDATOR)?;
            Superblock::unpack(&copy[..])?
        };
        self.mutate(|pd, tx, _| {
            tx.held_root = 0;
            btree::del(
                &mut pd.tm,
                &mut BlockTime(&mut pd.data_sm),
                sb.mapping_root,
                2,
            )?;
            let mut details = DETAILS_VALUES;
            btree::del(&mut pd.tm, &mut details, sb.details_root, 1)?;
            pd.tm.dec(held)
        })
    }

    /// The held root (0: no metadata snapshot).
    pub fn metadata_snap(&self) -> Result<u64> {
        self.objects()?;
        Ok(self.tx.held_root)
    }
}
