// SPDX-License-Identifier: GPL-2.0

//! Device-mapper abstractions.
//!
//! The 6.12 `kernel` crate has no device-mapper support; this is ours. Every
//! `unsafe` block of dm-rs lives under `rust/`: targets and the metadata
//! engine are `#![forbid(unsafe_code)]` and written against the safe API here.
//!
//! Ownership rules, in short (Documentation/abstraction.rst has the long
//! form): a bio handed to `map`/`end_io` is consumed by the result the target
//! returns, or held as a [`HeldBio`] that must be ended or resubmitted (drop
//! ends it with an error); devices belong to the table and a [`DmDev`] is a
//! counted reference that keeps the block device valid; callbacks borrow the
//! target, and a [`TargetHandle`] is the only way to reach the table from
//! elsewhere, inert once the target is gone.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

pub(crate) mod args;
pub(crate) mod bindings;
pub(crate) mod bio;
pub(crate) mod bufio;
pub(crate) mod crc32c;
pub(crate) mod delayed_work;
pub(crate) mod device;
pub(crate) mod dm_io;
pub(crate) mod engine_alloc;
pub(crate) mod irq_spinlock;
pub(crate) mod kcopyd;
pub(crate) mod mapped_device;
mod module_ref;
pub(crate) mod noio;
pub(crate) mod params;
pub(crate) mod ratelimit;
pub(crate) mod region;
pub(crate) mod registration;
pub(crate) mod registry;
pub(crate) mod stack;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod target;
pub(crate) mod workqueue;

pub(crate) use args::ArgSet;
pub(crate) use bio::{BioList, BioOp, BlkStatus, EndioBio, HeldBio, MapBio, ReturnedBio};
pub(crate) use device::{DeviceVisitor, DmDev};
pub(crate) use irq_spinlock::IrqSpinLock;
pub(crate) use registration::{Family, FamilyBuilder, UndoneFamily};
pub(crate) use status::{StatusType, StatusWriter};
pub(crate) use target::{
    CtrResult, EndioResult, MapResult, QueueLimits, Target, TargetCtx, TargetError, TargetHandle,
};
