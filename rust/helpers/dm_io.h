/* SPDX-License-Identifier: GPL-2.0 */
/* dm-io: the default I/O priority is a macro of linux/ioprio.h. */
#ifndef DMRS_HELPERS_DM_IO_H
#define DMRS_HELPERS_DM_IO_H

unsigned short dmrs_ioprio_default(void);

#endif
