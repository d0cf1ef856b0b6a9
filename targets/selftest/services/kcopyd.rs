// SPDX-License-Identifier: GPL-2.0

//! `kcopyd`: copies and zeroes through a kcopyd client; the guest test
//! checks the bytes on the devices. `detach`/`adopt`/`collect` hand a copy in
//! flight from one device to another, so the guest test can destroy the
//! table that started it while it runs: the copy must keep its devices open.

use super::waiter::{Tally, Waiter};
use crate::dm::kcopyd::KcopydClient;
use crate::dm::noio::noio_scope;
use crate::dm::region::Region;
use crate::dm::registry::{DevKey, Registered, Registry};
use crate::dm::DmDev;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

const PATIENCE_MS: u32 = 60_000;
/// Sectors per job of `kcopyd drop`.
const DROP_JOB: u64 = 8;

fn finished(what: &str, t: Tally, jobs: u64) -> Result<CString> {
    if t.done != jobs || t.failed != 0 {
        pr_err!(
            "services kcopyd {}: {} of {} jobs done, {} failed\n",
            what,
            t.done,
            jobs,
            t.failed
        );
        return Err(EIO);
    }
    CString::try_from_fmt(kernel::fmt!("kcopyd {} ok jobs={}", what, jobs))
}

fn submitted(w: &Arc<Waiter>) -> impl FnOnce(crate::dm::kcopyd::CopyResult) + Send + 'static {
    let w = w.clone();
    move |r| w.signal(r.is_ok())
}

/// Copies `count` sectors from `src` on `a` to each of `dsts` on `b`.
pub(super) fn copy(a: &DmDev, b: &DmDev, src: u64, dsts: &[u64], count: u64) -> Result<CString> {
    let client = KcopydClient::new(100)?;
    let from = Region::new(a.clone(), src, count)?;
    let mut to = KVec::new();
    for &d in dsts {
        to.push(Region::new(b.clone(), d, count)?, GFP_KERNEL)?;
    }
    let w = Waiter::new()?;
    // As a pool's worker submits: allocations must not recurse into I/O.
    noio_scope(|| client.copy(&from, to.as_slice(), submitted(&w))).map_err(|(e, _)| e)?;
    finished("copy", w.wait_for(1, PATIENCE_MS), 1)
}

/// Zeroes `count` sectors at `dst` on `b`.
pub(super) fn zero(b: &DmDev, dst: u64, count: u64) -> Result<CString> {
    let client = KcopydClient::new(100)?;
    let to = [Region::new(b.clone(), dst, count)?];
    let w = Waiter::new()?;
    client.zero(&to, submitted(&w)).map_err(|(e, _)| e)?;
    finished("zero", w.wait_for(1, PATIENCE_MS), 1)
}

/// Submits `jobs` copies of 8 sectors (`a` at `src` onwards to `b` at `dst`
/// onwards) through a throttled client and drops the client at once:
/// dropping must wait until every job has completed.
pub(super) fn drop_waits(a: &DmDev, b: &DmDev, jobs: u64, src: u64, dst: u64) -> Result<CString> {
    let client = KcopydClient::new(50)?;
    let w = Waiter::new()?;
    for i in 0..jobs {
        let off = i.checked_mul(DROP_JOB).ok_or(EINVAL)?;
        let from = Region::new(a.clone(), src.checked_add(off).ok_or(EINVAL)?, DROP_JOB)?;
        let to = [Region::new(
            b.clone(),
            dst.checked_add(off).ok_or(EINVAL)?,
            DROP_JOB,
        )?];
        client.copy(&from, &to, submitted(&w)).map_err(|(e, _)| e)?;
    }
    drop(client);
    // No waiting here: the drop above already did.
    finished("drop", w.tally(), jobs)
}

/// A copy left in flight by `detach`: its client and completion count.
pub(super) struct Detached {
    _client: KcopydClient,
    waiter: Arc<Waiter>,
}

/// Copies in flight, by destination device.
static DETACHED: Registry<DevKey, Detached> = Registry::new();

/// A share in a detached copy; the copy's client goes with the last share.
pub(super) type Handover = Registered<DevKey, Detached>;

/// Starts copying `count` sectors from `src` on `a` to `dst` on `b` and
/// returns without waiting, publishing the copy under `b`.
pub(super) fn detach(
    a: &DmDev,
    b: &DmDev,
    src: u64,
    dst: u64,
    count: u64,
) -> Result<(Handover, CString)> {
    let client = KcopydClient::new(100)?;
    let w = Waiter::new()?;
    let from = Region::new(a.clone(), src, count)?;
    let to = [Region::new(b.clone(), dst, count)?];
    client.copy(&from, &to, submitted(&w)).map_err(|(e, _)| e)?;
    let detached = Arc::new(
        Detached {
            _client: client,
            waiter: w,
        },
        GFP_KERNEL,
    )?;
    let share = DETACHED.insert(DevKey::of(b), detached)?;
    Ok((
        share,
        CString::try_from_fmt(kernel::fmt!("kcopyd detached"))?,
    ))
}

/// Takes a share in the copy detached towards `dev`.
pub(super) fn adopt(dev: &DmDev) -> Result<(Handover, CString)> {
    let share = DETACHED.join(DevKey::of(dev)).ok_or(ENOENT)?;
    Ok((
        share,
        CString::try_from_fmt(kernel::fmt!("kcopyd adopted"))?,
    ))
}

/// Waits for an adopted copy to finish, then drops the share (and with the
/// last one the client).
pub(super) fn collect(share: Handover) -> Result<CString> {
    let t = share.waiter.wait_for(1, PATIENCE_MS);
    drop(share);
    finished("collect", t, 1)
}
