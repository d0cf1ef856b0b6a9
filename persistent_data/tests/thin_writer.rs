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

use common::{check, format, reopen, Mappings, Pool};
use persistent_data::btree;
use persistent_data::btree::node::{self, BTREE_NODE_VALIDATOR};
use persistent_data::checker::thin::ThinSuperblock;
use persistent_data::checker::thin_history::{Change, History, Shape};
use persistent_data::io::mem::MemIo;
use persistent_data::Error;
use thin_dump::{num, parse_dump, XmlDump};
use tools::{check_bytes, upstream};

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

/// A long history: several devices (one with a three-level tree in a
/// release build),
/// snapshots of snapshots, overwrites that break sharing, single and
/// range removals that empty much of a tree (leaves and internal nodes
/// rebalance), device deletes, metadata snapshots, hundreds of commits.
/// The engine's recount matches after every commit; upstream's tools
/// agree at checkpoints and at the end.
#[test]
fn long_history_is_accepted_by_thin_check() {
    let (io, mut p) = format(8192, 600_000);
    let shape = Shape {
        devices: 5,
        vblocks: 300_000,
        max_run: 1000,
        unmaps: 50,
        max_range: 8_000,
        max_ops: 4,
    };
    let mut h = History::new(shape, 0x5eed);
    // A debug build reads (checksums) blocks a hundred times slower: it
    // runs a smaller history; the release run (scripts/test) is the full
    // one.
    let (fill, depth_min, commits, least) = if cfg!(debug_assertions) {
        (20_000, 2, 45, 2)
    } else {
        (80_000, 3, 150, 5)
    };
    // Device 0, filled in random order, is deep and stays.
    h.fill(&mut p, 0, fill).unwrap();
    p.commit().unwrap();
    let d = depth(&p, 0);
    assert!(d >= depth_min, "device 0 is {d} levels deep");
    for commit in 1..=commits {
        h.step(&mut p).unwrap();
        p.commit().unwrap();
        check(&io, &p).unwrap_or_else(|e| panic!("commit {commit}: {e}"));
        if commit % (commits / 3) == 0 {
            p = reopen(&io, p);
            assert!(p.mappings().unwrap() == h.live, "commit {commit}");
            upstream_agrees(&io, &mut p, &h.live, h.held.as_ref());
        }
    }
    // Every kind of change took effect, many times.
    for kind in Change::ALL {
        assert!(h.done(kind) >= least, "{kind:?}: {}", h.done(kind));
    }
}

/// `pdata-thin-write`, the tool guest test 41 runs: what it lists is what
/// is in the metadata it wrote (as `thin_dump` reads it), and `verify`
/// accepts a device holding those mappings' data and nothing else.
#[test]
fn pdata_thin_write_lists_what_it_wrote() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (meta, data, maps, thin) = (
        dir.join("ptw-meta"),
        dir.join("ptw-data"),
        dir.join("ptw-maps"),
        dir.join("ptw-thin"),
    );
    let nr_data = 4096u64;
    std::fs::File::create(&meta)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    std::fs::File::create(&data)
        .unwrap()
        .set_len(nr_data << 16)
        .unwrap();
    let tool = |args: &[&std::path::Path]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pdata-thin-write"));
        for a in args {
            c.arg(a);
        }
        c.output().unwrap()
    };
    let p = std::path::Path::new;
    let out = tool(&[p("metadata"), &meta, p(&nr_data.to_string()), p("7")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    std::fs::write(&maps, &text).unwrap();
    let mut listed = Mappings::new();
    let mut vblocks = 0;
    let mut status = "";
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["status", ..] => status = line,
            ["device", d, n] => {
                listed.insert(d.parse().unwrap(), Default::default());
                vblocks = n.parse().unwrap();
            }
            ["map", d, vb, b] => {
                let m = listed.get_mut(&d.parse().unwrap()).unwrap();
                m.insert(vb.parse().unwrap(), b.parse().unwrap());
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    let img = std::fs::read(&meta).unwrap();
    let sb = ThinSuperblock::parse(&img[..4096].try_into().unwrap());
    assert_ne!(sb.held_root, 0);
    assert!(status.starts_with("status 41 "), "{status}");
    assert!(status.ends_with(&format!(" {}", sb.held_root)), "{status}");
    assert!(listed.len() >= 3);
    assert_eq!(upstream("thin_check", &img), 0);
    assert_eq!(check_bytes("ptw.img", &img), (0, String::new()));
    let dump = parse_dump(&tools::thin_dump(&img, &[]).unwrap());
    assert!(dumped(&dump) == listed, "thin_dump reads other mappings");
    assert!(tools::thin_dump(&img, &["-m"]).is_some());

    // A "thin device" made of the data blocks the list names.
    let out = tool(&[p("fill"), &data, &maps]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data_img = std::fs::read(&data).unwrap();
    let (&dev, m) = listed.iter().max_by_key(|(_, m)| m.len()).unwrap();
    let mut dev_img = vec![0u8; vblocks << 16];
    for (&vb, &b) in m {
        let (vb, b) = (vb as usize, b as usize);
        dev_img[vb << 16..(vb + 1) << 16].copy_from_slice(&data_img[b << 16..(b + 1) << 16]);
    }
    std::fs::write(&thin, &dev_img).unwrap();
    let verify = |dev: u64| tool(&[p("verify"), &thin, p(&dev.to_string()), &maps]);
    assert!(verify(dev).status.success());
    // Another device's mappings, or one block moved, do not verify.
    let other = *listed.keys().find(|&&d| listed[&d] != *m).unwrap();
    assert_eq!(verify(other).status.code(), Some(1));
    let (&vb, _) = m.iter().next().unwrap();
    let vb = vb as usize;
    dev_img.copy_within(vb << 16..(vb + 1) << 16, ((vb + 1) % vblocks) << 16);
    std::fs::write(&thin, &dev_img).unwrap();
    let out = verify(dev);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrong"));
    for f in [meta, data, maps, thin] {
        std::fs::remove_file(f).ok();
    }
}
