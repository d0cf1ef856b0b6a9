/* SPDX-License-Identifier: GPL-2.0 */
/* CRC-32C (linux/crc32c.h), for the metadata engine's block checksums. */
#ifndef DMRS_HELPERS_CRC32C_H
#define DMRS_HELPERS_CRC32C_H

/* The raw update: no inversion on entry or exit, like crc32c(). */
unsigned int dmrs_crc32c(unsigned int crc, const void *data, unsigned int len);

#endif
