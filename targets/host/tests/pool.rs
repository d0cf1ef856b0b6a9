//! The pool metadata API, call by call: upstream's semantics and errors,
//! and what reaches the disk.

mod common;

use common::*;

fn thin(p: &mut PoolMetadata<MemIo>, dev: u64) -> ThinDevice {
    p.open_thin_device(dev).unwrap()
}

/// Creates and opens thin device `dev` with `vbs` mapped to fresh blocks.
fn new_thin(p: &mut PoolMetadata<MemIo>, dev: u64, vbs: impl Iterator<Item = u64>) -> ThinDevice {
    p.create_thin(dev).unwrap();
    let td = thin(p, dev);
    for vb in vbs {
        map(p, &td, vb);
    }
    td
}

/// Maps `vb` of `td` to a fresh data block; returns it.
fn map<H: PoolHooks>(p: &mut PoolMetadata<MemIo, H>, td: &ThinDevice, vb: u64) -> u64 {
    let b = p.alloc_data_block().unwrap();
    p.insert_block(td, vb, b).unwrap();
    b
}

#[test]
fn format_writes_upstreams_superblock_and_open_checks_it() {
    let io = MemIo::new(300);
    // A blank device is only formatted when asked (upstream's -EPERM).
    assert_eq!(open(&io).err(), Some(Error::ReadOnly));
    assert_eq!(Error::ReadOnly.to_errno(), -1);
    let bad = OpenOptions {
        data_block_size: 100,
        ..options(true)
    };
    assert_eq!(
        PoolMetadata::open(bm(&io), bad, NoHooks).err(),
        Some(Error::Invalid)
    );
    let mut p = PoolMetadata::open(bm(&io), options(true), NoHooks).unwrap();
    assert_eq!(p.data_dev_size(), Ok(0));
    assert_eq!(p.metadata_dev_size(), Ok(300));
    p.close().unwrap();
    drop(p);
    let c = committed(io.image());
    assert_eq!(c.sb.magic, 27022010);
    assert_eq!(c.sb.version, 2);
    assert_eq!(c.sb.data_block_size, DBS);
    assert_eq!(c.sb.metadata_block_size, 8);
    assert_eq!(c.sb.metadata_nr_blocks, 300);
    assert_eq!(
        (c.sb.time, c.sb.trans_id, c.sb.held_root, c.sb.flags),
        (0, 0, 0, 0)
    );
    assert!(c.devs.is_empty());
    check_all(&io.image());
    // Reopening: the data block size must match.
    let other = OpenOptions {
        data_block_size: 256,
        ..options(false)
    };
    assert_eq!(
        PoolMetadata::open(bm(&io), other, NoHooks).err(),
        Some(Error::Invalid)
    );
    assert!(open(&io).is_ok());
}

/// Rewrites the committed superblock of `io` with `f` applied.
fn patch_superblock(io: &MemIo, f: impl FnOnce(&mut Superblock)) {
    let mut img = io.image();
    let block: &mut [u8; 4096] = (&mut img[..4096]).try_into().unwrap();
    let mut sb = Superblock::unpack(block).unwrap();
    f(&mut sb);
    sb.pack(block).unwrap();
    use persistent_data::block_manager::Validator;
    SUPERBLOCK_VALIDATOR.prepare_for_write(0, block).unwrap();
    io.poke(0, 0, &img[..4096]);
}

