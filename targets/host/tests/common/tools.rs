//! Upstream's thin-provisioning-tools, run on images: `thin_check`,
//! `thin_dump`, `thin_restore`. `scripts/setup` installs them, so a missing
//! one fails the test rather than skipping the check.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// A fresh file name in the test scratch directory (tests run in
/// parallel: every call gets its own).
pub fn tmp(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("thinmd-{}-{n}-{name}", std::process::id()))
}

fn tool(name: &str) -> PathBuf {
    ["/usr/sbin/", "/sbin/", "/usr/bin/"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} not installed (scripts/setup installs thin-provisioning-tools)")
        })
}

/// Runs `name args... <image file>`; exit code and combined output.
fn run_on(name: &str, args: &[&str], image: &[u8]) -> (i32, String) {
    let p = tmp(&format!("{name}.img"));
    std::fs::write(&p, image).unwrap();
    let out = Command::new(tool(name))
        .args(args)
        .arg(&p)
        .output()
        .unwrap();
    std::fs::remove_file(&p).ok();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `thin_check` on `image`: panics with its output unless it passes.
pub fn thin_check(image: &[u8]) {
    let (code, out) = run_on("thin_check", &[], image);
    assert_eq!(code, 0, "thin_check failed:\n{out}");
}

/// `thin_dump args...` on `image`: its XML (panics if it fails).
pub fn thin_dump(image: &[u8], args: &[&str]) -> String {
    let (code, out) = run_on("thin_dump", args, image);
    assert_eq!(code, 0, "thin_dump {args:?} failed:\n{out}");
    out
}

/// Metadata `thin_restore` writes from `xml` onto a device of
/// `nr_blocks` metadata blocks.
pub fn thin_restore(xml: &str, nr_blocks: u64) -> Vec<u8> {
    let src = tmp("restore.xml");
    let out = tmp("restore.img");
    std::fs::write(&src, xml).unwrap();
    std::fs::write(&out, vec![0u8; nr_blocks as usize * 4096]).unwrap();
    let st = Command::new(tool("thin_restore"))
        .arg("-i")
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let img = std::fs::read(&out).unwrap();
    std::fs::remove_file(&src).ok();
    std::fs::remove_file(&out).ok();
    assert!(
        st.status.success(),
        "thin_restore: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    img
}
