// SPDX-License-Identifier: GPL-2.0

//! A file or block device as a metadata device, for host tools and tests.

use super::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Block I/O on a file through `pread`/`pwrite`; `flush` is `fdatasync`.
pub struct FileIo {
    file: File,
    nr_blocks: u64,
}

impl FileIo {
    /// Opens `path` read-write (or read-only) and sizes it in whole blocks.
    pub fn open(path: &Path, writable: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|_| Error::Io)?;
        // Seeking to the end sizes block devices too (their metadata length
        // is zero).
        let len = (&file).seek(SeekFrom::End(0)).map_err(|_| Error::Io)?;
        Ok(FileIo {
            file,
            nr_blocks: len / BLOCK_SIZE as u64,
        })
    }

    /// Creates (or truncates) `path` as a zero-filled device of `nr_blocks`.
    pub fn create(path: &Path, nr_blocks: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|_| Error::Io)?;
        file.set_len(nr_blocks * BLOCK_SIZE as u64)
            .map_err(|_| Error::Io)?;
        Ok(FileIo { file, nr_blocks })
    }

    fn offset(&self, b: u64) -> Result<u64> {
        if b >= self.nr_blocks {
            return Err(Error::Io);
        }
        Ok(b * BLOCK_SIZE as u64)
    }
}

impl BlockIo for FileIo {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    fn read(&self, b: u64, buf: &mut Block) -> Result<()> {
        let off = self.offset(b)?;
        self.file.read_exact_at(buf, off).map_err(|_| Error::Io)
    }

    fn try_read(&self, b: u64, buf: &mut Block) -> Result<()> {
        // The page cache makes a blocking read cheap enough on the host.
        self.read(b, buf)
    }

    fn write(&self, b: u64, buf: &Block) -> Result<()> {
        let off = self.offset(b)?;
        self.file.write_all_at(buf, off).map_err(|_| Error::Io)
    }

    fn flush(&self) -> Result<()> {
        self.file.sync_data().map_err(|_| Error::Io)
    }
}
