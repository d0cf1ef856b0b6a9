/* SPDX-License-Identifier: GPL-2.0 */
/* Block device and dm table accessors. */
#ifndef DMRS_HELPERS_TABLE_H
#define DMRS_HELPERS_TABLE_H

#include <linux/blkdev.h>
#include <linux/device-mapper.h>

sector_t dmrs_bdev_nr_sectors(struct block_device *bdev);
blk_mode_t dmrs_table_get_mode(struct dm_target *ti);
blk_mode_t dmrs_blk_open_read(void);

#endif
