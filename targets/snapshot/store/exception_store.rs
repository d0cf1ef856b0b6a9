// SPDX-License-Identifier: GPL-2.0

//! The exception-store interface (upstream's `dm_exception_store_type`):
//! where a snapshot keeps the COW chunks it copied and the record of which
//! origin chunk each holds.
//!
//! A store owns its COW device through [`ChunkIo`], a small synchronous
//! interface (upstream's persistent store does its metadata I/O
//! synchronously too, from the thread that completes copies). The plumbing
//! implements it over dm-io; the host tests over memory with crash
//! simulation.
//!
//! Opening a store reads its metadata ([`Store::open`], upstream's
//! `read_metadata`), reporting each exception through a callback; a store
//! that exists has therefore always been read, and a snapshot waiting for a
//! handover simply has none yet.
//!
//! Commits are batched by the store: [`ExceptionStore::stage_commit`]
//! takes a completion token of the caller's type and hands it back through
//! `done` once the exception is durable (or failed), possibly together with
//! the tokens of earlier commits, possibly during a later call. When a
//! batch must be written, the store hands the write out ([`AreaWrite`]):
//! the caller does it without holding the store's lock, so that new copies
//! can be allocated meanwhile (upstream's commit does not hold the
//! snapshot's lock either), and gives it back to
//! [`ExceptionStore::commit_written`]. [`Store::commit_exception`] does all
//! three through the store's own device handle.
//!
//! Room for the shared store (one COW device for up to 64 snapshots): an
//! allocation says whether it serves one snapshot's write or an origin
//! write for every snapshot of the group ([`Scope`]), and a store may
//! answer lookups itself ([`ExceptionStore::lookup`]) instead of the
//! snapshot's in-core [`ExceptionTable`](super::ExceptionTable).

use super::persistent::{AreaWrite, PersistentStore};
use super::transient::TransientStore;
use super::{Chunk, Exception};
use crate::persistent_data::{Error, Result};
use core::fmt;

/// Sector size: chunk sizes and device sizes are in 512-byte sectors.
pub const SECTOR_SHIFT: u32 = 9;

/// The COW device as a store sees it.
pub trait ChunkIo {
    /// A buffer the device reads into and writes from as it is (the
    /// kernel's dm-io memory): a commit writes the store's area without
    /// copying it.
    type Buf: AsRef<[u8]> + AsMut<[u8]>;

    /// Current size of the device, in sectors.
    fn sectors(&self) -> u64;
    /// A zeroed buffer of `len` bytes (whole sectors).
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Reads `buf`'s length (whole sectors) from `sector`.
    fn read(&mut self, sector: u64, buf: &mut Self::Buf) -> Result;
    /// Writes `buf` (whole sectors) at `sector`.
    fn write(&mut self, sector: u64, buf: &Self::Buf, durability: Durability) -> Result;
}

/// How durable a write must be when it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// A plain write: it may sit in a volatile cache.
    Plain,
    /// Flush everything written before, then write with FUA
    /// (`REQ_PREFLUSH | REQ_FUA`): on completion this write and all before
    /// it are stable.
    Flushed,
}

/// A validated chunk size: a power of two number of sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSize {
    sectors: u32,
}

impl ChunkSize {
    /// Checks `sectors` against upstream's rules: a power of two, a
    /// multiple of both devices' logical block sizes (in sectors), at most
    /// `INT_MAX >> 9`. The error is upstream's message.
    pub fn new(
        sectors: u32,
        cow_block_sectors: u32,
        origin_block_sectors: u32,
    ) -> core::result::Result<Self, &'static str> {
        if !sectors.is_power_of_two() {
            return Err("Chunk size is not a power of 2");
        }
        let multiple = |b: u32| b != 0 && sectors % b == 0;
        if !multiple(cow_block_sectors) || !multiple(origin_block_sectors) {
            return Err("Chunk size is not a multiple of device blocksize");
        }
        if sectors > (i32::MAX as u32) >> SECTOR_SHIFT {
            return Err("Chunk size is too high");
        }
        Ok(ChunkSize { sectors })
    }

    /// Sectors per chunk.
    pub fn sectors(self) -> u32 {
        self.sectors
    }

    /// log2 of [`Self::sectors`].
    pub fn shift(self) -> u32 {
        self.sectors.trailing_zeros()
    }

    /// Bytes per chunk.
    pub fn bytes(self) -> usize {
        (self.sectors as usize) << SECTOR_SHIFT
    }

    /// First sector of `chunk`; `None` past any possible device.
    pub fn to_sector(self, chunk: Chunk) -> Option<u64> {
        chunk.checked_mul(self.sectors.into())
    }

    /// Upstream's chunk size for a persistent store given none: 16 KiB,
    /// or the COW device's logical block size if larger.
    pub fn default_for(cow_block_sectors: u32) -> Self {
        let sectors = cow_block_sectors.max(32);
        ChunkSize {
            sectors: if sectors.is_power_of_two() {
                sectors
            } else {
                32
            },
        }
    }

    /// The chunk holding `sector`.
    pub fn to_chunk(self, sector: u64) -> Chunk {
        sector >> self.shift()
    }
}

