// SPDX-License-Identifier: GPL-2.0

//! `pdata-thin-write`: thin-pool metadata written by the metadata engine,
//! and data to go with it, so the C dm-thin can be made to read them
//! (guest test 41).
//!
//! ```text
//! pdata-thin-write metadata META DATA_BLOCKS [SEED]
//! pdata-thin-write fill DATA MAPS
//! pdata-thin-write verify THIN DEVICE MAPS
//! ```
//!
//! `metadata` formats META (a file or block device; the metadata space map
//! covers all of it) for a data device of DATA_BLOCKS blocks of 64 KiB,
//! runs a seeded random history on it (several devices, snapshots of
//! snapshots, overwrites, single and range removals, deletes, metadata
//! snapshots; a commit after each step) and ends with a metadata snapshot
//! held. It prints what it left, one fact a line:
//!
//! ```text
//! status TRANS_ID USED_META/TOTAL_META USED_DATA/TOTAL_DATA HELD_ROOT
//! device ID VIRTUAL_BLOCKS
//! map ID VIRTUAL_BLOCK DATA_BLOCK
//! ```
//!
//! (`status` as the C thin-pool's status line will show it.) `fill`
//! writes every data block a `map` line of MAPS names with that block's
//! pattern; `verify` reads thin device THIN (pool device id DEVICE) and
//! checks that each mapped virtual block holds its data block's pattern and
//! every other one reads zeros. Exit status: 0 done (or matching), 1
//! mismatches, 2 usage or I/O error.

use persistent_data::block_manager::BlockManager;
use persistent_data::checker::thin_history::{Change, History, Shape};
use persistent_data::checker::thin_writer::ThinPool;
use persistent_data::io::file::FileIo;
use persistent_data::space_map::SpaceMap;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;

/// Data block size in sectors (64 KiB), as the pool table line must say.
const DATA_BLOCK_SECTORS: u32 = 128;
const DATA_BLOCK_BYTES: usize = DATA_BLOCK_SECTORS as usize * 512;
/// Commits in a history.
const COMMITS: u32 = 150;
/// The userspace transaction id set last.
const TRANS_ID: u64 = 41;

const USAGE: &str = "usage: pdata-thin-write metadata META DATA_BLOCKS [SEED]
       pdata-thin-write fill DATA MAPS
       pdata-thin-write verify THIN DEVICE MAPS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = match args.as_slice() {
        ["metadata", meta, blocks] => number(blocks).and_then(|n| metadata(meta, n, 1)),
        ["metadata", meta, blocks, seed] => {
            number(blocks).and_then(|n| number(seed).and_then(|s| metadata(meta, n, s)))
        }
        ["fill", data, maps] => fill(data, maps),
        ["verify", thin, dev, maps] => number(dev).and_then(|d| verify(thin, d, maps)),
        _ => Err(USAGE.to_string()),
    };
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pdata-thin-write: {e}");
            ExitCode::from(2)
        }
    }
}

fn number(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("not a number: {s}\n{USAGE}"))
}

/// The contents of data block `b`: 16-byte records naming it.
fn pattern(b: u64) -> Vec<u8> {
    format!("blk {b:011}\n")
        .repeat(DATA_BLOCK_BYTES / 16)
        .into_bytes()
}

