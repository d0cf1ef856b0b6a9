// SPDX-License-Identifier: GPL-2.0
/*
 * Kernel stack use of the current task; see stack.h. Paint and scan touch
 * only this task's own stack below its live frames, which nothing else uses
 * (the kernel has no red zone; an interrupt's frame there is dead once it
 * returns), and are not instrumented: KASAN has no business with the dead
 * part of a stack.
 */
#include <linux/compiler.h>
#include <linux/sched.h>
#include <linux/preempt.h>
#include <linux/sched/task_stack.h>
#include <asm/asm.h>
#include "stack.h"

#define DMRS_STACK_PAINT 0x6d72732d70616e74UL
/* Left unpainted below the painter's own frame, for what it calls. */
#define DMRS_STACK_SLACK 256

static unsigned long stack_top(void)
{
	return (unsigned long)task_stack_page(current) + THREAD_SIZE;
}

/* The lowest word we may paint: the one above the end-of-stack canary. */
static unsigned long *stack_floor(void)
{
	return end_of_stack(current) + 1;
}

unsigned long dmrs_stack_size(void)
{
	return THREAD_SIZE;
}

/*
 * Only a task's own stack can be measured: in interrupt context (or on any
 * other stack) the stack pointer is not on the task stack and the range
 * between the two must not be touched.
 */
static bool on_task_stack(void)
{
	return in_task() && object_is_on_stack((void *)current_stack_pointer);
}

noinline unsigned long dmrs_stack_in_use(void)
{
	if (!on_task_stack())
		return 0;
	return stack_top() - current_stack_pointer;
}

noinline __no_sanitize_address void dmrs_stack_paint(void)
{
	volatile unsigned long *p = stack_floor();
	unsigned long *end = (unsigned long *)(current_stack_pointer - DMRS_STACK_SLACK);

	if (!on_task_stack())
		return;
	for (; (unsigned long *)p < end; p++)
		*p = DMRS_STACK_PAINT;
}

noinline __no_sanitize_address unsigned long dmrs_stack_deepest(void)
{
	volatile unsigned long *p = stack_floor();
	unsigned long *sp = (unsigned long *)current_stack_pointer;

	if (!on_task_stack())
		return 0;
	while ((unsigned long *)p < sp && *p == DMRS_STACK_PAINT)
		p++;
	return stack_top() - (unsigned long)p;
}
