// SPDX-License-Identifier: GPL-2.0

//! dm-bitset (not yet implemented).
