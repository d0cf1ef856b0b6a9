/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for dm-rs: thin wrappers around static inline functions and macros
 * of the block layer and device-mapper that bindgen cannot turn into symbols.
 * Each one is a single call or field access; the logic lives in Rust.
 */
#ifndef DMRS_HELPERS_H
#define DMRS_HELPERS_H

#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/device-mapper.h>

/* Module parameters (declared in src/params.c). */
const char *dmrs_param_prefix(void);
const char *dmrs_param_targets(void);

/* bio accessors. */
unsigned int dmrs_bio_op(const struct bio *bio);
bool dmrs_bio_is_write(const struct bio *bio);
unsigned int dmrs_bio_sectors(const struct bio *bio);
void dmrs_bio_set_dev(struct bio *bio, struct block_device *bdev);
void dmrs_bio_io_error(struct bio *bio);
void dmrs_zero_fill_bio(struct bio *bio);

/* Block device and table accessors. */
sector_t dmrs_bdev_nr_sectors(struct block_device *bdev);
blk_mode_t dmrs_table_get_mode(struct dm_target *ti);
blk_mode_t dmrs_blk_open_read(void);

/* Scoped GFP_NOIO for the calling task (linux/sched/mm.h). */
unsigned int dmrs_memalloc_noio_save(void);
void dmrs_memalloc_noio_restore(unsigned int flags);

/* ERR_PTR decoding: 0 for a valid pointer, else the negative errno. */
long dmrs_ptr_err_or_zero(const void *ptr);

#endif
