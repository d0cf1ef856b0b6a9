// SPDX-License-Identifier: GPL-2.0

//! `thin-pool` and `thin`: thin provisioning on the metadata in `metadata/`.

// Written for this module and for the host test crate (targets/host), which
// needs its API public. thin-pool, its user, is next: until it lands most of
// the API (and the re-exports) have no caller here.
#[allow(dead_code, unreachable_pub, unused_imports)]
pub(crate) mod metadata;

// Pure logic shared with the host test crate (targets/host/thin.rs), which
// needs it public; the thin-pool and thin targets that call it come next.
#[allow(dead_code, unreachable_pub)]
pub(crate) mod message;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod mode;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod number;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod pool_table;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod prison;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod status;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod thin_table;

pub(crate) mod pool;
mod pool_mode;
pub(crate) mod pool_target;
mod provision;
pub(crate) mod thin_target;
mod worker;
