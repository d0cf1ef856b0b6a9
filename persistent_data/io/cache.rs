// SPDX-License-Identifier: GPL-2.0

//! The host's model of dm-bufio: a bounded cache of blocks handed out as
//! shared, reference-counted buffers, each remembering the validator that
//! checked it. When full it evicts unheld blocks in CLOCK order (a block
//! read since the hand last passed gets a second chance), an approximation
//! of least recently used, as dm-bufio's is. [`super::mem::MemIo`] and [`super::file::FileIo`] put it in
//! front of their storage (under their own lock).

use super::{Block, BLOCK_SIZE};
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::validator::{check_once, ValidatorRef};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Deref;

/// A block held in a [`HostCache`]: it stays valid (and unchanged) while
/// held, even if the cache drops or replaces the block meanwhile.
pub struct HostBuf(Arc<Block>);

impl Deref for HostBuf {
    type Target = Block;
    fn deref(&self) -> &Block {
        &self.0
    }
}

struct Slot {
    data: Arc<Block>,
    checked: Option<ValidatorRef>,
    /// Read since the clock hand last passed.
    referenced: bool,
}

/// Counters of a [`HostCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks loaded from storage.
    pub loads: u64,
}

/// Slots per chunk of the table.
const CHUNK: usize = 1024;

type Chunk = Box<[Option<Slot>; CHUNK]>;

/// Slots by block number, in chunks allocated on first use: a lookup is
/// two indexings (a hash map's probing would dominate the cost of a
/// cached read), and a large, sparsely read device costs little.
#[derive(Default)]
struct Table {
    chunks: Vec<Option<Chunk>>,
    len: usize,
    /// The clock hand: the next slot eviction looks at.
    hand: usize,
}

impl Table {
    fn split(b: u64) -> Option<(usize, usize)> {
        let b = usize::try_from(b).ok()?;
        Some((b / CHUNK, b % CHUNK))
    }

    #[inline]
    fn get_mut(&mut self, b: u64) -> Option<&mut Slot> {
        let (c, i) = Self::split(b)?;
        self.chunks.get_mut(c)?.as_mut()?.get_mut(i)?.as_mut()
    }

    fn contains(&self, b: u64) -> bool {
        Self::split(b)
            .and_then(|(c, i)| self.chunks.get(c)?.as_ref()?.get(i))
            .is_some_and(Option::is_some)
    }

    /// The (empty or full) slot for `b`, creating its chunk.
    fn entry(chunks: &mut Vec<Option<Chunk>>, b: u64) -> Result<&mut Option<Slot>> {
        let (c, i) = Self::split(b).ok_or(Error::Invalid)?;
        if chunks.len() <= c {
            chunks.resize_with(c + 1, || None);
        }
        let chunk = chunks.get_mut(c).ok_or(Error::Invalid)?;
        let chunk = chunk.get_or_insert_with(|| Box::new(core::array::from_fn(|_| None)));
        chunk.get_mut(i).ok_or(Error::Invalid)
    }

    fn insert(&mut self, b: u64, slot: Slot) -> Result<&mut Slot> {
        let e = Self::entry(&mut self.chunks, b)?;
        if e.is_none() {
            self.len += 1;
        }
        Ok(e.insert(slot))
    }

    fn remove(&mut self, b: u64) {
        if let Some((c, i)) = Self::split(b) {
            let e = self.chunks.get_mut(c).and_then(|c| c.as_mut()?.get_mut(i));
            if let Some(e) = e {
                if e.take().is_some() {
                    self.len -= 1;
                }
            }
        }
    }

    /// Drops up to `limit` unheld slots in CLOCK order: a referenced slot
    /// loses its mark and is passed over once.
    fn evict(&mut self, mut limit: usize) {
        let total = self.chunks.len() * CHUNK;
        // Two turns of the hand clear every mark, so this ends.
        for _ in 0..2 * total {
            if limit == 0 || self.len == 0 {
                return;
            }
            let at = self.hand % total.max(1);
            self.hand = at + 1;
            let e = self
                .chunks
                .get_mut(at / CHUNK)
                .and_then(|c| c.as_mut()?.get_mut(at % CHUNK));
            let Some(e) = e else { continue };
            let Some(slot) = e.as_mut() else { continue };
            if Arc::strong_count(&slot.data) > 1 {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            *e = None;
            self.len -= 1;
            limit -= 1;
        }
    }
}

/// A bounded block cache; see the module documentation.
pub struct HostCache {
    slots: Table,
    capacity: usize,
    stats: CacheStats,
}

impl HostCache {
    /// A cache of at most `capacity` unheld blocks (at least 16).
    pub fn new(capacity: usize) -> Self {
        HostCache {
            slots: Table::default(),
            capacity: capacity.max(16),
            stats: CacheStats::default(),
        }
    }

    /// Changes the capacity (evicting down to it when next needed).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(16);
    }

    /// Hit and load counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// True if block `b` is cached.
    pub fn contains(&self, b: u64) -> bool {
        self.slots.contains(b)
    }

    #[inline]
    fn hand_out(slot: &mut Slot, b: u64, v: Option<ValidatorRef>) -> Result<HostBuf> {
        if let Some(r) = check_once(b, &slot.data, slot.checked, v)? {
            slot.checked = Some(r);
        }
        Ok(HostBuf(Arc::clone(&slot.data)))
    }

