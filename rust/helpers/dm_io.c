// SPDX-License-Identifier: GPL-2.0
/* dm-io; see dm_io.h. */
#include <linux/ioprio.h>
#include "dm_io.h"

unsigned short dmrs_ioprio_default(void)
{
	return IOPRIO_DEFAULT;
}