fn metadata(meta: &str, nr_data: u64, seed: u64) -> Result<bool, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: persistent_data::Error| format!("{meta}: {what}: {err}")
    };
    let io = FileIo::open(Path::new(meta), true).map_err(e("open"))?;
    let mut p = ThinPool::format(BlockManager::new(io, 256), nr_data, DATA_BLOCK_SECTORS)
        .map_err(e("format"))?;
    let vblocks = (nr_data / 16).clamp(64, 1024);
    let shape = Shape {
        devices: 6,
        vblocks,
        max_run: 64,
        unmaps: 20,
        max_range: vblocks / 4,
        max_ops: 4,
    };
    let mut h = History::new(shape, seed);
    h.fill(&mut p, 0, vblocks / 2).map_err(e("fill device 0"))?;
    p.commit().map_err(e("commit"))?;
    for _ in 0..COMMITS {
        h.step(&mut p).map_err(e("history"))?;
        p.commit().map_err(e("commit"))?;
    }
    // End with a metadata snapshot the live trees have moved away from.
    if h.held.is_none() {
        p.reserve_metadata_snap().map_err(e("reserve"))?;
        h.held = Some(h.live.clone());
    }
    h.fill(&mut p, 0, vblocks / 8).map_err(e("fill device 0"))?;
    p.set_transaction_id(TRANS_ID);
    p.commit().map_err(e("commit"))?;
    if p.mappings().map_err(e("walk"))? != h.live {
        return Err(format!("{meta}: the trees differ from the history's model"));
    }
    eprintln!(
        "pdata-thin-write: {COMMITS} commits; changes: {:?}",
        Change::ALL.map(|c| (c, h.done(c)))
    );
    // What the C thin-pool reports: used metadata includes its reserve
    // (a tenth of the device, at most 4096 blocks).
    let total_meta = p.tm.sm_nr_blocks();
    let used_meta = total_meta - p.tm.sm_nr_free() + (total_meta / 10).min(4096);
    let used_data = nr_data - p.data.nr_free(&p.tm);
    println!(
        "status {TRANS_ID} {used_meta}/{total_meta} {used_data}/{nr_data} {}",
        p.held_root()
    );
    for (dev, m) in &h.live {
        println!("device {dev} {vblocks}");
        for (vb, b) in m {
            println!("map {dev} {vb} {b}");
        }
    }
    Ok(true)
}

/// The `map` lines of MAPS: device -> virtual block -> data block.
fn read_maps(maps: &str) -> Result<BTreeMap<u64, BTreeMap<u64, u64>>, String> {
    let mut text = String::new();
    File::open(maps)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("{maps}: {e}"))?;
    let mut m: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let ["map", dev, vb, b] = w.as_slice() {
            m.entry(number(dev)?)
                .or_default()
                .insert(number(vb)?, number(b)?);
        }
    }
    Ok(m)
}

fn fill(data: &str, maps: &str) -> Result<bool, String> {
    let f = OpenOptions::new()
        .write(true)
        .open(data)
        .map_err(|e| format!("{data}: {e}"))?;
    let mut blocks: Vec<u64> = read_maps(maps)?
        .values()
        .flat_map(|m| m.values().copied())
        .collect();
    blocks.sort_unstable();
    blocks.dedup();
    for b in &blocks {
        f.write_all_at(&pattern(*b), b * DATA_BLOCK_BYTES as u64)
            .map_err(|e| format!("{data}: block {b}: {e}"))?;
    }
    f.sync_all().map_err(|e| format!("{data}: {e}"))?;
    println!("{} data blocks written", blocks.len());
    Ok(true)
}

fn verify(thin: &str, dev: u64, maps: &str) -> Result<bool, String> {
    let maps = read_maps(maps)?;
    let empty = BTreeMap::new();
    let m = maps.get(&dev).unwrap_or(&empty);
    let f = File::open(thin).map_err(|e| format!("{thin}: {e}"))?;
    let size = f.metadata().map(|md| md.len()).unwrap_or(0);
    let size = if size == 0 {
        // A block device: its size is where its end is.
        use std::io::{Seek, SeekFrom};
        (&f).seek(SeekFrom::End(0))
            .map_err(|e| format!("{thin}: {e}"))?
    } else {
        size
    };
    let vblocks = size / DATA_BLOCK_BYTES as u64;
    let zeros = vec![0u8; DATA_BLOCK_BYTES];
    let mut buf = vec![0u8; DATA_BLOCK_BYTES];
    let (mut bad, mut mapped) = (0u64, 0u64);
    for vb in 0..vblocks {
        f.read_exact_at(&mut buf, vb * DATA_BLOCK_BYTES as u64)
            .map_err(|e| format!("{thin}: block {vb}: {e}"))?;
        let want = match m.get(&vb) {
            Some(&b) => {
                mapped += 1;
                pattern(b)
            }
            None => zeros.clone(),
        };
        if buf != want {
            bad += 1;
            if bad <= 5 {
                let got = String::from_utf8_lossy(&buf[..16]).into_owned();
                println!(
                    "device {dev} block {vb}: expected data block {:?}, read {got:?}",
                    m.get(&vb)
                );
            }
        }
    }
    if m.keys().any(|&vb| vb >= vblocks) {
        println!("device {dev}: mappings beyond the {vblocks} blocks of {thin}");
        bad += 1;
    }
    println!("device {dev}: {vblocks} blocks read, {mapped} mapped, {bad} wrong");
    Ok(bad == 0)
}
