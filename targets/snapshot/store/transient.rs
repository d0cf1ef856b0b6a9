// SPDX-License-Identifier: GPL-2.0

//! The transient store (`N`, upstream's `dm-snap-transient.c`): COW chunks
//! handed out in order from the start of the device, nothing on disk, every
//! commit complete at once.

use super::exception_store::{ChunkIo, ChunkSize, ExceptionStore, Scope, StoreKind, Usage};
use super::persistent::AreaWrite;
use super::{Chunk, Exception};
use crate::persistent_data::{Error, Result};

/// A transient store on a COW device.
pub struct TransientStore<Io> {
    io: Io,
    chunk: ChunkSize,
    /// First free sector.
    next_free: u64,
}

impl<Io: ChunkIo> TransientStore<Io> {
    /// An empty store.
    pub fn new(io: Io, chunk: ChunkSize) -> Self {
        TransientStore {
            io,
            chunk,
            next_free: 0,
        }
    }

    /// The COW device.
    pub fn io(&mut self) -> &mut Io {
        &mut self.io
    }
}

impl<Io: ChunkIo, C> ExceptionStore<C> for TransientStore<Io> {
    type Buf = Io::Buf;

    fn chunk_size(&self) -> ChunkSize {
        self.chunk
    }

    fn prepare_exception(&mut self, _old: Chunk, _scope: Scope) -> Result<Chunk> {
        // The device may have grown (or shrunk) since the last call.
        let end = self.next_free.checked_add(self.chunk.sectors().into());
        match end {
            Some(end) if end <= self.io.sectors() => {
                let chunk = self.chunk.to_chunk(self.next_free);
                self.next_free = end;
                Ok(chunk)
            }
            _ => Err(Error::NoSpace),
        }
    }

    fn stage_commit(
        &mut self,
        _e: Exception,
        valid: bool,
        token: C,
        done: &mut dyn FnMut(C, bool),
    ) -> Option<AreaWrite<Io::Buf, C>> {
        done(token, valid);
        None
    }

    fn usage(&self) -> Usage {
        Usage {
            allocated: self.next_free,
            total: self.io.sectors(),
            metadata: 0,
        }
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Transient
    }
}
