// SPDX-License-Identifier: GPL-2.0

//! A dm-bufio client: cached, block-sized I/O on a device, used as the kernel
//! side of the metadata engine's block I/O seam.
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h)

use super::bindings;
use super::device::DmDev;
use crate::persistent_data::error as pd;
use crate::persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use kernel::error::{code::EINVAL, Error, Result};

/// A dm-bufio client over one device.
///
/// # Invariants
///
/// `c` is a live client from `dm_bufio_client_create`, destroyed only on drop,
/// and `block_size` is its block size in bytes.
pub(crate) struct BufioClient {
    c: *mut bindings::dm_bufio_client,
    block_size: usize,
}

// SAFETY: dm-bufio clients do their own locking and may be used from any
// thread.
unsafe impl Send for BufioClient {}
// SAFETY: as for `Send`: every operation takes the client's internal lock.
unsafe impl Sync for BufioClient {}

fn decode_ptr<T>(ptr: *mut T) -> Result<*mut T> {
    // SAFETY: `dmrs_ptr_err_or_zero` only inspects the pointer value.
    let r = unsafe { bindings::dmrs_ptr_err_or_zero(ptr.cast()) };
    if r != 0 {
        return Err(Error::from_errno(r as i32));
    }
    if ptr.is_null() {
        return Err(EINVAL);
    }
    Ok(ptr)
}

impl BufioClient {
    // Used by the engine's self-test target, which is next to land.
    #[allow(dead_code)]
    /// Creates a client with `block_size`-byte blocks over `dev`; `dev` must
    /// outlive the client (the target owning both drops the client first).
    pub(crate) fn new(dev: &DmDev, block_size: u32) -> Result<Self> {
        // SAFETY: `dev` holds the block device open; no callbacks are given.
        let c = unsafe {
            bindings::dm_bufio_client_create(dev.bdev(), block_size, 1, 0, None, None, 0)
        };
        let c = decode_ptr(c)?;
        // INVARIANT: a live client with that block size.
        Ok(Self {
            c,
            block_size: block_size as usize,
        })
    }

    /// Number of whole blocks on the device.
    pub(crate) fn nr_blocks(&self) -> u64 {
        // SAFETY: `c` is live (type invariant).
        unsafe { bindings::dm_bufio_get_device_size(self.c) }
    }

    /// Copies block `b` into `out` (reading it from disk if not cached).
    pub(crate) fn read(&self, b: u64, out: &mut [u8]) -> Result {
        if out.len() != self.block_size {
            return Err(EINVAL);
        }
        let mut buf: *mut bindings::dm_buffer = core::ptr::null_mut();
        // SAFETY: `c` is live (type invariant) and `buf` is a valid out pointer.
        let data = decode_ptr(unsafe { bindings::dm_bufio_read(self.c, b, &mut buf) })?;
        // SAFETY: dm-bufio returned a held buffer of `block_size` bytes at
        // `data`; we copy out of it and release it once.
        unsafe {
            core::ptr::copy_nonoverlapping(data.cast::<u8>(), out.as_mut_ptr(), out.len());
            bindings::dm_bufio_release(buf);
        }
        Ok(())
    }

    /// Copies block `b` into `out` only if it is cached; `Ok(false)` when
    /// reading it would need I/O (never sleeps on the disk).
    pub(crate) fn read_cached(&self, b: u64, out: &mut [u8]) -> Result<bool> {
        if out.len() != self.block_size {
            return Err(EINVAL);
        }
        let mut buf: *mut bindings::dm_buffer = core::ptr::null_mut();
        // SAFETY: `c` is live (type invariant) and `buf` is a valid out pointer.
        let data = unsafe { bindings::dm_bufio_get(self.c, b, &mut buf) };
        if data.is_null() {
            return Ok(false);
        }
        let data = decode_ptr(data)?;
        // SAFETY: as in `read`: a held buffer of `block_size` bytes, copied
        // out of and released once.
        unsafe {
            core::ptr::copy_nonoverlapping(data.cast::<u8>(), out.as_mut_ptr(), out.len());
            bindings::dm_bufio_release(buf);
        }
        Ok(true)
    }

    /// Starts reading block `b` into the cache in the background.
    pub(crate) fn prefetch(&self, b: u64) {
        // SAFETY: `c` is live (type invariant); prefetch only queues I/O.
        unsafe { bindings::dm_bufio_prefetch(self.c, b, 1) };
    }

    /// Replaces block `b` with `data` in the cache and marks it dirty; it
    /// reaches the disk at the next `flush` (or earlier, under memory pressure).
    pub(crate) fn write(&self, b: u64, data: &[u8]) -> Result {
        if data.len() != self.block_size {
            return Err(EINVAL);
        }
        let mut buf: *mut bindings::dm_buffer = core::ptr::null_mut();
        // SAFETY: `c` is live (type invariant) and `buf` is a valid out pointer.
        let dst = decode_ptr(unsafe { bindings::dm_bufio_new(self.c, b, &mut buf) })?;
        // SAFETY: dm-bufio returned a held, writable buffer of `block_size`
        // bytes; we fill it, mark it dirty and release it once.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), dst.cast::<u8>(), data.len());
            bindings::dm_bufio_mark_buffer_dirty(buf);
            bindings::dm_bufio_release(buf);
        }
        Ok(())
    }

    /// Writes every dirty block, waits for them, then flushes the device's
    /// cache (dm-bufio issues the flush itself).
    pub(crate) fn flush(&self) -> Result {
        // SAFETY: `c` is live (type invariant).
        let r = unsafe { bindings::dm_bufio_write_dirty_buffers(self.c) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

impl Drop for BufioClient {
    fn drop(&mut self) {
        // SAFETY: `c` is live and destroyed exactly once, here (type invariant).
        unsafe { bindings::dm_bufio_client_destroy(self.c) };
    }
}

/// The metadata engine's errors for a failed kernel call: anything the
/// device reports is an I/O error, except running out of memory.
fn to_pd(e: Error) -> pd::Error {
    if e == kernel::error::code::ENOMEM {
        pd::Error::NoMem
    } else {
        pd::Error::Io
    }
}

/// The kernel side of the metadata engine's block I/O seam: a client whose
/// block size is the engine's 4 KiB metadata block.
impl BlockIo for BufioClient {
    fn nr_blocks(&self) -> u64 {
        if self.block_size == BLOCK_SIZE {
            BufioClient::nr_blocks(self)
        } else {
            0
        }
    }

    fn read(&self, b: u64, buf: &mut Block) -> pd::Result<()> {
        BufioClient::read(self, b, buf).map_err(to_pd)
    }

    fn try_read(&self, b: u64, buf: &mut Block) -> pd::Result<()> {
        match self.read_cached(b, buf) {
            Ok(true) => Ok(()),
            Ok(false) => Err(pd::Error::WouldBlock),
            Err(e) => Err(to_pd(e)),
        }
    }

    fn write(&self, b: u64, buf: &Block) -> pd::Result<()> {
        BufioClient::write(self, b, buf).map_err(to_pd)
    }

    fn flush(&self) -> pd::Result<()> {
        BufioClient::flush(self).map_err(to_pd)
    }

    fn prefetch(&self, b: u64) {
        BufioClient::prefetch(self, b)
    }
}
