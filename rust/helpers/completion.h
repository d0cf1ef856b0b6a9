/* SPDX-License-Identifier: GPL-2.0 */
/* init_completion() is a static inline of linux/completion.h. */
#ifndef DMRS_HELPERS_COMPLETION_H
#define DMRS_HELPERS_COMPLETION_H

#include <linux/completion.h>

void dmrs_init_completion(struct completion *x);

#endif
