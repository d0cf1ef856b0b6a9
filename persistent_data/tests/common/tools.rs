//! Running the checkers on images: `pdata-check` (this crate's binary)
//! and upstream's thin-provisioning-tools.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `bytes` to a fresh file; tests run in parallel, so every call gets
/// its own name.
pub fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("pdata-check-{}-{n}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `pdata-check` on `path`; returns the exit code and stdout.
pub fn run(path: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pdata-check"))
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// Runs `pdata-check` on `image`; returns the exit code and stdout.
pub fn check_bytes(name: &str, image: &[u8]) -> (i32, String) {
    let p = tmp(name, image);
    let r = run(&p, &[]);
    std::fs::remove_file(&p).ok();
    r
}

/// An upstream thin-provisioning-tools program. `scripts/setup` installs
/// them, so a missing one fails the test rather than skipping the check.
pub fn upstream_tool(tool: &str) -> PathBuf {
    ["/usr/sbin/", "/sbin/", "/usr/bin/"]
        .iter()
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{tool} not installed (scripts/setup installs thin-provisioning-tools)")
        })
}

/// Runs an upstream checker (`thin_check`, `cache_check`) on `image`; its
/// exit code (-1 if a signal killed it).
pub fn upstream(tool: &str, image: &[u8]) -> i32 {
    let bin = upstream_tool(tool);
    let p = tmp(&format!("{tool}.img"), image);
    let st = Command::new(bin)
        .arg(&p)
        .output()
        .expect("run upstream checker");
    std::fs::remove_file(&p).ok();
    if st.status.code() != Some(0) {
        eprintln!(
            "{tool}: {}{}",
            String::from_utf8_lossy(&st.stdout),
            String::from_utf8_lossy(&st.stderr)
        );
    }
    st.status.code().unwrap_or(-1)
}

/// Runs upstream's `thin_dump` with `args` on `image`; its XML, or `None`
/// (with its output printed) if it fails.
pub fn thin_dump(image: &[u8], args: &[&str]) -> Option<String> {
    let p = tmp("thin_dump.img", image);
    let out = Command::new(upstream_tool("thin_dump"))
        .args(args)
        .arg(&p)
        .output()
        .expect("run thin_dump");
    std::fs::remove_file(&p).ok();
    if !out.status.success() {
        eprintln!(
            "thin_dump {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(String::from_utf8(out.stdout).expect("thin_dump output is UTF-8"))
}
