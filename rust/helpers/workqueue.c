// SPDX-License-Identifier: GPL-2.0
/* Workqueue allocation; see workqueue.h. */
#include "workqueue.h"

struct workqueue_struct *dmrs_alloc_workqueue(const char *name, bool ordered, int max_active)
{
	if (ordered)
		return alloc_ordered_workqueue("%s", WQ_MEM_RECLAIM, name);
	return alloc_workqueue("%s", WQ_MEM_RECLAIM, max_active, name);
}
