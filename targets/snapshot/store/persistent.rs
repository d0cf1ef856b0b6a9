// SPDX-License-Identifier: GPL-2.0

//! The persistent store (`P`/`PO`, upstream's `dm-snap-persistent.c`),
//! byte-compatible with Linux 6.12.
//!
//! On the COW device, in chunks of the snapshot's chunk size, all LE:
//!
//! * chunk 0, the header: `magic` "SnAp" (0x70416e53), `valid`, `version`
//!   (1), `chunk_size` in sectors; the rest of the chunk zero. A zero magic
//!   means a new snapshot (userspace zeroes the start of the COW device).
//! * then metadata areas, each followed by the data chunks it describes:
//!   area `i` is chunk `1 + (epa + 1) * i`, where `epa`, the exceptions per
//!   area, is the chunk size in bytes / 16. An area holds `(old, new)` le64
//!   pairs; the first pair with `new == 0` ends the list (chunk 0 is the
//!   header, never data).
//!
//! Commit protocol: records are added to the in-memory copy of the current
//! area, and the area is written (flush before, FUA) once no allocated
//! chunk is still waiting to be committed or the area is full; the flush
//! makes the copied data stable before the records pointing at it. Before a
//! full area is written, the next area is zeroed on disk, so its terminator
//! exists before anything could lead a reader to it. Recovery reads areas
//! until the first that is not full.
//!
//! The area write is handed to the caller as an [`AreaWrite`], which
//! carries the area's buffer itself (the store keeps a second one), so
//! that it can be done without the lock that guards the store and without
//! a copy: allocations for new copies go on meanwhile, as upstream's do
//! while its commit sleeps in the copy-completion thread.

use super::exception_store::{
    BlockSizes, ChunkIo, ChunkSize, Durability, ExceptionStore, MergeRun, OpenError, Scope,
    StoreKind, Usage, Validity,
};
use super::{Chunk, Exception};
use crate::persistent_data::shim::{PBox, PVec};
use crate::persistent_data::{Error, Result};
use core::mem;

/// The header's magic number ("SnAp" on disk).
pub const SNAP_MAGIC: u32 = 0x7041_6e53;
/// The only on-disk version.
pub const DISK_VERSION: u32 = 1;
/// Chunks before the first metadata area.
pub const HEADER_CHUNKS: u64 = 1;
/// Chunk size (sectors) when neither the table nor the device gives one.
pub const DEFAULT_CHUNK_SECTORS: u32 = 32;
/// Bytes per on-disk exception record.
pub const EXCEPTION_BYTES: usize = 16;

/// A persistent store on a COW device; `C` is the commit token type.
pub struct PersistentStore<Io: ChunkIo, C> {
    io: Io,
    chunk: ChunkSize,
    overflow: bool,
    valid: bool,
    exceptions_per_area: u32,
    /// The current metadata area, as it is (or will be) on disk; while a
    /// write of it is out, the write has it and this holds the spare.
    area: Io::Buf,
    /// The header chunk being written.
    header_area: Io::Buf,
    current_area: u64,
    /// Records in the current area.
    current_committed: u32,
    /// The next chunk to allocate.
    next_free: Chunk,
    /// Chunks allocated and not yet committed.
    pending: u64,
    /// Completions of the records added since the area was last written.
    callbacks: PVec<C>,
    /// What an [`AreaWrite`] carries; `None` while one is out.
    spare: Option<PBox<WriteBuffers<Io::Buf, C>>>,
}

/// The buffers of an area write, allocated once and lent to each
/// [`AreaWrite`] in turn.
struct WriteBuffers<B, C> {
    /// The area buffer the store does not hold: swapped with the store's
    /// when a write is staged, so the write carries the area as it is.
    area: B,
    /// A chunk of zeros, for clearing the next area.
    zeros: B,
    /// The completions the write makes durable, in commit order.
    tokens: PVec<C>,
}

