// SPDX-License-Identifier: GPL-2.0

//! The snapshot family: `snapshot-origin` and `snapshot` (`snapshot-merge`
//! is still to come).

mod cow_io;
mod exceptions;
pub(crate) mod origin;
mod origins;
pub(crate) mod snap;
// Pure logic, also built by the host test crate (targets/host), which needs
// its API public; merging is not used yet.
#[allow(dead_code, unreachable_pub, unused_imports)]
pub(crate) mod store;