/// Logical block sizes of the two devices, in sectors (for validating a
/// chunk size read from disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSizes {
    /// The COW device's.
    pub cow: u32,
    /// The origin's.
    pub origin: u32,
}

/// Which store a table line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// `P` (or `PO`, `overflow`): exceptions kept on the COW device.
    Persistent {
        /// `PO`: userspace handles `Overflow` (a snapshot write that finds
        /// the COW device full fails, the snapshot stays valid).
        overflow: bool,
    },
    /// `N`: exceptions kept in memory only.
    Transient,
}

/// The exception-store part of a `snapshot` table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreSpec<'a> {
    /// The COW device argument, as given.
    pub cow: &'a str,
    /// Store type.
    pub kind: StoreKind,
    /// Chunk size in sectors as given; 0 means "from the COW device"
    /// (persistent only).
    pub chunk_sectors: u32,
    /// Written as `persistent 2 <COW> <chunk>` / `transient 2 ...` rather
    /// than `<COW> <P|PO|N> <chunk>`.
    pub generalised: bool,
}

impl<'a> StoreSpec<'a> {
    /// Parses the store arguments of a `snapshot` line (those after the
    /// origin), in either form: `<COW> <P|PO|N> <chunk>` (upstream's) or
    /// `persistent 2 <COW> <chunk>` / `transient 2 <COW> <chunk>`. Returns
    /// the spec and the number of arguments used; errors are upstream's
    /// messages.
    pub fn parse(args: &[&'a str]) -> core::result::Result<(Self, usize), &'static str> {
        let generalised = match args.first().copied() {
            Some("persistent") => Some(StoreKind::Persistent { overflow: false }),
            Some("transient") => Some(StoreKind::Transient),
            _ => None,
        };
        if let (Some(kind), Some(n)) = (generalised, args.get(1)) {
            if let Ok(n) = n.parse::<u32>() {
                if n != 2 {
                    return Err("Exception store type constructor failed");
                }
                let (Some(cow), Some(chunk)) = (args.get(2), args.get(3)) else {
                    return Err("Insufficient exception store arguments");
                };
                let spec = StoreSpec {
                    cow,
                    kind,
                    chunk_sectors: parse_chunk(chunk)?,
                    generalised: true,
                };
                return Ok((spec, 4));
            }
        }
        let (Some(cow), Some(kind), Some(chunk)) = (args.first(), args.get(1), args.get(2)) else {
            return Err("Insufficient exception store arguments");
        };
        let mut chars = kind.chars();
        let kind = match chars.next().map(|c| c.to_ascii_uppercase()) {
            Some('P') => match chars.next() {
                None => StoreKind::Persistent { overflow: false },
                // Only the first option character counts, as upstream.
                Some(c) if c.eq_ignore_ascii_case(&'O') => StoreKind::Persistent { overflow: true },
                Some(_) => return Err("Exception store type constructor failed"),
            },
            // The transient store ignores options.
            Some('N') => StoreKind::Transient,
            _ => return Err("Exception store type is not P or N"),
        };
        let spec = StoreSpec {
            cow,
            kind,
            chunk_sectors: parse_chunk(chunk)?,
            generalised: false,
        };
        Ok((spec, 3))
    }

    /// The store's table fragment after the COW device name, as upstream
    /// prints it (with its leading space): ` P <chunk>`, ` PO <chunk>` or
    /// ` N <chunk>`.
    pub fn fmt_kind(kind: StoreKind, chunk_sectors: u32, w: &mut dyn fmt::Write) -> fmt::Result {
        let name = match kind {
            StoreKind::Persistent { overflow: false } => "P",
            StoreKind::Persistent { overflow: true } => "PO",
            StoreKind::Transient => "N",
        };
        write!(w, " {name} {chunk_sectors}")
    }
}

/// The chunk size argument: an unsigned decimal (0 allowed here; the
/// power-of-two rules apply to non-zero values).
fn parse_chunk(arg: &str) -> core::result::Result<u32, &'static str> {
    let n = arg.parse::<u32>().map_err(|_| "Invalid chunk size")?;
    if n != 0 && !n.is_power_of_two() {
        return Err("Chunk size is not a power of 2");
    }
    Ok(n)
}

/// Writes the table line's store part for `spec` as loaded (`cow_name` is
/// the device name the plumbing prints), after the origin:
/// `<cow> P 8` or `persistent 2 <cow> 8`.
pub fn fmt_table(
    kind: StoreKind,
    generalised: bool,
    cow_name: &str,
    chunk_sectors: u32,
    w: &mut dyn fmt::Write,
) -> fmt::Result {
    if generalised {
        let name = match kind {
            StoreKind::Persistent { .. } => "persistent",
            StoreKind::Transient => "transient",
        };
        write!(w, "{name} 2 {cow_name} {chunk_sectors}")
    } else {
        write!(w, "{cow_name}")?;
        StoreSpec::fmt_kind(kind, chunk_sectors, w)
    }
}

/// How full a store is (upstream's `usage`), in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Sectors handed out (including metadata).
    pub allocated: u64,
    /// Size of the COW device.
    pub total: u64,
    /// Sectors holding metadata.
    pub metadata: u64,
}

