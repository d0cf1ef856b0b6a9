/* SPDX-License-Identifier: GPL-2.0 */
/* Block device, dm_dev and dm table accessors. */
#ifndef DMRS_HELPERS_TABLE_H
#define DMRS_HELPERS_TABLE_H

#include <linux/blkdev.h>
#include <linux/device-mapper.h>
#include <linux/fs.h>

blk_mode_t dmrs_table_get_mode(struct dm_target *ti);
/* BLK_OPEN_READ, whose __force cast bindgen cannot evaluate. */
blk_mode_t dmrs_blk_open_read(void);

/* An extra reference on a device's open file, which keeps its bdev valid. */
struct file *dmrs_get_file(struct file *file);
void dmrs_fput(struct file *file);

/*
 * Discards @nr sectors of @bdev at @sector and waits; -EOPNOTSUPP if the
 * device takes no discards. Sleeps.
 */
int dmrs_bdev_discard(struct block_device *bdev, sector_t sector, sector_t nr);

/* The mapped device of @ti's table: events, suspend state, name. */
void dmrs_target_table_event(struct dm_target *ti);
/* Copies the mapped device's name (NUL-terminated, truncated) into @buf. */
void dmrs_target_md_name(struct dm_target *ti, char *buf, size_t len);
/* The dev_t (major:minor) of the mapped device of @ti's table. */
dev_t dmrs_target_md_devt(struct dm_target *ti);

#endif
