// SPDX-License-Identifier: GPL-2.0

//! Thin-pool metadata (upstream's `dm-thin-metadata.c`) on the
//! persistent-data engine, byte-compatible with Linux 6.12.
//!
//! On disk: a superblock at block 0 ([`superblock`]), the metadata and
//! data space maps, a device details tree (`dev -> details`,
//! [`device_details`]) and a two-level mapping tree (`[dev, vblock] ->
//! data block and time`, [`mapping`]). [`PoolMetadata`] drives them the way
//! thin-pool needs: devices and snapshots, mappings, commits and aborts,
//! the metadata snapshot, growth.
//!
//! Safe Rust over `core` and the engine only, so the same files build
//! into the module and into the host test crate (`targets/host`).

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

pub mod device_details;
mod devices;
pub mod mapping;
mod mappings;
mod metadata_snap;
mod pool;
mod space;
pub mod superblock;
mod thin_device;

pub use device_details::DeviceDetails;
pub use mappings::{LookupResult, MappedRange};
pub use pool::{NoHooks, OpenOptions, PoolHooks, PoolMetadata};
pub use thin_device::ThinDevice;