#[test]
fn unknown_features_and_sizes_are_refused() {
    let (io, p) = format(100, 64);
    drop(p);
    patch_superblock(&io, |sb| sb.compat_ro_flags = 2);
    assert_eq!(open(&io).err(), Some(Error::Invalid));
    let ro = OpenOptions {
        read_only_device: true,
        ..options(false)
    };
    assert!(PoolMetadata::open(bm(&io), ro, NoHooks).is_ok());
    patch_superblock(&io, |sb| {
        sb.compat_ro_flags = 0;
        sb.incompat_flags = 1;
    });
    assert_eq!(
        PoolMetadata::open(bm(&io), ro, NoHooks).err(),
        Some(Error::Invalid)
    );
    patch_superblock(&io, |sb| {
        sb.incompat_flags = 0;
        sb.metadata_block_size = 16;
    });
    assert_eq!(open(&io).err(), Some(Error::Invalid));
    patch_superblock(&io, |sb| sb.metadata_block_size = 8);
    assert!(open(&io).is_ok());
    // A damaged superblock is refused by its validator.
    io.poke(0, 200, &[0xff]);
    assert_eq!(open(&io).err(), Some(Error::BadChecksum));
}

#[test]
fn device_errors_are_upstreams_and_leave_the_transaction_usable() {
    let (_io, mut p) = format(200, 64);
    p.create_thin(1).unwrap();
    assert_eq!(p.create_thin(1), Err(Error::Exists));
    assert_eq!(Error::Exists.to_errno(), -17);
    assert_eq!(p.create_snap(1, 9), Err(Error::Exists));
    assert_eq!(p.create_snap(2, 9), Err(Error::NoData));
    assert_eq!(Error::NoData.to_errno(), -61);
    assert_eq!(p.delete_thin_device(9), Err(Error::NoData));
    assert_eq!(p.open_thin_device(9), Err(Error::NoData));
    let td = thin(&mut p, 1);
    assert_eq!(p.delete_thin_device(1), Err(Error::Busy));
    assert_eq!(p.find_block(&td, 5, true), Err(Error::NoData));
    assert_eq!(p.remove_block(&td, 5), Err(Error::NoData));
    assert_eq!(p.find_mapped_range(&td, 0, 100), Err(Error::NoData));
    assert_eq!(p.highest_mapped_block(&td), Err(Error::NoData));
    assert_eq!(p.insert_block(&td, 0, 1 << 40), Err(Error::Invalid));
    assert_eq!(p.set_transaction_id(5, 6), Err(Error::Invalid));
    assert_eq!(p.release_metadata_snap(), Err(Error::Invalid));
    assert_eq!(p.resize_data_dev(10), Err(Error::Invalid));
    assert!(!p.is_poisoned());
    assert_eq!(p.close(), Err(Error::Busy));
    p.close_thin_device(td);
    p.commit().unwrap();
    // The device created after the last commit is there on reopen.
    p.close().unwrap();
}

