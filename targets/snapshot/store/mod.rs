// SPDX-License-Identifier: GPL-2.0

//! Exception tables and exception stores: the pure logic of the snapshot
//! targets (which origin chunk was copied where, the copies in flight, the
//! transient and persistent stores and the persistent on-disk format, the
//! snapshot's health and status line).
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
pub mod transient;

/// A chunk number (of the origin or of the COW device).
pub type Chunk = u64;

pub use exception_store::{
    BlockSizes, ChunkIo, ChunkSize, Durability, ExceptionStore, MergeRun, OpenError, Scope, Store,
    StoreKind, StoreLookup, StoreSpec, Usage, Validity,
};
pub use exception_table::{Exception, ExceptionTable, Run};
pub use health::{Health, OnFull};
pub use pending::{CopyState, Pending, PendingExceptions, ReadyToCommit, WaiterKind};
pub use persistent::PersistentStore;
pub use transient::TransientStore;
