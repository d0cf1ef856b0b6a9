// SPDX-License-Identifier: GPL-2.0

//! The persistent-data metadata engine: the on-disk structures shared by the
//! thin-provisioning and cache targets, byte-compatible with Linux 6.12's
//! `drivers/md/persistent-data`.
//!
//! Layers, bottom up (each knows only the ones below it):
//!
//! * [`io`]: the block I/O seam (dm-bufio in the kernel, memory or a file on
//!   the host).
//! * [`block_manager`]: 4 KiB blocks, validators, read/write locks, a small
//!   write-back cache, read-only mode.
//! * [`transaction_manager`]: copy-on-write shadowing and commit; it owns the
//!   metadata space map.
//! * [`space_map`]: reference counts (metadata and data space maps).
//! * [`btree`]: copy-on-write B+trees with multi-level keys.
//! * [`array`]: arrays of fixed-size values in packed blocks indexed by a
//!   btree (dm-array); [`bitset`]: bitsets on top of arrays (dm-bitset).
//! * [`check`]: reference recounting (leak and double-free detection).
//!
//! Everything here uses only `core` and [`shim`] for allocation, and never
//! panics on disk contents: errors come back as [`Error`]. It has no
//! `unsafe` (enforced below, in the module and host builds alike): what
//! needs it lives in `rust/` (the kernel's allocation shim, dm-bufio).

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

pub mod array;
pub mod bitset;
pub mod block_manager;
pub mod btree;
pub mod check;
pub mod checksum;
pub mod endian;
pub mod error;
pub mod io;
pub mod shim;
pub mod space_map;
pub mod transaction_manager;
pub mod validator;

pub use error::{Error, Result};
