// SPDX-License-Identifier: GPL-2.0

//! dm-rs: device-mapper thin-provisioning, cache and snapshot targets in Rust.
//!
//! This crate root only wires the layers together: `rust/` (the device-mapper
//! abstraction, the only place with `unsafe`), `persistent_data/` (the
//! metadata engine) and `targets/`.

#[path = "../rust/dm/mod.rs"]
mod dm;
mod params;
// The engine is written for both this module and a host test crate; until the
// thin and cache targets use all of it, much of its API has no caller here.
#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../persistent_data/mod.rs"]
mod persistent_data;
#[path = "../targets/mod.rs"]
mod targets;

use dm::Registration;
use kernel::prelude::*;
use targets::selftest::SelfTest;
use targets::snapshot::origin::Origin;

module! {
    type: DmRs,
    name: "dm_rs",
    author: "dm-rs developers",
    description: "device-mapper thin, cache and snapshot targets in Rust",
    license: "GPL",
    alias: ["dm-snapshot-origin"],
}

/// Names accepted by the `targets=` parameter.
const TARGET_NAMES: &[&[u8]] = &[b"snapshot-origin"];

struct DmRs {
    _origin: Option<Registration<Origin>>,
    _selftest: Option<Registration<SelfTest>>,
}

impl kernel::Module for DmRs {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let prefix = params::prefix();
        let list = params::targets().as_bytes();
        if let Some(bad) = params::unknown(list, TARGET_NAMES) {
            pr_err!(
                "unknown target in targets=: {}\n",
                core::str::from_utf8(bad).unwrap_or("?")
            );
            return Err(EINVAL);
        }
        let origin = if params::selects(list, b"snapshot-origin") {
            Registration::<Origin>::register(module, prefix)?
        } else {
            None
        };
        // Test-only; never registered by a default load.
        let selftest = if params::selftest() {
            Registration::<SelfTest>::register(module, prefix)?
        } else {
            None
        };
        Ok(DmRs {
            _origin: origin,
            _selftest: selftest,
        })
    }
}
