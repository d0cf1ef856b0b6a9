// SPDX-License-Identifier: GPL-2.0

//! dm-array (not yet implemented).
