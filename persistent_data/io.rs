// SPDX-License-Identifier: GPL-2.0

//! The block I/O seam: the only way the engine touches a device.
//!
//! In the kernel this is implemented over dm-bufio (in `rust/`); on the host
//! by [`mem::MemIo`] (with fault and crash injection) and [`file::FileIo`].
//!
//! Semantics the engine relies on:
//!
//! * `write` may be cached by the implementation and reach stable storage at
//!   any later time, in any order, or not at all before a crash;
//! * `flush` returns only once every earlier `write` is stable;
//! * `try_read` never sleeps: it returns [`Error::WouldBlock`] when the block
//!   is not already cached (dm-bufio's `dm_bufio_get`).

use crate::persistent_data::error::{Error, Result};

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

/// Block-granular access to a metadata device.
pub trait BlockIo {
    /// Number of whole blocks on the device.
    fn nr_blocks(&self) -> u64;

    /// Reads block `b` into `buf`.
    fn read(&self, b: u64, buf: &mut Block) -> Result<()>;

    /// Reads block `b` only if that needs no I/O; else `WouldBlock`.
    fn try_read(&self, b: u64, buf: &mut Block) -> Result<()> {
        let _ = (b, buf);
        Err(Error::WouldBlock)
    }

    /// Writes `buf` to block `b` (possibly cached until `flush`).
    fn write(&self, b: u64, buf: &Block) -> Result<()>;

    /// Makes every earlier write stable.
    fn flush(&self) -> Result<()>;

    /// Hint that block `b` will be read soon.
    fn prefetch(&self, b: u64) {
        let _ = b;
    }
}

impl<T: BlockIo + ?Sized> BlockIo for &T {
    fn nr_blocks(&self) -> u64 {
        (**self).nr_blocks()
    }
    fn read(&self, b: u64, buf: &mut Block) -> Result<()> {
        (**self).read(b, buf)
    }
    fn try_read(&self, b: u64, buf: &mut Block) -> Result<()> {
        (**self).try_read(b, buf)
    }
    fn write(&self, b: u64, buf: &Block) -> Result<()> {
        (**self).write(b, buf)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn prefetch(&self, b: u64) {
        (**self).prefetch(b)
    }
}
