/* SPDX-License-Identifier: GPL-2.0 */
/* Workqueue allocation: alloc_workqueue() is variadic, alloc_ordered_workqueue() a macro. */
#ifndef DMRS_HELPERS_WORKQUEUE_H
#define DMRS_HELPERS_WORKQUEUE_H

#include <linux/workqueue.h>

/* A WQ_MEM_RECLAIM queue named @name; NULL on failure. */
struct workqueue_struct *dmrs_alloc_workqueue(const char *name, bool ordered, int max_active);

#endif
