/* SPDX-License-Identifier: GPL-2.0 */
/* bio accessors: static inlines and macros of linux/bio.h. */
#ifndef DMRS_HELPERS_BIO_H
#define DMRS_HELPERS_BIO_H

#include <linux/bio.h>
#include <linux/blkdev.h>

void dmrs_bio_set_dev(struct bio *bio, struct block_device *bdev);
void dmrs_bio_io_error(struct bio *bio);
void dmrs_zero_fill_bio(struct bio *bio);
void dmrs_bio_endio_status(struct bio *bio, blk_status_t status);
bool dmrs_bdev_is_zoned(struct block_device *bdev);

#endif
