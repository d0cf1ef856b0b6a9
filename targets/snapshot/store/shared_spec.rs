// SPDX-License-Identifier: GPL-2.0

//! The shared store's part of a `snapshot` table line:
//! `shared 3 <COW device> <chunk size> <id>`, printed back the same way.

use super::shared_index::SnapId;
use core::fmt;

/// A parsed `shared 3 <COW> <chunk> <id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedSpec<'a> {
    /// The COW device argument, as given.
    pub cow: &'a str,
    /// Chunk size in sectors (a power of two, not 0: a new store is
    /// formatted with it).
    pub chunk_sectors: u32,
    /// The snapshot's id in the store.
    pub id: SnapId,
}

impl<'a> SharedSpec<'a> {
    /// Parses the store arguments after the origin. `Ok(None)` if they do
    /// not start with `shared` (another store type); otherwise the spec
    /// and the number of arguments used, or the constructor's message.
    pub fn parse(args: &[&'a str]) -> Result<Option<(Self, usize)>, &'static str> {
        if args.first().copied() != Some("shared") {
            return Ok(None);
        }
        if args.get(1).copied() != Some("3") {
            return Err("shared exception store takes 3 arguments");
        }
        let (Some(&cow), Some(chunk), Some(id)) = (args.get(2), args.get(3), args.get(4)) else {
            return Err("Insufficient exception store arguments");
        };
        let chunk_sectors = chunk.parse::<u32>().map_err(|_| "Invalid chunk size")?;
        if chunk_sectors == 0 {
            return Err("Chunk size not set");
        }
        if !chunk_sectors.is_power_of_two() {
            return Err("Chunk size is not a power of 2");
        }
        // Plain decimal only: no sign, no leading zeros but "0".
        let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
        let canonical = id.len() == 1 || !id.starts_with('0');
        let id = id
            .parse::<u32>()
            .ok()
            .filter(|_| digits && canonical)
            .and_then(SnapId::new)
            .ok_or("Invalid shared snapshot id (0..63)")?;
        Ok(Some((
            SharedSpec {
                cow,
                chunk_sectors,
                id,
            },
            5,
        )))
    }

    /// The table line's store part, with `cow_name` as the plumbing prints
    /// the device: `shared 3 <cow> <chunk> <id>`.
    pub fn fmt_table(&self, cow_name: &str, w: &mut dyn fmt::Write) -> fmt::Result {
        write!(
            w,
            "shared 3 {cow_name} {} {}",
            self.chunk_sectors,
            self.id.get()
        )
    }
}
