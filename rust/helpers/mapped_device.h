/* SPDX-License-Identifier: GPL-2.0 */
/* A target's mapped device, held, and dm core's internal suspend of it. */
#ifndef DMRS_HELPERS_MAPPED_DEVICE_H
#define DMRS_HELPERS_MAPPED_DEVICE_H

#include <linux/device-mapper.h>

/*
 * Takes a holders reference (dm_hold) on the mapped device of @ti's table;
 * NULL if the device is being freed. Release it with dm_put().
 */
struct mapped_device *dmrs_target_md_hold(struct dm_target *ti);

/*
 * Exported by dm core (EXPORT_SYMBOL_GPL in drivers/md/dm.c) but declared
 * only in its private drivers/md/dm.h. Both take the device's suspend_lock
 * and sleep; the suspend waits for the device's in-flight bios.
 */
void dm_internal_suspend_noflush(struct mapped_device *md);
void dm_internal_resume(struct mapped_device *md);

#endif
