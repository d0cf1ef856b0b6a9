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
}

impl CowIo {
    /// Metadata I/O on `dev`.
    pub(crate) fn new(dev: DmDev) -> kernel::error::Result<Self> {
        Ok(CowIo {
            dev,
            client: DmIoClient::new()?,
        })
    }

    /// The region of `dev` that `len` bytes at `sector` cover.
    fn region(&self, sector: u64, len: usize) -> Result<Region<&DmDev>> {
        if len == 0 || len % (1 << SECTOR_SHIFT) != 0 {
            return Err(Error::Invalid);
        }
        let count = u32::try_from(len >> SECTOR_SHIFT).map_err(|_| Error::Invalid)?;
        Region::of(&self.dev, sector, count.into()).map_err(|_| Error::Io)
    }
}

impl ChunkIo for CowIo {
    /// The store's buffers are dm-io's memory: they are written as they
    /// are, without a bounce copy.
    type Buf = IoBuffer;

    fn sectors(&self) -> u64 {
        self.dev.nr_sectors()
    }

    fn alloc(&self, len: usize) -> Result<IoBuffer> {
        if len % (1 << SECTOR_SHIFT) != 0 {
            return Err(Error::Invalid);
        }
        let sectors = u32::try_from(len >> SECTOR_SHIFT).map_err(|_| Error::Invalid)?;
        IoBuffer::new(sectors).map_err(|_| Error::NoMem)
    }

    fn read(&mut self, sector: u64, buf: &mut IoBuffer) -> Result {
        let region = self.region(sector, buf.as_slice().len())?;
        self.client.read(&region, buf).map_err(|_| Error::Io)
    }

    fn write(&mut self, sector: u64, buf: &IoBuffer, durability: Durability) -> Result {
        let region = self.region(sector, buf.as_slice().len())?;
        let op = match durability {
            Durability::Plain => IoOp::Write,
            // Everything written before (the copied chunks) is flushed
            // ahead of this write, in the same request.
            Durability::Flushed => IoOp::WriteFlushFua,
        };
        self.client.write(&region, buf, op).map_err(|_| Error::Io)
    }
}
