// SPDX-License-Identifier: GPL-2.0

//! `dmrs-services <dev> [<dev2>]`: a test-only target that runs dm-rs's
//! platform services (workqueues, delayed work, kcopyd, dm-io, locks, the
//! registry) from inside the kernel, for the guest tests. It is registered
//! only when the module is loaded with `selftest=1`.
//!
//! I/O is passed through to `<dev>`. Each `dmsetup message` runs one check
//! and fails (with the reason in the kernel log) if the check does; the
//! result line is logged and shown by `dmsetup status`:
//!
//! - `wq`, `delayed`: workqueues and delayed work.
//! - `kcopyd copy SRC DST [DST2] COUNT`, `kcopyd zero DST COUNT`,
//!   `kcopyd drop JOBS SRC DST`: copy `<dev>` to `<dev2>`, zero `<dev2>`;
//!   `kcopyd detach SRC DST COUNT` leaves a copy in flight, which a device
//!   whose `<dev>` is this one's `<dev2>` takes over with `kcopyd adopt` and
//!   waits for with `kcopyd collect`.
//! - `dmio write|fua|read|awrite|aread SECTOR COUNT BYTE`, `dmio flush`: on
//!   `<dev2>`; reads check that every byte is BYTE.
//! - `rwsem`: the read-write semaphore and mutex from work items.
//! - `registry publish TAG|unpublish|find|rules`: keyed by `<dev>`.
//!
//! `<dev2>` defaults to `<dev>`; numbers are sectors.

mod dm_io;
mod kcopyd;
mod registry;
mod sync;
mod waiter;
mod workqueue;

use crate::dm::args::parse_u64;
use crate::dm::dm_io::IoOp;
use crate::dm::sync::{new_mutex, Mutex};
use crate::dm::{
    ArgSet, CtrResult, DmDev, MapBio, MapResult, StatusType, StatusWriter, Target, TargetCtx,
    TargetError,
};
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CString;

/// Passes if `cond` holds; otherwise logs which check failed.
fn expect(cond: bool, what: &str) -> Result {
    if cond {
        Ok(())
    } else {
        pr_err!("services: check failed: {}\n", what);
        Err(EIO)
    }
}

/// One `dmrs-services` device.
#[pin_data]
pub(crate) struct Services {
    dev: DmDev,
    dev2: Option<DmDev>,
    /// The last message's result line.
    #[pin]
    last: Mutex<Option<CString>>,
    /// What this device published with `registry publish`.
    #[pin]
    publication: Mutex<Option<registry::Publication>>,
    /// Its share in a copy it detached or adopted.
    #[pin]
    handover: Mutex<Option<kcopyd::Handover>>,
}

impl Services {
    fn dev2(&self) -> &DmDev {
        self.dev2.as_ref().unwrap_or(&self.dev)
    }

    fn run(&self, args: &mut ArgSet<'_>) -> Result<CString> {
        let cmd = args.shift().ok_or(EINVAL)?;
        match cmd.as_bytes() {
            b"wq" => workqueue::wq(),
            b"delayed" => workqueue::delayed(),
            b"rwsem" => sync::rwsem(),
            b"kcopyd" => self.kcopyd(args),
            b"dmio" => self.dmio(args),
            b"registry" => self.registry(args),
            _ => Err(EINVAL),
        }
    }

    fn kcopyd(&self, args: &mut ArgSet<'_>) -> Result<CString> {
        let sub = args.shift().ok_or(EINVAL)?;
        let mut nums = KVec::new();
        while let Some(w) = args.shift() {
            nums.push(parse_u64(w).ok_or(EINVAL)?, GFP_KERNEL)?;
        }
        match (sub.as_bytes(), nums.as_slice()) {
            (b"copy", &[src, dst, count]) => {
                kcopyd::copy(&self.dev, self.dev2(), src, &[dst], count)
            }
            (b"copy", &[src, dst, dst2, count]) => {
                kcopyd::copy(&self.dev, self.dev2(), src, &[dst, dst2], count)
            }
            (b"zero", &[dst, count]) => kcopyd::zero(self.dev2(), dst, count),
            (b"drop", &[jobs, src, dst]) => {
                kcopyd::drop_waits(&self.dev, self.dev2(), jobs, src, dst)
            }
            (b"detach", &[src, dst, count]) => {
                self.hand_over(|| kcopyd::detach(&self.dev, self.dev2(), src, dst, count))
            }
            (b"adopt", &[]) => self.hand_over(|| kcopyd::adopt(&self.dev)),
            (b"collect", &[]) => {
                let share = self.handover.lock().take().ok_or(ENOENT)?;
                kcopyd::collect(share)
            }
            _ => Err(EINVAL),
        }
    }

