// SPDX-License-Identifier: GPL-2.0

//! A cell lock in the style of upstream's bio prison (v1), generic over
//! the items it holds, and upstream's deferred set.
//!
//! [`Prison`]: the first item to claim a range of blocks becomes its cell's
//! holder and goes back to the caller; later items claiming an overlapping
//! range queue in the cell, in order, until the holder's owner releases the
//! cell and gets them back. [`DeferredSet`]: work that must wait until the
//! I/O counted in earlier generations has finished (a shared block's reads
//! before its copy is remapped, a discard after writes in flight).
//!
//! Memory is bounded and allocated up front: detaining or queueing never
//! allocates; when the capacity is used up the item comes back to the
//! caller to retry later. No locking here: the owner wraps these in its
//! own lock, so the callbacks that receive released items run under it and
//! should only move the items on (to a list), not issue I/O.

use crate::persistent_data::error::Result;
use crate::persistent_data::shim::{PBox, PVec};

/// No slot (end of a list).
const NIL: u32 = u32::MAX;

/// A FIFO of items kept in a [`Slots`] arena.
#[derive(Clone, Copy, Debug)]
struct Queue {
    head: u32,
    tail: u32,
}

impl Queue {
    const EMPTY: Self = Self {
        head: NIL,
        tail: NIL,
    };

    fn is_empty(&self) -> bool {
        self.head == NIL
    }
}

struct Node<T> {
    item: Option<T>,
    next: u32,
}

/// A fixed number of list nodes, allocated once, threaded into queues.
struct Slots<T> {
    nodes: PVec<Node<T>>,
    // INVARIANT: the free list and the queues partition the nodes; a node
    // holds an item exactly when it is on a queue.
    free: u32,
    used: usize,
}

impl<T> Slots<T> {
    fn try_new(capacity: u32) -> Result<Self> {
        let mut nodes = PVec::try_with_capacity(capacity as usize)?;
        for i in 0..capacity {
            let next = if i + 1 < capacity { i + 1 } else { NIL };
            nodes.try_push(Node { item: None, next })?;
        }
        let free = if capacity > 0 { 0 } else { NIL };
        Ok(Self {
            nodes,
            free,
            used: 0,
        })
    }

    /// Appends `item` to `q`, or gives it back when no node is free.
    fn push(&mut self, q: &mut Queue, item: T) -> core::result::Result<(), T> {
        let i = self.free;
        let Some(node) = self.nodes.get_mut(i as usize) else {
            return Err(item);
        };
        self.free = node.next;
        node.item = Some(item);
        node.next = NIL;
        if let Some(tail) = self.nodes.get_mut(q.tail as usize) {
            tail.next = i;
        } else {
            q.head = i;
        }
        q.tail = i;
        self.used = self.used.saturating_add(1);
        Ok(())
    }

    /// Takes the first item off `q`.
    fn pop(&mut self, q: &mut Queue) -> Option<T> {
        let i = q.head;
        let free = self.free;
        let node = self.nodes.get_mut(i as usize)?;
        let item = node.item.take();
        q.head = node.next;
        node.next = free;
        self.free = i;
        self.used = self.used.saturating_sub(1);
        if q.head == NIL {
            q.tail = NIL;
        }
        item
    }

    /// Hands every item of `q` to `f`, first to last.
    fn drain(&mut self, q: &mut Queue, f: &mut impl FnMut(T)) {
        while let Some(item) = self.pop(q) {
            f(item);
        }
    }

    /// Moves every item of `src` to the end of `dst`.
    fn append(&mut self, dst: &mut Queue, src: &mut Queue) {
        if src.is_empty() {
            return;
        }
        if let Some(tail) = self.nodes.get_mut(dst.tail as usize) {
            tail.next = src.head;
        } else {
            dst.head = src.head;
        }
        dst.tail = src.tail;
        *src = Queue::EMPTY;
    }
}

/// The largest range of blocks one key may cover; a key's range may not
/// cross a multiple of it either (upstream's `BIO_PRISON_MAX_RANGE`).
pub const MAX_KEY_RANGE: u64 = 1 << MAX_KEY_RANGE_SHIFT;
const MAX_KEY_RANGE_SHIFT: u32 = 10;