/// A metadata area write that a commit needs, done by the caller with
/// [`AreaWrite::write_to`] outside the store's lock and handed back to
/// [`ExceptionStore::commit_written`]. One is out at a time: the caller
/// serialises staging, writing and handing back (the kernel does so under
/// its commit lock), which also keeps the writes in order.
pub struct AreaWrite<B, C> {
    /// Boxed: the write moves through a commit round by value.
    bufs: PBox<WriteBuffers<B, C>>,
    /// Where the area goes.
    at: u64,
    /// The next area, zeroed first, when this one is full.
    zero_next: Option<u64>,
}

impl<B, C> AreaWrite<B, C> {
    /// Writes the area to `io`: the next area zeroed first if this one is
    /// full, then this one after a flush, with FUA.
    pub fn write_to<Io: ChunkIo<Buf = B>>(&self, io: &mut Io) -> Result {
        if let Some(z) = self.zero_next {
            io.write(z, &self.bufs.zeros, Durability::Plain)?;
        }
        io.write(self.at, &self.bufs.area, Durability::Flushed)
    }

    /// The completions it carries, in commit order.
    pub(super) fn take_tokens(&mut self) -> PVec<C> {
        mem::take(&mut self.bufs.tokens)
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) -> Result {
    b.get_mut(at..at + v.len())
        .ok_or(Error::Invalid)?
        .copy_from_slice(v);
    Ok(())
}

/// Record `i` of an area buffer.
fn record(area: &[u8], i: u32) -> Exception {
    let at = i as usize * EXCEPTION_BYTES;
    Exception {
        old: le64(area, at),
        new: le64(area, at + 8),
    }
}

fn set_record(area: &mut [u8], i: u32, e: Exception) -> Result {
    let at = i as usize * EXCEPTION_BYTES;
    put(area, at, &e.old.to_le_bytes())?;
    put(area, at + 8, &e.new.to_le_bytes())
}

/// The on-disk header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`SNAP_MAGIC`], or 0 for a new snapshot.
    pub magic: u32,
    /// 0 once the snapshot was invalidated.
    pub valid: u32,
    /// [`DISK_VERSION`].
    pub version: u32,
    /// Chunk size in sectors.
    pub chunk_size: u32,
}

impl Header {
    /// Decodes the first 16 bytes of `b`.
    pub fn decode(b: &[u8]) -> Self {
        Header {
            magic: le32(b, 0),
            valid: le32(b, 4),
            version: le32(b, 8),
            chunk_size: le32(b, 12),
        }
    }

    /// Encodes into the first 16 bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) -> Result {
        put(b, 0, &self.magic.to_le_bytes())?;
        put(b, 4, &self.valid.to_le_bytes())?;
        put(b, 8, &self.version.to_le_bytes())?;
        put(b, 12, &self.chunk_size.to_le_bytes())
    }
}

