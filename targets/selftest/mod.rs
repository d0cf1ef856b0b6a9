// SPDX-License-Identifier: GPL-2.0

//! Test-only targets, registered only with `selftest=1`: they drive each
//! piece of the `rust/` abstraction from a guest test, under the debug
//! kernel's KASAN and lockdep, without waiting for a real target to use it.

pub(crate) mod defer;
pub(crate) mod pdata;
pub(crate) mod services;
