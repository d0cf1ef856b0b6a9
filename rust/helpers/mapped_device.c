// SPDX-License-Identifier: GPL-2.0
/* A target's mapped device, held; see mapped_device.h. */
#include "mapped_device.h"

struct mapped_device *dmrs_target_md_hold(struct dm_target *ti)
{
	struct mapped_device *md = dm_table_get_md(ti->table);

	return dm_hold(md) ? NULL : md;
}