#[test]
fn snapshots_share_what_was_mapped_before_them() {
    let (io, mut p) = format(400, 256);
    p.set_transaction_id(0, 1).unwrap();
    p.create_thin(0).unwrap();
    let origin = thin(&mut p, 0);
    let a: Vec<u64> = (0..10).map(|vb| map(&mut p, &origin, vb)).collect();
    assert_eq!(p.time(), 0);
    assert!(!p.find_block(&origin, 3, true).unwrap().shared);
    p.create_snap(1, 0).unwrap();
    assert_eq!(p.time(), 1);
    let snap = thin(&mut p, 1);
    let d = p.device_details(&snap).unwrap();
    assert_eq!(
        d,
        DeviceDetails {
            mapped_blocks: 10,
            transaction_id: 1,
            creation_time: 1,
            snapshotted_time: 1
        }
    );
    assert_eq!(p.device_details(&origin).unwrap().snapshotted_time, 1);
    for vb in 0..10 {
        for td in [&origin, &snap] {
            let l = p.find_block(td, vb, true).unwrap();
            assert_eq!(
                l,
                LookupResult {
                    block: a[vb as usize],
                    shared: true
                }
            );
        }
    }
    // Breaking sharing on the snapshot: a new block, not shared; the
    // origin keeps its old one (still marked shared: upstream's rule is by
    // time, not by count).
    let b = map(&mut p, &snap, 4);
    assert_eq!(
        p.find_block(&snap, 4, true).unwrap(),
        LookupResult {
            block: b,
            shared: false
        }
    );
    assert_eq!(p.find_block(&origin, 4, true).unwrap().block, a[4]);
    assert!(p.block_is_shared(a[3]).unwrap());
    assert!(!p.block_is_shared(b).unwrap());
    // A snapshot of the snapshot: time moves on again.
    p.create_snap(2, 1).unwrap();
    let snap2 = thin(&mut p, 2);
    assert_eq!(p.device_details(&snap2).unwrap().creation_time, 2);
    assert_eq!(
        p.find_block(&snap2, 4, true).unwrap(),
        LookupResult {
            block: b,
            shared: true
        }
    );
    // mapped_blocks counts a remap once.
    assert_eq!(p.mapped_count(&snap).unwrap(), 10);
    let r = p.find_mapped_range(&snap2, 0, 100).unwrap();
    assert_eq!((r.thin_begin, r.thin_end, r.maybe_shared), (0, 4, true));
    assert_eq!(r.pool_begin, a[0]);
    // The range stops at the remapped block.
    assert_eq!(p.find_mapped_range(&snap2, 4, 100).unwrap().thin_end, 5);
    for td in [origin, snap, snap2] {
        p.close_thin_device(td);
    }
    p.commit().unwrap();
    drop(p);
    let c = committed(io.image());
    assert_eq!(c.sb.time, 2);
    assert_eq!(c.devs[&1].map[&4], (b, 1));
    assert_eq!(c.devs[&2].details.snapshotted_time, 2);
    assert_eq!(c.devs[&1].details.snapshotted_time, 2);
    check_all(&io.image());
}

#[test]
fn deleting_and_unmapping_give_data_blocks_back() {
    let (io, mut p) = format(400, 512);
    let td = new_thin(&mut p, 7, (0..300).map(|vb| vb * 2));
    p.commit().unwrap();
    assert_eq!(p.free_data_blocks(), Ok(212));
    p.create_snap(8, 7).unwrap();
    // Unmapping from the origin frees nothing the snapshot still maps.
    assert_eq!(p.remove_range(&td, 100, 300), Ok(100));
    assert_eq!(p.mapped_count(&td), Ok(200));
    assert_eq!(p.remove_range(&td, 100, 300), Ok(0));
    p.remove_block(&td, 0).unwrap();
    p.commit().unwrap();
    assert_eq!(p.free_data_blocks(), Ok(212));
    // Deleting the snapshot frees the blocks only it still mapped.
    p.delete_thin_device(8).unwrap();
    p.commit().unwrap();
    assert_eq!(p.free_data_blocks(), Ok(212 + 101));
    check_all(&io.image());
    // And the origin's last ones with it.
    p.close_thin_device(td);
    p.delete_thin_device(7).unwrap();
    p.commit().unwrap();
    assert_eq!(p.free_data_blocks(), Ok(512));
    check_all(&io.image());
}

#[test]
fn data_space_runs_out_cleanly_and_grows() {
    let (io, mut p) = format(200, 8);
    let td = new_thin(&mut p, 0, 0..8);
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace));
    assert_eq!(Error::NoSpace.to_errno(), -28);
    assert!(!p.is_poisoned());
    p.commit().unwrap();
    // Blocks freed in a transaction are not reused before it commits.
    p.remove_range(&td, 0, 2).unwrap();
    assert_eq!(p.free_data_blocks(), Ok(2));
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace));
    p.commit().unwrap();
    map(&mut p, &td, 0);
    p.resize_data_dev(100).unwrap();
    assert_eq!(p.resize_data_dev(99), Err(Error::Invalid));
    p.commit().unwrap();
    assert_eq!(p.data_dev_size(), Ok(100));
    assert_eq!(p.free_data_blocks(), Ok(93));
    for vb in 10..50 {
        map(&mut p, &td, vb);
    }
    p.close_thin_device(td);
    p.commit().unwrap();
    check_all(&io.image());
}

