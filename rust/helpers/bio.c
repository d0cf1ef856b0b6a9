// SPDX-License-Identifier: GPL-2.0
/* bio accessors; see bio.h. */
#include "bio.h"

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
