// SPDX-License-Identifier: GPL-2.0

//! thin-pool's and thin's pure logic (`targets/thin/*.rs` other than the
//! metadata): table lines, status lines, messages, pool modes, the cell
//! lock. Sibling files reach each other through `super::`, which resolves
//! here as it does in the module's `targets::thin`.

// Kernel code never panics: hold these files to that on the host, where
// clippy sees them with the same lints.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

// The module's `targets::thin::metadata`, where the siblings look for it.
pub use crate::thin_metadata as metadata;

#[path = "../thin/gate.rs"]
pub mod gate;
#[path = "../thin/io_limits.rs"]
pub mod io_limits;
#[path = "../thin/message.rs"]
pub mod message;
#[path = "../thin/mode.rs"]
pub mod mode;
#[path = "../thin/number.rs"]
pub mod number;
#[path = "../thin/origin_span.rs"]
pub mod origin_span;
#[path = "../thin/pool_table.rs"]
pub mod pool_table;
#[path = "../thin/prison.rs"]
pub mod prison;
#[path = "../thin/status.rs"]
pub mod status;
#[path = "../thin/thin_table.rs"]
pub mod thin_table;
