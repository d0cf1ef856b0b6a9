// SPDX-License-Identifier: GPL-2.0

//! The fuzz harness, shared by the cargo-fuzz targets (`fuzz_targets/`) and
//! by the regression tests (`tests/fuzz_regressions.rs` replays saved
//! crash inputs through the same code). Everything here must return
//! normally on any input: a panic is a bug in the engine (or the checker).
//!
//! * [`blocks`]: up to three 4 KiB blocks of fuzz data, re-stamped (or not)
//!   with a chosen validator so they get past the checksum, placed in a
//!   small device and fed to every decoder: btree node accessors, walks,
//!   lookups, cursors, inserts/removes/deletes through them, the metadata
//!   and disk space maps (index block, index btree, bitmaps, ref-count
//!   tree), the superblock parsers and the checker.
//! * [`image`]: a small thin-pool image written by the engine (two devices,
//!   shared subtrees, a metadata snapshot), with fuzz-chosen bytes flipped
//!   (and the damaged blocks' checksums optionally re-stamped), checked by
//!   the checker, then opened, walked, changed and committed by the
//!   engine.

#![allow(dead_code)]

use persistent_data::block_manager::{le64_at, put_le32, put_le64, BlockManager, Validator};
use persistent_data::btree::node::{self, BTREE_NODE_VALIDATOR};
use persistent_data::btree::{self, BlockRefs, Cursor, PlainValues};
use persistent_data::checker::cache::{ARRAY_BLOCK_VALIDATOR, CACHE_SB_VALIDATOR};
use persistent_data::checker::thin::{off, THIN_MAGIC, THIN_SB_VALIDATOR};
use persistent_data::checker::thin_writer::ThinPool;
use persistent_data::checker::{self, Format};
use persistent_data::io::mem::MemIo;
use persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use persistent_data::space_map::common::{
    bitmap_find_free, bitmap_lookup, BITMAP_VALIDATOR, INDEX_VALIDATOR,
};
use persistent_data::space_map::{DiskSpaceMap, SmRoot, SpaceMap};
use persistent_data::transaction_manager::TransactionManager;
use persistent_data::{array, bitset, Result};
use std::sync::OnceLock;

/// Validators a fuzz block can be stamped with.
fn validator(i: u8) -> Option<&'static dyn Validator> {
    match i % 8 {
        0 => Some(&BTREE_NODE_VALIDATOR),
        1 => Some(&INDEX_VALIDATOR),
        2 => Some(&BITMAP_VALIDATOR),
        3 => Some(&THIN_SB_VALIDATOR),
        4 => Some(&CACHE_SB_VALIDATOR),
        5 => Some(&ARRAY_BLOCK_VALIDATOR),
        6 => Some(&BTREE_NODE_VALIDATOR),
        _ => None,
    }
}

/// Where the fuzz blocks go in the [`blocks`] device (above the blocks the
/// space map format uses).
pub const FUZZ_BASE: u64 = 40;
const DEV_BLOCKS: u64 = 64;

fn key_from(data: &[u8], i: usize) -> u64 {
    let mut k = [0u8; 8];
    for (j, b) in k.iter_mut().enumerate() {
        *b = data.get(i * 8 + j).copied().unwrap_or(0);
    }
    u64::from_le_bytes(k)
}

