// SPDX-License-Identifier: GPL-2.0

//! Persistent bitsets, byte-compatible with upstream `dm-bitset`.
//!
//! A bitset of `n` bits is an [`array`] of `ceil(n / 64)` little-endian
//! u64 words; bit `i` is bit `i % 64` of word `i / 64`. The words hold no
//! references.
//!
//! [`Bitset`] is the in-core handle (upstream's `dm_disk_bitset`): it
//! caches one word, so runs of changes to nearby bits write the array once.
//! Setting, clearing or testing a bit in another word writes the cached one
//! back first, which can change the root; those calls therefore return the
//! new root. Call [`Bitset::flush`] before committing.

use crate::persistent_data::array;
use crate::persistent_data::btree::PlainValues;
use crate::persistent_data::error::{Error, Result};
use crate::persistent_data::io::BlockIo;
use crate::persistent_data::transaction_manager::{BlockReader, TransactionManager};

/// Bits per array entry.
pub const BITS_PER_WORD: u32 = 64;

/// Words hold no references.
fn word_vt() -> PlainValues {
    PlainValues(8)
}

fn words_for(nr_bits: u32) -> u32 {
    nr_bits.div_ceil(BITS_PER_WORD)
}

/// The cached word.
#[derive(Clone, Copy, Debug)]
struct Current {
    index: u32,
    bits: u64,
    dirty: bool,
}

/// In-core state of a bitset: the cached word.
#[derive(Debug, Default)]
pub struct Bitset {
    current: Option<Current>,
}

/// Creates an empty bitset; returns its root.
pub fn empty<IO: BlockIo>(tm: &mut TransactionManager<IO>) -> Result<u64> {
    tm.mutate(|tm| array::empty(tm))
}

/// Builds a bitset of `nr_bits` bits, bit `i` being `f(i)`; returns its
/// root. Each word is written once.
pub fn new<IO: BlockIo>(
    tm: &mut TransactionManager<IO>,
    nr_bits: u32,
    f: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<u64> {
    tm.mutate(|tm| {
        array::new(tm, &mut word_vt(), words_for(nr_bits), &mut |wi, out| {
            let base = u64::from(wi) * u64::from(BITS_PER_WORD);
            let end = (base + u64::from(BITS_PER_WORD)).min(u64::from(nr_bits));
            let mut word = 0u64;
            for bit in base..end {
                if f(bit as u32)? {
                    word |= 1 << (bit - base);
                }
            }
            out.copy_from_slice(&word.to_le_bytes());
            Ok(())
        })
    })
}

/// Drops the caller's reference to the bitset at `root`.
pub fn del<IO: BlockIo>(tm: &mut TransactionManager<IO>, root: u64) -> Result<()> {
    tm.mutate(|tm| array::del(tm, &mut word_vt(), root))
}

/// Reads one word.
pub fn get_word<R: BlockReader>(r: &R, root: u64, index: u32) -> Result<u64> {
    let mut v = [0u8; 8];
    array::get(r, root, index, &mut v)?;
    Ok(u64::from_le_bytes(v))
}

/// Reads bit `index` straight from the array (ignoring any [`Bitset`]'s
/// unflushed word; works on a non-blocking reader).
pub fn get_bit<R: BlockReader>(r: &R, root: u64, index: u32) -> Result<bool> {
    let w = get_word(r, root, index / BITS_PER_WORD)?;
    Ok(w & (1 << (index % BITS_PER_WORD)) != 0)
}

/// Calls `f(index, bit)` for each of the first `nr_bits` bits, in order.
pub fn walk<R: BlockReader>(
    r: &R,
    root: u64,
    nr_bits: u32,
    f: &mut dyn FnMut(u32, bool) -> Result<()>,
) -> Result<()> {
    let mut c = match Cursor::begin(r, root, nr_bits) {
        Err(Error::NoData) if nr_bits == 0 => return Ok(()),
        c => c?,
    };
    loop {
        f(c.index(), c.get())?;
        match c.next() {
            Err(Error::NoData) => return Ok(()),
            r => r?,
        }
    }
}

impl Bitset {
    /// A handle with nothing cached.
    pub const fn new() -> Self {
        Bitset { current: None }
    }

    /// Forgets the cached word without writing it (after an abort).
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// Writes the cached word back if it changed; returns the new root.
    pub fn flush<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        root: u64,
    ) -> Result<u64> {
        tm.mutate(|tm| {
            let Some(c) = self.current else {
                return Ok(root);
            };
            if !c.dirty {
                return Ok(root);
            }
            let root = array::set(tm, &mut word_vt(), root, c.index, &c.bits.to_le_bytes())?;
            self.current = None;
            Ok(root)
        })
    }

    /// Resizes the bitset at `root` from `old_bits` to `new_bits`; new bits
    /// take `default`. Flushes and drops the cached word first. Returns the
    /// new root.
    ///
    /// The spare bits at the end of the old last word also take `default`
    /// when they come into use (upstream leaves whatever they held).
    pub fn resize<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        root: u64,
        old_bits: u32,
        new_bits: u32,
        default: bool,
    ) -> Result<u64> {
        tm.mutate(|tm| {
            let mut root = self.flush(tm, root)?;
            self.current = None;
            let fill: u64 = if default { !0 } else { 0 };
            let old_words = words_for(old_bits);
            let used = old_bits % BITS_PER_WORD;
            if new_bits > old_bits && used != 0 {
                // Bits `used..` of the old last word come into use.
                let wi = old_words - 1;
                let keep = (1u64 << used) - 1;
                let w = get_word(tm, root, wi)?;
                let nw = (w & keep) | (fill & !keep);
                if nw != w {
                    root = array::set(tm, &mut word_vt(), root, wi, &nw.to_le_bytes())?;
                }
            }
            array::resize(
                tm,
                &mut word_vt(),
                root,
                old_words,
                words_for(new_bits),
                &fill.to_le_bytes(),
            )
        })
    }

    /// Makes word `wi` the cached one, writing back the previous one.
    fn load<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        root: u64,
        wi: u32,
    ) -> Result<(u64, &mut Current)> {
        let mut root = root;
        if self.current.map(|c| c.index) != Some(wi) {
            // Read first: a missing word then leaves everything as it was.
            // The flush writes another word, so the value read stays good.
            let bits = get_word(tm, root, wi)?;
            root = self.flush(tm, root)?;
            self.current = Some(Current {
                index: wi,
                bits,
                dirty: false,
            });
        }
        let c = self.current.as_mut().ok_or(Error::Invalid)?;
        Ok((root, c))
    }

    /// Sets bit `index`; returns the new root.
    pub fn set_bit<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        root: u64,
        index: u32,
    ) -> Result<u64> {
        tm.mutate(|tm| {
            let (root, c) = self.load(tm, root, index / BITS_PER_WORD)?;
            c.bits |= 1 << (index % BITS_PER_WORD);
            c.dirty = true;
            Ok(root)
        })
    }

    /// Clears bit `index`; returns the new root.
    pub fn clear_bit<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        root: u64,
        index: u32,
    ) -> Result<u64> {
        tm.mutate(|tm| {
            let (root, c) = self.load(tm, root, index / BITS_PER_WORD)?;
            c.bits &= !(1 << (index % BITS_PER_WORD));
            c.dirty = true;
            Ok(root)
        })
    }

    /// Tests bit `index` (seeing unflushed changes); returns the new root
    /// and the bit.
    pub fn test_bit<IO: BlockIo>(
        &mut self,
        tm: &mut TransactionManager<IO>,
        root: u64,
        index: u32,
    ) -> Result<(u64, bool)> {
        tm.mutate(|tm| {
            let (root, c) = self.load(tm, root, index / BITS_PER_WORD)?;
            Ok((root, c.bits & (1 << (index % BITS_PER_WORD)) != 0))
        })
    }
}

