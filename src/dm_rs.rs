// SPDX-License-Identifier: GPL-2.0

//! dm-rs: device-mapper thin-provisioning, cache and snapshot targets in Rust.
//!
//! This crate root only wires the layers together: `rust/` (the device-mapper
//! abstraction, the only place with `unsafe`), `persistent_data/` (the
//! metadata engine) and `targets/`, and registers the target families that
//! the module parameters select.

// The pool's pin-initialiser (`try_pin_init!` over many fields) expands
// deeper than the default limit of 128.
#![recursion_limit = "256"]

#[path = "../rust/dm/mod.rs"]
mod dm;
mod families;
// The engine is written for both this module and a host test crate; until the
// thin and cache targets use all of it, much of its API has no caller here.
#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../persistent_data/mod.rs"]
mod persistent_data;
#[path = "../targets/mod.rs"]
mod targets;

use dm::{params, Family, FamilyBuilder, UndoneFamily};
use families::{Selection, FAMILIES};
use kernel::prelude::*;

module! {
    type: DmRs,
    name: "dm_rs",
    author: "dm-rs developers",
    description: "device-mapper thin, cache and snapshot targets in Rust",
    license: "GPL",
    // dm core loads a missing target type as "dm-<name>" (lvm2 also runs
    // `modprobe dm-thin-pool`, `modprobe dm-snapshot`): the complete
    // families answer to it, as upstream's dm-thin-pool.ko and
    // dm-snapshot.ko (named dm-snapshot, aliased -origin and -merge) do.
    alias: [
        "dm-thin-pool",
        "dm-thin",
        "dm-snapshot",
        "dm-snapshot-origin",
        "dm-snapshot-merge"
    ],
}

struct DmRs {
    _families: KVec<Family>,
    // Kept until exit: a table may use a type registered before its family
    // was undone.
    _undone: KVec<UndoneFamily>,
}

impl kernel::Module for DmRs {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let prefix = params::prefix();
        let selection = match Selection::parse(params::targets().as_bytes()) {
            Ok(s) => s,
            Err(bad) => {
                pr_err!(
                    "unknown target or family in targets=: {}\n",
                    core::str::from_utf8(bad).unwrap_or("?")
                );
                return Err(EINVAL);
            }
        };
        let mut families = KVec::new();
        let mut undone = KVec::new();
        for info in FAMILIES {
            if !selection.selects(info) {
                continue;
            }
            let builder = FamilyBuilder::new(info.name, module, prefix);
            let family = match info.name {
                "snapshot" => builder
                    .add::<targets::snapshot::origin::Origin>()?
                    .add::<targets::snapshot::snap::Snapshot>()?
                    .add::<targets::snapshot::merge_target::SnapshotMerge>()?,
                "thin" => builder
                    .add::<targets::thin::pool_target::PoolTarget>()?
                    .add::<targets::thin::thin_target::ThinTarget>()?,
                _ => continue,
            };
            match family.finish() {
                Ok(f) => families.push(f, GFP_KERNEL)?,
                Err(u) => undone.push(u, GFP_KERNEL)?,
            }
        }
        if params::selftest() {
            let builder = FamilyBuilder::new("selftest", module, prefix)
                .add::<targets::selftest::defer::Defer>()?
                .add::<targets::selftest::services::Services>()?
                .add::<targets::selftest::pdata::Pdata>()?;
            match builder.finish() {
                Ok(f) => families.push(f, GFP_KERNEL)?,
                Err(u) => undone.push(u, GFP_KERNEL)?,
            }
        }
        Ok(DmRs {
            _families: families,
            _undone: undone,
        })
    }
}
