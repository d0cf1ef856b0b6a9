// SPDX-License-Identifier: GPL-2.0
/* Block device, dm_dev and dm table accessors; see table.h. */
#include <linux/file.h>
#include <linux/string.h>
#include "table.h"

blk_mode_t dmrs_table_get_mode(struct dm_target *ti)
{
	return dm_table_get_mode(ti->table);
}

blk_mode_t dmrs_blk_open_read(void)
{
	return BLK_OPEN_READ;
}

struct file *dmrs_get_file(struct file *file)
{
	return get_file(file);
}

void dmrs_fput(struct file *file)
{
	fput(file);
}

void dmrs_target_table_event(struct dm_target *ti)
{
	dm_table_event(ti->table);
}

void dmrs_target_md_name(struct dm_target *ti, char *buf, size_t len)
{
	strscpy(buf, dm_device_name(dm_table_get_md(ti->table)), len);
}

dev_t dmrs_target_md_devt(struct dm_target *ti)
{
	return disk_devt(dm_disk(dm_table_get_md(ti->table)));
}

int dmrs_bdev_discard(struct block_device *bdev, sector_t sector, sector_t nr)
{
	if (!bdev_max_discard_sectors(bdev))
		return -EOPNOTSUPP;
	return blkdev_issue_discard(bdev, sector, nr, GFP_NOIO);
}