/// A forward cursor over the first `nr_bits` bits of a bitset.
pub struct Cursor<'a, R: BlockReader> {
    words: array::Cursor<'a, R>,
    bits: u64,
    /// Index of the current bit.
    index: u32,
    nr_bits: u32,
}

impl<'a, R: BlockReader> Cursor<'a, R> {
    /// Positions on bit 0; `NoData` if `nr_bits` is 0 or the array is
    /// empty.
    pub fn begin(r: &'a R, root: u64, nr_bits: u32) -> Result<Self> {
        if nr_bits == 0 {
            return Err(Error::NoData);
        }
        let words = array::Cursor::begin(r, root, 8)?;
        let bits = Self::word(&words)?;
        Ok(Cursor {
            words,
            bits,
            index: 0,
            nr_bits,
        })
    }

    fn word(words: &array::Cursor<'a, R>) -> Result<u64> {
        let v = words.get()?;
        Ok(u64::from_le_bytes(
            v.try_into().map_err(|_| Error::Invalid)?,
        ))
    }

    /// Moves to the next bit; `NoData` past `nr_bits`.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<()> {
        self.skip(1)
    }

    /// Skips `count` bits; `NoData` (cursor unmoved) past `nr_bits`.
    pub fn skip(&mut self, count: u32) -> Result<()> {
        let target = self
            .index
            .checked_add(count)
            .filter(|t| *t < self.nr_bits)
            .ok_or(Error::NoData)?;
        let from = self.index / BITS_PER_WORD;
        let to = target / BITS_PER_WORD;
        if to != from {
            self.words.skip(to - from)?;
            self.bits = Self::word(&self.words)?;
        }
        self.index = target;
        Ok(())
    }

    /// Index of the current bit.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The current bit.
    pub fn get(&self) -> bool {
        self.bits & (1 << (self.index % BITS_PER_WORD)) != 0
    }
}
