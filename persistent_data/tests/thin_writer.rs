//! Thin metadata written by the engine (`checker::thin_writer`, which
//! drives it as `dm-thin-metadata.c` does), judged by upstream's tools:
//! `thin_check` must accept it, `thin_dump` must read back exactly the
//! mappings written, and `pdata-check` must find no damage and no leak.
//! The C dm-thin reading such metadata is guest test 41.

mod common;

#[path = "common/thin_dump.rs"]
mod thin_dump;
#[path = "common/tools.rs"]
mod tools;

use common::{check, format, open, reopen, Mappings, Pool};
use persistent_data::btree;
use persistent_data::btree::node::{self, BTREE_NODE_VALIDATOR};
use persistent_data::checker::thin::ThinSuperblock;
use persistent_data::io::mem::MemIo;
use persistent_data::Error;
use thin_dump::{num, parse_dump, XmlDump};
use tools::{check_bytes, upstream};

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The devices and data blocks of a dump, as a model.
fn dumped(d: &XmlDump) -> Mappings {
    d.devs
        .iter()
        .map(|(&dev, x)| (dev, x.map.iter().map(|(&vb, &(b, _))| (vb, b)).collect()))
        .collect()
}

/// `thin_check`, `pdata-check` and `thin_dump` on what `io` holds: clean,
/// and the dump (of the live trees, or with `-m` of the metadata
/// snapshot) equals `live` and `held`.
fn upstream_agrees(io: &MemIo, p: &mut Pool, live: &Mappings, held: Option<&Mappings>) {
    let img = io.image();
    assert_eq!(upstream("thin_check", &img), 0, "thin_check rejects it");
    let (code, out) = check_bytes("engine.img", &img);
    assert_eq!((code, out.as_str()), (0, ""), "pdata-check");
    let dump = parse_dump(&tools::thin_dump(&img, &[]).expect("thin_dump"));
    assert!(&dumped(&dump) == live, "thin_dump reads other mappings");
    for (dev, x) in &dump.devs {
        let d = p.details(*dev).unwrap();
        assert_eq!(x.mapped_blocks, d.mapped_blocks, "device {dev}");
        assert_eq!(x.mapped_blocks, live[dev].len() as u64, "device {dev}");
        assert_eq!(x.creation_time, d.creation_time, "device {dev}");
        assert_eq!(x.snap_time, d.snapshotted_time, "device {dev}");
    }
    assert_eq!(num::<u32>(&dump.attrs, "time"), p.time());
    let snap = tools::thin_dump(&img, &["-m"]);
    match held {
        Some(h) => {
            let snap = parse_dump(&snap.expect("thin_dump -m reads the metadata snapshot"));
            assert!(&dumped(&snap) == h, "thin_dump -m reads other mappings");
        }
        None => assert!(snap.is_none(), "thin_dump -m found a metadata snapshot"),
    }
}

/// dm-thin's `reserve_metadata_snap` and `release_metadata_snap`: the
/// superblock is shadowed into a copy that holds the trees as they were,
/// whatever the live trees do next, until it is released.
#[test]
fn metadata_snapshot_reserve_and_release() {
    let (io, mut p) = format(4096, 100_000);
    p.create_thin(0).unwrap();
    let mut live = Mappings::new();
    let m = live.entry(0).or_default();
    for vb in 0..5000u64 {
        m.insert(vb * 2, p.map(0, vb * 2).unwrap());
    }
    p.create_snap(1, 0).unwrap();
    live.insert(1, live[&0].clone());
    p.commit().unwrap();
    let base = check(&io, &p).unwrap().meta_in_use().len();

    let held_root = p.reserve_metadata_snap().unwrap();
    let held = live.clone();
    assert_ne!(held_root, 0);
    assert_eq!(p.reserve_metadata_snap(), Err(Error::Busy));
    // The live trees move on: a range removed, overwrites, a new device,
    // a deleted one.
    assert_eq!(p.remove_range(0, 1000, 6000).unwrap(), 2500);
    live.get_mut(&0)
        .unwrap()
        .retain(|&vb, _| !(1000..6000).contains(&vb));
    for vb in (0..10_000u64).step_by(7) {
        live.get_mut(&1).unwrap().insert(vb, p.map(1, vb).unwrap());
    }
    p.create_thin(2).unwrap();
    live.insert(2, (0..300).map(|vb| (vb, p.map(2, vb).unwrap())).collect());
    p.commit().unwrap();
    check(&io, &p).unwrap();
    let sb = ThinSuperblock::parse(&io.image()[..4096].try_into().unwrap());
    assert_eq!(sb.held_root, held_root);
    assert_eq!(p.held_mappings().unwrap(), held);
    upstream_agrees(&io, &mut p, &live, Some(&held));
    p.delete(0).unwrap();
    live.remove(&0);
    p.commit().unwrap();
    let mut p = reopen(&io, p);
    assert_eq!(p.held_mappings().unwrap(), held);
    upstream_agrees(&io, &mut p, &live, Some(&held));

    // Released: the copy and what only it held are freed.
    p.release_metadata_snap().unwrap();
    assert_eq!(p.release_metadata_snap(), Err(Error::Invalid));
    p.commit().unwrap();
    check(&io, &p).unwrap();
    upstream_agrees(&io, &mut p, &live, None);
    // With the live trees back to the base shape, so is the footprint.
    for d in [1, 2] {
        p.delete(d).unwrap();
    }
    p.create_thin(0).unwrap();
    for vb in 0..5000u64 {
        p.map(0, vb * 2).unwrap();
    }
    p.create_snap(1, 0).unwrap();
    p.commit().unwrap();
    p.commit().unwrap();
    let r = check(&io, &p).unwrap();
    let used = r.meta_in_use().len();
    assert!(used <= base + 4, "{used} blocks in use, {base} before");
}

