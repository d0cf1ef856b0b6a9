// SPDX-License-Identifier: GPL-2.0

//! The kernel side of the metadata engine's allocation shim
//! (`persistent_data/shim/`): `PVec` and `PBox`, the small fallible API the
//! engine uses, over `KVVec` and `KBox`.
//!
//! 6.12's `Vec` has `push`, `reserve`, `extend_from_slice`, `set_len` and
//! slice access, but not `pop`, `truncate`, `insert` or `remove`; those are
//! built here from `set_len` and raw pointer moves, each `unsafe` block
//! justified on its own. The engine itself is `forbid(unsafe_code)`.

// `pub` because the engine's shim re-exports them as its own `pub` API.
#![allow(unreachable_pub)]

use crate::persistent_data::error::{Error, Result};
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ops::{Deref, DerefMut};
use kernel::alloc::{flags::GFP_KERNEL, Flags, KBox, KVVec};

/// Flags for every engine allocation. The 6.12 kernel crate has no
/// `GFP_NOIO`: callers on an I/O path run the engine inside a
/// `memalloc_noio` scope instead (`noio.rs`: `noio_scope`), which makes these
/// allocations NOIO.
const GFP: Flags = GFP_KERNEL;

/// A growable vector whose allocations are fallible, over `kvmalloc`: small
/// vectors come from the slab, large ones (a transaction's shadow set can
/// pass 4 MiB) fall back to `vmalloc` instead of failing.
///
/// # Invariants
///
/// The inner vector is dropped only by `PVec`'s own `drop`, once.
pub struct PVec<T>(ManuallyDrop<KVVec<T>>);

impl<T> Drop for PVec<T> {
    // Inline: the I/O paths drop a few empty vectors per bio, and the
    // check is cheaper than the call.
    #[inline(always)]
    fn drop(&mut self) {
        // The kernel's `Vec` frees even when it never allocated: a
        // `kvrealloc(NULL, 0)` round trip (~100 instructions) on every
        // drop of an empty vector, which the I/O paths do for each bio.
        // With no capacity there is no memory and no element to drop.
        if self.0.capacity() == 0 {
            return;
        }
        // SAFETY: called once, from `drop`; `self` is not used again.
        unsafe { self.free() };
    }
}

impl<T> PVec<T> {
    /// Drops the elements and frees the memory (out of line: the rare
    /// half of `drop`).
    ///
    /// # Safety
    ///
    /// Called at most once, from `Drop::drop`; `self.0` is not used
    /// afterwards.
    #[cold]
    #[inline(never)]
    unsafe fn free(&mut self) {
        // SAFETY: dropped once (the caller's contract and the type
        // invariant); `self.0` is not used again.
        unsafe { ManuallyDrop::drop(&mut self.0) };
    }
}

impl<T> Default for PVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PVec<T> {
    /// An empty vector; does not allocate.
    pub const fn new() -> Self {
        PVec(ManuallyDrop::new(KVVec::new()))
    }

    /// An empty vector with room for `n` elements.
    pub fn try_with_capacity(n: usize) -> Result<Self> {
        KVVec::with_capacity(n, GFP)
            .map(|v| PVec(ManuallyDrop::new(v)))
            .map_err(|_| Error::NoMem)
    }

    /// Makes room for `n` more elements.
    #[inline]
    pub fn try_reserve(&mut self, n: usize) -> Result<()> {
        // The kernel's `reserve` is an out-of-line call even when there
        // is room, which the I/O paths nearly always find: the check is
        // made in the caller.
        if self.0.capacity() - self.0.len() >= n {
            return Ok(());
        }
        self.grow(n)
    }

    #[inline(never)]
    fn grow(&mut self, n: usize) -> Result<()> {
        self.0.reserve(n, GFP).map_err(|_| Error::NoMem)
    }

    /// Appends `v`.
    pub fn try_push(&mut self, v: T) -> Result<()> {
        let len = self.0.len();
        if len == self.0.capacity() {
            return self.0.push(v, GFP).map_err(|_| Error::NoMem);
        }
        // SAFETY: `len < capacity`, so `add(len)` stays within the
        // allocation (moves zero bytes for a zero-sized `T`) and the slot
        // holds no element; it is written once, and only then does the
        // length grow, to `len + 1 <= capacity`, covering it.
        unsafe {
            core::ptr::write(self.0.as_mut_ptr().add(len), v);
            self.0.set_len(len + 1);
        }
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        let len = self.0.len();
        if len == 0 {
            return None;
        }
        let last = len - 1;
        // SAFETY: `last < len`, so the slot is initialised; we read it out
        // exactly once and then shrink the length so it is never read or
        // dropped again.
        unsafe {
            let v = core::ptr::read(self.0.as_ptr().add(last));
            self.0.set_len(last);
            Some(v)
        }
    }

    /// Drops the elements from `len` on.
    pub fn truncate(&mut self, len: usize) {
        while self.0.len() > len {
            drop(self.pop());
        }
    }

