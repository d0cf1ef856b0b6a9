//! thin-pool's and thin's table lines: every refusal of upstream's ctrs with
//! its exact text, the numbers they accept, and emit/parse round trips.

use dm_rs_targets_host::thin::number::{kstrtoull, scan_u32};
use dm_rs_targets_host::thin::pool_table::{
    check_reload_discard, emit_pool_table, PoolCtrError, PoolFeatures, PoolTable,
};
use dm_rs_targets_host::thin::status::DevNumber;
use dm_rs_targets_host::thin::thin_table::{
    emit_thin_table, parse_dev_id, ThinCtrError, ThinTable, MAX_DEV_ID,
};
use proptest::prelude::*;

fn words(line: &str) -> Vec<&[u8]> {
    line.split_ascii_whitespace().map(str::as_bytes).collect()
}

fn pool(line: &str) -> Result<PoolTable<'_>, PoolCtrError> {
    PoolTable::parse(line.split_ascii_whitespace().map(str::as_bytes))
}

fn pool_err(line: &str) -> &'static str {
    core::str::from_utf8(pool(line).unwrap_err().text()).unwrap()
}

fn thin(line: &str) -> Result<ThinTable<'_>, ThinCtrError> {
    ThinTable::parse(line.split_ascii_whitespace().map(str::as_bytes))
}

fn thin_err(line: &str) -> &'static str {
    core::str::from_utf8(thin(line).unwrap_err().text()).unwrap()
}

fn check_refusals(cases: &[(&str, &str)], refusal: fn(&str) -> &'static str) {
    for (line, text) in cases {
        assert_eq!(refusal(line), *text, "{line}");
    }
}

/// `ti->error` wants the text NUL-terminated, with no NUL inside.
fn check_nul_text(with_nul: &[u8], text: &[u8]) {
    assert_eq!(with_nul.split_last(), Some((&0, text)));
    assert!(!text.contains(&0));
}

