// SPDX-License-Identifier: GPL-2.0

//! A file or block device as a metadata device, for host tools and tests.

use super::cache::{HostBuf, HostCache};
use super::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::validator::ValidatorRef;
use core::cell::{RefCell, RefMut};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Blocks a [`FileIo`] caches (64 MiB).
pub const FILE_CACHE_BLOCKS: usize = 16384;

/// Block I/O on a file through `pread`/`pwrite` behind a [`HostCache`]
/// (a `RefCell`: a handle is `Send`, not `Sync`); `flush` is `fdatasync`.
pub struct FileIo {
    file: File,
    nr_blocks: u64,
    cache: RefCell<HostCache>,
}

impl FileIo {
    fn new(file: File, nr_blocks: u64) -> Self {
        FileIo {
            file,
            nr_blocks,
            cache: RefCell::new(HostCache::new(FILE_CACHE_BLOCKS)),
        }
    }

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
        Ok(Self::new(file, len / BLOCK_SIZE as u64))
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
        Ok(Self::new(file, nr_blocks))
    }

    fn offset(&self, b: u64) -> Result<u64> {
        if b >= self.nr_blocks {
            return Err(Error::Io);
        }
        Ok(b * BLOCK_SIZE as u64)
    }

    fn cache(&self) -> RefMut<'_, HostCache> {
        self.cache.borrow_mut()
    }
}

impl BlockIo for FileIo {
    type Held<'a> = HostBuf;

    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    fn read(&self, b: u64, v: Option<ValidatorRef>) -> Result<HostBuf> {
        let off = self.offset(b)?;
        self.cache().read(b, v, |buf| {
            self.file.read_exact_at(buf, off).map_err(|_| Error::Io)
        })
    }

    fn try_read(&self, b: u64, v: Option<ValidatorRef>) -> Result<HostBuf> {
        // The page cache makes a blocking read cheap enough on the host.
        self.read(b, v)
    }

    fn write(&mut self, b: u64, buf: &Block, v: Option<ValidatorRef>) -> Result<()> {
        let off = self.offset(b)?;
        self.file.write_all_at(buf, off).map_err(|_| Error::Io)?;
        self.cache().written(b, buf, v);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|_| Error::Io)
    }

    fn prefetch(&self, b: u64) {
        if let Ok(off) = self.offset(b) {
            self.cache().prefetch(b, |buf| {
                self.file.read_exact_at(buf, off).map_err(|_| Error::Io)
            });
        }
    }

    fn drop_clean(&mut self) {
        // Writes go straight to the file: nothing cached is dirty.
        self.cache.get_mut().clear();
    }
}
