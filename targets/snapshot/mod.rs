// SPDX-License-Identifier: GPL-2.0

//! `snapshot-origin` (and, as they land, `snapshot` and `snapshot-merge`).

pub(crate) mod origin;
