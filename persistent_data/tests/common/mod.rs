//! A miniature thin pool over the engine, used by the host tests: a
//! two-level mapping tree `[dev, vblock] -> data block` whose values hold
//! references in a disk space map, device snapshots by root sharing, and a
//! test superblock at block 0.

#![allow(dead_code)]

use persistent_data::block_manager::{BlockManager, CsumValidator, WriteBlock};
use persistent_data::btree::{self, ValueType};
use persistent_data::check::RefCounts;
use persistent_data::io::mem::MemIo;
use persistent_data::io::BlockIo;
use persistent_data::space_map::{DiskSpaceMap, MetadataSpaceMap, SmRoot, SpaceMap};
use persistent_data::transaction_manager::{with_runs, TransactionManager};
use persistent_data::{Error, Result};
use std::collections::BTreeMap;

pub static SB_VALIDATOR: CsumValidator = CsumValidator {
    name: "test_superblock",
    xor: 0x5eed,
    blocknr_offset: 8,
};

/// Data block values: each holds a reference in the data space map.
pub struct DataRefs<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for DataRefs<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        with_runs(v, |b, e| self.0.inc_range(tm, b, e))
    }
    fn dec(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        with_runs(v, |b, e| self.0.dec_range(tm, b, e))
    }
}

/// Top-level values: device mapping trees (dec deletes the tree).
pub struct DevTrees<'a>(pub &'a mut DiskSpaceMap);

impl<IO: BlockIo> ValueType<IO> for DevTrees<'_> {
    fn size(&self) -> usize {
        8
    }
    fn inc(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        with_runs(v, |b, e| tm.inc_range(b, e))
    }
    fn dec(&mut self, tm: &mut TransactionManager<IO>, v: &[u8]) -> Result<()> {
        for c in v.chunks_exact(8) {
            let root = u64::from_le_bytes(c.try_into().unwrap());
            btree::del(tm, &mut DataRefs(self.0), root, 1)?;
        }
        Ok(())
    }
}

pub type Model = BTreeMap<u64, BTreeMap<u64, u64>>;

pub struct Pool {
    pub io: MemIo,
    pub tm: TransactionManager<MemIo>,
    pub data: DiskSpaceMap,
    pub root: u64,
    pub nr_data: u64,
}

const OFF_META_SM: usize = 64;
const OFF_DATA_SM: usize = 128;
const OFF_ROOT: usize = 192;

impl Pool {
    pub fn format(nr_meta: u64, nr_data: u64) -> Pool {
        let io = MemIo::new(nr_meta);
        let bm = BlockManager::new(io.clone(), 64);
        let mut tm = TransactionManager::create(bm, 0).unwrap();
        let data = DiskSpaceMap::create(&mut tm, nr_data).unwrap();
        let root = btree::empty(&mut tm, 8).unwrap();
        let mut p = Pool {
            io,
            tm,
            data,
            root,
            nr_data,
        };
        p.commit().unwrap();
        p
    }

    pub fn open(io: MemIo) -> Result<Pool> {
        let bm = BlockManager::new(io.clone(), 64);
        let sb = bm.read_copy(0, Some(&SB_VALIDATOR))?;
        let tm = TransactionManager::open(bm, &sb[OFF_META_SM..OFF_META_SM + 32])?;
        let data = DiskSpaceMap::open(&sb[OFF_DATA_SM..OFF_DATA_SM + 32])?;
        let root = u64::from_le_bytes(sb[OFF_ROOT..OFF_ROOT + 8].try_into().unwrap());
        let nr_data = SmRoot::unpack(&sb[OFF_DATA_SM..]).unwrap().nr_blocks;
        Ok(Pool {
            io,
            tm,
            data,
            root,
            nr_data,
        })
    }

    pub fn commit(&mut self) -> Result<()> {
        SpaceMap::commit(&mut self.data, &mut self.tm)?;
        self.tm.pre_commit()?;
        let sb = self.new_superblock()?;
        self.tm.commit(sb)
    }

    /// Like [`Self::commit`] but without `pre_commit`'s flush: every block
    /// of the transaction is still dirty when `commit` gets the superblock.
    pub fn commit_without_pre_flush(&mut self) -> Result<()> {
        SpaceMap::commit(&mut self.data, &mut self.tm)?;
        self.tm.sm_commit()?;
        let sb = self.new_superblock()?;
        self.tm.commit(sb)
    }

    fn new_superblock(&mut self) -> Result<WriteBlock> {
        let mut sb: WriteBlock = self.tm.bm_mut().write_lock_zero(0, Some(&SB_VALIDATOR))?;
        let r = (|| {
            self.tm
                .sm_copy_root(&mut sb[OFF_META_SM..OFF_META_SM + 32])?;
            self.data
                .copy_root(&self.tm, &mut sb[OFF_DATA_SM..OFF_DATA_SM + 32])
        })();
        if let Err(e) = r {
            self.tm.unlock(sb);
            return Err(e);
        }
        sb[OFF_ROOT..OFF_ROOT + 8].copy_from_slice(&self.root.to_le_bytes());
        Ok(sb)
    }

