// SPDX-License-Identifier: GPL-2.0

//! `thin-pool` and `thin`: thin provisioning on the metadata in `metadata/`.

// Written for this module and for the host test crate (targets/host), which
// needs its API public; parts of it (tools' and tests' accessors) have no
// caller in the module.
#[allow(dead_code, unreachable_pub, unused_imports)]
pub(crate) mod metadata;

// Pure logic shared with the host test crate (targets/host/thin.rs), which
// needs it public; the targets below do not use all of it yet (the deferred
// set, parts of the error enums).
#[allow(dead_code, unreachable_pub)]
pub(crate) mod gate;
#[allow(unreachable_pub)]
pub(crate) mod io_limits;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod message;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod mode;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod number;
#[allow(unreachable_pub)]
pub(crate) mod origin_span;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod pool_table;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod prison;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod status;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod thin_table;

// The targets: the pool object and its worker, and the two Target impls.
mod external_origin;
pub(crate) mod pool;
mod pool_mode;
pub(crate) mod pool_target;
mod provision;
pub(crate) mod thin_target;
mod worker;
