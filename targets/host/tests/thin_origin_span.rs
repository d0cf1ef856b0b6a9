//! A thin's external origin seen from a bio or a block, against a
//! sector-by-sector model: an unprovisioned read goes to the origin up to
//! its end and reads zeros past it; a new block copies what the origin has
//! of it.

use dm_rs_targets_host::thin::origin_span::{
    origin_copy_len, unprovisioned_read, UnprovisionedRead,
};
use proptest::prelude::*;

#[test]
fn reads_around_the_end() {
    // 16 MiB + 24 KiB, as the guest test's origin.
    let end = 16 * 2048 + 48;
    assert_eq!(unprovisioned_read(0, 128, end), UnprovisionedRead::Origin);
    assert_eq!(
        unprovisioned_read(end - 8, 8, end),
        UnprovisionedRead::Origin
    );
    assert_eq!(
        unprovisioned_read(end - 8, 16, end),
        UnprovisionedRead::Crosses(8)
    );
    assert_eq!(
        unprovisioned_read(end - 1, 128, end),
        UnprovisionedRead::Crosses(1)
    );
    assert_eq!(unprovisioned_read(end, 8, end), UnprovisionedRead::Zeros);
    assert_eq!(
        unprovisioned_read(u64::MAX, u32::MAX, end),
        UnprovisionedRead::Zeros
    );
    assert_eq!(
        unprovisioned_read(0, u32::MAX, u64::MAX),
        UnprovisionedRead::Origin
    );
    assert_eq!(unprovisioned_read(5, 8, 0), UnprovisionedRead::Zeros);
}

#[test]
fn blocks_around_the_end() {
    let end = 16 * 2048 + 48;
    assert_eq!(origin_copy_len(0, 128, end), 128);
    assert_eq!(origin_copy_len(255, 128, end), 128);
    assert_eq!(origin_copy_len(256, 128, end), 48);
    assert_eq!(origin_copy_len(257, 128, end), 0);
    assert_eq!(origin_copy_len(u64::MAX, 128, end), 0);
    assert_eq!(origin_copy_len(u64::MAX, 128, u64::MAX), 0);
}

proptest! {
    #[test]
    fn read_matches_model(virt in 0u64..4096, sectors in 1u32..300, origin in 0u64..4096) {
        let on_origin = (virt..virt + u64::from(sectors)).filter(|&s| s < origin).count() as u64;
        let expect = if on_origin == 0 {
            UnprovisionedRead::Zeros
        } else if on_origin == u64::from(sectors) {
            UnprovisionedRead::Origin
        } else {
            UnprovisionedRead::Crosses(on_origin as u32)
        };
        prop_assert_eq!(unprovisioned_read(virt, sectors, origin), expect);
    }

    #[test]
    fn copy_matches_model(vblock in 0u64..64, bs in 1u64..300, origin in 0u64..20000) {
        let on_origin = (vblock * bs..(vblock + 1) * bs).filter(|&s| s < origin).count() as u64;
        prop_assert_eq!(origin_copy_len(vblock, bs, origin), on_origin);
    }
}
