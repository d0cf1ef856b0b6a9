/* SPDX-License-Identifier: GPL-2.0 */
/* Scoped GFP_NOIO (linux/sched/mm.h) and ERR_PTR decoding. */
#ifndef DMRS_HELPERS_MM_H
#define DMRS_HELPERS_MM_H

#include <linux/gfp_types.h>

/* The kernel crate's bindings have no GFP_NOIO. */
static const gfp_t DMRS_GFP_NOIO = GFP_NOIO;

unsigned int dmrs_memalloc_noio_save(void);
void dmrs_memalloc_noio_restore(unsigned int flags);

/* Debug kernels warn when this runs in atomic context. */
void dmrs_might_sleep(void);

/* 0 for a valid pointer, else the negative errno. */
long dmrs_ptr_err_or_zero(const void *ptr);

#endif
