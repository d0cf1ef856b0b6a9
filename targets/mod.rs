// SPDX-License-Identifier: GPL-2.0

//! The device-mapper targets dm-rs implements, one folder per family.
//!
//! Safe Rust only: everything unsafe lives behind `rust/`.

#![forbid(unsafe_code)]

pub(crate) mod selftest;
pub(crate) mod snapshot;
pub(crate) mod thin;
