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
        harness::image(&[ops << 1 | 1, 5, 0x10, 0, 0xff, 7, 0, 1, 0x80]);
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
