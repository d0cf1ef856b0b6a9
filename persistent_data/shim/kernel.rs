// SPDX-License-Identifier: GPL-2.0

//! The module's allocation shim and CRC32C: re-exports of their kernel
//! implementations in `rust/` (where every `unsafe` of dm-rs lives).
//!
//! Not compiled on the host: the kernel-integration build checks it.

pub use crate::dm::crc32c::crc32c;
pub use crate::dm::engine_alloc::{PBox, PVec};