    /// Drops every element.
    pub fn clear(&mut self) {
        self.truncate(0)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Inserts `v` at `i`, shifting later elements up; `Invalid` if
    /// `i > len`.
    pub fn try_insert(&mut self, i: usize, v: T) -> Result<()> {
        let len = self.0.len();
        if i > len {
            return Err(Error::Invalid);
        }
        self.try_reserve(1)?;
        // SAFETY: `try_reserve(1)` succeeded: capacity >= `len + 1`, so
        // `[i, len]` is inside the allocation. We move the initialised tail
        // `[i, len)` up by one (overlapping copy), write `v` into the hole
        // at `i`, and only then grow the length to cover the `len + 1`
        // initialised elements.
        unsafe {
            let p = self.0.as_mut_ptr().add(i);
            // No call for an empty tail (most inserts append).
            if i < len {
                core::ptr::copy(p, p.add(1), len - i);
            }
            core::ptr::write(p, v);
            self.0.set_len(len + 1);
        }
        Ok(())
    }

    /// Removes and returns element `i`, or `None` if out of range.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let len = self.0.len();
        if i >= len {
            return None;
        }
        // SAFETY: `i < len`: we read the element at `i` out once, move the
        // initialised tail `(i, len)` down over it (overlapping copy) and
        // shrink the length by one, so no element is duplicated or lost.
        unsafe {
            let p = self.0.as_mut_ptr().add(i);
            let v = core::ptr::read(p);
            // No call for an empty tail (most removals take the last).
            if i + 1 < len {
                core::ptr::copy(p.add(1), p, len - i - 1);
            }
            self.0.set_len(len - 1);
            Some(v)
        }
    }
}

impl<T: Clone> PVec<T> {
    /// Resizes to `n` elements, filling with clones of `v`.
    pub fn try_resize(&mut self, n: usize, v: T) -> Result<()> {
        let len = self.0.len();
        if n <= len {
            self.truncate(n);
            return Ok(());
        }
        self.0
            .extend_with(n - len, v, GFP)
            .map_err(|_| Error::NoMem)
    }
}

impl<T> Deref for PVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_slice()
    }
}

impl<T> DerefMut for PVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.0.as_mut_slice()
    }
}

/// A heap allocation whose creation is fallible.
pub struct PBox<T>(KBox<T>);

impl<T> PBox<T> {
    /// Moves `v` to the heap.
    pub fn try_new(v: T) -> Result<Self> {
        KBox::new(v, GFP).map(PBox).map_err(|_| Error::NoMem)
    }
}

impl<const N: usize> PBox<[u8; N]> {
    /// A zero-filled byte array on the heap, built in place so a 4 KiB
    /// block never sits on the kernel stack.
    pub fn try_zeroed() -> Result<Self> {
        let mut b: KBox<MaybeUninit<[u8; N]>> = KBox::new_uninit(GFP).map_err(|_| Error::NoMem)?;
        // SAFETY: the allocation holds `N` bytes; writing zero to all of
        // them fully initialises a `[u8; N]` (every bit pattern is valid).
        let b = unsafe {
            core::ptr::write_bytes(b.as_mut_ptr(), 0, 1);
            b.assume_init()
        };
        Ok(PBox(b))
    }
}

impl<T: Copy, const N: usize> PBox<[T; N]> {
    /// An array of `N` copies of `v` on the heap, built in place (never
    /// as a whole on the kernel stack).
    pub fn try_new_array(v: T) -> Result<Self> {
        let mut b: KBox<MaybeUninit<[T; N]>> = KBox::new_uninit(GFP).map_err(|_| Error::NoMem)?;
        let p = b.as_mut_ptr().cast::<T>();
        // SAFETY: the allocation holds an `[T; N]`, i.e. `N` contiguous,
        // suitably aligned `T` slots starting at `p`; we write each slot
        // `0..N` exactly once (`T: Copy`, so nothing needs dropping), which
        // fully initialises the array before `assume_init`.
        let b = unsafe {
            for i in 0..N {
                p.add(i).write(v);
            }
            b.assume_init()
        };
        Ok(PBox(b))
    }

    /// A heap copy of `src`, copied straight from `src` into the new
    /// allocation (never through the stack).
    pub fn try_copy_of(src: &[T; N]) -> Result<Self> {
        let mut b: KBox<MaybeUninit<[T; N]>> = KBox::new_uninit(GFP).map_err(|_| Error::NoMem)?;
        // SAFETY: `src` and the fresh allocation are distinct `[T; N]`s, so
        // copying one whole array into the other is in bounds and does not
        // overlap; `T: Copy` makes the bitwise copy a valid value and leaves
        // `src` usable, and it fully initialises the array before
        // `assume_init`.
        let b = unsafe {
            core::ptr::copy_nonoverlapping(src, b.as_mut_ptr(), 1);
            b.assume_init()
        };
        Ok(PBox(b))
    }
}

impl<T> Deref for PBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for PBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}
