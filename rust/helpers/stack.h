/* SPDX-License-Identifier: GPL-2.0 */
/*
 * How much of the current task's kernel stack is in use: for measuring the
 * deepest path of the metadata engine in a guest (no DEBUG_STACK_USAGE).
 */
#ifndef DMRS_HELPERS_STACK_H
#define DMRS_HELPERS_STACK_H

/* Size of a task's kernel stack (THREAD_SIZE). */
unsigned long dmrs_stack_size(void);

/*
 * Each of these does nothing and returns 0 unless it runs in task context on
 * the task's own stack (never in interrupt context).
 */

/* Bytes of the current task's stack in use at the caller. */
unsigned long dmrs_stack_in_use(void);

/*
 * Fills the unused part of the current task's stack (below the caller's
 * frame, above the end-of-stack canary) with a pattern.
 */
void dmrs_stack_paint(void);

/*
 * Bytes of the current task's stack ever used since the last paint on this
 * task: from the top down to the lowest word that no longer holds the
 * pattern.
 */
unsigned long dmrs_stack_deepest(void);

#endif
