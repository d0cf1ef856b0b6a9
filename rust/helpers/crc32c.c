// SPDX-License-Identifier: GPL-2.0
/* CRC-32C; see crc32c.h. crc32c() uses the CPU's instruction where present. */
#include <linux/crc32c.h>
#include "crc32c.h"

unsigned int dmrs_crc32c(unsigned int crc, const void *data, unsigned int len)
{
	return crc32c(crc, data, len);
}
