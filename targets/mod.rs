// SPDX-License-Identifier: GPL-2.0

//! The device-mapper targets dm-rs implements, one folder per family.

pub(crate) mod selftest;
pub(crate) mod snapshot;
