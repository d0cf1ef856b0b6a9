// SPDX-License-Identifier: GPL-2.0

//! The exception store's view of the COW device ([`ChunkIo`]) over dm-io:
//! synchronous reads and writes, so only from a context that may sleep and
//! is not inside `map` (the constructor, kcopyd completions, work items).

use super::store::exception_store::SECTOR_SHIFT;
use super::store::{ChunkIo, Durability};
use crate::dm::dm_io::{DmIoClient, IoBuffer, IoOp};
use crate::dm::region::Region;
use crate::dm::DmDev;
use crate::persistent_data::{Error, Result};

/// The COW device and the dm-io client its metadata I/O uses.
pub(crate) struct CowIo {
    dev: DmDev,
    client: DmIoClient,
    /// The buffer of the last I/O, kept for the next one of the same
    /// length: a commit writes one metadata area, and a vmalloc and vfree
    /// for each would cost more than the write.
    buf: Option<IoBuffer>,
}

impl CowIo {
    /// Metadata I/O on `dev`.
    pub(crate) fn new(dev: DmDev) -> kernel::error::Result<Self> {
        Ok(CowIo {
            dev,
            client: DmIoClient::new()?,
            buf: None,
        })
    }

    /// A region of `dev` and a buffer for `len` bytes at `sector`: the
    /// buffer in `kept` if it has that length (its old contents are
    /// overwritten by the I/O or by the caller), else a new one left there.
    /// Takes the fields apart so the client stays usable beside the buffer.
    fn prepare<'a>(
        dev: &DmDev,
        kept: &'a mut Option<IoBuffer>,
        sector: u64,
        len: usize,
    ) -> Result<(Region, &'a mut IoBuffer)> {
        if len == 0 || len % (1 << SECTOR_SHIFT) != 0 {
            return Err(Error::Invalid);
        }
        let sectors = len >> SECTOR_SHIFT;
        let count = u32::try_from(sectors).map_err(|_| Error::Invalid)?;
        let region = Region::new(dev.clone(), sector, count.into()).map_err(|_| Error::Io)?;
        if kept.as_ref().is_some_and(|b| b.as_slice().len() != len) {
            // Freed before the new one is allocated.
            *kept = None;
        }
        let buf = match kept.take() {
            Some(b) => b,
            None => IoBuffer::new(count).map_err(|_| Error::NoMem)?,
        };
        Ok((region, kept.insert(buf)))
    }
}

impl ChunkIo for CowIo {
    fn sectors(&self) -> u64 {
        self.dev.nr_sectors()
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result {
        let (region, io_buf) = Self::prepare(&self.dev, &mut self.buf, sector, buf.len())?;
        self.client.read(&region, io_buf).map_err(|_| Error::Io)?;
        let src = io_buf.as_slice().get(..buf.len()).ok_or(Error::Invalid)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8], durability: Durability) -> Result {
        let (region, io_buf) = Self::prepare(&self.dev, &mut self.buf, sector, buf.len())?;
        io_buf
            .as_mut_slice()
            .get_mut(..buf.len())
            .ok_or(Error::Invalid)?
            .copy_from_slice(buf);
        let op = match durability {
            Durability::Plain => IoOp::Write,
            // Everything written before (the copied chunks) is flushed
            // ahead of this write, in the same request.
            Durability::Flushed => IoOp::WriteFlushFua,
        };
        self.client
            .write(&region, io_buf, op)
            .map_err(|_| Error::Io)
    }
}