/// What a cell locks: blocks `begin..end` of device `dev`, in the virtual
/// (thin) or the data address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CellKey {
    /// Virtual (thin device) blocks, as opposed to data device blocks.
    pub virt: bool,
    /// The thin device id (0 for data keys).
    pub dev: u64,
    /// First block.
    pub begin: u64,
    /// One past the last block.
    pub end: u64,
}

impl CellKey {
    /// A key for blocks `begin..end`.
    pub fn span(virt: bool, dev: u64, begin: u64, end: u64) -> Self {
        Self {
            virt,
            dev,
            begin,
            end,
        }
    }

    /// A key for one block.
    pub fn block(virt: bool, dev: u64, block: u64) -> Self {
        Self {
            virt,
            dev,
            begin: block,
            end: block.saturating_add(1),
        }
    }

    /// Whether the range is non-empty, at most [`MAX_KEY_RANGE`] blocks and
    /// within one aligned run of that many.
    pub fn is_valid(&self) -> bool {
        self.begin < self.end
            && self.end - self.begin <= MAX_KEY_RANGE
            && self.begin >> MAX_KEY_RANGE_SHIFT == (self.end - 1) >> MAX_KEY_RANGE_SHIFT
    }

    /// Whether two keys lock some block in common: they share a cell.
    fn overlaps(&self, other: &Self) -> bool {
        self.virt == other.virt
            && self.dev == other.dev
            && self.begin < other.end
            && other.begin < self.end
    }

    /// Whether the key locks one block (thin's per-bio keys); longer ranges
    /// (discards) are kept apart, see [`Prison`].
    fn is_single(&self) -> bool {
        self.end.wrapping_sub(self.begin) == 1
    }

    /// Where a cell with this key is chained: a single block by the block,
    /// a range by its aligned run (never crossed, see [`Self::is_valid`]).
    fn hash(&self) -> u64 {
        if self.is_single() {
            chain_hash(self.virt, self.dev, self.begin, false)
        } else {
            chain_hash(self.virt, self.dev, self.begin >> MAX_KEY_RANGE_SHIFT, true)
        }
    }
}

fn chain_hash(virt: bool, dev: u64, unit: u64, range: bool) -> u64 {
    let h = (unit ^ dev.rotate_left(29) ^ u64::from(virt) << 63 ^ u64::from(range) << 62)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 32)
}

/// A held cell. Only its holder has it; releasing consumes it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a cell stays locked until released"]
pub struct CellHandle {
    index: u32,
    generation: u32,
}

/// What [`Prison::detain`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Detained<T> {
    /// No cell locked the range: the caller holds a new cell, and has its
    /// item back.
    Holder(CellHandle, T),
    /// The range is locked: the item queues in that cell.
    Queued,
}

/// Why [`Prison::detain`] gave an item back.
#[derive(Debug, PartialEq, Eq)]
pub enum DetainError<T> {
    /// No free cell or queue slot: try again after a release.
    Full(T),
    /// The key's range is empty, too long or crosses a run boundary.
    InvalidKey(T),
}

/// A cell handle that is not one of this prison's held cells.
#[derive(Debug, PartialEq, Eq)]
pub struct StaleCell;

/// What [`Prison::promote_or_release`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Promotion<T> {
    /// Nothing was queued: the cell is released.
    Released,
    /// The first queued item now holds the cell.
    Promoted(CellHandle, T),
}

struct CellSlot {
    key: CellKey,
    queue: Queue,
    // Bumped on every release, so an old handle for a reused slot is stale.
    generation: u32,
    in_use: bool,
    // Next cell in the same bucket, or in the free list when not in use.
    next: u32,
}

/// Cells locking block ranges, each with a holder and a FIFO of waiting
/// items.
///
/// Cells are chained in hash buckets: single-block cells by their block,
/// so sequential I/O spreads out; range cells by their aligned run. A
/// single-block lookup also checks its run's range cells (when there are
/// any); a range lookup also checks each block it covers.
pub struct Prison<T> {
    cells: PVec<CellSlot>,
    free_cell: u32,
    // Chains of cells by key hash; a power-of-two count.
    buckets: PVec<u32>,
    items: Slots<T>,
    held: usize,
    held_ranges: usize,
}