impl fmt::Display for Usage {
    /// The status line: `<allocated>/<total> <metadata>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.allocated, self.total, self.metadata)
    }
}

/// On whose behalf a chunk is allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A write to this snapshot.
    Snapshot,
    /// A write to the origin: a store shared by several snapshots
    /// allocates one chunk for all of them (a per-snapshot store treats it
    /// as [`Scope::Snapshot`]).
    Origin,
}

/// A store's answer to a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreLookup {
    /// The store does not index exceptions: the snapshot's in-core table
    /// filled from [`Store::open`] is authoritative.
    InCoreTable,
    /// The chunk has an exception at this COW chunk.
    Found(Chunk),
    /// The chunk has no exception.
    Missing,
}

/// State of the metadata found when opening a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// Usable.
    Valid,
    /// The store is marked invalid (upstream's `read_metadata` returning
    /// 1): the snapshot loads, invalid.
    Invalid,
}

/// The most recent run of exceptions still to merge: `len` exceptions
/// ending with `last`, consecutive in both origin and COW chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeRun {
    /// The most recently committed exception still to merge.
    pub last: Exception,
    /// How many consecutive exceptions end with `last` (at least 1).
    pub len: u32,
}

impl MergeRun {
    /// The run's first exception (lowest origin and COW chunks).
    pub fn first(&self) -> Exception {
        let back = u64::from(self.len.saturating_sub(1));
        Exception {
            old: self.last.old.saturating_sub(back),
            new: self.last.new.saturating_sub(back),
        }
    }

    /// The run as one copy from the COW device back to the origin
    /// (upstream's `snapshot_merge_next_chunks`): `(cow sector, origin
    /// sector, sectors)`, cut at the end of an origin of `origin_sectors`
    /// (its last chunk may be short). `None` if the run lies past it.
    pub fn copy_extent(&self, chunk: ChunkSize, origin_sectors: u64) -> Option<(u64, u64, u64)> {
        let first = self.first();
        let from = chunk.to_sector(first.new)?;
        let to = chunk.to_sector(first.old)?;
        let len = u64::from(self.len).checked_mul(chunk.sectors().into())?;
        let count = len.min(origin_sectors.checked_sub(to)?);
        (count > 0).then_some((from, to, count))
    }

    /// The origin chunks of the run, last first: the order in which the
    /// in-core table drops them (always an end of one of its runs).
    pub fn chunks_last_first(&self) -> impl Iterator<Item = Chunk> {
        let first = self.first().old;
        (first..=self.last.old).rev()
    }
}

/// The operations every store provides (upstream's
/// `dm_exception_store_type`); `C` is the caller's commit completion
/// token.
pub trait ExceptionStore<C> {
    /// The buffer type of the COW device's I/O (what an [`AreaWrite`]
    /// carries).
    type Buf;