/// Levels of `dev`'s mapping tree.
fn depth(p: &Pool, dev: u64) -> usize {
    let mut v = [0u8; 8];
    btree::lookup(&p.tm, p.mapping_root(), &[dev], &mut v).unwrap();
    let mut b = u64::from_le_bytes(v);
    for depth in 1.. {
        let d = p.tm.read_lock(b, &BTREE_NODE_VALIDATOR).unwrap();
        if node::header(&d[..]).unwrap().is_leaf() {
            return depth;
        }
        b = node::value64(&d[..], 0).unwrap();
    }
    unreachable!()
}

/// A long history: several devices (one with a three-level tree),
/// snapshots of snapshots, overwrites that break sharing, single and
/// range removals that empty much of a tree (leaves and internal nodes
/// rebalance), device deletes, metadata snapshots, hundreds of commits.
/// The engine's recount matches after every commit; upstream's tools
/// agree at checkpoints and at the end.
#[test]
fn long_history_is_accepted_by_thin_check() {
    let (io, mut p) = format(8192, 600_000);
    let mut live = Mappings::new();
    let mut held: Option<Mappings> = None;
    let mut s = 0x5eed_u64;
    let vblocks = 300_000u64;
    // Device 0, filled in random order, is deep and stays.
    p.create_thin(0).unwrap();
    let m = live.entry(0).or_default();
    for _ in 0..120_000 {
        let vb = xorshift(&mut s) % vblocks;
        m.insert(vb, p.map(0, vb).unwrap());
    }
    p.commit().unwrap();
    assert!(
        depth(&p, 0) >= 3,
        "device 0 is {} levels deep",
        depth(&p, 0)
    );
    // How often each kind of change took effect.
    let mut done = [0u32; 7];
    for commit in 1..=300u32 {
        for _ in 0..xorshift(&mut s) % 6 + 1 {
            let dev = xorshift(&mut s) % 5;
            let vb = xorshift(&mut s) % vblocks;
            match xorshift(&mut s) % 100 {
                0..=44 => {
                    let m = live.entry(dev).or_insert_with(|| {
                        p.create_thin(dev).unwrap();
                        Default::default()
                    });
                    let n = xorshift(&mut s) % 3000 + 1;
                    for x in vb..(vb + n).min(vblocks) {
                        m.insert(x, p.map(dev, x).unwrap());
                    }
                    done[0] += 1;
                }
                45..=64 => {
                    let Some(m) = live.get_mut(&dev) else {
                        continue;
                    };
                    for _ in 0..300 {
                        let x = xorshift(&mut s) % vblocks;
                        match p.remove(dev, x) {
                            Ok(()) => {
                                assert!(m.remove(&x).is_some());
                                done[1] += 1;
                            }
                            Err(Error::NoData) => assert!(!m.contains_key(&x)),
                            Err(e) => panic!("remove: {e}"),
                        }
                    }
                }
                65..=79 => {
                    let Some(m) = live.get_mut(&dev) else {
                        continue;
                    };
                    let n = xorshift(&mut s) % 30_000;
                    let gone = p.remove_range(dev, vb, vb + n).unwrap();
                    let before = m.len();
                    m.retain(|&x, _| !(vb..vb + n).contains(&x));
                    assert_eq!(gone, (before - m.len()) as u64);
                    done[2] += u32::from(gone > 0);
                }
                80..=89 => {
                    let origin = xorshift(&mut s) % 5;
                    if live.contains_key(&origin) && !live.contains_key(&dev) {
                        p.create_snap(dev, origin).unwrap();
                        live.insert(dev, live[&origin].clone());
                        done[3] += 1;
                    }
                }
                90..=94 => {
                    if dev != 0 && live.remove(&dev).is_some() {
                        p.delete(dev).unwrap();
                        done[4] += 1;
                    }
                }
                _ => {
                    if held.take().is_some() {
                        p.release_metadata_snap().unwrap();
                        done[5] += 1;
                    } else {
                        p.reserve_metadata_snap().unwrap();
                        held = Some(live.clone());
                        done[6] += 1;
                    }
                }
            }
        }
        p.commit().unwrap();
        check(&io, &p).unwrap_or_else(|e| panic!("commit {commit}: {e}"));
        if commit % 100 == 0 {
            p = reopen(&io, p);
            assert!(p.mappings().unwrap() == live, "commit {commit}");
            upstream_agrees(&io, &mut p, &live, held.as_ref());
        }
    }
    // Maps, removals, range removals, snapshots, deletes, releases and
    // reserves all happened, many times.
    assert!(done.iter().all(|&n| n >= 5), "{done:?}");
    let p = open(&io).unwrap();
    assert!(p.mappings().unwrap() == live);
}
