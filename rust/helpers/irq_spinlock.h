/* SPDX-License-Identifier: GPL-2.0 */
/* spin_lock_irqsave and friends are macros; these make them callable. */
#ifndef DMRS_HELPERS_IRQ_SPINLOCK_H
#define DMRS_HELPERS_IRQ_SPINLOCK_H

#include <linux/spinlock.h>

unsigned long dmrs_spin_lock_irqsave(spinlock_t *lock);
void dmrs_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags);

#endif
