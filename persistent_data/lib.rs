// SPDX-License-Identifier: GPL-2.0

//! Host crate root for the dm-rs metadata engine.
//!
//! The engine itself lives under `mod.rs` and only uses `core` plus the
//! allocation shim, so the kernel module can include the very same tree with
//! `#[path = "../persistent_data/mod.rs"] mod persistent_data;`. This file
//! exists only so `cargo test` can build it on the host.

#![no_std]
// As in `mod.rs` (an inner attribute there covers the engine in the module
// build); here it covers the host tools too.
#![forbid(unsafe_code)]

extern crate alloc;
extern crate std;

#[path = "mod.rs"]
pub mod persistent_data;

pub use persistent_data::*;

/// Host-only metadata checkers (`pdata-check`, fuzzing, golden tests); not
/// part of the kernel build.
#[path = "bin/checker/mod.rs"]
pub mod checker;
