// SPDX-License-Identifier: GPL-2.0
/* Scoped GFP_NOIO and ERR_PTR decoding; see mm.h. */
#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/sched/mm.h>
#include "mm.h"

unsigned int dmrs_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void dmrs_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

long dmrs_ptr_err_or_zero(const void *ptr)
{
	return PTR_ERR_OR_ZERO(ptr);
}

void dmrs_might_sleep(void)
{
	might_sleep();
}