#[test]
fn metadata_device_grows_across_bitmaps() {
    // 6000 blocks now, 40000 later: past the first bitmap's 16320.
    let (small, p) = format(6000, 1 << 16);
    drop(p);
    let mut img = small.image();
    img.resize(40000 * 4096, 0);
    let io = MemIo::from_image(img);
    let mut p = open(&io).unwrap();
    assert_eq!(p.metadata_dev_size(), Ok(6000));
    assert_eq!(p.resize_metadata_dev(5000), Err(Error::Invalid));
    assert_eq!(p.resize_metadata_dev(40001), Err(Error::Invalid));
    let free = p.free_metadata_blocks().unwrap();
    p.resize_metadata_dev(40000).unwrap();
    p.commit().unwrap();
    assert_eq!(p.metadata_dev_size(), Ok(40000));
    // The reserve grew too: a tenth of the device, at most 4096 blocks.
    assert!(p.free_metadata_blocks().unwrap() > free + 34000 - 4096 + 600);
    // Fill it well past the old end.
    p.create_thin(0).unwrap();
    let td = thin(&mut p, 0);
    for vb in 0..60000 {
        map(&mut p, &td, vb * 300);
        if vb % 10000 == 0 {
            p.commit().unwrap();
        }
    }
    p.close_thin_device(td);
    p.commit().unwrap();
    drop(p);
    let c = committed(io.image());
    assert_eq!(c.sb.metadata_nr_blocks, 6000, "written at format only");
    assert_eq!(c.devs[&0].map.len(), 60000);
    check_all(&io.image());
}

#[derive(Default)]
struct Counting {
    low: u32,
    commits: u32,
    fail_commit: bool,
}

impl PoolHooks for Counting {
    fn pre_commit(&mut self) -> Result<(), Error> {
        self.commits += 1;
        if self.fail_commit {
            return Err(Error::Io);
        }
        Ok(())
    }
    fn metadata_low(&mut self) {
        self.low += 1;
    }
}

#[test]
fn metadata_threshold_fires_once_per_crossing_and_survives_abort() {
    let io = MemIo::new(1000);
    let mut p = PoolMetadata::open(bm(&io), options(true), Counting::default()).unwrap();
    p.resize_data_dev(1 << 20).unwrap();
    p.commit().unwrap();
    let free = p.free_metadata_blocks().unwrap() + 100;
    p.register_metadata_threshold(free - 40).unwrap();
    p.create_thin(0).unwrap();
    p.commit().unwrap();
    let td = p.open_thin_device(0).unwrap();
    let mut vb = 0;
    while p.hooks_mut().low == 0 {
        map(&mut p, &td, vb * 1000);
        vb += 1;
        assert!(vb < 100_000, "threshold never fired");
    }
    for _ in 0..2000 {
        map(&mut p, &td, vb * 1000);
        vb += 1;
    }
    assert_eq!(p.hooks_mut().low, 1);
    // After an abort the space is back above the threshold, and crossing
    // it again fires again.
    p.abort().unwrap();
    vb = 0;
    while p.hooks_mut().low == 1 {
        map(&mut p, &td, vb * 1000);
        vb += 1;
        assert!(vb < 100_000, "threshold lost in the abort");
    }
    p.close_thin_device(td);
}

#[test]
fn pre_commit_hook_runs_first_and_can_stop_the_commit() {
    let io = MemIo::new(200);
    let mut p = PoolMetadata::open(bm(&io), options(true), Counting::default()).unwrap();
    // Nothing in service yet: no commit, no hook.
    p.commit().unwrap();
    assert_eq!(p.hooks_mut().commits, 0);
    p.create_thin(3).unwrap();
    p.hooks_mut().fail_commit = true;
    let before = io.image();
    assert_eq!(p.commit(), Err(Error::Io));
    assert!(io.image() == before, "a refused commit wrote");
    assert!(!p.is_poisoned());
    p.hooks_mut().fail_commit = false;
    p.commit().unwrap();
    assert_eq!(p.hooks_mut().commits, 2);
    drop(p);
    assert!(committed(io.image()).devs.contains_key(&3));
}

