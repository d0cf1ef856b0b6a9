// SPDX-License-Identifier: GPL-2.0

//! The block I/O seam: the only way the engine touches a device.
//!
//! An implementation is a block cache: dm-bufio in the kernel
//! (`rust/dm/bufio.rs`), [`mem::MemIo`] (with fault and crash injection)
//! and [`file::FileIo`] on the host, the last two over one shared
//! [`cache`]. Reads hand out the cache's own buffer, held until the guard
//! drops: no copy, no allocation. Each cached block remembers the
//! validator that checked it, so a block is checksummed once, when it is
//! first read with a validator after being loaded, not on every read
//! ([`crate::persistent_data::validator::check_once`]).
//!
//! Semantics the engine relies on:
//!
//! * reads take `&self` and may run concurrently; `write` and `flush` take
//!   `&mut self`, so no block is written while a reader holds one (a held
//!   buffer borrows the cache);
//! * `write` may be cached by the implementation and reach stable storage
//!   at any later time, in any order, or not at all before a crash;
//! * `flush` returns only once every earlier `write` is stable;
//! * `try_read` never waits for I/O and never allocates: it returns
//!   [`Error::WouldBlock`] when the block is not already cached (dm-bufio's
//!   `dm_bufio_get`). It may take a short sleeping lock inside the cache,
//!   as upstream's thin map path does.
//!
//! [`Error::WouldBlock`]: crate::persistent_data::error::Error::WouldBlock

use crate::persistent_data::error::Result;
use crate::persistent_data::validator::ValidatorRef;
use core::ops::Deref;

#[cfg(not(MODULE))]
pub mod cache;
#[cfg(not(MODULE))]
pub mod file;
#[cfg(not(MODULE))]
pub mod mem;

/// Metadata block size in bytes (8 sectors).
pub const BLOCK_SIZE: usize = 4096;

/// Metadata block size in 512-byte sectors, as superblocks record it.
pub const BLOCK_SECTORS: u32 = (BLOCK_SIZE / 512) as u32;

/// One metadata block.
pub type Block = [u8; BLOCK_SIZE];

/// Block-granular, cached access to a metadata device.
pub trait BlockIo {
    /// A block held in the cache: it stays cached and unchanged until the
    /// guard is dropped.
    type Held<'a>: Deref<Target = Block>
    where
        Self: 'a;

    /// Number of whole blocks on the device.
    fn nr_blocks(&self) -> u64;

    /// Block `b`, read from the device if it is not cached. With a
    /// validator `v`, the block is checked by `v` unless `v` already checked
    /// this cached copy.
    fn read(&self, b: u64, v: Option<ValidatorRef>) -> Result<Self::Held<'_>>;

    /// Like [`Self::read`], but only if block `b` is cached and readable
    /// without I/O; else `WouldBlock`. Never allocates.
    fn try_read(&self, b: u64, v: Option<ValidatorRef>) -> Result<Self::Held<'_>>;

    /// Stores `data` as block `b` in the cache, to be written back later,
    /// recording that `v` (which stamped it) validates it.
    fn write(&mut self, b: u64, data: &Block, v: Option<ValidatorRef>) -> Result<()>;

    /// Writes back every cached write and makes them stable.
    fn flush(&mut self) -> Result<()>;

    /// Hint that block `b` will be read soon: start loading it.
    fn prefetch(&self, b: u64);

    /// Drops every clean block from the cache (dirty ones stay), so the
    /// next read of each goes to the device. An abort needs this, as
    /// upstream's `dm_block_manager_reset`: a write that failed may leave
    /// the cache holding what never reached the disk, and a device that
    /// can no longer be read must fail the reopening.
    fn drop_clean(&mut self);
}
