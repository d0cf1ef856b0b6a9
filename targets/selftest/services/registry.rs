// SPDX-License-Identifier: GPL-2.0

//! `registry`: one self-test device publishes a value under its first
//! device, another device using the same disk finds it (as a thin finds its
//! pool), and it is gone once the publisher unpublishes or is removed; plus
//! the insert/join/drop rules on a scratch registry.

use super::expect;
use crate::dm::registry::{DevKey, Registered, Registry};
use crate::dm::DmDev;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

/// What a self-test device publishes.
pub(super) struct Published {
    tag: u64,
}

/// Published values, by the publisher's first device.
static PUBLISHED: Registry<DevKey, Published> = Registry::new();
/// Used only by `registry rules`.
static SCRATCH: Registry<u32, Published> = Registry::new();

/// A publication, kept by the publishing device until it unpublishes or is
/// removed.
pub(super) type Publication = Registered<DevKey, Published>;

/// Publishes `tag` under `dev`.
pub(super) fn publish(dev: &DmDev, tag: u64) -> Result<(Publication, CString)> {
    let value = Arc::new(Published { tag }, GFP_KERNEL)?;
    let guard = PUBLISHED.insert(DevKey::of(dev), value)?;
    Ok((
        guard,
        CString::try_from_fmt(kernel::fmt!("registry published tag={}", tag))?,
    ))
}

/// Looks up what was published under `dev`.
pub(super) fn find(dev: &DmDev) -> Result<CString> {
    match PUBLISHED.lookup(DevKey::of(dev)) {
        Some(p) => CString::try_from_fmt(kernel::fmt!("registry found tag={}", p.tag)),
        None => CString::try_from_fmt(kernel::fmt!("registry found none")),
    }
}

/// Insert, duplicate insert, lookup, join and removal by the last guard.
pub(super) fn rules() -> Result<CString> {
    let first = SCRATCH.insert(7, Arc::new(Published { tag: 1 }, GFP_KERNEL)?)?;
    let found = SCRATCH.lookup(7);
    expect(
        found
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, first.value())),
        "lookup returns the inserted value",
    )?;
    let dup = SCRATCH.insert(7, Arc::new(Published { tag: 2 }, GFP_KERNEL)?);
    expect(dup.is_err_and(|e| e == EEXIST), "a taken key is refused")?;
    expect(SCRATCH.lookup(8).is_none(), "other keys are absent")?;
    let second = SCRATCH.join(7);
    expect(
        second.as_ref().is_some_and(|s| s.tag == 1),
        "join shares the entry",
    )?;
    drop(first);
    expect(
        SCRATCH.lookup(7).is_some(),
        "an entry stays while a guard holds it",
    )?;
    drop(second);
    expect(
        SCRATCH.lookup(7).is_none(),
        "the last guard removes the entry",
    )?;
    expect(
        found.is_some_and(|f| f.tag == 1),
        "a looked-up value outlives its entry",
    )?;
    expect(SCRATCH.join(7).is_none(), "nothing to join after removal")?;
    CString::try_from_fmt(kernel::fmt!("registry rules ok"))
}
