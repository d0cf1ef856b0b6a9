/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The mutex of every dm-rs registry (rust/dm/registry.rs). A statically
 * initialised C mutex needs no set-up at module load, which a Rust static
 * cannot offer in 6.12.
 */
#ifndef DMRS_HELPERS_REGISTRY_H
#define DMRS_HELPERS_REGISTRY_H

void dmrs_registry_lock(void);
void dmrs_registry_unlock(void);

#endif