impl<Io: ChunkIo, C> PersistentStore<Io, C> {
    /// Opens the store on `io` and reads its metadata, calling `add` for
    /// every exception (upstream's `ctr` and `read_metadata`). `chunk` is
    /// the table's chunk size (`None`: take the device's); the header's
    /// overrides it. A device whose first chunk is zero is formatted.
    pub fn open(
        io: Io,
        chunk: Option<ChunkSize>,
        overflow: bool,
        block_sizes: BlockSizes,
        add: &mut dyn FnMut(Exception) -> Result,
    ) -> core::result::Result<(Self, Validity), OpenError> {
        let mut chunk = chunk.unwrap_or_else(|| ChunkSize::default_for(block_sizes.cow));
        let mut io = io;
        let mut header_area = io.alloc(chunk.bytes())?;
        io.read(0, &mut header_area)?;
        let h = Header::decode(header_area.as_ref());
        let new_snapshot = h.magic == 0;
        if !new_snapshot {
            if h.magic != SNAP_MAGIC {
                return Err(OpenError::Metadata(Error::Invalid));
            }
            if h.chunk_size != chunk.sectors() {
                // The device's chunk size wins over the table's.
                chunk = ChunkSize::new(h.chunk_size, block_sizes.cow, block_sizes.origin)
                    .map_err(|_| OpenError::Metadata(Error::Invalid))?;
                // Freed before the new one is allocated.
                drop(header_area);
                header_area = io.alloc(chunk.bytes())?;
            }
        }
        let area = io.alloc(chunk.bytes())?;
        let mut ps = PersistentStore {
            io,
            chunk,
            overflow,
            valid: true,
            exceptions_per_area: 0,
            area,
            header_area,
            current_area: 0,
            current_committed: 0,
            next_free: HEADER_CHUNKS + 1,
            pending: 0,
            callbacks: PVec::new(),
            spare: None,
        };
        if !new_snapshot {
            ps.valid = h.valid != 0;
        }
        ps.exceptions_per_area = u32::try_from(ps.chunk.bytes() / EXCEPTION_BYTES)
            .map_err(|_| OpenError::Metadata(Error::Invalid))?;
        ps.callbacks = PVec::try_with_capacity(ps.exceptions_per_area as usize)?;
        ps.spare = Some(PBox::try_new(WriteBuffers {
            area: ps.io.alloc(ps.chunk.bytes())?,
            zeros: ps.io.alloc(ps.chunk.bytes())?,
            tokens: PVec::try_with_capacity(ps.exceptions_per_area as usize)?,
        })?);
        if new_snapshot {
            // Upstream writes both plainly, header first: a crash can then
            // leave a valid header before a stale area 0. Zeroing the area
            // first and flushing before the header closes that window.
            ps.area.as_mut().fill(0);
            ps.io
                .write(ps.area_location(0)?, &ps.area, Durability::Plain)?;
            ps.write_header()?;
            return Ok((ps, Validity::Valid));
        }
        if h.version != DISK_VERSION {
            return Err(OpenError::Metadata(Error::Invalid));
        }
        if !ps.valid {
            return Ok((ps, Validity::Invalid));
        }
        ps.read_exceptions(add)?;
        Ok((ps, Validity::Valid))
    }

    /// First sector of metadata area `area`.
    fn area_location(&self, area: u64) -> Result<u64> {
        let chunk = u64::from(self.exceptions_per_area)
            .checked_add(1)
            .and_then(|stride| stride.checked_mul(area))
            .and_then(|c| c.checked_add(HEADER_CHUNKS))
            .ok_or(Error::Invalid)?;
        self.chunk.to_sector(chunk).ok_or(Error::Invalid)
    }

    /// Steps `next_free` over a metadata area.
    fn skip_metadata(&mut self) {
        let stride = u64::from(self.exceptions_per_area) + 1;
        if self.next_free % stride == HEADER_CHUNKS {
            // Saturating: a corrupt record can set next_free to anything;
            // allocation then reports the device full.
            self.next_free = self.next_free.saturating_add(1);
        }
    }

    fn write_header(&mut self) -> Result {
        self.header_area.as_mut().fill(0);
        Header {
            magic: SNAP_MAGIC,
            valid: u32::from(self.valid),
            version: DISK_VERSION,
            chunk_size: self.chunk.sectors(),
        }
        .encode(self.header_area.as_mut())?;
        // Flushed, unlike upstream: an invalidation must survive a crash
        // (the origin is written without copies once a snapshot is
        // invalid), and a new header must not reach the disk before the
        // zeroed area 0.
        self.io.write(0, &self.header_area, Durability::Flushed)
    }

    /// Reads the areas up to the first that is not full, reporting their
    /// exceptions; leaves that area current.
    fn read_exceptions(&mut self, add: &mut dyn FnMut(Exception) -> Result) -> Result {
        let mut area = 0u64;
        loop {
            let at = self.area_location(area)?;
            self.io.read(at, &mut self.area)?;
            let mut count = self.exceptions_per_area;
            for i in 0..self.exceptions_per_area {
                let e = record(self.area.as_ref(), i);
                if e.new == 0 {
                    count = i;
                    break;
                }
                if self.next_free <= e.new {
                    self.next_free = e.new.saturating_add(1);
                }
                add(e)?;
            }
            if count < self.exceptions_per_area {
                self.current_area = area;
                self.current_committed = count;
                break;
            }
            area = area.checked_add(1).ok_or(Error::Invalid)?;
        }
        self.skip_metadata();
        Ok(())
    }

