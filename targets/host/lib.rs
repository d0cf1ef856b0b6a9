// SPDX-License-Identifier: GPL-2.0

//! Host crate for the targets' pure modules: the files the module builds
//! (where the engine is `crate::persistent_data`), included by path so
//! `cargo test` runs them against the same engine on the host.

#![no_std]
// The lints the kernel's `CLIPPY=1` build adds to clippy's defaults, so the
// host check (`cargo clippy`) fails on what the module build would.
#![warn(
    clippy::ignored_unit_patterns,
    clippy::mut_mut,
    clippy::needless_bitwise_bool,
    clippy::undocumented_unsafe_blocks,
    clippy::unnecessary_safety_comment,
    clippy::unnecessary_safety_doc
)]
#![forbid(unsafe_code)]

extern crate alloc;
extern crate std;

pub use persistent_data;

/// Thin-pool metadata (`targets/thin/metadata/`).
#[path = "../thin/metadata/mod.rs"]
pub mod thin_metadata;

/// Snapshot exception tables and stores (`targets/snapshot/store/`).
#[path = "../snapshot/store/mod.rs"]
pub mod snapshot_store;

/// thin-pool's and thin's pure logic (`targets/thin/`).
pub mod thin;

/// The snapshot's feature arguments (`targets/snapshot/features.rs`).
#[path = "../snapshot/features.rs"]
pub mod snapshot_features;