impl<T> Prison<T> {
    /// A prison for at most `max_cells` held cells and `max_queued` queued
    /// items in all, allocated now.
    pub fn try_new(max_cells: u32, max_queued: u32) -> Result<Self> {
        let mut cells = PVec::try_with_capacity(max_cells as usize)?;
        for i in 0..max_cells {
            cells.try_push(CellSlot {
                key: CellKey::block(false, 0, 0),
                queue: Queue::EMPTY,
                generation: 0,
                in_use: false,
                next: if i + 1 < max_cells { i + 1 } else { NIL },
            })?;
        }
        let nr_buckets = (max_cells.max(1) as usize).next_power_of_two();
        let mut buckets = PVec::try_with_capacity(nr_buckets)?;
        buckets.try_resize(nr_buckets, NIL)?;
        Ok(Self {
            cells,
            free_cell: if max_cells > 0 { 0 } else { NIL },
            buckets,
            items: Slots::try_new(max_queued)?,
            held: 0,
            held_ranges: 0,
        })
    }

    /// Cells held now.
    pub fn held_cells(&self) -> usize {
        self.held
    }

    /// Items queued now, in all cells.
    pub fn queued_items(&self) -> usize {
        self.items.used
    }

    fn bucket_of(&self, hash: u64) -> usize {
        // Truncating the hash is fine: the mask keeps it in range.
        (hash as usize) & (self.buckets.len().wrapping_sub(1))
    }

    /// The first cell in bucket `bucket` that overlaps `key`.
    fn find_in(&self, bucket: usize, key: &CellKey) -> Option<u32> {
        let mut i = *self.buckets.get(bucket)?;
        while let Some(cell) = self.cells.get(i as usize) {
            if cell.key.overlaps(key) {
                return Some(i);
            }
            i = cell.next;
        }
        None
    }

    /// A held cell overlapping `key` (a valid key), if any.
    fn find(&self, key: &CellKey) -> Option<u32> {
        let (virt, dev) = (key.virt, key.dev);
        if let Some(i) = self.find_in(self.bucket_of(key.hash()), key) {
            return Some(i);
        }
        if key.is_single() {
            if self.held_ranges == 0 {
                return None;
            }
            let run = key.begin >> MAX_KEY_RANGE_SHIFT;
            return self.find_in(self.bucket_of(chain_hash(virt, dev, run, true)), key);
        }
        (key.begin..key.end).find_map(|block| {
            self.find_in(self.bucket_of(chain_hash(virt, dev, block, false)), key)
        })
    }

    /// Whether a held cell locks some block of `key` (an invalid key locks
    /// nothing).
    pub fn is_locked(&self, key: &CellKey) -> bool {
        key.is_valid() && self.find(key).is_some()
    }

    /// Locks `key`'s range for `item`, or queues `item` behind the holder
    /// of the cell that already locks some of it.
    pub fn detain(
        &mut self,
        key: &CellKey,
        item: T,
    ) -> core::result::Result<Detained<T>, DetainError<T>> {
        if !key.is_valid() {
            return Err(DetainError::InvalidKey(item));
        }
        if let Some(i) = self.find(key) {
            let Some(cell) = self.cells.get_mut(i as usize) else {
                return Err(DetainError::Full(item));
            };
            return match self.items.push(&mut cell.queue, item) {
                Ok(()) => Ok(Detained::Queued),
                Err(item) => Err(DetainError::Full(item)),
            };
        }
        let i = self.free_cell;
        let bucket = self.bucket_of(key.hash());
        let (Some(cell), Some(head)) =
            (self.cells.get_mut(i as usize), self.buckets.get_mut(bucket))
        else {
            return Err(DetainError::Full(item));
        };
        self.free_cell = cell.next;
        cell.key = *key;
        cell.queue = Queue::EMPTY;
        cell.in_use = true;
        cell.next = *head;
        *head = i;
        self.held = self.held.saturating_add(1);
        if !key.is_single() {
            self.held_ranges = self.held_ranges.saturating_add(1);
        }
        let handle = CellHandle {
            index: i,
            generation: cell.generation,
        };
        Ok(Detained::Holder(handle, item))
    }

