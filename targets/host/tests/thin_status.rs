//! thin-pool's and thin's status lines against literal lines in upstream's
//! format (pool_status and thin_status in 6.12's dm-thin.c).

use dm_rs_targets_host::thin::mode::PoolMode;
use dm_rs_targets_host::thin::status::{
    emit_pool_status, emit_status_error, emit_thin_fail, emit_thin_status, metadata_dev_blocks,
    metadata_low_water_blocks, PoolStatus, StatusSink,
};

fn pool_line(s: &PoolStatus) -> String {
    let mut out = Vec::new();
    emit_pool_status(&mut out, s);
    String::from_utf8(out).unwrap()
}

fn thin_line(mapped: u64, highest: Option<u64>, spb: u32) -> String {
    let mut out = Vec::new();
    emit_thin_status(&mut out, mapped, highest, spb);
    String::from_utf8(out).unwrap()
}

/// A fresh 64 MiB-metadata pool with 1000 blocks, defaults.
fn fresh() -> PoolStatus {
    PoolStatus {
        transaction_id: 0,
        free_metadata_blocks: 16384 - 10 - 1638,
        total_metadata_blocks: 16384,
        free_data_blocks: 1000,
        total_data_blocks: 1000,
        held_root: 0,
        mode: PoolMode::Write,
        discard_enabled: true,
        discard_passdown: true,
        error_if_no_space: false,
        needs_check: false,
        metadata_low_water: 1024,
    }
}

#[test]
fn pool_status_lines_are_upstreams() {
    assert_eq!(
        pool_line(&fresh()),
        "0 1648/16384 0/1000 - rw discard_passdown queue_if_no_space - 1024 "
    );
    let busy = PoolStatus {
        transaction_id: 42,
        free_data_blocks: 0,
        held_root: 1234,
        mode: PoolMode::OutOfDataSpace,
        discard_passdown: false,
        error_if_no_space: true,
        ..fresh()
    };
    assert_eq!(
        pool_line(&busy),
        "42 1648/16384 1000/1000 1234 out_of_data_space no_discard_passdown error_if_no_space - 1024 "
    );
    let broken = PoolStatus {
        mode: PoolMode::ReadOnly,
        discard_enabled: false,
        needs_check: true,
        metadata_low_water: 3,
        ..fresh()
    };
    assert_eq!(
        pool_line(&broken),
        "0 1648/16384 0/1000 - ro ignore_discard queue_if_no_space needs_check 3 "
    );
    // Out of metadata space reads as ro too.
    let full = PoolStatus {
        mode: PoolMode::OutOfMetadataSpace,
        free_metadata_blocks: 0,
        ..fresh()
    };
    assert_eq!(
        pool_line(&full),
        "0 16384/16384 0/1000 - ro discard_passdown queue_if_no_space - 1024 "
    );
    // ignore_discard wins whatever passdown says.
    let ignore = PoolStatus {
        discard_enabled: false,
        discard_passdown: false,
        ..fresh()
    };
    assert!(pool_line(&ignore).contains(" rw ignore_discard queue_if_no_space "));
    let huge = PoolStatus {
        transaction_id: u64::MAX,
        free_data_blocks: 1,
        total_data_blocks: u64::MAX,
        held_root: u64::MAX,
        ..fresh()
    };
    assert_eq!(
        pool_line(&huge),
        "18446744073709551615 1648/16384 18446744073709551614/18446744073709551615 \
         18446744073709551615 rw discard_passdown queue_if_no_space - 1024 "
    );
}

#[test]
fn failed_pool_status_is_fail_alone() {
    let failed = PoolStatus {
        mode: PoolMode::Fail,
        ..fresh()
    };
    assert_eq!(pool_line(&failed), "Fail");
    let mut out = Vec::new();
    emit_status_error(&mut out);
    assert_eq!(out, b"Error");
    let mut out = Vec::new();
    emit_thin_fail(&mut out);
    assert_eq!(out, b"Fail");
}

#[test]
fn thin_status_lines_are_upstreams() {
    assert_eq!(thin_line(0, None, 128), "0 -");
    assert_eq!(thin_line(1, Some(0), 128), "128 127");
    assert_eq!(thin_line(3, Some(99), 1024), "3072 102399");
    assert_eq!(thin_line(2, Some(5), 2_097_152), "4194304 12582911");
}

#[test]
fn metadata_low_water_is_upstreams() {
    // min(1024, blocks / 4), blocks = sectors / 8 capped at the space map's
    // limit of 255 * (2^14 - 64) blocks.
    assert_eq!(metadata_dev_blocks(0), 0);
    assert_eq!(metadata_dev_blocks(4096 * 8 + 7), 4096);
    assert_eq!(metadata_dev_blocks(u64::MAX), 255 * ((1 << 14) - 64));
    assert_eq!(metadata_low_water_blocks(0), 0);
    assert_eq!(metadata_low_water_blocks(7), 1);
    assert_eq!(metadata_low_water_blocks(4095), 1023);
    assert_eq!(metadata_low_water_blocks(4096), 1024);
    assert_eq!(metadata_low_water_blocks(1 << 40), 1024);
}

#[test]
fn put_u64_writes_decimal() {
    for n in [
        0,
        1,
        9,
        10,
        99,
        100,
        12345,
        u64::from(u32::MAX),
        u64::MAX - 1,
        u64::MAX,
    ] {
        let mut out = Vec::new();
        out.put_u64(n);
        assert_eq!(out, n.to_string().into_bytes());
    }
}
