//! thin-pool's I/O size hints: what upstream's `pool_io_hints` makes of the
//! limits stacked from the data device, for a given block size.

use dm_rs_targets_host::thin::io_limits::{pool_io_limits, StackedLimits};
use proptest::prelude::*;

fn lim(max_sectors: u32, io_min: u32, io_opt: u32) -> StackedLimits {
    StackedLimits {
        max_sectors,
        io_min,
        io_opt,
    }
}

#[test]
fn a_plain_data_device_gets_the_block_size() {
    // 64 KiB blocks over a disk taking 1.25 MiB I/Os with no optimal size.
    assert_eq!(
        pool_io_limits(128, lim(2560, 512, 0)),
        lim(2560, 65536, 65536)
    );
    // A block as large as the largest I/O: io_min is that I/O.
    assert_eq!(
        pool_io_limits(2560, lim(2560, 512, 0)),
        lim(2560, 2560 * 512, 2560 * 512)
    );
    // Larger than a block but not dividing it: the block.
    assert_eq!(
        pool_io_limits(2048, lim(2560, 4096, 0)),
        lim(2560, 1 << 20, 1 << 20)
    );
}

#[test]
fn io_min_follows_the_block_even_when_the_device_asked_more() {
    // Upstream sets io_min outright, lowering a larger stacked one.
    assert_eq!(
        pool_io_limits(128, lim(2560, 1 << 20, 0)),
        lim(2560, 65536, 65536)
    );
}

#[test]
fn a_largest_io_under_a_block_is_lowered_to_a_power_of_two_dividing_it() {
    // 2 MiB blocks, 1.25 MiB largest I/O: 1 MiB, which is io_min.
    assert_eq!(
        pool_io_limits(4096, lim(2560, 512, 0)),
        lim(2048, 1 << 20, 2 << 20)
    );
    // 192 KiB blocks: 255 -> 128; a power of two not dividing (256) -> 128.
    assert_eq!(
        pool_io_limits(384, lim(255, 512, 0)),
        lim(128, 65536, 384 * 512)
    );
    assert_eq!(
        pool_io_limits(384, lim(256, 512, 0)),
        lim(128, 65536, 384 * 512)
    );
    // Already dividing: kept.
    assert_eq!(
        pool_io_limits(384, lim(192, 512, 0)),
        lim(192, 192 * 512, 384 * 512)
    );
}

#[test]
fn an_optimal_size_that_is_a_multiple_of_the_block_is_kept() {
    // A RAID stripe of four 64 KiB blocks.
    assert_eq!(
        pool_io_limits(128, lim(2560, 65536, 256 * 1024)),
        lim(2560, 65536, 256 * 1024)
    );
    // Not a multiple (192 KiB blocks, 256 KiB stripe), or smaller: replaced.
    assert_eq!(
        pool_io_limits(384, lim(2560, 65536, 256 * 1024)),
        lim(2560, 384 * 512, 384 * 512)
    );
    assert_eq!(
        pool_io_limits(512, lim(2560, 4096, 128 * 1024)),
        lim(2560, 256 * 1024, 256 * 1024)
    );
}

proptest! {
    #[test]
    fn the_largest_io_only_shrinks_and_ends_dividing_the_block_or_above_it(
        blocks in 1u32..=16384,
        max_sectors in 1u32..=(1 << 22),
        io_opt_sectors in 0u32..=(1 << 22),
    ) {
        // Block sizes are multiples of 64 KiB up to 1 GiB.
        let block = blocks * 128;
        let out = pool_io_limits(block, lim(max_sectors, 512, io_opt_sectors * 512));
        prop_assert!(out.max_sectors <= max_sectors && out.max_sectors >= 1);
        if max_sectors < block {
            prop_assert_eq!(block % out.max_sectors, 0);
            // The largest such power of two no larger than the device's.
            prop_assert!(out.max_sectors.is_power_of_two() || out.max_sectors == max_sectors);
            prop_assert!(out.max_sectors * 2 > max_sectors || block % (out.max_sectors * 2) != 0);
        } else {
            prop_assert_eq!(out.max_sectors, max_sectors);
        }
        prop_assert!(out.io_opt % (block * 512) == 0);
        prop_assert!(out.io_min >= 512);
    }
}