    /// Maps `[dev, vb]` to a fresh data block; returns it.
    pub fn map(&mut self, dev: u64, vb: u64) -> Result<u64> {
        let b = self.data.new_block(&mut self.tm)?;
        self.root = btree::insert(
            &mut self.tm,
            &mut DataRefs(&mut self.data),
            self.root,
            &[dev, vb],
            &b.to_le_bytes(),
        )?;
        Ok(b)
    }

    pub fn unmap(&mut self, dev: u64, vb: u64) -> Result<()> {
        self.root = btree::remove(
            &mut self.tm,
            &mut DataRefs(&mut self.data),
            self.root,
            &[dev, vb],
        )?;
        Ok(())
    }

    pub fn lookup(&self, dev: u64, vb: u64) -> Result<u64> {
        let mut v = [0u8; 8];
        btree::lookup(&self.tm, self.root, &[dev, vb], &mut v)?;
        Ok(u64::from_le_bytes(v))
    }

    /// Root of `dev`'s mapping tree.
    pub fn dev_root(&self, dev: u64) -> Result<u64> {
        let mut v = [0u8; 8];
        btree::lookup(&self.tm, self.root, &[dev], &mut v)?;
        Ok(u64::from_le_bytes(v))
    }

    /// `dst` becomes a snapshot of `src` (sharing its tree).
    pub fn snapshot(&mut self, src: u64, dst: u64) -> Result<()> {
        let r = self.dev_root(src)?;
        self.tm.inc(r)?;
        self.root = btree::insert(
            &mut self.tm,
            &mut DevTrees(&mut self.data),
            self.root,
            &[dst],
            &r.to_le_bytes(),
        )?;
        Ok(())
    }

    pub fn delete_dev(&mut self, dev: u64) -> Result<()> {
        self.root = btree::remove(
            &mut self.tm,
            &mut DevTrees(&mut self.data),
            self.root,
            &[dev],
        )?;
        Ok(())
    }

    /// Everything mapped, by device.
    pub fn contents(&self) -> Result<Model> {
        let mut devs = Vec::new();
        btree::walk(&self.tm, self.root, &mut |k, v| {
            devs.push((k, u64::from_le_bytes(v.try_into().unwrap())));
            Ok(())
        })?;
        let mut m = Model::new();
        for (dev, r) in devs {
            let mut e = BTreeMap::new();
            btree::walk(&self.tm, r, &mut |k, v| {
                e.insert(k, u64::from_le_bytes(v.try_into().unwrap()));
                Ok(())
            })?;
            m.insert(dev, e);
        }
        Ok(m)
    }

    /// Recounts every metadata and data block reference and compares with
    /// both space maps. Call right after a commit or open.
    pub fn check_counts(&self) -> std::result::Result<(), String> {
        let nr = self.tm.sm_nr_blocks();
        let mut meta = RefCounts::new(nr).unwrap();
        let mut data = RefCounts::new(self.nr_data).unwrap();
        meta.inc(0).unwrap();
        meta.count_metadata_sm(&self.tm, &self.tm.sm_root())
            .map_err(|e| format!("walk msm: {e}"))?;
        meta.count_disk_sm(&self.tm, &self.data.root(&self.tm))
            .map_err(|e| format!("walk dsm: {e}"))?;
        meta.count_btree(&self.tm, self.root, 2, &mut |_, vals| {
            for c in vals.chunks_exact(8) {
                data.inc(u64::from_le_bytes(c.try_into().unwrap()))?;
            }
            Ok(())
        })
        .map_err(|e| format!("walk mapping: {e}"))?;
        let mm = meta
            .verify(&self.tm, &MetadataSpaceMap)
            .map_err(|e| format!("verify meta: {e}"))?;
        if !mm.is_empty() {
            return Err(format!(
                "metadata count mismatches: {:?}",
                &mm[..mm.len().min(10)]
            ));
        }
        let dm = data
            .verify(&self.tm, &self.data)
            .map_err(|e| format!("verify data: {e}"))?;
        if !dm.is_empty() {
            return Err(format!(
                "data count mismatches: {:?}",
                &dm[..dm.len().min(10)]
            ));
        }
        if self.tm.bm().nr_write_locks() != 0 {
            return Err("write locks leaked".into());
        }
        if self.tm.bm().leaked_write_locks() != 0 {
            return Err("write locks dropped without unlock".into());
        }
        Ok(())
    }
}

pub fn is_nospace(e: &Error) -> bool {
    *e == Error::NoSpace
}
