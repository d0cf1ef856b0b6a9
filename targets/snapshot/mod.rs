// SPDX-License-Identifier: GPL-2.0

//! The snapshot family: `snapshot-origin`, `snapshot` and `snapshot-merge`.

mod chunk_copy;
mod cow_io;
mod exceptions;
// Also built by the host test crate, which needs its API public.
#[allow(unreachable_pub)]
pub(crate) mod features;
mod merge;
pub(crate) mod merge_target;
pub(crate) mod origin;
mod origins;
mod shared_group;
pub(crate) mod snap;
// Pure logic, also built by the host test crate (targets/host), which needs
// its API public.
#[allow(dead_code, unreachable_pub, unused_imports)]
pub(crate) mod store;
mod throttle;
