// SPDX-License-Identifier: GPL-2.0

//! `thin-pool` and `thin` (so far their metadata).

// Written for this module and for the host test crate (targets/host), which
// needs its API public. thin-pool, its user, is next: until it lands most of
// the API (and the re-exports) have no caller here.
#[allow(dead_code, unreachable_pub, unused_imports)]
pub(crate) mod metadata;
