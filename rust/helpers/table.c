// SPDX-License-Identifier: GPL-2.0
/* Block device and dm table accessors; see table.h. */
#include "table.h"

sector_t dmrs_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

blk_mode_t dmrs_table_get_mode(struct dm_target *ti)
{
	return dm_table_get_mode(ti->table);
}

blk_mode_t dmrs_blk_open_read(void)
{
	return BLK_OPEN_READ;
}
