// SPDX-License-Identifier: GPL-2.0

//! The metadata area of a shared store's COW device: the device's block
//! I/O cut to the first `blocks` blocks, so the engine (which sizes its
//! metadata space map from the device) never strays into the data chunks.

use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::{Block, BlockIo};
use crate::persistent_data::validator::ValidatorRef;

/// `io` seen through its first `blocks` blocks.
pub struct MetadataArea<IO: BlockIo> {
    io: IO,
    blocks: u64,
}

impl<IO: BlockIo> MetadataArea<IO> {
    /// The first `blocks` blocks of `io` (at most all of them).
    pub fn new(io: IO, blocks: u64) -> Self {
        let blocks = blocks.min(io.nr_blocks());
        MetadataArea { io, blocks }
    }

    /// The whole device.
    pub fn device(&self) -> &IO {
        &self.io
    }

    fn check(&self, b: u64) -> Result<()> {
        if b < self.blocks {
            Ok(())
        } else {
            Err(Error::Invalid)
        }
    }
}

impl<IO: BlockIo> BlockIo for MetadataArea<IO> {
    type Held<'a>
        = IO::Held<'a>
    where
        Self: 'a;

    fn nr_blocks(&self) -> u64 {
        self.blocks
    }

    fn read(&self, b: u64, v: Option<ValidatorRef>) -> Result<Self::Held<'_>> {
        self.check(b)?;
        self.io.read(b, v)
    }

    fn try_read(&self, b: u64, v: Option<ValidatorRef>) -> Result<Self::Held<'_>> {
        self.check(b)?;
        self.io.try_read(b, v)
    }

    fn write(&mut self, b: u64, data: &Block, v: Option<ValidatorRef>) -> Result<()> {
        self.check(b)?;
        self.io.write(b, data, v)
    }

    fn flush(&mut self) -> Result<()> {
        self.io.flush()
    }

    fn prefetch(&self, b: u64) {
        if b < self.blocks {
            self.io.prefetch(b);
        }
    }

    fn drop_clean(&mut self) {
        self.io.drop_clean()
    }
}
