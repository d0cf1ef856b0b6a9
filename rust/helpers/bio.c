// SPDX-License-Identifier: GPL-2.0
/* bio accessors; see bio.h. */
#include "bio.h"

/* The Rust side (rust/dm/bio.rs, BlkStatus) hard-codes these values. */
static_assert(BLK_STS_OK == 0);
static_assert(BLK_STS_NOSPC == 3);
static_assert(BLK_STS_IOERR == 10);
static_assert(BLK_STS_DM_REQUEUE == 11);

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

void dmrs_bio_endio_status(struct bio *bio, blk_status_t status)
{
	bio->bi_status = status;
	bio_endio(bio);
}

bool dmrs_bdev_is_zoned(struct block_device *bdev)
{
	return bdev_is_zoned(bdev);
}