#[test]
fn transaction_id_is_compare_and_swap() {
    let (io, mut p) = format(100, 10);
    assert_eq!(p.transaction_id(), Ok(0));
    p.set_transaction_id(0, 5).unwrap();
    assert_eq!(p.set_transaction_id(0, 6), Err(Error::Invalid));
    p.create_thin(1).unwrap();
    p.commit().unwrap();
    drop(p);
    let c = committed(io.image());
    assert_eq!(c.sb.trans_id, 5);
    assert_eq!(c.devs[&1].details.transaction_id, 5);
}

#[test]
fn needs_check_is_written_at_once_and_cleared_by_a_commit() {
    let (io, mut p) = format(100, 10);
    assert!(!p.needs_check());
    p.set_needs_check().unwrap();
    assert!(p.needs_check());
    // Written in place, before any commit: a teardown writes it back.
    drop(p);
    assert_eq!(committed(io.image()).sb.flags, 1);
    let mut p = open(&io).unwrap();
    assert!(p.needs_check());
    // An abort does not undo it.
    p.create_thin(1).unwrap();
    p.abort().unwrap();
    assert!(p.needs_check());
    p.clear_needs_check().unwrap();
    p.commit().unwrap();
    drop(p);
    assert!(!open(&io).unwrap().needs_check());
    check_all(&io.image());
}

#[test]
fn read_only_mode_refuses_changes_without_poisoning() {
    let (io, mut p) = format(100, 10);
    p.create_thin(1).unwrap();
    p.commit().unwrap();
    p.set_read_only();
    assert!(p.is_read_only());
    assert_eq!(p.create_thin(2), Err(Error::ReadOnly));
    assert_eq!(p.alloc_data_block(), Err(Error::ReadOnly));
    let td = thin(&mut p, 1);
    assert_eq!(p.find_block(&td, 0, true), Err(Error::NoData));
    assert!(!p.is_poisoned());
    p.set_read_write();
    map(&mut p, &td, 0);
    p.close_thin_device(td);
    p.commit().unwrap();
    check_all(&io.image());
}

#[test]
fn non_blocking_lookup_reads_only_cached_metadata() {
    let (io, mut p) = format(400, 4096);
    let td = new_thin(&mut p, 1, 0..2000);
    p.close_thin_device(td);
    p.commit().unwrap();
    drop(p);
    // A fresh pool has nothing cached but what opening the device read.
    let mut p = open(&io).unwrap();
    let td = thin(&mut p, 1);
    io.model_cache(true);
    io.drop_cache();
    assert_eq!(p.find_block(&td, 1500, false), Err(Error::WouldBlock));
    assert_eq!(Error::WouldBlock.to_errno(), -11);
    let l = p.find_block(&td, 1500, true).unwrap();
    assert_eq!(p.find_block(&td, 1500, false), Ok(l));
    p.issue_prefetches();
    p.close_thin_device(td);
}