    /// Writes the current area.
    fn write_area(&mut self) -> Result {
        let at = self.area_location(self.current_area)?;
        self.io.write(at, &self.area, Durability::Flushed)
    }

    /// Lends the spare buffers to a write of the current area with the
    /// completions batched so far; `Err` if the store is invalid (nothing
    /// is written then) or a write is already out.
    fn stage_area(&mut self, full: bool) -> core::result::Result<AreaWrite<Io::Buf, C>, ()> {
        if !self.valid {
            return Err(());
        }
        let at = self.area_location(self.current_area).map_err(|_| ())?;
        let zero_next = match full {
            true => {
                let next = self.current_area.checked_add(1).ok_or(())?;
                Some(self.area_location(next).map_err(|_| ())?)
            }
            false => None,
        };
        let mut bufs = self.spare.take().ok_or(())?;
        // The write carries the area; the store holds the spare buffer,
        // whose contents are stale until `commit_written` swaps them back
        // (nothing reads or stages meanwhile: one write is out at a time).
        mem::swap(&mut bufs.area, &mut self.area);
        // The spare token list is empty and has the same capacity.
        mem::swap(&mut bufs.tokens, &mut self.callbacks);
        Ok(AreaWrite {
            bufs,
            at,
            zero_next,
        })
    }

    /// True once the snapshot has been invalidated (or a commit failed).
    pub fn is_valid(&self) -> bool {
        self.valid
    }

    /// The COW device.
    pub fn io(&mut self) -> &mut Io {
        &mut self.io
    }

    /// Commits `e` through the store's own handle on the COW device: the
    /// stage, the write if one is due, and its hand-back in one call.
    pub fn commit_exception(
        &mut self,
        e: Exception,
        valid: bool,
        token: C,
        done: &mut dyn FnMut(C, bool),
    ) {
        if let Some(w) = self.stage_commit(e, valid, token, done) {
            let written = w.write_to(&mut self.io);
            self.commit_written(w, written, done);
        }
    }
}

impl<Io: ChunkIo, C> ExceptionStore<C> for PersistentStore<Io, C> {
    type Buf = Io::Buf;

    fn chunk_size(&self) -> ChunkSize {
        self.chunk
    }

    fn prepare_exception(&mut self, _old: Chunk, _scope: Scope) -> Result<Chunk> {
        let after = self.next_free.checked_add(1).ok_or(Error::NoSpace)?;
        match self.chunk.to_sector(after) {
            Some(end) if end <= self.io.sectors() => {}
            _ => return Err(Error::NoSpace),
        }
        let new = self.next_free;
        self.next_free = after;
        self.skip_metadata();
        self.pending += 1;
        Ok(new)
    }

    fn stage_commit(
        &mut self,
        e: Exception,
        valid: bool,
        token: C,
        done: &mut dyn FnMut(C, bool),
    ) -> Option<AreaWrite<Io::Buf, C>> {
        if !valid {
            self.valid = false;
        }
        self.pending = self.pending.saturating_sub(1);
        let full = self.current_committed >= self.exceptions_per_area;
        if full
            || self.spare.is_none()
            || set_record(self.area.as_mut(), self.current_committed, e).is_err()
        {
            // Cannot happen: a full area is staged for writing as soon as
            // it fills, and the next record goes to the next area; the
            // caller never stages while a write is out (the store holds
            // the spare buffer then, not the area).
            self.valid = false;
            done(token, false);
            return None;
        }
        self.current_committed += 1;
        if self.callbacks.try_reserve(1).is_err() {
            // Cannot happen either (room for a full area was reserved);
            // fail this commit on its own.
            self.valid = false;
            done(token, false);
        } else {
            // Room was reserved just above.
            let _ = self.callbacks.try_push(token);
        }
        let full = self.current_committed >= self.exceptions_per_area;
        if self.pending != 0 && !full {
            return None;
        }
        let write = self.stage_area(full);
        if full {
            self.current_committed = 0;
            self.current_area += 1;
            // The store now holds the spare buffer: the next area starts
            // empty.
            self.area.as_mut().fill(0);
        }
        match write {
            Ok(w) => Some(w),
            Err(()) => {
                // Nothing to write (the store is invalid, or a write is
                // already out): the batch fails.
                self.valid = false;
                self.callbacks.reverse();
                while let Some(t) = self.callbacks.pop() {
                    done(t, false);
                }
                None
            }
        }
    }

