//! Replays the fuzz harness (`fuzz/harness.rs`, the same code the
//! cargo-fuzz targets run) on fixed inputs: the clean seed, simple damage,
//! and every input that once crashed (saved under `fuzz/regressions/`).

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

#[test]
fn seed_images_are_clean() {
    for img in [harness::seed(), harness::cache_seed()] {
        assert!(!img.is_empty());
        let io = persistent_data::io::mem::MemIo::from_image(img.to_vec());
        let r = persistent_data::checker::check(io, None);
        assert!(r.is_clean(), "{:?}", r.problems);
    }
}

#[test]
fn harness_runs_on_simple_inputs() {
    let t = std::time::Instant::now();
    for ops in 0..128u8 {
        harness::image(&[ops << 1]);
        harness::image(&[ops << 1 | 1, 5, 0x10, 0, 0, 0xff, 7, 0, 1, 2, 9]);
    }
    eprintln!("image: {:?} per run", t.elapsed() / 256);
    let t = std::time::Instant::now();
    for sel in 0..=255u8 {
        // Random blocks, and real seed blocks with a few bits flipped.
        let more = sel.wrapping_mul(7);
        let mut d = vec![sel, 0, more];
        d.extend((0..3 * 4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
        harness::blocks(&d);
        let mut d = vec![sel, sel / 3 + 1, more];
        d.extend((0..300u32).map(|i| u8::from(i % 97 == 5) << (i % 8)));
        harness::blocks(&d);
    }
    eprintln!("blocks: {:?} per run", t.elapsed() / 256);
}

/// Inputs that crashed the engine or the checker once.
#[test]
fn saved_crashes_do_not_panic() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        eprintln!("replaying {name}");
        if name.starts_with("image-") {
            harness::image(&data);
        } else if name.starts_with("blocks-") {
            harness::blocks(&data);
        }
    }
}

/// The checker sized a disk space map's index by its largest key: a
/// re-checksummed index leaf with key `u64::MAX` and a superblock claiming
/// `u64::MAX` data blocks made it allocate petabytes (abort). It must
/// report the damage instead.
#[test]
fn huge_index_key_and_data_size() {
    let seed = harness::seed();
    let index_root = u64::from_le_bytes(seed[64 + 16..64 + 24].try_into().unwrap());
    assert!(index_root < 96);
    // INTERESTING[23] is u64::MAX; kind 3 writes it as a u64.
    let input = [
        1u8, // re-stamp, thin, no extra operations
        0,
        64,
        0,
        3,
        23, // superblock: data space map nr_blocks
        index_root as u8,
        40,
        0,
        3,
        23, // index leaf: key 1
    ];
    harness::image(&input);
    let mut img = seed.to_vec();
    img[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
    let o = index_root as usize * 4096 + 40;
    img[o..o + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    use persistent_data::block_manager::Validator;
    let (a, b) = img.split_at_mut(4096);
    persistent_data::checker::thin::THIN_SB_VALIDATOR
        .prepare_for_write(0, (&mut a[..4096]).try_into().unwrap())
        .unwrap();
    let blk = &mut b[(index_root as usize - 1) * 4096..index_root as usize * 4096];
    persistent_data::btree::node::BTREE_NODE_VALIDATOR
        .prepare_for_write(index_root, blk.try_into().unwrap())
        .unwrap();
    let r = persistent_data::checker::check(persistent_data::io::mem::MemIo::from_image(img), None);
    assert!(
        r.mentions("data space map index: 2 entries for 18446744073709551615 blocks"),
        "{:?}",
        r.problems
    );
}