    /// When full, drops a batch of unheld blocks (an eighth of the cache)
    /// so inserting stays O(1) amortised.
    fn make_room(&mut self) {
        if self.slots.len < self.capacity {
            return;
        }
        let excess = self.slots.len - self.capacity + self.capacity / 8 + 1;
        self.slots.evict(excess);
    }

    #[cold]
    fn load(&mut self, b: u64, load: impl FnOnce(&mut Block) -> Result<()>) -> Result<&mut Slot> {
        self.make_room();
        let mut data = Arc::new([0u8; BLOCK_SIZE]);
        // A fresh `Arc` is never shared.
        load(Arc::get_mut(&mut data).ok_or(Error::NoMem)?)?;
        self.stats.loads += 1;
        self.slots.insert(
            b,
            Slot {
                data,
                checked: None,
                referenced: false,
            },
        )
    }

    /// Block `b`, loaded with `load` on a miss, checked as
    /// [`check_once`] says.
    #[inline]
    pub fn read(
        &mut self,
        b: u64,
        v: Option<ValidatorRef>,
        load: impl FnOnce(&mut Block) -> Result<()>,
    ) -> Result<HostBuf> {
        if let Some(slot) = self.slots.get_mut(b) {
            // Read again: worth keeping (a fresh load is not, yet).
            slot.referenced = true;
            return Self::hand_out(slot, b, v);
        }
        let slot = self.load(b, load)?;
        Self::hand_out(slot, b, v)
    }

    /// Block `b` only if cached; else `WouldBlock`.
    pub fn try_read(&mut self, b: u64, v: Option<ValidatorRef>) -> Result<HostBuf> {
        let slot = self.slots.get_mut(b).ok_or(Error::WouldBlock)?;
        slot.referenced = true;
        Self::hand_out(slot, b, v)
    }

    /// Loads block `b` if it is not cached (a prefetch); errors are
    /// dropped, as a prefetch has nobody to report to.
    pub fn prefetch(&mut self, b: u64, load: impl FnOnce(&mut Block) -> Result<()>) {
        if !self.contains(b) {
            let _ = self.load(b, load);
        }
    }

    /// Block `b` was written with `data`, stamped by `v`: the cache holds
    /// the new contents, already validated. Buffers still held keep the
    /// old contents.
    pub fn written(&mut self, b: u64, data: &Block, v: Option<ValidatorRef>) {
        if let Some(slot) = self.slots.get_mut(b) {
            match Arc::get_mut(&mut slot.data) {
                Some(d) => d.copy_from_slice(data),
                None => slot.data = Arc::new(*data),
            }
            slot.checked = v;
            slot.referenced = true;
            return;
        }
        self.make_room();
        let slot = Slot {
            data: Arc::new(*data),
            checked: v,
            referenced: true,
        };
        // Only a block number past `usize` fails, and a block that cannot
        // be cached is simply read from storage next time.
        let _ = self.slots.insert(b, slot);
    }

    /// Drops block `b` (its next read loads it again).
    pub fn forget(&mut self, b: u64) {
        self.slots.remove(b);
    }

    /// Drops every block.
    pub fn clear(&mut self) {
        self.slots = Table::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_data::validator::{CsumValidator, Validator};

    static V: CsumValidator = CsumValidator {
        name: "cache_test",
        xor: 7,
        blocknr_offset: 8,
    };

    #[test]
    fn loads_once_and_evicts_only_unheld_blocks() {
        let mut c = HostCache::new(16);
        let mut stamped = [0u8; BLOCK_SIZE];
        V.prepare_for_write(0, &mut stamped).unwrap();
        let held = c
            .read(0, Some(&V), |d| {
                d.copy_from_slice(&stamped);
                Ok(())
            })
            .unwrap();
        let again = c.read(0, Some(&V), |_| Err(Error::Io)).unwrap();
        assert!(core::ptr::eq(&*held, &*again));
        for b in 1..100 {
            c.read(b, None, |_| Ok(())).unwrap();
        }
        assert!(c.slots.len <= 17);
        assert!(c.contains(0), "a held block is never evicted");
        assert_eq!(c.stats(), CacheStats { loads: 100 });
        assert_eq!(c.try_read(5000, None).err(), Some(Error::WouldBlock));
        // A failed load caches nothing.
        assert_eq!(
            c.read(7000, None, |_| Err(Error::Io)).err(),
            Some(Error::Io)
        );
        assert!(!c.contains(7000));
    }

    #[test]
    fn eviction_gives_recently_read_blocks_a_second_chance() {
        let mut c = HostCache::new(16);
        for b in 0..1000u64 {
            c.read(b, None, |_| Ok(())).unwrap();
            // Block 0 is read all the time: it stays.
            drop(c.read(0, None, |_| Err(Error::Io)).unwrap());
        }
        assert!(c.slots.len <= 17);
        assert_eq!(c.stats(), CacheStats { loads: 1000 });
    }

    #[test]
    fn written_blocks_replace_the_cached_copy_not_held_ones() {
        let mut c = HostCache::new(16);
        let old = c
            .read(3, None, |d| {
                d.fill(1);
                Ok(())
            })
            .unwrap();
        let mut new = [0u8; BLOCK_SIZE];
        V.prepare_for_write(3, &mut new).unwrap();
        c.written(3, &new, Some(&V));
        assert_eq!(old[100], 1);
        // Recorded as checked by V: no load, no check failure.
        let r = c.try_read(3, Some(&V)).unwrap();
        assert_eq!(r[100], 0);
    }
}