    fn commit_written(
        &mut self,
        mut w: AreaWrite<Io::Buf, C>,
        written: Result,
        done: &mut dyn FnMut(C, bool),
    ) {
        if written.is_err() {
            self.valid = false;
        }
        if w.zero_next.is_none() {
            // The area was not full: it stays current, and more records go
            // into it.
            mem::swap(&mut w.bufs.area, &mut self.area);
        }
        let valid = self.valid;
        let mut tokens = w.take_tokens();
        // In commit order.
        tokens.reverse();
        while let Some(t) = tokens.pop() {
            done(t, valid);
        }
        w.bufs.tokens = tokens;
        self.spare = Some(w.bufs);
    }

    fn abandon_exception(&mut self, done: &mut dyn FnMut(C, bool)) {
        self.valid = false;
        self.pending = self.pending.saturating_sub(1);
        // No area is written from now on: the batch fails at once rather
        // than wait for a commit that may never come.
        self.callbacks.reverse();
        while let Some(t) = self.callbacks.pop() {
            done(t, false);
        }
    }

    fn supports_merge(&self) -> bool {
        true
    }

    fn prepare_merge(&mut self) -> Result<Option<MergeRun>> {
        if self.spare.is_none() {
            // A commit write has the area (the caller serialises merging
            // with commits, so this does not happen).
            return Err(Error::Invalid);
        }
        if self.current_committed == 0 {
            if self.current_area == 0 {
                return Ok(None);
            }
            self.current_area -= 1;
            let at = self.area_location(self.current_area)?;
            self.io.read(at, &mut self.area)?;
            self.current_committed = self.exceptions_per_area;
        }
        let top = self.current_committed - 1;
        let last = record(self.area.as_ref(), top);
        let mut len = 1u32;
        while len <= top {
            let e = record(self.area.as_ref(), top - len);
            if Some(e.old) != last.old.checked_sub(len.into())
                || Some(e.new) != last.new.checked_sub(len.into())
            {
                break;
            }
            len += 1;
        }
        Ok(Some(MergeRun { last, len }))
    }

    fn commit_merge(&mut self, n: u32) -> Result {
        if n > self.current_committed || self.spare.is_none() {
            return Err(Error::Invalid);
        }
        for i in 0..n {
            set_record(
                self.area.as_mut(),
                self.current_committed - 1 - i,
                Exception { old: 0, new: 0 },
            )?;
        }
        self.write_area()?;
        self.current_committed -= n;
        // Only usage() reads next_free from now on: the value it would
        // have had were every exception committed in allocation order.
        let stride = u64::from(self.exceptions_per_area) + 1;
        self.next_free = stride
            .saturating_mul(self.current_area)
            .saturating_add(HEADER_CHUNKS + 1)
            .saturating_add(self.current_committed.into());
        Ok(())
    }

    fn drop_snapshot(&mut self) {
        self.valid = false;
        // As upstream, a failure leaves only the in-core state invalid.
        let _ = self.write_header();
    }

    fn usage(&self) -> Usage {
        let chunk = u64::from(self.chunk.sectors());
        Usage {
            allocated: self.next_free.saturating_mul(chunk),
            total: self.io.sectors(),
            metadata: self
                .current_area
                .saturating_add(1 + HEADER_CHUNKS)
                .saturating_mul(chunk),
        }
    }

    fn supports_overflow(&self) -> bool {
        self.overflow
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Persistent {
            overflow: self.overflow,
        }
    }
}
