// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for dm-rs; see helpers.h for why they exist.
 */
#include <linux/sched/mm.h>
#include "helpers.h"

unsigned int dmrs_bio_op(const struct bio *bio)
{
	return bio_op(bio);
}

bool dmrs_bio_is_write(const struct bio *bio)
{
	return op_is_write(bio_op(bio));
}

unsigned int dmrs_bio_sectors(const struct bio *bio)
{
	return bio_sectors(bio);
}

void dmrs_bio_set_dev(struct bio *bio, struct block_device *bdev)
{
	bio_set_dev(bio, bdev);
}

void dmrs_bio_io_error(struct bio *bio)
{
	bio_io_error(bio);
}

void dmrs_zero_fill_bio(struct bio *bio)
{
	zero_fill_bio(bio);
}

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

long dmrs_ptr_err_or_zero(const void *ptr)
{
	return PTR_ERR_OR_ZERO(ptr);
}

unsigned int dmrs_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void dmrs_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}