    /// The chunk size in use (the on-disk one for a persistent store).
    fn chunk_size(&self) -> ChunkSize;

    /// Allocates a COW chunk for a copy of origin chunk `old`.
    /// `NoSpace` when the COW device is full.
    fn prepare_exception(&mut self, old: Chunk, scope: Scope) -> Result<Chunk>;

    /// Records `e` (copied, successfully if `valid`). `done(token,
    /// success)` is called for it, and for the earlier commits batched with
    /// it, once the batch is durable or has failed; this may happen during
    /// a later call. Returns the write that makes the batch durable when
    /// one is due: the caller does it ([`AreaWrite::write_to`]) and hands
    /// it back to [`Self::commit_written`] before staging anything else.
    fn stage_commit(
        &mut self,
        e: Exception,
        valid: bool,
        token: C,
        done: &mut dyn FnMut(C, bool),
    ) -> Option<AreaWrite<Self::Buf, C>>;

    /// Takes back a write [`Self::stage_commit`] handed out, `written` being
    /// its result, and calls `done` for the commits it carried.
    fn commit_written(
        &mut self,
        mut w: AreaWrite<Self::Buf, C>,
        _written: Result,
        done: &mut dyn FnMut(C, bool),
    ) {
        // Only a store that hands writes out takes them back.
        let mut tokens = w.take_tokens();
        tokens.reverse();
        while let Some(t) = tokens.pop() {
            done(t, false);
        }
    }

    /// Gives back a chunk [`Self::prepare_exception`] handed out that will
    /// never be committed (its copy could not even be tried), so that the
    /// store stops waiting for it. The snapshot goes invalid: the store
    /// writes nothing more, and `done(token, false)` is called for the
    /// commits batched so far (those of a write already out fail in
    /// [`Self::commit_written`]), as upstream fails an invalid snapshot's
    /// pending writes.
    fn abandon_exception(&mut self, _done: &mut dyn FnMut(C, bool)) {}

    /// Answers a lookup itself, for stores that index their exceptions.
    fn lookup(&self, _old: Chunk, _scope: Scope) -> StoreLookup {
        StoreLookup::InCoreTable
    }

    /// True for stores that can merge into the origin (persistent).
    fn supports_merge(&self) -> bool {
        false
    }

    /// The last run still to merge, `None` once everything is merged.
    /// `Invalid` for stores that cannot merge.
    fn prepare_merge(&mut self) -> Result<Option<MergeRun>> {
        Err(Error::Invalid)
    }

    /// Forgets the last `n` exceptions (`n` at most the run
    /// [`Self::prepare_merge`] returned) and makes that durable.
    fn commit_merge(&mut self, _n: u32) -> Result {
        Err(Error::Invalid)
    }

    /// Marks the snapshot invalid in the store's metadata.
    fn drop_snapshot(&mut self) {}

    /// How full the store is.
    fn usage(&self) -> Usage;

    /// True for `PO`: a full COW device means `Overflow` for snapshot
    /// writes rather than an invalid snapshot.
    fn supports_overflow(&self) -> bool {
        false
    }

    /// The store type as the table line gives it.
    fn kind(&self) -> StoreKind;
}

/// Any store, chosen by the table line.
pub enum Store<Io: ChunkIo, C> {
    /// `N`.
    Transient(TransientStore<Io>),
    /// `P` / `PO`.
    Persistent(PersistentStore<Io, C>),
}

impl<Io: ChunkIo, C> Store<Io, C> {
    /// Opens the store `spec` asks for on `io`, reading its metadata:
    /// `add` is called for every exception found. Errors from `add` stop
    /// the load and are returned.
    pub fn open(
        spec: &StoreSpec<'_>,
        io: Io,
        block_sizes: BlockSizes,
        add: &mut dyn FnMut(Exception) -> Result,
    ) -> core::result::Result<(Self, Validity), OpenError> {
        match spec.kind {
            StoreKind::Transient => {
                let chunk = checked(spec.chunk_sectors, block_sizes)?
                    .ok_or(OpenError::Message("Chunk size not set"))?;
                Ok((
                    Store::Transient(TransientStore::new(io, chunk)),
                    Validity::Valid,
                ))
            }
            StoreKind::Persistent { overflow } => {
                let chunk = checked(spec.chunk_sectors, block_sizes)?;
                let (s, v) = PersistentStore::open(io, chunk, overflow, block_sizes, add)?;
                Ok((Store::Persistent(s), v))
            }
        }
    }
}

