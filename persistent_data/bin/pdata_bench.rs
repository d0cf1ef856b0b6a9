// SPDX-License-Identifier: GPL-2.0

//! `pdata-bench [SIZE...]`: host benchmark of the metadata engine over the
//! in-memory block I/O (`io::mem::MemIo`).
//!
//! For each SIZE (default 100000 1000000 10000000) on a fresh device:
//!
//! * `btree insert`: SIZE distinct u64 keys with 8-byte values, in a
//!   pseudo-random order, into one single-level btree;
//! * `btree lookup`: min(SIZE, 10^6) of the keys, in another pseudo-random
//!   order;
//! * `btree remove`: min(SIZE, 10^6) of the keys, in a third order (at
//!   10^5 that empties the tree; at 10^7 it measures removal from a tree
//!   of 9-10 million keys);
//! * `sm alloc`: SIZE `new_block` calls on a data space map (a disk space
//!   map) of SIZE blocks, until it is full.
//!
//! The writers commit every 10000 operations (a full commit: space maps,
//! flush, superblock), so most operations shadow (copy-on-write) their
//! path, as in a running pool; commits are part of the time measured.
//! `PDATA_BENCH_CACHE_BLOCKS` sets how many dirty blocks the block
//! manager holds (default 1024), `PDATA_BENCH_IO_CACHE_BLOCKS` how many
//! blocks the memory device's cache (the model of dm-bufio) keeps (default
//! 65536, 256 MiB). Prints one tab-separated line per measurement:
//! `op<TAB>size<TAB>operations<TAB>seconds<TAB>ops_per_second`.
//! Each operation's loop is its own `bench_op_*` function, so
//! `callgrind_annotate --inclusive=yes` gives its instruction count
//! (`scripts/bench-pdata` does that).

use persistent_data::block_manager::{BlockManager, CsumValidator};
use persistent_data::btree::{self, PlainValues};
use persistent_data::io::mem::MemIo;
use persistent_data::space_map::{DiskSpaceMap, SpaceMap};
use persistent_data::transaction_manager::TransactionManager;
use persistent_data::Result;
use std::hint::black_box;
use std::time::Instant;

static SB: CsumValidator = CsumValidator {
    name: "bench_superblock",
    xor: 0xbe9c,
    blocknr_offset: 8,
};

const COMMIT_EVERY: u64 = 10_000;
/// Lookups and removes measured per size (on the full tree).
const SAMPLE: u64 = 1_000_000;

