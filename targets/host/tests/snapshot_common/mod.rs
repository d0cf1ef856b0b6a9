//! A COW device in memory for the snapshot store tests: it logs every
//! write so that a crash can be replayed at any point, with the writes not
//! yet made stable dropped, kept or torn sector by sector.

#![allow(dead_code)]

pub use dm_rs_targets_host::persistent_data::Error;
pub use dm_rs_targets_host::snapshot_store::*;

use std::cell::RefCell;
use std::rc::Rc;

pub const SECTOR: usize = 512;

/// One write as the device saw it.
#[derive(Clone, Debug)]
pub struct Op {
    pub sector: u64,
    pub data: Vec<u8>,
    pub durability: Durability,
}

#[derive(Debug)]
struct State {
    /// What reads see.
    image: Vec<u8>,
    /// The image when the log started.
    base: Vec<u8>,
    log: Vec<Op>,
}

/// A shared handle: the store owns one clone, the test keeps another.
#[derive(Clone, Debug)]
pub struct MemCow(Rc<RefCell<State>>);

impl MemCow {
    pub fn new(sectors: u64) -> Self {
        Self::from_image(vec![0; sectors as usize * SECTOR])
    }

    pub fn from_image(image: Vec<u8>) -> Self {
        MemCow(Rc::new(RefCell::new(State {
            base: image.clone(),
            image,
            log: Vec::new(),
        })))
    }

    pub fn image(&self) -> Vec<u8> {
        self.0.borrow().image.clone()
    }

    /// Writes done since the device was made.
    pub fn ops(&self) -> Vec<Op> {
        self.0.borrow().log.clone()
    }

    pub fn ops_len(&self) -> usize {
        self.0.borrow().log.len()
    }

    /// Grows (or shrinks) the device.
    pub fn resize(&self, sectors: u64) {
        self.0
            .borrow_mut()
            .image
            .resize(sectors as usize * SECTOR, 0);
    }

    /// Reads bytes straight from the image.
    pub fn bytes(&self, at: usize, len: usize) -> Vec<u8> {
        self.0.borrow().image[at..at + len].to_vec()
    }

    /// The image after a crash while op `k` was in flight (ops before it
    /// complete). `keep(op, sector)` decides, for each sector of each write
    /// that was not yet stable, whether it reached the disk; `flushed`
    /// says whether op `k`'s preflush (if it has one) completed.
    pub fn crash_image(
        &self,
        k: usize,
        flushed: bool,
        keep: &mut dyn FnMut(usize, usize) -> bool,
    ) -> Vec<u8> {
        let st = self.0.borrow();
        let mut stable = st.base.clone();
        let mut volatile: Vec<usize> = Vec::new();
        let apply = |img: &mut Vec<u8>, op: &Op| {
            let at = op.sector as usize * SECTOR;
            img[at..at + op.data.len()].copy_from_slice(&op.data);
        };
        for (i, op) in st.log.iter().enumerate().take(k) {
            if op.durability == Durability::Flushed {
                for &v in &volatile {
                    apply(&mut stable, &st.log[v]);
                }
                volatile.clear();
                apply(&mut stable, op);
            } else {
                volatile.push(i);
            }
        }
        let in_flight = st.log.get(k);
        if let Some(op) = in_flight {
            if op.durability == Durability::Plain {
                volatile.push(k);
            } else if flushed {
                // The preflush completed; only then may the write land.
                for &v in &volatile {
                    apply(&mut stable, &st.log[v]);
                }
                volatile.clear();
                volatile.push(k);
            }
        }
        // Volatile writes land (or not) sector by sector, in any order: a
        // later write to the same sector wins only if it landed.
        for &v in &volatile {
            let op = &st.log[v];
            for s in 0..op.data.len() / SECTOR {
                if keep(v, s) {
                    let at = (op.sector as usize + s) * SECTOR;
                    stable[at..at + SECTOR].copy_from_slice(&op.data[s * SECTOR..(s + 1) * SECTOR]);
                }
            }
        }
        stable
    }
}

impl ChunkIo for MemCow {
    type Buf = Vec<u8>;

    fn sectors(&self) -> u64 {
        (self.0.borrow().image.len() / SECTOR) as u64
    }

    fn alloc(&self, len: usize) -> Result<Vec<u8>, Error> {
        assert_eq!(len % SECTOR, 0, "buffers are whole sectors");
        Ok(vec![0; len])
    }

    fn read(&mut self, sector: u64, buf: &mut Vec<u8>) -> Result<(), Error> {
        let st = self.0.borrow();
        let at = sector as usize * SECTOR;
        let src = st.image.get(at..at + buf.len()).ok_or(Error::Io)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &Vec<u8>, durability: Durability) -> Result<(), Error> {
        assert_eq!(buf.len() % SECTOR, 0, "writes are whole sectors");
        let mut st = self.0.borrow_mut();
        let at = sector as usize * SECTOR;
        st.image
            .get_mut(at..at + buf.len())
            .ok_or(Error::Io)?
            .copy_from_slice(buf);
        st.log.push(Op {
            sector,
            data: buf.to_vec(),
            durability,
        });
        Ok(())
    }
}

/// Block sizes of 512-byte-sector devices.
pub const BS: BlockSizes = BlockSizes { cow: 1, origin: 1 };

pub fn spec(chunk_sectors: u32) -> StoreSpec<'static> {
    StoreSpec {
        cow: "cow",
        kind: StoreKind::Persistent { overflow: false },
        chunk_sectors,
        generalised: false,
    }
}

/// A persistent store with `u64` commit tokens.
pub type TestStore = PersistentStore<MemCow, u64>;

/// Opens a persistent store on `io`, returning it, its validity and the
/// exceptions it reported, in order.
pub fn open_persistent(
    io: &MemCow,
    chunk_sectors: u32,
) -> Result<(TestStore, Validity, Vec<Exception>), OpenError> {
    let mut found = Vec::new();
    let chunk = (chunk_sectors != 0).then(|| ChunkSize::new(chunk_sectors, 1, 1).unwrap());
    let (s, v) = PersistentStore::open(io.clone(), chunk, false, BS, &mut |e| {
        found.push(e);
        Ok(())
    })?;
    Ok((s, v, found))
}

/// The data a test copies to a COW chunk for origin chunk `old`.
pub fn chunk_data(old: u64, tag: u64, bytes: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes);
    while v.len() < bytes {
        v.extend_from_slice(&old.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
    }
    v.truncate(bytes);
    v
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