#[test]
fn a_failed_change_poisons_until_abort_which_restores_the_last_commit() {
    let (io, mut p) = format(300, 4096);
    let td = new_thin(&mut p, 1, 0..500);
    p.commit().unwrap();
    let good = io.image();
    p.create_thin(2).unwrap();
    let new = thin(&mut p, 2);
    map(&mut p, &new, 0);
    // The small cache writes back mid-operation; make that fail.
    io.fail_writes_after(Some(0));
    let mut failed = None;
    for vb in 500..5000 {
        if let Err(e) = p
            .alloc_data_block()
            .and_then(|b| p.insert_block(&td, vb, b))
        {
            failed = Some(e);
            break;
        }
    }
    assert_eq!(failed, Some(Error::Io));
    io.clear_faults();
    assert!(p.is_poisoned());
    assert_eq!(p.commit(), Err(Error::Poisoned));
    assert_eq!(p.create_thin(3), Err(Error::Poisoned));
    assert_eq!(Error::Poisoned.to_errno(), -22);
    p.abort().unwrap();
    assert!(!p.is_poisoned());
    assert!(p.thin_aborted_changes(&td));
    // The open device is back to its committed state; the one created in
    // the aborted transaction is gone.
    assert_eq!(p.mapped_count(&td), Ok(500));
    assert_eq!(p.find_block(&td, 600, true), Err(Error::NoData));
    assert_eq!(p.find_block(&new, 0, true), Err(Error::NoData));
    assert_eq!(p.insert_block(&new, 0, 1), Err(Error::NoData));
    p.close_thin_device(new);
    p.close_thin_device(td);
    p.commit().unwrap();
    drop(p);
    let c = committed(io.image());
    assert_eq!(c.devs, committed(good).devs);
    check_all(&io.image());
}

#[test]
fn metadata_snapshot_holds_the_trees_as_they_were() {
    let (io, mut p) = format(400, 1024);
    let td = new_thin(&mut p, 1, 0..400);
    p.reserve_metadata_snap().unwrap();
    assert_eq!(p.reserve_metadata_snap(), Err(Error::Busy));
    let held = p.metadata_snap().unwrap();
    assert_ne!(held, 0);
    // The live trees move on.
    p.remove_range(&td, 0, 200).unwrap();
    for vb in 1000..1100 {
        map(&mut p, &td, vb);
    }
    p.commit().unwrap();
    let c = committed(io.image());
    assert_eq!(c.sb.held_root, held);
    let h = c.held.unwrap();
    assert_eq!(h[&1].map.len(), 400);
    assert_eq!(h[&1].details.mapped_blocks, 400);
    assert_eq!(c.devs[&1].map.len(), 300);
    check_all(&io.image());
    let dump = common::thin_dump::parse_dump(&tools::thin_dump(&io.image(), &["-m"]));
    assert_eq!(dump.devs[&1].map, h[&1].map);
    // Released: what only the snapshot held is free again.
    let free = p.free_data_blocks().unwrap();
    p.release_metadata_snap().unwrap();
    assert_eq!(p.metadata_snap(), Ok(0));
    p.commit().unwrap();
    assert_eq!(p.free_data_blocks(), Ok(free + 200));
    p.close_thin_device(td);
    drop(p);
    assert_eq!(committed(io.image()).sb.held_root, 0);
    check_all(&io.image());
}

#[test]
fn metadata_exhaustion_poisons_and_abort_recovers() {
    let (io, mut p) = format(64, 60_000);
    let td = new_thin(&mut p, 1, 0..10);
    p.close_thin_device(td);
    p.commit().unwrap();
    let td = p.open_thin_device(1).unwrap();
    let mut vb = 10;
    let err = loop {
        match p
            .alloc_data_block()
            .and_then(|b| p.insert_block(&td, vb, b))
        {
            Ok(()) => vb += 1,
            Err(e) => break e,
        }
        assert!(vb < 1_000_000);
    };
    assert_eq!(err, Error::NoSpace);
    assert!(
        p.is_poisoned(),
        "metadata ran out half way through an insert"
    );
    assert_eq!(p.commit(), Err(Error::Poisoned));
    p.abort().unwrap();
    assert_eq!(p.mapped_count(&td), Ok(10));
    p.close_thin_device(td);
    p.commit().unwrap();
    check_all(&io.image());
}

