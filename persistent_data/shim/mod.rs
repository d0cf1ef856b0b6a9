// SPDX-License-Identifier: GPL-2.0

//! What the engine takes from its environment: allocation, and in the
//! kernel CRC32C.
//!
//! The kernel has no `alloc` crate, only `kernel::alloc::{KVVec, KBox}` whose
//! every allocation may fail. [`PVec`] and [`PBox`] expose the small fallible
//! API the engine needs; `host.rs` backs them with `std`, `kernel.rs`
//! re-exports their implementation over `KVVec`/`KBox` in
//! `rust/dm/engine_alloc.rs` (the kernel passes `--cfg MODULE` when building
//! modules), so the engine itself has no `unsafe`. In the module, `crc32c`
//! is the kernel's (`rust/dm/crc32c.rs`); the host uses the engine's
//! software table ([`crate::persistent_data::checksum`]).
//!
//! API (identical in both builds):
//!
//! * `PVec<T>`: `new`, `try_with_capacity`, `try_reserve`, `try_push`,
//!   `pop`, `truncate`, `clear`, `len`, `is_empty`, `try_insert`, `remove`,
//!   `try_resize` (for `T: Clone`),
//!   and `Deref`/`DerefMut` to `[T]`.
//! * `PBox<T>`: `try_new`, `Deref`/`DerefMut`; `PBox::<[u8; N]>::try_zeroed`;
//!   for `T: Copy`, `PBox::<[T; N]>::try_new_array` (N copies of a value)
//!   and `try_copy_of` (a copy of an array), both built in place so large
//!   arrays never sit on the (kernel) stack.

#[cfg(not(MODULE))]
mod host;
#[cfg(not(MODULE))]
pub use host::{PBox, PVec};

#[cfg(MODULE)]
mod kernel;
#[cfg(MODULE)]
pub use kernel::{crc32c, PBox, PVec};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvec_basics() {
        let mut v: PVec<u32> = PVec::new();
        assert!(v.is_empty());
        for i in 0..10 {
            v.try_push(i).unwrap();
        }
        v.try_insert(0, 100).unwrap();
        v.try_insert(11, 200).unwrap();
        assert_eq!(v.len(), 12);
        assert_eq!(v.remove(0), Some(100));
        assert_eq!(v.remove(50), None);
        assert_eq!(v.pop(), Some(200));
        v.truncate(5);
        assert_eq!(&v[..], &[0, 1, 2, 3, 4]);
        v.try_resize(7, 9).unwrap();
        assert_eq!(&v[..], &[0, 1, 2, 3, 4, 9, 9]);
        v.try_resize(2, 0).unwrap();
        assert_eq!(&v[..], &[0, 1]);
        assert!(v.try_insert(9, 1).is_err());
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    fn pbox_zeroed() {
        let b = PBox::<[u8; 4096]>::try_zeroed().unwrap();
        assert!(b.iter().all(|&x| x == 0));
        let c = PBox::try_new(5u64).unwrap();
        assert_eq!(*c, 5);
    }

    #[test]
    fn pbox_arrays_in_place() {
        let a = PBox::<[(u64, bool); 300]>::try_new_array((7, true)).unwrap();
        assert!(a.iter().all(|&x| x == (7, true)));
        let mut src = [0u32; 100];
        src.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32);
        let c = PBox::try_copy_of(&src).unwrap();
        assert_eq!(*c, src);
    }
}