/// A size from the environment variable `name`, or `default`.
fn env_blocks(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A bijection on u64 (the splitmix64 finaliser): distinct, scattered keys.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `i`th of `n` indices in an order given by a stride coprime to `n`.
fn order(i: u64, n: u64, stride: u64) -> u64 {
    ((i as u128 * stride as u128) % n as u128) as u64
}

fn coprime_stride(n: u64, start: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let mut s = start % n.max(2);
    while gcd(s, n) != 1 {
        s += 1;
    }
    s.max(1)
}

struct Pool {
    tm: TransactionManager<MemIo>,
    data: Option<DiskSpaceMap>,
}

impl Pool {
    fn new(nr_meta: u64) -> Result<Pool> {
        let io = MemIo::new(nr_meta);
        io.set_cache_blocks(env_blocks(
            "PDATA_BENCH_IO_CACHE_BLOCKS",
            persistent_data::io::mem::DEFAULT_MEM_CACHE_BLOCKS,
        ));
        let dirty = env_blocks(
            "PDATA_BENCH_CACHE_BLOCKS",
            persistent_data::block_manager::DEFAULT_CACHE_BLOCKS,
        );
        let tm = TransactionManager::create(BlockManager::new(io, dirty), 0)?;
        Ok(Pool { tm, data: None })
    }

    fn commit(&mut self) -> Result<()> {
        if let Some(d) = self.data.as_mut() {
            SpaceMap::commit(d, &mut self.tm)?;
        }
        self.tm.pre_commit()?;
        let mut sb = self.tm.bm_mut().write_lock_zero(0, Some(&SB))?;
        self.tm.sm_copy_root(&mut sb[16..48])?;
        if let Some(d) = self.data.as_ref() {
            d.copy_root(&self.tm, &mut sb[48..80])?;
        }
        self.tm.commit(sb)
    }
}

#[no_mangle]
#[inline(never)]
fn bench_op_insert(p: &mut Pool, mut root: u64, n: u64) -> Result<u64> {
    let stride = coprime_stride(n, 0x9e37_79b9);
    for i in 0..n {
        let k = mix(order(i, n, stride));
        root = btree::insert(&mut p.tm, &mut PlainValues(8), root, &[k], &i.to_le_bytes())?;
        if (i + 1) % COMMIT_EVERY == 0 {
            p.commit()?;
        }
    }
    p.commit()?;
    Ok(root)
}

#[no_mangle]
#[inline(never)]
fn bench_op_lookup(p: &mut Pool, root: u64, n: u64, count: u64) -> Result<()> {
    let stride = coprime_stride(n, 0x7f4a_7c15);
    let mut v = [0u8; 8];
    for i in 0..count {
        let k = mix(order(i, n, stride));
        btree::lookup(&p.tm, root, &[k], &mut v)?;
        black_box(&v);
    }
    Ok(())
}

#[no_mangle]
#[inline(never)]
fn bench_op_remove(p: &mut Pool, mut root: u64, n: u64, count: u64) -> Result<u64> {
    let stride = coprime_stride(n, 0x5851_f42d);
    for i in 0..count {
        let k = mix(order(i, n, stride));
        root = btree::remove(&mut p.tm, &mut PlainValues(8), root, &[k])?;
        if (i + 1) % COMMIT_EVERY == 0 {
            p.commit()?;
        }
    }
    p.commit()?;
    Ok(root)
}

#[no_mangle]
#[inline(never)]
fn bench_op_alloc(p: &mut Pool, n: u64) -> Result<()> {
    for i in 0..n {
        let d = p.data.as_mut().ok_or(persistent_data::Error::Invalid)?;
        black_box(d.new_block(&mut p.tm)?);
        if (i + 1) % COMMIT_EVERY == 0 {
            p.commit()?;
        }
    }
    p.commit()
}

fn report(op: &str, n: u64, ops: u64, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!("{op}\t{n}\t{ops}\t{s:.3}\t{:.0}", ops as f64 / s);
}

fn run(n: u64) -> Result<()> {
    // Metadata blocks: a random-order tree of 8-byte values fills leaves
    // about 2/3 (~170 entries), shadowing needs room for a second copy of
    // what one commit interval touches; 1 block per 40 keys is plenty.
    let nr_meta = (n / 40).max(4096);
    let mut p = Pool::new(nr_meta)?;
    let root = btree::empty(&mut p.tm, 8)?;
    p.commit()?;
    let t = Instant::now();
    let root = bench_op_insert(&mut p, root, n)?;
    report("btree insert", n, n, t);
    let sample = n.min(SAMPLE);
    let t = Instant::now();
    bench_op_lookup(&mut p, root, n, sample)?;
    report("btree lookup", n, sample, t);
    let t = Instant::now();
    let root = bench_op_remove(&mut p, root, n, sample)?;
    report("btree remove", n, sample, t);
    // The tree holds exactly the keys not removed.
    let mut left = 0u64;
    btree::walk(&p.tm, root, &mut |_, _| {
        left += 1;
        Ok(())
    })?;
    if left != n - sample {
        return Err(persistent_data::Error::Invalid);
    }
    drop(p);

    let mut p = Pool::new(n.div_ceil(16320) * 4 + 4096)?;
    p.data = Some(DiskSpaceMap::create(&mut p.tm, n)?);
    p.commit()?;
    let t = Instant::now();
    bench_op_alloc(&mut p, n)?;
    report("sm alloc", n, n, t);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut sizes: Vec<u64> = Vec::new();
    for a in std::env::args().skip(1) {
        match a.replace('_', "").parse::<f64>() {
            Ok(x) if x >= 1.0 => sizes.push(x as u64),
            _ => {
                eprintln!("usage: pdata-bench [SIZE...]   (e.g. 1e5 1000000)");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if sizes.is_empty() {
        sizes = vec![100_000, 1_000_000, 10_000_000];
    }
    for n in sizes {
        if let Err(e) = run(n) {
            eprintln!("pdata-bench: size {n}: {e}");
            return std::process::ExitCode::from(1);
        }
    }
    std::process::ExitCode::SUCCESS
}
