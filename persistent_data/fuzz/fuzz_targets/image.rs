// SPDX-License-Identifier: GPL-2.0

//! cargo-fuzz target: see `harness::image`.

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::image(data));