/// Fuzz input: `selector`, `base` and `more` bytes, then up to three
/// blocks of data.
///
/// Selector bits 0-2 pick the validator of the first fuzz block (7: none),
/// bits 3-7 which btree/space map operations run; `more` bits 0-2 and 3-5
/// pick the second and third blocks' validators, bits 6-7 the array and
/// bitset operations. If `base` is non-zero, each fuzz block is block
/// `base + i` of a seed image (the thin [`seed`], or the cache seed if
/// `base` is odd: real nodes, bitmaps, index and array blocks,
/// superblocks) XORed with the data, so small inputs are small changes to
/// real structures. Keys for lookups/inserts come from the data's first
/// bytes.
pub fn blocks(data: &[u8]) {
    let [sel, base, more, rest @ ..] = data else {
        return;
    };
    let (sel, base, more) = (*sel, u64::from(*base), *more);
    let io = MemIo::new(DEV_BLOCKS);
    let mut tm = match TransactionManager::create(BlockManager::new(io.clone(), 16), 0) {
        Ok(tm) => tm,
        Err(_) => return,
    };
    let vs = [validator(sel), validator(more), validator(more >> 3)];
    let mut raws: Vec<Block> = Vec::new();
    let seed = if base % 2 == 1 { cache_seed() } else { seed() };
    for (i, chunk) in rest.chunks(BLOCK_SIZE).take(3).enumerate() {
        let mut b = [0u8; BLOCK_SIZE];
        if base != 0 {
            let o = ((base + i as u64) % SEED_BLOCKS) as usize * BLOCK_SIZE;
            if let Some(s) = seed.get(o..o + BLOCK_SIZE) {
                b.copy_from_slice(s);
            }
        }
        for (x, y) in b.iter_mut().zip(chunk) {
            *x ^= y;
        }
        let loc = FUZZ_BASE + i as u64;
        if let Some(v) = vs.get(i).copied().flatten() {
            let _ = v.prepare_for_write(loc, &mut b);
        }
        // The fuzz block is what the device holds.
        io.poke(loc, 0, &b);
        raws.push(b);
    }
    let Some(first) = raws.first().copied() else {
        return;
    };
    let root = FUZZ_BASE;
    let k0 = key_from(rest, 0);
    let k1 = key_from(rest, 1);

    // Pure decoders on the raw block.
    if let Ok(h) = node::header(&first) {
        let _ = (h.is_internal(), h.is_leaf());
        for i in 0..(h.nr_entries as usize).min(400) {
            let _ = node::key(&first, i);
            let _ = node::value(&first, i);
            let _ = node::value64(&first, i);
        }
        let _ = node::values(&first);
    }
    let _ = node::lower_bound(&first, k0);
    let _ = node::upper_bound(&first, k0);
    let _ = bitmap_lookup(&first, k0 % 20000);
    let _ = bitmap_find_free(&first, k0 % 16320, 16320);
    let _ = checker::thin::ThinSuperblock::parse(&first);
    let _ = checker::cache::CacheSuperblock::parse(&first);
    let _ = SmRoot::unpack(&first[..]);

    // Readers through the engine.
    let mut out = [0u8; 64];
    let _ = btree::walk(&tm, root, &mut |_, _| Ok(()));
    for levels in 1..=2usize {
        let keys = [k0, k1];
        let keys = &keys[..levels];
        let _ = btree::lookup(&tm, root, keys, &mut out[..8]);
        let _ = btree::lookup(&tm, root, keys, &mut out[..16]);
        let _ = btree::lookup_next(&tm, root, keys, &mut out[..8]);
        let mut hk = [0u64; 2];
        let _ = btree::find_highest_key(&tm, root, &mut hk[..levels]);
        let _ = btree::find_lowest_key(&tm, root, &mut hk[..levels]);
    }
    if let Ok(mut c) = Cursor::begin(&tm, root) {
        for _ in 0..1000 {
            let _ = c.get();
            if c.next().is_err() {
                break;
            }
        }
    }
    let _ = btree::lookup(&tm.non_blocking(), root, &[k0], &mut out[..8]);

    // The fuzz blocks as a dm-array (btree of array blocks) or bitset.
    let vsize = [8usize, 4, 16, 1][usize::from(more >> 6)];
    let idx = (k1 % 5000) as u32;
    let mut val = vec![0u8; vsize];
    let _ = array::get(&tm, root, idx, &mut val);
    let _ = array::len(&tm, root, vsize);
    let _ = array::walk(&tm, root, vsize, &mut |_, _| Ok(()));
    if let Ok(mut c) = array::Cursor::begin(&tm, root, vsize) {
        for _ in 0..3000 {
            let _ = (c.get(), c.index());
            if c.next().is_err() {
                break;
            }
        }
    }
    let _ = bitset::get_bit(&tm, root, idx);
    let _ = bitset::walk(&tm, root, idx, &mut |_, _| Ok(()));

    // Writers: give the fuzz blocks a reference first, so shadowing them
    // behaves as for committed blocks.
    let ops = sel >> 3;
    let _ = tm.inc_range(FUZZ_BASE, FUZZ_BASE + raws.len() as u64);
    match ops % 8 {
        0 => {
            let _ = btree::insert(&mut tm, &mut PlainValues(8), root, &[k0], &k1.to_le_bytes());
        }
        1 => {
            let _ = btree::remove(&mut tm, &mut PlainValues(8), root, &[k0]);
        }
        2 => {
            let _ = btree::del(&mut tm, &mut BlockRefs, root, 1 + (k1 % 2) as usize);
        }
        3 => {
            let _ = btree::remove_leaves(&mut tm, &mut PlainValues(8), root, &[k0], k1);
        }
        4 => {
            let _ = btree::insert(
                &mut tm,
                &mut BlockRefs,
                root,
                &[k0, k1],
                &(FUZZ_BASE + 1).to_le_bytes(),
            );
            let _ = btree::remove(&mut tm, &mut BlockRefs, root, &[k0, k1]);
        }
        5 => {
            // The fuzz blocks as a disk space map: index btree and
            // ref-count tree; nr_blocks from the data.
            let mut r = [0u8; 32];
            put_le64(&mut r, 0, k0 % (1 << 24));
            put_le64(&mut r, 16, FUZZ_BASE);
            put_le64(&mut r, 24, FUZZ_BASE + 1);
            if let Ok(mut sm) = DiskSpaceMap::open(&r) {
                for b in [0, k1 % 100_000, k0 % 100_000] {
                    let _ = sm.count(&tm, b);
                    let _ = sm.count_is_more_than_one(&tm, b);
                    let _ = sm.inc(&mut tm, b);
                    let _ = sm.dec(&mut tm, b);
                }
                let _ = sm.new_block(&mut tm);
                let _ = sm.nr_free(&tm);
                let _ = SpaceMap::commit(&mut sm, &mut tm);
                let _ = sm.extend(&mut tm, k1 % 40_000);
            }
        }
        6 | 7 => {
            // The fuzz blocks as the metadata space map: index block at
            // FUZZ_BASE; its entries point at the other fuzz blocks.
            let mut r = [0u8; 32];
            put_le64(&mut r, 0, (k0 % (1 << 20)).max(1));
            put_le64(&mut r, 8, k1 % 64);
            put_le64(&mut r, 16, FUZZ_BASE);
            put_le64(&mut r, 24, FUZZ_BASE + 1);
            let bm = BlockManager::new(io.clone(), 16);
            if let Ok(mut tm2) = TransactionManager::open(bm, &r) {
                for b in [0, 1, k1 % 64, k0 % 70_000] {
                    let _ = tm2.sm_count(b);
                    let _ = tm2.ref_count(b);
                }
                let _ = tm2.sm_new_block();
                let _ = tm2.inc(k1 % 64);
                let _ = tm2.dec(k1 % 64);
                let _ = tm2.sm_extend(k1 % 100);
                let _ = tm2.sm_commit();
                let _ = tm2.pre_commit();
            }
        }
        _ => {}
    }
    if ops & 1 != 0 {
        let mut pv = PlainValues(vsize);
        let r = match more >> 6 {
            0 => array::set(&mut tm, &mut pv, root, idx, &val),
            1 => array::resize(&mut tm, &mut pv, root, idx, (k0 % 3000) as u32, &val),
            2 => array::del(&mut tm, &mut pv, root).map(|_| root),
            _ => {
                let mut bs = bitset::Bitset::new();
                let _ = bs.test_bit(&mut tm, root, idx);
                let _ = bs.set_bit(&mut tm, root, idx);
                let _ = bs.clear_bit(&mut tm, root, idx / 2);
                let _ = bs.resize(&mut tm, root, idx, (k0 % 3000) as u32, true);
                bs.flush(&mut tm, root)
            }
        };
        let _ = r;
    }
    // A superblock at block 0 pointing into the fuzz blocks, checked.
    if ops & 8 != 0 {
        let mut sb = [0u8; BLOCK_SIZE];
        let cache = ops & 16 != 0;
        if cache {
            put_le64(&mut sb, 32, checker::cache::CACHE_MAGIC);
            put_le32(&mut sb, 40, 2);
            put_le32(&mut sb, 60, 4);
            put_le64(&mut sb, 64, DEV_BLOCKS);
            put_le64(&mut sb, 80, FUZZ_BASE);
            put_le64(&mut sb, 88, FUZZ_BASE + 1);
            put_le64(&mut sb, 192, FUZZ_BASE + 2);
            put_le64(&mut sb, 200, FUZZ_BASE + 1);
            put_le64(&mut sb, 208, FUZZ_BASE);
            put_le64(&mut sb, 224, k0 % 100_000);
            put_le32(&mut sb, 236, 8);
            put_le32(&mut sb, 240, (k1 % 100_000) as u32);
            put_le64(&mut sb, 284, FUZZ_BASE + 2);
            let _ = CACHE_SB_VALIDATOR.prepare_for_write(0, &mut sb);
        } else {
            put_le64(&mut sb, off::MAGIC, THIN_MAGIC);
            put_le32(&mut sb, off::VERSION, 2);
            put_le64(&mut sb, off::HELD_ROOT, FUZZ_BASE + 2);
            put_le64(&mut sb, off::DATA_SM, k0 % 1_000_000);
            put_le64(&mut sb, off::DATA_SM + 16, FUZZ_BASE + 1);
            put_le64(&mut sb, off::DATA_SM + 24, FUZZ_BASE + 2);
            put_le64(&mut sb, off::META_SM, DEV_BLOCKS);
            put_le64(&mut sb, off::META_SM + 16, FUZZ_BASE + 1);
            put_le64(&mut sb, off::META_SM + 24, FUZZ_BASE);
            put_le64(&mut sb, off::MAPPING_ROOT, FUZZ_BASE);
            put_le64(&mut sb, off::DETAILS_ROOT, FUZZ_BASE + 2);
            put_le32(&mut sb, off::DATA_BLOCK_SIZE, 128);
            put_le32(&mut sb, off::META_BLOCK_SIZE, 8);
            let _ = THIN_SB_VALIDATOR.prepare_for_write(0, &mut sb);
        }
        io.poke(0, 0, &sb);
        let fmt = if cache { Format::Cache } else { Format::Thin };
        let _ = checker::check(io.clone(), Some(fmt));
    }
    drop(tm);
}