#[test]
fn abort_rereads_the_last_commit_from_the_device() {
    // Writes fail: the commit fails, the abort rereads the last commit.
    let (io, mut p) = format(100, 100);
    let td = new_thin(&mut p, 1, 0..10);
    p.commit().unwrap();
    map(&mut p, &td, 10);
    io.fail_writes_after(Some(0));
    assert_eq!(p.commit(), Err(Error::Io));
    p.abort().unwrap();
    assert_eq!(p.mapped_count(&td), Ok(10));
    // Reads fail too: the abort must not reopen the superblock still in
    // the cache (upstream resets its block manager), so the pool fails.
    map(&mut p, &td, 11);
    io.fail_device_read_of(0);
    assert_eq!(p.commit(), Err(Error::Io));
    assert_eq!(p.abort(), Err(Error::Io));
    assert!(p.is_failed());
    io.clear_faults();
    drop(p);
    let c = committed(io.image());
    assert_eq!(c.devs[&1].map.len(), 10);
    check_all(&io.image());
}

/// A write breaking sharing, as the pool's worker does it: allocates, and
/// commits (then stops, out of metadata space) once nothing is left
/// outside the metadata reserve; else maps. Returns whether it mapped.
fn provision_or_run_out(p: &mut PoolMetadata<MemIo>, td: &ThinDevice, vb: u64) -> bool {
    let b = p.alloc_data_block().unwrap();
    if p.free_metadata_blocks().unwrap() == 0 {
        p.commit().unwrap();
        if p.free_metadata_blocks().unwrap() == 0 {
            return false;
        }
    }
    p.insert_block(td, vb, b).unwrap();
    true
}

#[test]
fn the_metadata_reserve_leaves_room_to_commit_and_grow() {
    // 121-thin-metadata-exhaustion on the host: 128 metadata blocks, a
    // thin of 1024 blocks, then rounds of a snapshot and four writes that
    // each unshare a mapping leaf, until no metadata is left but the
    // reserve. Every commit succeeds on the way (no NoSpace anywhere).
    let (small, mut p) = format(128, 4096);
    let td = new_thin(&mut p, 0, 0..1024);
    p.commit().unwrap();
    let mut rounds = 0;
    'out: for n in 1..=150u64 {
        p.create_snap(n, 0).unwrap();
        p.commit().unwrap();
        if p.free_metadata_blocks().unwrap() == 0 {
            break;
        }
        for b in [0, 256, 512, 768] {
            if !provision_or_run_out(&mut p, &td, b + n) {
                break 'out;
            }
        }
        rounds = n;
    }
    assert!(rounds > 3 && rounds < 150, "ran out after {rounds} rounds");
    eprintln!("out of metadata space after {rounds} rounds");
    assert_eq!(p.free_metadata_blocks(), Ok(0));
    assert!(!p.is_poisoned());
    p.close_thin_device(td);
    drop(p);
    one_leak_at_most(&small.image());
    // Grown to 256 blocks: writes and snapshots go on.
    let mut img = small.image();
    img.resize(256 * 4096, 0);
    let io = MemIo::from_image(img);
    let mut p = open(&io).unwrap();
    p.resize_metadata_dev(256).unwrap();
    p.commit().unwrap();
    assert!(p.free_metadata_blocks().unwrap() > 64);
    let td = thin(&mut p, 0);
    for vb in 2000..2016 {
        assert!(provision_or_run_out(&mut p, &td, vb));
    }
    p.create_snap(900, 0).unwrap();
    p.close_thin_device(td);
    p.commit().unwrap();
    drop(p);
    one_leak_at_most(&io.image());
}

/// Clean but for the one data block upstream may leak when it runs out of
/// metadata space: allocated and committed, never mapped.
fn one_leak_at_most(image: &[u8]) {
    let report = persistent_data::checker::thin::check(MemIo::from_image(image.to_vec()));
    assert_eq!(report.errors(), 0, "{:#?}", report.problems);
    assert!(report.leaks() <= 1, "{:#?}", report.problems);
    tools::thin_check(image);
}