impl<Io: ChunkIo, C> Store<Io, C> {
    /// Commits `e` through the store's own handle on the COW device
    /// ([`ExceptionStore::stage_commit`], the write if one is due, and
    /// [`ExceptionStore::commit_written`]), for callers that hold the
    /// store alone.
    pub fn commit_exception(
        &mut self,
        e: Exception,
        valid: bool,
        token: C,
        done: &mut dyn FnMut(C, bool),
    ) {
        match self {
            Store::Transient(s) => {
                // Completes at once: no write.
                let _ = s.stage_commit(e, valid, token, done);
            }
            Store::Persistent(s) => s.commit_exception(e, valid, token, done),
        }
    }

    /// The COW device the store does its I/O on.
    pub fn io(&mut self) -> &mut Io {
        match self {
            Store::Transient(s) => s.io(),
            Store::Persistent(s) => s.io(),
        }
    }
}

/// Validates a table chunk size; `None` for 0.
fn checked(
    sectors: u32,
    block_sizes: BlockSizes,
) -> core::result::Result<Option<ChunkSize>, OpenError> {
    if sectors == 0 {
        return Ok(None);
    }
    ChunkSize::new(sectors, block_sizes.cow, block_sizes.origin)
        .map(Some)
        .map_err(OpenError::Message)
}

/// Why a store failed to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// A table error, with upstream's message.
    Message(&'static str),
    /// The metadata could not be read or is not a snapshot's
    /// (`Invalid` for a bad magic or version, `Io`, `NoMem`, or the
    /// callback's error).
    Metadata(Error),
}

impl From<Error> for OpenError {
    fn from(e: Error) -> Self {
        OpenError::Metadata(e)
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Transient($s) => $e,
            Store::Persistent($s) => $e,
        }
    };
}

impl<Io: ChunkIo, C> ExceptionStore<C> for Store<Io, C> {
    type Buf = Io::Buf;

    fn chunk_size(&self) -> ChunkSize {
        delegate!(self, s => ExceptionStore::<C>::chunk_size(s))
    }

    fn prepare_exception(&mut self, old: Chunk, scope: Scope) -> Result<Chunk> {
        delegate!(self, s => ExceptionStore::<C>::prepare_exception(s, old, scope))
    }

    fn stage_commit(
        &mut self,
        e: Exception,
        valid: bool,
        token: C,
        done: &mut dyn FnMut(C, bool),
    ) -> Option<AreaWrite<Self::Buf, C>> {
        delegate!(self, s => s.stage_commit(e, valid, token, done))
    }

    fn commit_written(
        &mut self,
        w: AreaWrite<Self::Buf, C>,
        written: Result,
        done: &mut dyn FnMut(C, bool),
    ) {
        delegate!(self, s => s.commit_written(w, written, done))
    }

    fn abandon_exception(&mut self, done: &mut dyn FnMut(C, bool)) {
        delegate!(self, s => ExceptionStore::<C>::abandon_exception(s, done))
    }

    fn lookup(&self, old: Chunk, scope: Scope) -> StoreLookup {
        delegate!(self, s => ExceptionStore::<C>::lookup(s, old, scope))
    }

    fn supports_merge(&self) -> bool {
        delegate!(self, s => ExceptionStore::<C>::supports_merge(s))
    }

    fn prepare_merge(&mut self) -> Result<Option<MergeRun>> {
        delegate!(self, s => ExceptionStore::<C>::prepare_merge(s))
    }

    fn commit_merge(&mut self, n: u32) -> Result {
        delegate!(self, s => ExceptionStore::<C>::commit_merge(s, n))
    }

    fn drop_snapshot(&mut self) {
        delegate!(self, s => ExceptionStore::<C>::drop_snapshot(s))
    }

    fn usage(&self) -> Usage {
        delegate!(self, s => ExceptionStore::<C>::usage(s))
    }

    fn supports_overflow(&self) -> bool {
        delegate!(self, s => ExceptionStore::<C>::supports_overflow(s))
    }

    fn kind(&self) -> StoreKind {
        delegate!(self, s => ExceptionStore::<C>::kind(s))
    }
}