    fn check(&self, handle: &CellHandle) -> core::result::Result<(), StaleCell> {
        match self.cells.get(handle.index as usize) {
            Some(cell) if cell.in_use && cell.generation == handle.generation => Ok(()),
            _ => Err(StaleCell),
        }
    }

    /// The items queued in a held cell.
    pub fn queued_in(&self, handle: &CellHandle) -> usize {
        let Some(cell) = self.cells.get(handle.index as usize) else {
            return 0;
        };
        if self.check(handle).is_err() {
            return 0;
        }
        let mut n = 0;
        let mut i = cell.queue.head;
        while let Some(node) = self.items.nodes.get(i as usize) {
            n += 1;
            i = node.next;
        }
        n
    }

    /// Unlocks the cell and hands its queued items to `f`, in the order
    /// they came (the holder's item is the caller's already).
    pub fn release(
        &mut self,
        handle: CellHandle,
        mut f: impl FnMut(T),
    ) -> core::result::Result<(), StaleCell> {
        self.check(&handle)?;
        let mut queue = Queue::EMPTY;
        if let Some(cell) = self.cells.get_mut(handle.index as usize) {
            core::mem::swap(&mut queue, &mut cell.queue);
        }
        self.items.drain(&mut queue, &mut f);
        self.free(handle.index);
        Ok(())
    }

    /// Gives the cell to its first queued item (returned with the handle),
    /// or releases it if nothing is queued.
    pub fn promote_or_release(
        &mut self,
        handle: CellHandle,
    ) -> core::result::Result<Promotion<T>, StaleCell> {
        self.check(&handle)?;
        let Some(cell) = self.cells.get_mut(handle.index as usize) else {
            return Err(StaleCell);
        };
        match self.items.pop(&mut cell.queue) {
            Some(item) => Ok(Promotion::Promoted(handle, item)),
            None => {
                self.free(handle.index);
                Ok(Promotion::Released)
            }
        }
    }

    // Unlinks cell `i` from its bucket and returns it to the free list.
    fn free(&mut self, i: u32) {
        let Some(cell) = self.cells.get(i as usize) else {
            return;
        };
        let (key, after) = (cell.key, cell.next);
        let bucket = self.bucket_of(key.hash());
        // Find the link that points at `i`: the bucket head or a cell's next.
        let mut prev = NIL;
        let mut j = self.buckets.get(bucket).copied().unwrap_or(NIL);
        while j != i {
            let Some(c) = self.cells.get(j as usize) else {
                return;
            };
            prev = j;
            j = c.next;
        }
        if let Some(p) = self.cells.get_mut(prev as usize) {
            p.next = after;
        } else if let Some(head) = self.buckets.get_mut(bucket) {
            *head = after;
        }
        let free = self.free_cell;
        if let Some(cell) = self.cells.get_mut(i as usize) {
            cell.in_use = false;
            cell.generation = cell.generation.wrapping_add(1);
            cell.next = free;
            self.free_cell = i;
            self.held = self.held.saturating_sub(1);
            if !key.is_single() {
                self.held_ranges = self.held_ranges.saturating_sub(1);
            }
        }
    }
}

/// Generations of I/O in a [`DeferredSet`] (upstream's `DEFERRED_SET_SIZE`).
pub const DEFERRED_SET_SIZE: usize = 64;

/// Counted I/O in one generation of a [`DeferredSet`]; give it back to
/// [`DeferredSet::dec`] or [`DeferredSet::finish`] once, when the I/O
/// completes. `Copy` so it can live in a bio's per-bio data (which dm core
/// never drops); giving one back twice only miscounts (the counts
/// saturate), it never corrupts the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the generation stays busy until dec()"]
pub struct DeferredEntry(u8);

#[derive(Clone, Copy)]
struct Generation {
    count: u32,
    work: Queue,
}

