// SPDX-License-Identifier: GPL-2.0

//! Where the kernel-written thin metadata images are: the project's shared
//! references (`shared/reference/thinp-testdata`), which sit beside the
//! checkout (`<checkout>/../shared`, in the workspace `/work/shared`).
//! `DMRS_THINP_TESTDATA` overrides the search. Not finding them fails the
//! test: a golden test that silently skips proves nothing.

use std::path::PathBuf;

/// The thinp-testdata directory.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DMRS_THINP_TESTDATA") {
        return PathBuf::from(d);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Beside the checkout, or where the workspace keeps it.
    let found = manifest
        .ancestors()
        .chain([std::path::Path::new("/work")])
        .map(|a| a.join("shared/reference/thinp-testdata"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "shared/reference/thinp-testdata not found beside {} (set DMRS_THINP_TESTDATA)",
                manifest.display()
            )
        });
    found
}

/// The bytes of test image or dump `name`, xz-decompressed if it ends in
/// `.xz`.
pub fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    let raw = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &raw[..], &mut out).expect("xz");
        out
    } else {
        raw
    }
}
