// SPDX-License-Identifier: GPL-2.0
/*
 * Module parameters of dm-rs. The 6.12 Rust `module!` macro cannot declare
 * parameters, so they live here and Rust reads them through accessors
 * (rust/dm/params.rs).
 */
#include <linux/moduleparam.h>
#include "../rust/helpers/params.h"

static char *prefix = "";
module_param(prefix, charp, 0444);
MODULE_PARM_DESC(prefix,
	"Register every target under this name prefix so dm-rs can run beside the C targets; a name that would exceed dm's 15-character limit uses the target's short form (prefix=rs- gives rs-snap-origin)");

static char *targets = "";
module_param(targets, charp, 0444);
MODULE_PARM_DESC(targets,
	"Comma-separated target families to register (snapshot, thin, or any of their target names), or all; empty (the default) registers the families dm-rs ships complete");

static bool selftest;
module_param(selftest, bool, 0444);
MODULE_PARM_DESC(selftest,
	"Also register dm-rs's test-only targets (dmrs-*); never needed outside its test suite");

static unsigned int no_space_timeout = 60;
module_param(no_space_timeout, uint, 0644);
MODULE_PARM_DESC(no_space_timeout,
	"Out of data space queue IO timeout in seconds for thin pools (0: queue for ever), as dm-thin-pool's no_space_timeout");

static unsigned int snapshot_cow_threshold = 2048;
module_param(snapshot_cow_threshold, uint, 0644);
MODULE_PARM_DESC(snapshot_cow_threshold,
	"Maximum number of chunks being copied on write per snapshot, as dm-snapshot's snapshot_cow_threshold");

const char *dmrs_param_prefix(void)
{
	return prefix ? prefix : "";
}

const char *dmrs_param_targets(void)
{
	return targets ? targets : "";
}

bool dmrs_param_selftest(void)
{
	return selftest;
}

unsigned int dmrs_param_no_space_timeout(void)
{
	return READ_ONCE(no_space_timeout);
}

unsigned int dmrs_param_snapshot_cow_threshold(void)
{
	return READ_ONCE(snapshot_cow_threshold);
}