fn pool_line(t: &PoolTable<'_>) -> String {
    let mut out = Vec::new();
    t.emit(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn kstrtoull_is_upstreams() {
    assert_eq!(kstrtoull(b"0"), Some(0));
    assert_eq!(kstrtoull(b"+17"), Some(17));
    assert_eq!(kstrtoull(b"17\n"), Some(17));
    assert_eq!(kstrtoull(b"007"), Some(7));
    assert_eq!(kstrtoull(b"18446744073709551615"), Some(u64::MAX));
    for bad in [
        &b""[..],
        b"+",
        b"\n",
        b"-1",
        b"++1",
        b" 1",
        b"1 ",
        b"1\n\n",
        b"0x10",
        b"1a",
        b"18446744073709551616",
    ] {
        assert_eq!(kstrtoull(bad), None, "{:?}", bad);
    }
}

#[test]
fn scan_u32_is_sscanf_u_c() {
    assert_eq!(scan_u32(b"4"), Some(4));
    assert_eq!(scan_u32(b" \t4"), Some(4));
    assert_eq!(scan_u32(b"\xa04"), Some(4));
    // The kernel's scanner wraps and truncates to an unsigned int.
    assert_eq!(scan_u32(b"4294967298"), Some(2));
    for bad in [&b""[..], b"  ", b"+1", b"-1", b"1 ", b"1x", b"x"] {
        assert_eq!(scan_u32(bad), None, "{:?}", bad);
    }
}

#[test]
fn pool_ctr_refusals_have_upstreams_text() {
    let cases = [
        ("", "Invalid argument count"),
        ("/dev/m /dev/d 128", "Invalid argument count"),
        (
            "/dev/m /dev/m 128 0",
            "Error setting metadata or data device",
        ),
        (
            "/dev/m /dev/d 128 0 5",
            "Invalid number of pool feature arguments",
        ),
        (
            "/dev/m /dev/d 128 0 -1",
            "Invalid number of pool feature arguments",
        ),
        (
            "/dev/m /dev/d 128 0 x",
            "Invalid number of pool feature arguments",
        ),
        (
            "/dev/m /dev/d 128 0 1",
            "Invalid number of pool feature arguments",
        ),
        (
            "/dev/m /dev/d 128 0 2 read_only",
            "Invalid number of pool feature arguments",
        ),
        // The count is checked before the words.
        (
            "/dev/m /dev/d 128 0 3 bogus read_only",
            "Invalid number of pool feature arguments",
        ),
        (
            "/dev/m /dev/d 128 0 1 bogus",
            "Unrecognised pool feature requested",
        ),
        (
            "/dev/m /dev/d 128 0 2 read_only zero",
            "Unrecognised pool feature requested",
        ),
        // Features come before the numbers.
        (
            "/dev/m /dev/d 0 x 1 bogus",
            "Unrecognised pool feature requested",
        ),
        ("/dev/m /dev/d 0 0", "Invalid block size"),
        ("/dev/m /dev/d 64 0", "Invalid block size"),
        ("/dev/m /dev/d 127 0", "Invalid block size"),
        ("/dev/m /dev/d 192 0", "Invalid block size"),
        ("/dev/m /dev/d 2097280 0", "Invalid block size"),
        ("/dev/m /dev/d 4294967424 0", "Invalid block size"),
        ("/dev/m /dev/d -128 0", "Invalid block size"),
        ("/dev/m /dev/d 128k 0", "Invalid block size"),
        ("/dev/m /dev/d 128 -1", "Invalid low water mark"),
        ("/dev/m /dev/d 128 1x", "Invalid low water mark"),
        (
            "/dev/m /dev/d 128 18446744073709551616",
            "Invalid low water mark",
        ),
    ];
    check_refusals(&cases, pool_err);
    use PoolCtrError::*;
    #[rustfmt::skip]
    let found_by_caller = [
        (OpenMetadata, "Error opening metadata block device"),
        (OpenData, "Error getting data device"),
        (MetadataInUse, "metadata device already in use by a pool"),
        (DataInUse, "data device already in use by a pool"),
        (DifferentPool, "different pool cannot replace a pool"),
        (DiscardChanged, "Discard support cannot be disabled once enabled"),
        (MetadataOpen, "Error creating metadata object"),
        (PoolAlloc, "Error allocating memory for pool"),
        (Prison, "Error creating pool's bio prison"),
        (Kcopyd, "Error creating pool's kcopyd client"),
        (Workqueue, "Error creating pool's workqueue"),
        (SharedReadSet, "Error creating pool's shared read deferred set"),
        (AllIoSet, "Error creating pool's all io deferred set"),
        (MappingPool, "Error creating pool's mapping mempool"),
        (CellSortArray, "Error allocating cell sort array"),
        (Threshold, "Error registering metadata threshold"),
    ];
    for (e, text) in found_by_caller {
        assert_eq!(e.text(), text.as_bytes());
    }
    let parsed = [
        ArgCount,
        SameDevice,
        FeatureCount,
        UnknownFeature,
        BlockSize,
        LowWater,
    ];
    for e in parsed.into_iter().chain(found_by_caller.map(|(e, _)| e)) {
        check_nul_text(e.text_with_nul(), e.text());
        assert_eq!(
            e.found_after_open(),
            matches!(e, PoolCtrError::BlockSize | PoolCtrError::LowWater)
        );
    }
}

#[test]
fn pool_ctr_accepts_what_upstream_accepts() {
    let t = pool("/dev/m /dev/d 128 0").unwrap();
    assert_eq!(
        t,
        PoolTable {
            metadata_dev: b"/dev/m",
            data_dev: b"/dev/d",
            data_block_size: 128,
            low_water_blocks: 0,
            features: PoolFeatures::default(),
        }
    );
    assert_eq!(
        PoolFeatures::default(),
        PoolFeatures {
            zero_new_blocks: true,
            discard_enabled: true,
            discard_passdown: true,
            read_only: false,
            error_if_no_space: false,
        }
    );
    assert_eq!(pool("m d 2097152 +5\n").unwrap().data_block_size, 2_097_152);
    assert_eq!(pool("m d +256 5").unwrap().low_water_blocks, 5);
    assert_eq!(
        pool("m d 128 18446744073709551615")
            .unwrap()
            .low_water_blocks,
        u64::MAX
    );
    // Every multiple of 128 sectors in range.
    for n in 0..=(2_097_152 / 128 + 1) {
        let size = n * 128;
        assert_eq!(
            pool(&format!("m d {size} 0")).is_ok(),
            (1..=16384).contains(&n),
            "{size}"
        );
    }
    // A zero feature count, and words after the group, are ignored.
    assert_eq!(
        pool("m d 128 0 0").unwrap().features,
        PoolFeatures::default()
    );
    assert_eq!(
        pool("m d 128 0 1 read_only trailing words")
            .unwrap()
            .features,
        PoolFeatures {
            read_only: true,
            ..PoolFeatures::default()
        }
    );
    let all = pool("m d 128 0 4 SKIP_BLOCK_ZEROING Ignore_Discard no_discard_passdown read_only")
        .unwrap()
        .features;
    assert_eq!(
        all,
        PoolFeatures {
            zero_new_blocks: false,
            discard_enabled: false,
            discard_passdown: false,
            read_only: true,
            error_if_no_space: false,
        }
    );
    assert!(
        pool("m d 128 0 1 error_if_no_space")
            .unwrap()
            .features
            .error_if_no_space
    );
    // The same word twice is fine.
    assert!(
        pool("m d 128 0 2 read_only read_only")
            .unwrap()
            .features
            .read_only
    );
    // The count is read like dm_read_arg's sscanf: leading blanks allowed.
    let spaced: [&[u8]; 6] = [b"m", b"d", b"128", b"0", b" 1", b"read_only"];
    assert!(PoolTable::parse(spaced).unwrap().features.read_only);
}

#[test]
fn reloads_keep_discard_support() {
    let on = PoolFeatures::default();
    let off = PoolFeatures {
        discard_enabled: false,
        ..on
    };
    assert_eq!(check_reload_discard(&on, true), Ok(()));
    assert_eq!(check_reload_discard(&off, false), Ok(()));
    assert_eq!(
        check_reload_discard(&off, true),
        Err(PoolCtrError::DiscardChanged)
    );
    // Upstream refuses turning it on again too, with the same text.
    assert_eq!(
        check_reload_discard(&on, false),
        Err(PoolCtrError::DiscardChanged)
    );
    // Passdown may change.
    let no_passdown = PoolFeatures {
        discard_passdown: false,
        ..on
    };
    assert_eq!(check_reload_discard(&no_passdown, true), Ok(()));
}

#[test]
fn pool_table_lines_are_upstreams() {
    let mut out = Vec::new();
    emit_pool_table(
        &mut out,
        &DevNumber {
            major: 253,
            minor: 0,
        },
        &DevNumber {
            major: 7,
            minor: 12,
        },
        128,
        0,
        &PoolFeatures::default(),
    );
    assert_eq!(out, b"253:0 7:12 128 0 0 ");
    let all = PoolFeatures {
        zero_new_blocks: false,
        discard_enabled: false,
        discard_passdown: false,
        read_only: true,
        error_if_no_space: true,
    };
    let mut out = Vec::new();
    emit_pool_table(
        &mut out,
        &DevNumber { major: 1, minor: 2 },
        &DevNumber { major: 3, minor: 4 },
        2_097_152,
        u64::MAX,
        &all,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "1:2 3:4 2097152 18446744073709551615 5 skip_block_zeroing ignore_discard \
         no_discard_passdown read_only error_if_no_space "
    );
    let t = pool("m d 1024 10 2 error_if_no_space no_discard_passdown").unwrap();
    assert_eq!(
        pool_line(&t),
        "m d 1024 10 2 no_discard_passdown error_if_no_space "
    );
}

fn features() -> impl Strategy<Value = PoolFeatures> {
    any::<[bool; 5]>().prop_map(|b| PoolFeatures {
        zero_new_blocks: b[0],
        discard_enabled: b[1],
        discard_passdown: b[2],
        read_only: b[3],
        error_if_no_space: b[4],
    })
}

fn feature_count(f: &PoolFeatures) -> usize {
    [
        !f.zero_new_blocks,
        !f.discard_enabled,
        !f.discard_passdown,
        f.read_only,
        f.error_if_no_space,
    ]
    .iter()
    .filter(|&&b| b)
    .count()
}

#[test]
fn five_features_emit_but_do_not_reload_as_upstream() {
    let t = PoolTable {
        metadata_dev: b"m",
        data_dev: b"d",
        data_block_size: 128,
        low_water_blocks: 0,
        features: PoolFeatures {
            zero_new_blocks: false,
            discard_enabled: false,
            discard_passdown: false,
            read_only: true,
            error_if_no_space: true,
        },
    };
    let line = pool_line(&t);
    assert!(line.starts_with("m d 128 0 5 "));
    assert_eq!(pool_err(&line), "Invalid number of pool feature arguments");
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    // Upstream reads at most four feature words but writes up to five, so
    // only lines with at most four round-trip (see below for five).
    #[test]
    fn pool_table_round_trips(
        f in features().prop_filter("at most 4 features", |f| feature_count(f) <= 4),
        n in 1u32..=16384,
        lw in any::<u64>(),
    ) {
        let t = PoolTable {
            metadata_dev: b"/dev/meta",
            data_dev: b"253:7",
            data_block_size: n * 128,
            low_water_blocks: lw,
            features: f,
        };
        let line = pool_line(&t);
        prop_assert_eq!(pool(&line), Ok(t));
    }

    #[test]
    fn thin_table_round_trips(id in 0..=MAX_DEV_ID, origin in any::<bool>()) {
        let t = ThinTable {
            pool_dev: b"253:3",
            dev_id: id,
            origin_dev: origin.then_some(&b"/dev/origin"[..]),
        };
        let mut out = Vec::new();
        t.emit(&mut out);
        let line = String::from_utf8(out).unwrap();
        prop_assert!(!line.ends_with(' '));
        prop_assert_eq!(thin(&line), Ok(t));
    }

    #[test]
    fn pool_parse_never_panics(line in proptest::collection::vec("[a-z0-9_ +\\-]{0,12}", 0..12)) {
        let ws: Vec<&[u8]> = line.iter().map(|s| s.as_bytes()).collect();
        let _ = PoolTable::parse(ws.iter().copied());
        let _ = ThinTable::parse(ws.iter().copied());
    }
}

#[test]
fn thin_ctr_refusals_have_upstreams_text() {
    let cases = [
        ("", "Invalid argument count"),
        ("253:0", "Invalid argument count"),
        ("253:0 1 /dev/o extra", "Invalid argument count"),
        ("/dev/p 1 /dev/p", "Error setting origin device"),
        // The origin check comes before the id.
        ("/dev/p x /dev/p", "Error setting origin device"),
        ("/dev/p x", "Invalid device id"),
        ("/dev/p -1", "Invalid device id"),
        ("/dev/p 16777216", "Invalid device id"),
        ("/dev/p 4294967296", "Invalid device id"),
        ("/dev/p 0x10", "Invalid device id"),
    ];
    check_refusals(&cases, thin_err);
    use ThinCtrError::*;
    #[rustfmt::skip]
    let found_by_caller = [
        (OutOfMemory, "Out of memory"),
        (OpenOrigin, "Error opening origin device"),
        (OpenPool, "Error opening pool device"),
        (NoPoolDevice, "Couldn't get pool mapped device"),
        (NoPool, "Couldn't find pool object"),
        (PoolFailed, "Couldn't open thin device, Pool is in fail mode"),
        (OpenThin, "Couldn't open thin internal device"),
        (PoolSuspended, "Unable to activate thin device while pool is suspended"),
    ];
    for (e, text) in found_by_caller {
        assert_eq!(e.text(), text.as_bytes());
    }
    let parsed = [ArgCount, SameOrigin, DevId];
    for e in parsed.into_iter().chain(found_by_caller.map(|(e, _)| e)) {
        check_nul_text(e.text_with_nul(), e.text());
        assert_eq!(e.found_after_open(), e == ThinCtrError::DevId);
    }
}

#[test]
fn thin_ctr_accepts_what_upstream_accepts() {
    assert_eq!(
        thin("/dev/mapper/pool 16777215").unwrap(),
        ThinTable {
            pool_dev: b"/dev/mapper/pool",
            dev_id: MAX_DEV_ID,
            origin_dev: None,
        }
    );
    assert_eq!(
        thin("253:0 +0\n /dev/o").unwrap(),
        ThinTable {
            pool_dev: b"253:0",
            dev_id: 0,
            origin_dev: Some(b"/dev/o"),
        }
    );
    assert_eq!(parse_dev_id(b"+16777215\n"), Some(MAX_DEV_ID));
    assert_eq!(parse_dev_id(b"16777216"), None);
    let w = words("a 1");
    assert!(ThinTable::parse(w).is_ok());
}

#[test]
fn thin_table_lines_are_upstreams() {
    let mut out = Vec::new();
    emit_thin_table(
        &mut out,
        &DevNumber {
            major: 253,
            minor: 2,
        },
        7,
        None,
    );
    assert_eq!(out, b"253:2 7");
    let mut out = Vec::new();
    emit_thin_table(
        &mut out,
        &DevNumber {
            major: 253,
            minor: 2,
        },
        16_777_215,
        Some(&DevNumber {
            major: 8,
            minor: 16,
        }),
    );
    assert_eq!(out, b"253:2 16777215 8:16");
}
