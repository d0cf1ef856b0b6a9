// SPDX-License-Identifier: GPL-2.0

//! The shared store's exception index: snapshot ids, sets of them, and how
//! an exception is keyed and stored in the btree.
//!
//! An exception is one COW chunk holding one origin chunk's old contents
//! for a set of snapshots (its share mask). The share masks of one origin
//! chunk's exceptions are disjoint, so `origin chunk * 64 + lowest id of
//! the mask` is a unique key, and all of a chunk's exceptions are the keys
//! `[chunk * 64, chunk * 64 + 63]`. The value is the COW chunk and the mask
//! (16 bytes, little endian).

use super::Chunk;
use crate::persistent_data::endian::{le64, set_le64};
use crate::persistent_data::error::{Error, Result};

/// Most snapshots sharing one store.
pub const MAX_IDS: u32 = 64;

/// A snapshot's id in its store, `0..64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapId(u8);

impl SnapId {
    /// `id` if it is below [`MAX_IDS`].
    pub fn new(id: u32) -> Option<Self> {
        (id < MAX_IDS).then_some(SnapId(id as u8))
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0.into()
    }

    /// The set holding only this id.
    pub fn mask(self) -> IdMask {
        IdMask(1u64 << self.0)
    }
}

/// A set of snapshot ids, bit `id` for `id`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdMask(pub u64);

impl IdMask {
    /// The empty set.
    pub const EMPTY: IdMask = IdMask(0);

    /// True if `id` is in the set.
    pub fn has(self, id: SnapId) -> bool {
        self.0 & id.mask().0 != 0
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Lowest id in the set.
    pub fn lowest(self) -> Option<SnapId> {
        (self.0 != 0).then(|| SnapId(self.0.trailing_zeros() as u8))
    }

    /// Union.
    pub fn with(self, other: IdMask) -> IdMask {
        IdMask(self.0 | other.0)
    }

    /// Difference.
    pub fn without(self, other: IdMask) -> IdMask {
        IdMask(self.0 & !other.0)
    }

    /// Intersection.
    pub fn and(self, other: IdMask) -> IdMask {
        IdMask(self.0 & other.0)
    }

    /// The ids, lowest first.
    pub fn iter(self) -> impl Iterator<Item = SnapId> {
        (0..MAX_IDS)
            .filter_map(SnapId::new)
            .filter(move |&id| self.has(id))
    }
}

/// One exception as the index holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedException {
    /// The origin chunk.
    pub old: Chunk,
    /// The COW chunk (device chunk number) holding its contents.
    pub cow: Chunk,
    /// The snapshots it serves (never empty).
    pub share: IdMask,
}

/// Bytes per value.
pub const VALUE_SIZE: usize = 16;

/// Origin chunks the index can key (`old * 64` must fit).
pub const MAX_ORIGIN_CHUNK: Chunk = u64::MAX / MAX_IDS as u64;

/// First key of origin chunk `old`'s exceptions; `Invalid` past
/// [`MAX_ORIGIN_CHUNK`].
pub fn first_key(old: Chunk) -> Result<u64> {
    if old >= MAX_ORIGIN_CHUNK {
        return Err(Error::Invalid);
    }
    old.checked_mul(MAX_IDS.into()).ok_or(Error::Invalid)
}

impl SharedException {
    /// The btree key.
    pub fn key(&self) -> Result<u64> {
        let low = self.share.lowest().ok_or(Error::Invalid)?;
        first_key(self.old)?
            .checked_add(low.get().into())
            .ok_or(Error::Invalid)
    }

    /// The btree value.
    pub fn value(&self) -> Result<[u8; VALUE_SIZE]> {
        let mut v = [0u8; VALUE_SIZE];
        set_le64(&mut v, 0, self.cow)?;
        set_le64(&mut v, 8, self.share.0)?;
        Ok(v)
    }

    /// Decodes an index entry; `Invalid` unless the key matches the mask.
    pub fn unpack(key: u64, value: &[u8]) -> Result<Self> {
        let e = SharedException {
            old: key / u64::from(MAX_IDS),
            cow: le64(value, 0)?,
            share: IdMask(le64(value, 8)?),
        };
        if e.key()? != key {
            return Err(Error::Invalid);
        }
        Ok(e)
    }
}
