// SPDX-License-Identifier: GPL-2.0
/* The registries' mutex; see registry.h. */
#include <linux/mutex.h>
#include "registry.h"

static DEFINE_MUTEX(dmrs_registry_mutex);

void dmrs_registry_lock(void)
{
	mutex_lock(&dmrs_registry_mutex);
}

void dmrs_registry_unlock(void)
{
	mutex_unlock(&dmrs_registry_mutex);
}