    /// Keeps the share `get` returns; one at a time.
    fn hand_over(
        &self,
        get: impl FnOnce() -> Result<(kcopyd::Handover, CString)>,
    ) -> Result<CString> {
        let mut slot = self.handover.lock();
        if slot.is_some() {
            return Err(EBUSY);
        }
        let (share, text) = get()?;
        *slot = Some(share);
        Ok(text)
    }

    fn dmio(&self, args: &mut ArgSet<'_>) -> Result<CString> {
        let sub = args.shift().ok_or(EINVAL)?;
        if sub.as_bytes() == b"flush" {
            return dm_io::flush(self.dev2());
        }
        let mut num = || args.shift().and_then(parse_u64).ok_or(EINVAL);
        let (sector, count, byte) = (num()?, num()?, num()?);
        let byte = u8::try_from(byte).map_err(|_| EINVAL)?;
        let dev = self.dev2();
        match sub.as_bytes() {
            b"write" => dm_io::write(dev, sector, count, byte, false),
            b"fua" => dm_io::write(dev, sector, count, byte, true),
            b"read" => dm_io::read(dev, sector, count, byte),
            b"awrite" => dm_io::background(dev, sector, count, byte, IoOp::Write),
            b"aread" => dm_io::background(dev, sector, count, byte, IoOp::Read),
            _ => Err(EINVAL),
        }
    }

    fn registry(&self, args: &mut ArgSet<'_>) -> Result<CString> {
        let sub = args.shift().ok_or(EINVAL)?;
        match sub.as_bytes() {
            b"publish" => {
                let tag = args.shift().and_then(parse_u64).ok_or(EINVAL)?;
                let mut slot = self.publication.lock();
                if slot.is_some() {
                    return Err(EBUSY);
                }
                let (guard, text) = registry::publish(&self.dev, tag)?;
                *slot = Some(guard);
                Ok(text)
            }
            b"unpublish" => {
                let guard = self.publication.lock().take();
                drop(guard);
                CString::try_from_fmt(kernel::fmt!("registry unpublished"))
            }
            b"find" => registry::find(&self.dev),
            b"rules" => registry::rules(),
            _ => Err(EINVAL),
        }
    }
}

#[vtable]
impl Target for Services {
    const NAME: &'static CStr = c_str!("dmrs-services");
    const SHORT_NAME: &'static CStr = c_str!("dmrs-svc");
    const VERSION: [u32; 3] = [1, 0, 0];
    type PerBio = ();

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        let usage = c_str!("services: expects one or two devices");
        if args.is_empty() || args.len() > 2 {
            return Err(TargetError::new(EINVAL, usage));
        }
        let dev = ti.get_device(args.shift_or(usage)?, c_str!("services: cannot get device"))?;
        let dev2 = match args.shift() {
            Some(p) => Some(ti.get_device(p, c_str!("services: cannot get second device"))?),
            None => None,
        };
        ti.set_num_flush_bios(1);
        KBox::pin_init(
            pin_init!(Services {
                dev,
                dev2,
                last <- new_mutex!(None),
                publication <- new_mutex!(None),
                handover <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| TargetError::new(e, c_str!("services: out of memory")))
    }

    fn map(&self, bio: MapBio<'_, Self>) -> MapResult {
        let sector = bio.sector();
        bio.remap(&self.dev, sector)
    }

    fn message(&self, args: &mut ArgSet<'_>, out: &mut StatusWriter<'_>) -> Result {
        match self.run(args) {
            Ok(text) => {
                pr_info!("services: {}\n", &*text);
                out.push_bytes(text.as_bytes());
                *self.last.lock() = Some(text);
                Ok(())
            }
            Err(e) => {
                pr_err!("services: message failed: {:?}\n", e);
                *self.last.lock() = CString::try_from_fmt(kernel::fmt!("failed {:?}", e)).ok();
                Err(e)
            }
        }
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        match ty {
            StatusType::Info => match &*self.last.lock() {
                Some(text) => out.push_bytes(text.as_bytes()),
                None => out.push_bytes(b"-"),
            },
            StatusType::Table => {
                out.push_bytes(self.dev.name().as_bytes());
                if let Some(d) = &self.dev2 {
                    out.push_bytes(b" ");
                    out.push_bytes(d.name().as_bytes());
                }
            }
            StatusType::Ima => {}
        }
    }
}
