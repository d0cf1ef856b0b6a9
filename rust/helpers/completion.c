// SPDX-License-Identifier: GPL-2.0
/* Completion set-up; see completion.h. */
#include "completion.h"

void dmrs_init_completion(struct completion *x)
{
	init_completion(x);
}
