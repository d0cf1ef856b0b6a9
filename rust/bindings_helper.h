/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Headers whose declarations bindgen turns into rust/bindings_generated.rs.
 * Only items declared in these files are generated; every type they refer to
 * (bio, block_device, ...) comes from the kernel crate's own bindings.
 */
#include <linux/device-mapper.h>
#include <linux/dm-bufio.h>
#include <linux/dm-io.h>
#include <linux/dm-kcopyd.h>
#include "helpers.h"
