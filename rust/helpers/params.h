/* SPDX-License-Identifier: GPL-2.0 */
/* Module parameters (declared in src/params.c). */
#ifndef DMRS_HELPERS_PARAMS_H
#define DMRS_HELPERS_PARAMS_H

#include <linux/types.h>

const char *dmrs_param_prefix(void);
const char *dmrs_param_targets(void);
bool dmrs_param_selftest(void);

/* thin-pool's no_space_timeout in seconds (0: queue for ever). */
unsigned int dmrs_param_no_space_timeout(void);

/* Chunks a snapshot may have in copy before writes wait (dm-snapshot's). */
unsigned int dmrs_param_snapshot_cow_threshold(void);

#endif
