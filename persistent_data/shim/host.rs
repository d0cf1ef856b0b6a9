// SPDX-License-Identifier: GPL-2.0

//! Host (std) implementation of the allocation shim.

use crate::persistent_data::error::{Error, Result};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};

/// A growable vector whose allocations are fallible.
#[derive(Debug, PartialEq, Eq)]
pub struct PVec<T>(Vec<T>);

// Not derived: that would ask `T: Default`, which the kernel's does not.
impl<T> Default for PVec<T> {
    fn default() -> Self {
        PVec::new()
    }
}

impl<T> PVec<T> {
    /// An empty vector; does not allocate.
    pub const fn new() -> Self {
        PVec(Vec::new())
    }

    /// An empty vector with room for `n` elements.
    pub fn try_with_capacity(n: usize) -> Result<Self> {
        let mut v = Vec::new();
        v.try_reserve(n).map_err(|_| Error::NoMem)?;
        Ok(PVec(v))
    }

    /// Makes room for `n` more elements.
    pub fn try_reserve(&mut self, n: usize) -> Result<()> {
        self.0.try_reserve(n).map_err(|_| Error::NoMem)
    }

    /// Appends `v`.
    pub fn try_push(&mut self, v: T) -> Result<()> {
        self.try_reserve(1)?;
        self.0.push(v);
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        self.0.pop()
    }

    /// Drops the elements from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }

    /// Drops every element.
    pub fn clear(&mut self) {
        self.0.clear()
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
        if i > self.0.len() {
            return Err(Error::Invalid);
        }
        self.try_reserve(1)?;
        self.0.insert(i, v);
        Ok(())
    }

    /// Removes and returns element `i`, or `None` if out of range.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        if i < self.0.len() {
            Some(self.0.remove(i))
        } else {
            None
        }
    }
}

impl<T: Clone> PVec<T> {
    /// Resizes to `n` elements, filling with clones of `v`.
    pub fn try_resize(&mut self, n: usize, v: T) -> Result<()> {
        if n > self.0.len() {
            self.try_reserve(n - self.0.len())?;
        }
        self.0.resize(n, v);
        Ok(())
    }
}

impl<T> Deref for PVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T> DerefMut for PVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// A heap allocation whose creation is fallible.
#[derive(Debug, PartialEq, Eq)]
pub struct PBox<T>(Box<T>);

impl<T> PBox<T> {
    /// Moves `v` to the heap.
    pub fn try_new(v: T) -> Result<Self> {
        // std aborts on allocation failure; the host build accepts that.
        Ok(PBox(Box::new(v)))
    }
}

impl<const N: usize> PBox<[u8; N]> {
    /// A zero-filled byte array on the heap, built without a stack copy.
    pub fn try_zeroed() -> Result<Self> {
        let v: Vec<u8> = alloc::vec![0u8; N];
        let b: Box<[u8; N]> = v.into_boxed_slice().try_into().map_err(|_| Error::NoMem)?;
        Ok(PBox(b))
    }
}

impl<T: Copy, const N: usize> PBox<[T; N]> {
    /// An array of `N` copies of `v` on the heap, built in place (never
    /// as a whole on the stack).
    pub fn try_new_array(v: T) -> Result<Self> {
        let mut vec = Vec::new();
        vec.try_reserve_exact(N).map_err(|_| Error::NoMem)?;
        vec.resize(N, v);
        let b: Box<[T; N]> = vec
            .into_boxed_slice()
            .try_into()
            .map_err(|_| Error::NoMem)?;
        Ok(PBox(b))
    }

    /// A heap copy of `src`, copied straight from slice to heap.
    pub fn try_copy_of(src: &[T; N]) -> Result<Self> {
        let mut vec = Vec::new();
        vec.try_reserve_exact(N).map_err(|_| Error::NoMem)?;
        vec.extend_from_slice(src);
        let b: Box<[T; N]> = vec
            .into_boxed_slice()
            .try_into()
            .map_err(|_| Error::NoMem)?;
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