// ---- whole images ----

/// Blocks in the seed image's metadata device.
pub const SEED_BLOCKS: u64 = 96;

fn build_seed() -> Result<Vec<u8>> {
    let io = MemIo::new(SEED_BLOCKS);
    let mut pool = ThinPool::format(BlockManager::new(io.clone(), 64), 20_000, 128)?;
    pool.create_thin(0)?;
    // Three leaves' worth, with a gap pattern.
    for vb in 0..600u64 {
        pool.map(0, vb * 2)?;
    }
    // Device 1: a snapshot of 0 (shared root), then a few overwrites so it
    // shares some leaves and not others.
    pool.create_snap(1, 0)?;
    for vb in 0..20u64 {
        pool.map(1, vb * 2)?;
    }
    // A metadata snapshot (a shadow of the superblock holding the current
    // roots), then the live trees diverge from it.
    pool.reserve_metadata_snap()?;
    for vb in 0..50u64 {
        pool.remove(0, vb * 4)?;
    }
    pool.commit()?;
    drop(pool);
    Ok(io.image())
}

/// The seed image: a clean thin pool written by the engine.
pub fn seed() -> &'static [u8] {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| build_seed().unwrap_or_default())
}

fn build_cache_seed() -> Result<Vec<u8>> {
    let io = MemIo::new(SEED_BLOCKS);
    let mut tm = TransactionManager::create(BlockManager::new(io.clone(), 64), 0)?;
    let cache_blocks = 1200u32;
    let mapping = array::new(&mut tm, &mut PlainValues(8), cache_blocks, &mut |i, out| {
        // Metadata version 2: dirtiness lives in the dirty bitset, so
        // mappings carry only M_VALID.
        let v: u64 = if i % 3 == 0 {
            0
        } else {
            (u64::from(i + 100) << 16) | 1
        };
        out.copy_from_slice(&v.to_le_bytes());
        Ok(())
    })?;
    let hints = array::new(&mut tm, &mut PlainValues(4), cache_blocks, &mut |i, out| {
        out.copy_from_slice(&i.to_le_bytes());
        Ok(())
    })?;
    let discard = bitset::new(&mut tm, 300, &mut |i| Ok(i % 5 == 0))?;
    let dirty = bitset::new(&mut tm, cache_blocks, &mut |i| Ok(i % 2 == 1))?;
    tm.pre_commit()?;
    let mut sb = tm.bm_mut().write_lock_zero(0, Some(&CACHE_SB_VALIDATOR))?;
    put_le32(&mut sb[..], 4, 1);
    put_le64(&mut sb[..], 32, checker::cache::CACHE_MAGIC);
    put_le32(&mut sb[..], 40, 2);
    put_le32(&mut sb[..], 60, 4);
    tm.sm_copy_root(&mut sb[64..96])?;
    put_le64(&mut sb[..], 192, mapping);
    put_le64(&mut sb[..], 200, hints);
    put_le64(&mut sb[..], 208, discard);
    put_le64(&mut sb[..], 216, 1024);
    put_le64(&mut sb[..], 224, 300);
    put_le32(&mut sb[..], 232, 128);
    put_le32(&mut sb[..], 236, 8);
    put_le32(&mut sb[..], 240, cache_blocks);
    put_le64(&mut sb[..], 284, dirty);
    tm.commit(sb)?;
    drop(tm);
    Ok(io.image())
}

