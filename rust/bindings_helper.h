/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Headers whose declarations bindgen turns into rust/bindings_generated.rs.
 * Only items declared in these files are generated; every type they refer to
 * (bio, block_device, ...) comes from the kernel crate's own bindings.
 *
 * rust/helpers/ holds one C file and header per concept: thin wrappers around
 * static inline functions and macros that bindgen cannot turn into symbols.
 * Each one is a single call or field access; the logic lives in Rust.
 */
#include <linux/device-mapper.h>
#include <linux/dm-bufio.h>
#include <linux/dm-io.h>
#include <linux/dm-kcopyd.h>
#include "helpers/bio.h"
#include "helpers/completion.h"
#include "helpers/crc32c.h"
#include "helpers/dm_io.h"
#include "helpers/irq_spinlock.h"
#include "helpers/mapped_device.h"
#include "helpers/mm.h"
#include "helpers/params.h"
#include "helpers/registry.h"
#include "helpers/stack.h"
#include "helpers/table.h"
#include "helpers/workqueue.h"
