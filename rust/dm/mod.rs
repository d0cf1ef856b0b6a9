// SPDX-License-Identifier: GPL-2.0

//! Device-mapper abstractions.
//!
//! The 6.12 `kernel` crate has no device-mapper support; this is ours. Every
//! `unsafe` block of dm-rs lives under `rust/`: targets are written in safe Rust
//! against the [`target::Target`] trait.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)

// Parts of this API exist for targets that are still being written.
#![allow(dead_code)]

pub(crate) mod args;
pub(crate) mod bindings;
pub(crate) mod bio;
pub(crate) mod bufio;
pub(crate) mod delayed_work;
pub(crate) mod device;
pub(crate) mod dm_io;
pub(crate) mod kcopyd;
mod module_ref;
pub(crate) mod noio;
pub(crate) mod region;
pub(crate) mod registration;
pub(crate) mod registry;
pub(crate) mod status;
pub(crate) mod sync;
pub(crate) mod target;
pub(crate) mod workqueue;

pub(crate) use args::ArgSet;
pub(crate) use bio::Bio;
pub(crate) use device::{DeviceVisitor, DmDev};
pub(crate) use registration::Registration;
pub(crate) use status::{StatusType, StatusWriter};
pub(crate) use target::{CtrResult, MapResult, Target, TargetCtx, TargetError};