/// A second seed: cache metadata written by the engine (mapping and hint
/// arrays, discard and dirty bitsets).
pub fn cache_seed() -> &'static [u8] {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| build_cache_seed().unwrap_or_default())
}

/// The validator the block at `b` of `img` passes, if any.
fn block_validator(img: &[u8], b: u64) -> Option<&'static dyn Validator> {
    let o = b as usize * BLOCK_SIZE;
    let blk: &Block = img.get(o..o + BLOCK_SIZE)?.try_into().ok()?;
    (0..6u8)
        .filter_map(validator)
        .find(|v| v.check(b, blk).is_ok())
}

/// Values a record can write into a field: boundaries of the on-disk
/// formats (node capacities, entries per bitmap and array block, device
/// size) and integer extremes.
const INTERESTING: [u64; 24] = [
    0,
    1,
    2,
    3,
    125,
    126,
    127,
    167,
    168,
    251,
    252,
    253,
    336,
    337,
    509,
    510,
    1018,
    16319,
    16320,
    SEED_BLOCKS - 1,
    SEED_BLOCKS,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

/// Fuzz input: `flags` byte, then 5-byte records `block, offset lo,
/// offset hi, kind, value` (at most 64). Kind 0 XORs the byte at the
/// offset with `value`, 1 sets it, 2 and 3 write an [`INTERESTING`] value
/// as a u32 or u64 there. Flag bit 0: re-stamp the checksums of the
/// blocks changed; bit 7: the cache seed instead of the thin one; bits
/// 1-6 pick the engine operations.
pub fn image(data: &[u8]) {
    let Some((&flags, recs)) = data.split_first() else {
        return;
    };
    let cache = flags & 0x80 != 0;
    let seed = if cache { cache_seed() } else { seed() };
    let mut img = seed.to_vec();
    if img.is_empty() {
        return;
    }
    let nr = SEED_BLOCKS;
    let mut touched = Vec::new();
    for r in recs.chunks_exact(5).take(64) {
        let b = u64::from(r[0]) % nr;
        let o =
            b as usize * BLOCK_SIZE + usize::from(u16::from_le_bytes([r[1], r[2]])) % BLOCK_SIZE;
        let (kind, val) = (r[3] % 4, r[4]);
        let iv = INTERESTING[usize::from(val) % INTERESTING.len()];
        match kind {
            0 => img[o] ^= val,
            1 => img[o] = val,
            2 => {
                let o = o.min(img.len() - 4);
                img[o..o + 4].copy_from_slice(&(iv as u32).to_le_bytes());
            }
            _ => {
                let o = o.min(img.len() - 8);
                img[o..o + 8].copy_from_slice(&iv.to_le_bytes());
            }
        }
        if !touched.contains(&b) {
            touched.push(b);
        }
    }
    if flags & 1 != 0 {
        for &b in &touched {
            if let Some(v) = block_validator(seed, b) {
                let o = b as usize * BLOCK_SIZE;
                if let Some(blk) = img.get_mut(o..o + BLOCK_SIZE) {
                    if let Ok(blk) = <&mut Block>::try_from(blk) {
                        let _ = v.prepare_for_write(b, blk);
                    }
                }
            }
        }
    }
    if cache {
        exercise_cache(img, flags >> 1);
    } else {
        exercise_thin(img, flags >> 1);
    }
}

/// Checks cache metadata `img`, then reads and changes its arrays and
/// bitsets with the engine and commits.
pub fn exercise_cache(img: Vec<u8>, ops: u8) {
    let io = MemIo::from_image(img);
    let _ = checker::check(io.clone(), None);
    let _ = cache_ops(&io, ops);
}

fn cache_ops(io: &MemIo, ops: u8) -> Result<()> {
    let bm = BlockManager::new(io.clone(), 32);
    let sbd = bm.read_copy(0, Some(&CACHE_SB_VALIDATOR))?;
    let sb = checker::cache::CacheSuperblock::parse(&sbd);
    let meta_root = sbd.get(64..96).unwrap_or(&[]).to_vec();
    drop(sbd);
    let mut tm = TransactionManager::open(bm, &meta_root)?;
    let n = sb.cache_blocks.min(100_000);
    let (mut mapping, mut hints, mut dirty) = (sb.mapping_root, sb.hint_root, sb.dirty_root);
    let _ = array::walk(&tm, mapping, 8, &mut |_, _| Ok(()));
    let _ = array::walk(&tm, hints, 4, &mut |_, _| Ok(()));
    let _ = bitset::walk(&tm, dirty, n, &mut |_, _| Ok(()));
    let _ = bitset::walk(
        &tm,
        sb.discard_root,
        sb.discard_nr_blocks.min(100_000) as u32,
        &mut |_, _| Ok(()),
    );
    let _ = array::len(&tm, mapping, 8);
    let mut v = [0u8; 8];
    for i in [0, 1, n / 2, n.saturating_sub(1), n] {
        let _ = array::get(&tm, mapping, i, &mut v);
    }
    let mut pv8 = PlainValues(8);
    for i in 0..u32::from(ops & 7) * 4 {
        mapping = array::set(
            &mut tm,
            &mut pv8,
            mapping,
            (i * 37) % n.max(1),
            &u64::from(i).to_le_bytes(),
        )?;
    }
    if ops & 8 != 0 {
        mapping = array::resize(&mut tm, &mut pv8, mapping, n, n / 2 + 3, &[0; 8])?;
        hints = array::resize(&mut tm, &mut PlainValues(4), hints, n, n + 700, &[1; 4])?;
    }
    let mut bs = bitset::Bitset::new();
    for i in 0..u32::from(ops >> 4) * 8 {
        dirty = bs.set_bit(&mut tm, dirty, (i * 13) % n.max(1))?;
    }
    dirty = bs.flush(&mut tm, dirty)?;
    tm.pre_commit()?;
    let mut sbw = tm.bm_mut().write_lock(0, Some(&CACHE_SB_VALIDATOR))?;
    tm.sm_copy_root(&mut sbw[64..96])?;
    put_le64(&mut sbw[..], 192, mapping);
    put_le64(&mut sbw[..], 200, hints);
    put_le64(&mut sbw[..], 284, dirty);
    tm.commit(sbw)?;
    drop(tm);
    let _ = checker::check(io.clone(), Some(Format::Cache));
    Ok(())
}

/// Checks `img`, then opens it with the engine, walks it, changes it and
/// commits. Every error is fine; a panic is not.
pub fn exercise_thin(img: Vec<u8>, ops: u8) {
    let io = MemIo::from_image(img);
    let _ = checker::check(io.clone(), None);
    let _ = engine_ops(&io, ops);
}

fn engine_ops(io: &MemIo, ops: u8) -> Result<()> {
    let mut pool = ThinPool::open(BlockManager::new(io.clone(), 32))?;
    let mapping = pool.mapping_root();
    let details = pool.details_root();
    let tm = &pool.tm;

    // Walk everything.
    let mut devs = Vec::new();
    let _ = btree::walk(tm, mapping, &mut |dev, v| {
        devs.push((dev, le64_at(v, 0)));
        Ok(())
    });
    for &(_, root) in devs.iter().take(4) {
        let _ = btree::walk(tm, root, &mut |_, _| Ok(()));
    }
    let _ = btree::walk(tm, details, &mut |_, _| Ok(()));
    let mut hk = [0u64; 2];
    let _ = btree::find_highest_key(tm, mapping, &mut hk);
    let _ = btree::find_lowest_key(tm, mapping, &mut hk);
    let mut v = [0u8; 8];
    for vb in [0u64, 2, 101, 600, 1198] {
        let _ = btree::lookup(tm, mapping, &[0, vb], &mut v);
        let _ = btree::lookup_next(tm, mapping, &[1, vb], &mut v);
    }
    let _ = pool.held_mappings();
    // Every count read is a block read and a checksum: sample.
    for b in (0..SEED_BLOCKS).step_by(7) {
        let _ = pool.tm.sm_count(b);
    }
    for b in (0..20_000).step_by(1999) {
        let _ = pool.data.count(&pool.tm, b);
    }

    // Change it: remap, unmap, snapshot, delete, allocate, then commit.
    let remaining = (ops & 3) + 1;
    for i in 0..u64::from(remaining) * 5 {
        pool.map(i % 2, i * 7)?;
        let _ = pool.remove(0, i * 8);
    }
    if ops & 4 != 0 {
        pool.create_snap(7, 0)?;
        pool.delete(1)?;
        pool.remove_range(0, 0, 64)?;
    }
    if ops & 8 != 0 {
        let _ = pool.release_metadata_snap();
        let _ = pool.reserve_metadata_snap();
    }
    pool.create_thin(9)?;
    pool.tm.sm_new_block().and_then(|b| pool.tm.dec(b))?;
    pool.commit()?;
    drop(pool);
    // Whatever was committed must still check without panicking.
    let _ = checker::check(io.clone(), Some(Format::Thin));
    Ok(())
}
