// SPDX-License-Identifier: GPL-2.0

//! `snapshot-origin <dev>`: the device that snapshots are taken of.
//!
//! Every bio goes to the origin device at the same sector (like upstream, the
//! target's start in the table is not subtracted: an origin always covers the
//! whole device). Snapshots hook in here once they exist; with none attached,
//! the target is a pass-through.

use crate::dm::{
    ArgSet, CtrResult, DeviceVisitor, DmDev, MapBio, MapResult, StatusType, StatusWriter, Target,
    TargetCtx, TargetError,
};
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;

/// One snapshot-origin target instance.
pub(crate) struct Origin {
    dev: DmDev,
    len: u64,
}

#[vtable]
impl Target for Origin {
    const NAME: &'static CStr = c_str!("snapshot-origin");
    const SHORT_NAME: &'static CStr = c_str!("snap-origin");
    const VERSION: [u32; 3] = [1, 9, 0];
    type PerBio = ();

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        if args.len() != 1 {
            return Err(TargetError::new(
                EINVAL,
                c_str!("origin: incorrect number of arguments"),
            ));
        }
        let path = args.shift_or(c_str!("origin: incorrect number of arguments"))?;
        let dev = ti.get_device(path, c_str!("Cannot get target device"))?;
        ti.set_num_flush_bios(1);
        KBox::pin(Origin { dev, len: ti.len() }, GFP_KERNEL).map_err(|_| {
            TargetError::new(ENOMEM, c_str!("Cannot allocate private origin structure"))
        })
    }

    fn map(&self, bio: MapBio<'_, Self>) -> MapResult {
        let sector = bio.sector();
        bio.remap(&self.dev, sector)
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        if ty == StatusType::Table {
            out.push_bytes(self.dev.name().as_bytes());
        }
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        visitor.visit(&self.dev, 0, self.len)
    }
}