/// Upstream's `dm_deferred_set`: I/O is counted in the current generation;
/// work added waits until every generation up to the current one (when it
/// was added) has no I/O left.
pub struct DeferredSet<W> {
    // On the heap: inline, the two sets made the pool's gate 1.7 KiB, and
    // building it took that several times over on the kernel stack.
    generations: PBox<[Generation; DEFERRED_SET_SIZE]>,
    current: usize,
    sweeper: usize,
    // Work no longer waiting, kept until [`Self::pop_ready`] takes it.
    ready: Queue,
    work: Slots<W>,
}

fn next_generation(i: usize) -> usize {
    (i + 1) % DEFERRED_SET_SIZE
}

impl<W> DeferredSet<W> {
    /// A set that can hold up to `max_work` waiting work items.
    pub fn try_new(max_work: u32) -> Result<Self> {
        Ok(Self {
            generations: PBox::try_new_array(Generation {
                count: 0,
                work: Queue::EMPTY,
            })?,
            current: 0,
            sweeper: 0,
            ready: Queue::EMPTY,
            work: Slots::try_new(max_work)?,
        })
    }

    fn generation(&mut self, i: usize) -> Option<&mut Generation> {
        self.generations.get_mut(i)
    }

    fn count(&self, i: usize) -> u32 {
        self.generations.get(i).map_or(0, |g| g.count)
    }

    /// Counts one I/O in the current generation.
    pub fn inc(&mut self) -> DeferredEntry {
        let current = self.current;
        if let Some(g) = self.generation(current) {
            g.count = g.count.saturating_add(1);
        }
        // `current` is below DEFERRED_SET_SIZE (64).
        DeferredEntry(current as u8)
    }

    /// One I/O counted in `entry` finished; hands `f` the work that no
    /// longer has to wait, oldest generation first (with any work that
    /// [`Self::finish`] left ready).
    pub fn dec(&mut self, entry: DeferredEntry, mut f: impl FnMut(W)) {
        self.finish(entry);
        while let Some(w) = self.pop_ready() {
            f(w);
        }
    }

    /// One I/O counted in `entry` finished: the work that no longer has to
    /// wait moves to the ready queue (nothing is allocated or run: fit for
    /// interrupt context). Returns whether work is ready.
    pub fn finish(&mut self, entry: DeferredEntry) -> bool {
        if let Some(g) = self.generation(usize::from(entry.0)) {
            g.count = g.count.saturating_sub(1);
        }
        let mut ready = core::mem::replace(&mut self.ready, Queue::EMPTY);
        while self.sweeper != self.current && self.count(self.sweeper) == 0 {
            self.take_work(self.sweeper, &mut ready);
            self.sweeper = next_generation(self.sweeper);
        }
        if self.sweeper == self.current && self.count(self.current) == 0 {
            self.take_work(self.current, &mut ready);
        }
        self.ready = ready;
        !self.ready.is_empty()
    }

    /// Takes the oldest ready work item.
    pub fn pop_ready(&mut self) -> Option<W> {
        let mut ready = core::mem::replace(&mut self.ready, Queue::EMPTY);
        let w = self.work.pop(&mut ready);
        self.ready = ready;
        w
    }

    fn take_work(&mut self, i: usize, ready: &mut Queue) {
        let mut queue = Queue::EMPTY;
        if let Some(g) = self.generation(i) {
            core::mem::swap(&mut queue, &mut g.work);
        }
        self.work.append(ready, &mut queue);
    }

    /// Queues `work` behind the I/O counted so far. `Ok(None)`: it waits
    /// and comes back from a later [`Self::dec`]; `Ok(Some(work))`: nothing
    /// is in flight, run it now. `Err(work)`: no room, retry later.
    pub fn add_work(&mut self, work: W) -> core::result::Result<Option<W>, W> {
        if self.sweeper == self.current && self.count(self.current) == 0 {
            return Ok(Some(work));
        }
        let current = self.current;
        let Some(g) = self.generations.get_mut(current) else {
            return Err(work);
        };
        self.work.push(&mut g.work, work)?;
        let next = next_generation(current);
        if self.count(next) == 0 {
            self.current = next;
        }
        Ok(None)
    }

    /// Work items waiting or ready (not yet taken) now.
    pub fn waiting_work(&self) -> usize {
        self.work.used
    }
}
