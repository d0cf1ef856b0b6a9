// SPDX-License-Identifier: GPL-2.0

//! Exception tables and exception stores: the pure logic of the snapshot
//! targets (which origin chunk was copied where, the copies in flight, the
//! transient and persistent stores and the persistent on-disk format, the
//! snapshot's health and status line).
//!
//! How a snapshot target drives them (the plumbing):
//!
//! * ctr: [`StoreSpec::parse`] the arguments after the origin, open the COW
//!   device, [`Store::open`] it with a callback inserting into an
//!   [`ExceptionTable`] sized by [`ExceptionTable::buckets_for`];
//!   `Validity::Invalid` loads the snapshot invalid.
//! * a write needing a copy (to the snapshot, or to the origin for each
//!   snapshot without an exception for the chunk):
//!   [`PendingExceptions::need`] queues the bio on the copy in flight, or
//!   records a new one, started, with a chunk from
//!   [`ExceptionStore::prepare_exception`] (`NoSpace`: [`Health::cow_full`])
//!   and the bio on it; the caller then issues the kcopyd copy.
//! * copy done: [`PendingExceptions::copied`], then while
//!   [`PendingExceptions::next_ready`] gives one,
//!   [`ExceptionStore::commit_exception`] it (on a thread that may sleep:
//!   the store's I/O is synchronous). Every chunk handed out must be
//!   committed, valid or not, or given back with
//!   [`ExceptionStore::abandon_exception`] if its copy cannot be tried,
//!   or later batches wait for it. On `done`:
//!   [`ExceptionTable::insert`], [`PendingExceptions::remove`], release the
//!   waiters (origin writes are retried through the origin path).
//! * merge: [`ExceptionStore::prepare_merge`], copy the run back to the
//!   origin, [`ExceptionStore::commit_merge`], then
//!   [`ExceptionTable::remove`] its chunks, last first.
//! * a snapshot read sent to the origin: [`TrackedChunks::track`] in
//!   `map` (under the state lock), [`TrackedChunks::untrack`] in `end_io`;
//!   a committed exception waits until its chunk is no longer
//!   [`TrackedChunks::is_tracked`] before the origin writes it held go on.
//! * copies in flight: [`CopyCount::start`] when one is issued,
//!   [`CopyCount::end`] when it finishes (then, if it says so,
//!   [`CopyThrottle::release`] hands back the parked writes to map again);
//!   a write that could start a copy first asks [`CopyThrottle::park`]
//!   whether it must wait.
//! * an origin write: the origin's snapshots as [`Published`]; if there
//!   is no memory to tell which they are, it waits ([`until_known`]).
//! * status: [`Health::fmt_info`] with [`ExceptionStore::usage`];
//!   table: [`exception_store::fmt_table`].
//!
//! Safe Rust over `core` and the engine's allocation shim only, so the same
//! files build into the module and into the host test crate
//! (`targets/host`).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod exception_store;
pub mod exception_table;
pub mod health;
pub mod pending;
pub mod persistent;
pub mod published;
pub mod shared;
pub mod shared_area;
pub mod shared_index;
pub mod shared_spec;
pub mod shared_superblock;
pub mod shared_table;
pub mod throttle;
pub mod tracked;
pub mod transient;

/// A chunk number (of the origin or of the COW device).
pub type Chunk = u64;

pub use exception_store::{
    BlockSizes, ChunkIo, ChunkSize, Durability, ExceptionStore, MergeRun, OpenError, Scope, Store,
    StoreKind, StoreLookup, StoreSpec, Usage, Validity,
};
pub use exception_table::{Exception, ExceptionTable, Run};
pub use health::{Health, OnFull};
pub use pending::{
    CopyState, Need, Pending, PendingExceptions, ReadyToCommit, WaiterKind, Waiters,
};
pub use persistent::{AreaWrite, PersistentStore};
pub use published::{until_known, Published};
pub use shared::{SharedStore, SnapshotWrite};
pub use shared_index::{IdMask, SharedException, SnapId};
pub use shared_spec::SharedSpec;
pub use shared_table::{CowCopy, SharedTable};
pub use throttle::{CopyCount, CopyThrottle, Parked};
pub use tracked::{Tracked, TrackedChunks};
pub use transient::TransientStore;
