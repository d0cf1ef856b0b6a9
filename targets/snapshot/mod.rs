// SPDX-License-Identifier: GPL-2.0

//! `snapshot-origin` (and, as they land, `snapshot` and `snapshot-merge`).

pub(crate) mod origin;
// Pure logic, also built by the host test crate (targets/host), which needs
// its API public. The snapshot target, its user, is next: until it lands the
// API has no caller here.
#[allow(dead_code, unreachable_pub, unused_imports)]
pub(crate) mod store;
