// SPDX-License-Identifier: GPL-2.0

//! Registries that let one target find another: a thin device finds its pool
//! by the pool device named on its table line, a snapshot finds its origin by
//! the origin's device (upstream: dm-thin's pool table, dm-snap's `_origins`).
//!
//! A [`Registry`] is a `static` mapping keys to `Arc`s. The lock protecting
//! every registry is a C `DEFINE_MUTEX`, statically initialised, so a registry
//! needs no set-up at module load and cannot be used before it is ready (the
//! 6.12 kernel crate has no `global_lock!`, and its `Mutex` can only be built
//! at run time).
//!
//! # Ownership
//!
//! - An entry holds an `Arc` of its value and is kept by [`Registered`]
//!   guards: [`Registry::insert`] creates the entry and its first guard,
//!   [`Registry::join`] adds a guard (a reloaded table taking over the entry
//!   before the old table is destroyed), and the entry is removed when its
//!   last guard is dropped (in the owner's destructor).
//! - [`Registry::lookup`] returns a clone of the `Arc`: the value stays alive
//!   for whoever found it, even after the entry is removed. Nothing borrows
//!   from a registry, so no lifetime can dangle.
//! - Values are dropped outside the lock, so a value's destructor may use
//!   registries itself.
//!
//! C header: [`include/linux/mutex.h`](srctree/include/linux/mutex.h)

use super::bindings;
use super::device::DmDev;
use core::cell::UnsafeCell;
use core::ops::Deref;
use kernel::error::code::EEXIST;
use kernel::prelude::*;
use kernel::sync::Arc;

/// A registry key naming a block device: its `dev_t` (`major:minor`).
///
/// A thin's pool device, opened from its table line, has the `dev_t` of the
/// pool's mapped device.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct DevKey(u32);

impl DevKey {
    /// The key of an opened device.
    pub(crate) fn of(dev: &DmDev) -> Self {
        // SAFETY: `dev` keeps its block device open, and `bd_dev` never
        // changes while it is.
        DevKey(unsafe { (*dev.bdev()).bd_dev })
    }

    /// The key of a raw `dev_t`, for `rust/` code that read one.
    pub(super) fn from_raw(devt: u32) -> Self {
        DevKey(devt)
    }
}

struct Slot<K, V> {
    key: K,
    value: Arc<V>,
    holders: usize,
}

/// Keys mapped to shared values; meant to be a `static`.
pub(crate) struct Registry<K, V> {
    // INVARIANT: accessed only with the registry mutex held; at most one slot
    // per key; every `Some` slot has `holders > 0`.
    slots: UnsafeCell<KVec<Option<Slot<K, V>>>>,
}

// SAFETY: the slots are only touched under the registry mutex; they move keys
// and `Arc<V>`s between threads (`K: Send`, `Arc<V>: Send` needs
// `V: Send + Sync`).
unsafe impl<K: Send, V: Send + Sync> Sync for Registry<K, V> {}

/// Holds the registry mutex; released on drop.
struct Locked;

impl Locked {
    fn new() -> Self {
        // SAFETY: a statically initialised mutex; taken in process context.
        unsafe { bindings::dmrs_registry_lock() };
        Locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: `Locked` exists only while this task holds the mutex.
        unsafe { bindings::dmrs_registry_unlock() };
    }
}

impl<K: Copy + Eq + 'static, V: 'static> Registry<K, V> {
    /// An empty registry.
    pub(crate) const fn new() -> Self {
        Registry {
            slots: UnsafeCell::new(KVec::new()),
        }
    }

    /// Runs `f` on the slots with the registry mutex held. `f` must not drop
    /// a value: it returns anything to drop.
    fn with<R>(&self, f: impl FnOnce(&mut KVec<Option<Slot<K, V>>>) -> R) -> R {
        let _lock = Locked::new();
        // SAFETY: the mutex is held, so this is the only access (type
        // invariant); the borrow ends before `_lock` is dropped.
        f(unsafe { &mut *self.slots.get() })
    }

    /// The value registered under `key`, if any.
    pub(crate) fn lookup(&self, key: K) -> Option<Arc<V>> {
        self.with(|slots| {
            slots
                .as_slice()
                .iter()
                .flatten()
                .find(|s| s.key == key)
                .map(|s| s.value.clone())
        })
    }

    /// Registers `value` under `key`; fails with `EEXIST` if the key is taken.
    pub(crate) fn insert(&'static self, key: K, value: Arc<V>) -> Result<Registered<K, V>> {
        let entry = value.clone();
        // `value` outlives the closure, so the closure never drops the last
        // reference (and never runs `V`'s destructor) under the lock.
        self.with(|slots| {
            if slots.as_slice().iter().flatten().any(|s| s.key == key) {
                return Err(EEXIST);
            }
            let slot = Slot {
                key,
                value: entry,
                holders: 1,
            };
            match slots.as_mut_slice().iter_mut().find(|s| s.is_none()) {
                Some(free) => *free = Some(slot),
                None => slots.push(Some(slot), GFP_KERNEL)?,
            }
            Ok(())
        })?;
        // INVARIANT: the new entry holds `value` and counts this guard.
        Ok(Registered {
            registry: self,
            key,
            value,
        })
    }

    /// Another guard for the entry under `key`, if there is one.
    pub(crate) fn join(&'static self, key: K) -> Option<Registered<K, V>> {
        let value = self.with(|slots| {
            let slot = slots
                .as_mut_slice()
                .iter_mut()
                .flatten()
                .find(|s| s.key == key)?;
            slot.holders = slot.holders.checked_add(1)?;
            Some(slot.value.clone())
        })?;
        // INVARIANT: the entry holds `value` and now counts this guard.
        Some(Registered {
            registry: self,
            key,
            value,
        })
    }
}

/// Keeps an entry registered; the entry goes when its last guard is dropped.
///
/// # Invariants
///
/// The entry under `key` in `registry` holds `value` and counts this guard.
pub(crate) struct Registered<K: Copy + Eq + 'static, V: 'static> {
    registry: &'static Registry<K, V>,
    key: K,
    value: Arc<V>,
}

impl<K: Copy + Eq + 'static, V: 'static> Registered<K, V> {
    /// The registered value.
    pub(crate) fn value(&self) -> &Arc<V> {
        &self.value
    }
}

impl<K: Copy + Eq + 'static, V: 'static> Deref for Registered<K, V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.value
    }
}

impl<K: Copy + Eq + 'static, V: 'static> Drop for Registered<K, V> {
    fn drop(&mut self) {
        let key = self.key;
        let removed = self.registry.with(|slots| {
            let slot = slots
                .as_mut_slice()
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|s| s.key == key))?;
            let entry = slot.as_mut()?;
            entry.holders = entry.holders.saturating_sub(1);
            if entry.holders == 0 {
                slot.take()
            } else {
                None
            }
        });
        // Dropped here, outside the lock.
        drop(removed);
    }
}
