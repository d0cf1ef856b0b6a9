// SPDX-License-Identifier: GPL-2.0

//! `pdata-check [--thin|--cache] [-q] IMAGE`: checks thin-pool or cache
//! metadata like `thin_check`/`cache_check`: every checksum, every btree,
//! and a full recount of references compared with both space maps.
//!
//! Prints one line per problem and exits 0 if the metadata is clean, 1 if
//! it is damaged (errors or leaks), 2 if the image cannot be opened or the
//! arguments are wrong.

use persistent_data::checker::{self, Format, Severity};
use persistent_data::io::file::FileIo;
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: pdata-check [--thin|--cache] [-q] IMAGE");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut format = None;
    let mut quiet = false;
    let mut image: Option<PathBuf> = None;
    for a in std::env::args_os().skip(1) {
        match a.to_str() {
            Some("--thin") => format = Some(Format::Thin),
            Some("--cache") => format = Some(Format::Cache),
            Some("-q") | Some("--quiet") => quiet = true,
            Some("-h") | Some("--help") => {
                println!("usage: pdata-check [--thin|--cache] [-q] IMAGE");
                println!("exit status: 0 clean, 1 damaged (errors or leaks), 2 cannot check");
                return ExitCode::SUCCESS;
            }
            Some(s) if s.starts_with('-') => return usage(),
            _ if image.is_none() => image = Some(PathBuf::from(a)),
            _ => return usage(),
        }
    }
    let Some(image) = image else {
        return usage();
    };
    let io = match FileIo::open(&image, false) {
        Ok(io) => io,
        Err(e) => {
            eprintln!("pdata-check: {}: cannot open: {e}", image.display());
            return ExitCode::from(2);
        }
    };
    let report = checker::check(io, format);
    if !quiet {
        for p in &report.problems {
            let tag = match p.severity {
                Severity::Error => "error",
                Severity::Leak => "leak",
            };
            println!("{tag}: {}", p.msg);
        }
        for n in &report.notes {
            eprintln!("note: {n}");
        }
        if !report.is_clean() {
            eprintln!(
                "pdata-check: {}: {} errors, {} leaks",
                image.display(),
                report.errors(),
                report.leaks()
            );
        }
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
