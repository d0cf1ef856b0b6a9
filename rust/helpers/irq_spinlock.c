// SPDX-License-Identifier: GPL-2.0
/* spin_lock_irqsave wrappers; see irq_spinlock.h. */
#include "irq_spinlock.h"

unsigned long dmrs_spin_lock_irqsave(spinlock_t *lock)
{
	unsigned long flags;

	spin_lock_irqsave(lock, flags);
	return flags;
}

void dmrs_spin_unlock_irqrestore(spinlock_t *lock, unsigned long flags)
{
	spin_unlock_irqrestore(lock, flags);
}
