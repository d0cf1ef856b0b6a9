// SPDX-License-Identifier: GPL-2.0

//! A dm-bufio client: cached, block-sized I/O on a device, and the kernel
//! side of the metadata engine's block I/O seam.
//!
//! Ownership rules, enforced by the types:
//!
//! * Reads take `&self` and return a [`HeldBuffer`] that holds the buffer
//!   (`dm_bufio_release` on drop) and borrows the client, so the client is
//!   never destroyed while a buffer is held. Reads may run on many threads
//!   at once.
//! * Writes ([`BufioClient::write`], [`BufioClient::flush`]) take
//!   `&mut self`: no buffer can be written while anyone holds one.
//! * Each buffer remembers, in dm-bufio's per-buffer aux data, the engine
//!   validator that checked it (reset by the allocation callback whenever
//!   dm-bufio sets a buffer up for a block), so a loaded block is
//!   checksummed once, not on every read, as upstream's block manager does.
//!
//! * Cache hints take `&self` and never touch a held or dirty buffer:
//!   [`BufioClient::prefetch`] starts reading blocks in the background,
//!   [`BufioClient::forget`] drops clean, unheld blocks from the cache
//!   (dm-bufio skips the others), so the next read of them goes to the
//!   device and is checked again.
//! * [`BufioClient::set_minimum_buffers`] takes `&mut self`: dm-bufio
//!   stores the number without a lock.
//!
//! Reads may sleep (`dm_bufio_read` waits for I/O); `try_read`
//! (`dm_bufio_get`) never waits for I/O and never allocates, and is the only
//! one allowed on a bio's map path (dm-bufio warns if `read`, `write` or
//! `prefetch` run there). `forget` takes the client's locks (it may sleep).
//!
//! A block that fails its validator is logged with its number, the
//! validator and the error (as upstream's block manager does), since the
//! error code alone does not say which block of the metadata is damaged.
//!
//! A held buffer leaked with `mem::forget` stays held: destroying the
//! client then logs "leaked buffer" and warns, but nothing is freed early.
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h)

use super::bindings;
use super::device::DmDev;
use crate::persistent_data::error as pd;
use crate::persistent_data::io::{Block, BlockIo, BLOCK_SIZE};
use crate::persistent_data::validator::{check_once, ValidatorRef};
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ops::Deref;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};
use kernel::error::{code::EINVAL, Error, Result};

/// Buffers dm-bufio keeps in reserve so that a few can always be held
/// under memory pressure (upstream's thin metadata asks for five).
const RESERVED_BUFFERS: u32 = 5;

/// `Aux::state`: no validator has checked this buffer's contents.
const UNCHECKED: u8 = 0;
/// `Aux::state`: one reader is recording the validator that checked it.
const RECORDING: u8 = 1;
/// `Aux::state`: `Aux::checked` holds the validator that checked it.
const RECORDED: u8 = 2;

/// Our part of each dm-bufio buffer (its aux data): which validator checked
/// the buffer's contents.
///
/// # Invariants
///
/// `checked` is initialised whenever `state` is `RECORDED`, and is written
/// only by the one thread that moved `state` from `UNCHECKED` to
/// `RECORDING` (or by a writer holding the client exclusively), never while
/// `state` is `RECORDED`.
#[repr(C)]
struct Aux {
    state: AtomicU8,
    checked: UnsafeCell<MaybeUninit<ValidatorRef>>,
}

// dm-bufio places the aux data right after `struct dm_buffer`, whose size is
// a multiple of its (pointer) alignment.
const _: () = assert!(core::mem::align_of::<Aux>() <= core::mem::align_of::<usize>());

impl Aux {
    /// The validator recorded for the buffer, if any.
    fn recorded(&self) -> Option<ValidatorRef> {
        if self.state.load(Ordering::Acquire) != RECORDED {
            return None;
        }
        // SAFETY: `RECORDED` was published (Release) after `checked` was
        // written, and nobody writes it while it stays `RECORDED` (type
        // invariant).
        Some(unsafe { (*self.checked.get()).assume_init() })
    }

    /// Records that `v` checked the buffer, unless another reader is
    /// already recording (then the next read checks again: harmless).
    fn record(&self, v: ValidatorRef) {
        if self
            .state
            .compare_exchange(UNCHECKED, RECORDING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: winning the exchange makes this thread the only writer,
            // and readers only read `checked` once they see `RECORDED`.
            unsafe { (*self.checked.get()).write(v) };
            // INVARIANT: `checked` is initialised before `RECORDED` is seen.
            self.state.store(RECORDED, Ordering::Release);
        }
    }
}

/// The aux data of buffer `b`.
///
/// # Safety
///
/// `b` must be a buffer of a client created by [`BufioClient::new`] (whose
/// aux data is an `Aux`), held or being set up by dm-bufio.
unsafe fn aux<'a>(b: *mut bindings::dm_buffer) -> &'a Aux {
    // SAFETY: the client reserved `size_of::<Aux>()` suitably aligned bytes
    // of aux data per buffer, which the allocation callback initialised
    // before the buffer became visible; the buffer outlives the borrow the
    // caller makes (it is held).
    unsafe { &*bindings::dm_bufio_get_aux_data(b).cast::<Aux>() }
}

/// dm-bufio's allocation callback: a buffer is being set up for a block, so
/// nothing has checked its contents yet.
///
/// # Safety
///
/// Only for dm-bufio to call, with a buffer of a client created by
/// [`BufioClient::new`] that no other thread can see yet.
unsafe extern "C" fn reset_aux(b: *mut bindings::dm_buffer) {
    // SAFETY: dm-bufio reserved `size_of::<Aux>()` bytes of aux data for
    // this client's buffers, aligned (see the assertion above), and calls
    // this before the buffer is in its cache, so nobody else accesses them.
    unsafe {
        bindings::dm_bufio_get_aux_data(b).cast::<Aux>().write(Aux {
            state: AtomicU8::new(UNCHECKED),
            checked: UnsafeCell::new(MaybeUninit::uninit()),
        })
    };
}

/// A dm-bufio client over one device.
///
/// # Invariants
///
/// `c` is a live client from `dm_bufio_client_create` over `dev`'s block
/// device, created without `DM_BUFIO_CLIENT_NO_SLEEP` (so its operations
/// may sleep), with `Aux` aux data and [`reset_aux`] as allocation callback,
/// destroyed only on drop, and `block_size` is its block size in bytes.
pub(crate) struct BufioClient {
    c: NonNull<bindings::dm_bufio_client>,
    block_size: usize,
    /// Keeps the block device open until the client (which writes dirty
    /// buffers back when destroyed) is gone: fields drop after `drop`.
    _dev: DmDev,
}

// SAFETY: a dm-bufio client may be used and destroyed from any thread; it
// locks internally.
unsafe impl Send for BufioClient {}
// SAFETY: through `&self` the client only reads, gets, prefetches, forgets
// and releases buffers (each of which dm-bufio locks internally), reads buffer
// data (nothing writes it while a shared borrow exists: writing takes
// `&mut self`) and records validators in aux data under `Aux`'s atomic
// protocol.
unsafe impl Sync for BufioClient {}

fn decode_ptr<T>(ptr: *mut T) -> Result<NonNull<T>> {
    // SAFETY: `dmrs_ptr_err_or_zero` only inspects the pointer value.
    let r = unsafe { bindings::dmrs_ptr_err_or_zero(ptr.cast()) };
    if r != 0 {
        return Err(Error::from_errno(r as i32));
    }
    NonNull::new(ptr).ok_or(EINVAL)
}

impl BufioClient {
    /// Creates a client with `block_size`-byte blocks over `dev`. The client
    /// holds its own reference on the device, so it may outlive `dev` (and
    /// the table).
    pub(crate) fn new(dev: &DmDev, block_size: u32) -> Result<Self> {
        let dev = dev.clone();
        // SAFETY: `dev` holds the block device open for as long as the
        // client lives (it is kept in the client); the aux size and callback
        // are the ones `Aux` and `reset_aux` require.
        let c = unsafe {
            bindings::dm_bufio_client_create(
                dev.bdev(),
                block_size,
                RESERVED_BUFFERS,
                core::mem::size_of::<Aux>() as u32,
                Some(reset_aux),
                None,
                0,
            )
        };
        let c = decode_ptr(c)?;
        // INVARIANT: a live client over `dev` with that block size, aux data
        // and callback.
        Ok(Self {
            c,
            block_size: block_size as usize,
            _dev: dev,
        })
    }

    /// Number of whole blocks on the device.
    pub(crate) fn nr_blocks(&self) -> u64 {
        // SAFETY: `c` is live (type invariant).
        unsafe { bindings::dm_bufio_get_device_size(self.c.as_ptr()) }
    }

    /// A held buffer from what `dm_bufio_read`/`dm_bufio_get` returned.
    fn held(
        &self,
        data: NonNull<core::ffi::c_void>,
        buf: *mut bindings::dm_buffer,
    ) -> Result<HeldBuffer<'_>> {
        let buf = NonNull::new(buf).ok_or(EINVAL)?;
        // INVARIANT: dm-bufio returned a held buffer of this client, whose
        // `block_size` bytes of data start at `data`.
        Ok(HeldBuffer {
            buf,
            data: data.cast(),
            len: self.block_size,
            _client: PhantomData,
        })
    }

    /// Block `b`, read from the device if it is not cached; may sleep.
    pub(crate) fn read(&self, b: u64) -> Result<HeldBuffer<'_>> {
        let mut buf = core::ptr::null_mut();
        // SAFETY: `c` is live (type invariant) and `buf` is a valid out
        // pointer.
        let data = decode_ptr(unsafe { bindings::dm_bufio_read(self.c.as_ptr(), b, &mut buf) })?;
        self.held(data, buf)
    }

    /// Block `b` if it is cached and read; `None` if getting it would need
    /// I/O. Never waits for I/O, never allocates.
    pub(crate) fn get(&self, b: u64) -> Result<Option<HeldBuffer<'_>>> {
        let mut buf = core::ptr::null_mut();
        // SAFETY: `c` is live (type invariant) and `buf` is a valid out
        // pointer.
        let data = unsafe { bindings::dm_bufio_get(self.c.as_ptr(), b, &mut buf) };
        if data.is_null() {
            return Ok(None);
        }
        self.held(decode_ptr(data)?, buf).map(Some)
    }

    /// Starts reading block `b` into the cache in the background.
    pub(crate) fn prefetch(&self, b: u64) {
        // SAFETY: `c` is live (type invariant); prefetch only queues I/O.
        unsafe { bindings::dm_bufio_prefetch(self.c.as_ptr(), b, 1) };
    }

    /// Drops every block of `[b, b + n)` from the cache that is clean and
    /// that nobody holds; leaves the others. May sleep.
    pub(crate) fn forget(&self, b: u64, n: u64) {
        // SAFETY: no preconditions; debug kernels report atomic callers
        // (forgetting takes the client's mutex).
        unsafe { bindings::dmrs_might_sleep() };
        // SAFETY: `c` is live (type invariant); dm-bufio frees a buffer only
        // if it is neither held (no `HeldBuffer` points at it) nor dirty nor
        // under I/O, under the client's locks.
        unsafe { bindings::dm_bufio_forget_buffers(self.c.as_ptr(), b, n) };
    }

    /// Sets how many buffers the client keeps before its cache is cleaned
    /// up (dm-bufio's default is 8). In 6.12 dm-bufio records the number
    /// but its cleanup goes by the module-wide `retain_bytes` instead; set
    /// it anyway where upstream's targets do, for kernels that use it.
    pub(crate) fn set_minimum_buffers(&mut self, n: u32) {
        // SAFETY: `c` is live (type invariant); the exclusive borrow keeps
        // every other use of the client out while the field is written.
        unsafe { bindings::dm_bufio_set_minimum_buffers(self.c.as_ptr(), n) };
    }

    /// Replaces block `b` with `data` in the cache and marks it dirty; it
    /// reaches the disk at the next `flush` (or earlier, under memory
    /// pressure). `v`, if given, is recorded as the validator that checked
    /// the new contents (the engine stamped them with it).
    fn write_block(&mut self, b: u64, data: &[u8], v: Option<ValidatorRef>) -> Result {
        if data.len() != self.block_size {
            return Err(EINVAL);
        }
        let mut buf = core::ptr::null_mut();
        // SAFETY: `c` is live (type invariant) and `buf` is a valid out
        // pointer.
        let dst = decode_ptr(unsafe { bindings::dm_bufio_new(self.c.as_ptr(), b, &mut buf) })?;
        let held = self.held(dst, buf)?;
        // SAFETY: the buffer is held and has `block_size` bytes (type
        // invariant of `HeldBuffer`), and no Rust code reads or writes them
        // meanwhile: every other holder would borrow this client, which we
        // hold exclusively. (dm-bufio may still be writing an earlier dirty
        // copy to disk; as with upstream's block manager the buffer is dirty
        // again and rewritten before the next flush completes.)
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), held.data.as_ptr(), data.len());
            bindings::dm_bufio_mark_buffer_dirty(held.buf.as_ptr());
        }
        // SAFETY: a held buffer of this client.
        let aux = unsafe { aux(held.buf.as_ptr()) };
        // With the client held exclusively no reader races this reset.
        aux.state.store(UNCHECKED, Ordering::Release);
        if let Some(v) = v {
            aux.record(v);
        }
        Ok(())
    }

    /// Writes every dirty block, waits for them, then flushes the device's
    /// cache (dm-bufio issues the flush itself).
    pub(crate) fn flush(&mut self) -> Result {
        // SAFETY: `c` is live (type invariant).
        let r = unsafe { bindings::dm_bufio_write_dirty_buffers(self.c.as_ptr()) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(())
    }
}

impl Drop for BufioClient {
    fn drop(&mut self) {
        // SAFETY: `c` is live and destroyed exactly once, here (type
        // invariant); no buffer is held, as held buffers borrow the client;
        // `dev` still holds the device open.
        unsafe { bindings::dm_bufio_client_destroy(self.c.as_ptr()) };
    }
}

/// A buffer held in a [`BufioClient`]'s cache: it stays cached and
/// unchanged until dropped, which releases it.
///
/// # Invariants
///
/// `buf` is held (one hold, released on drop) in the client borrowed for
/// `'a`, and its `len` bytes of data start at `data`.
pub(crate) struct HeldBuffer<'a> {
    buf: NonNull<bindings::dm_buffer>,
    data: NonNull<u8>,
    len: usize,
    _client: PhantomData<&'a BufioClient>,
}

impl HeldBuffer<'_> {
    /// Our aux data of the buffer.
    fn aux(&self) -> &Aux {
        // SAFETY: `buf` is a held buffer of a `BufioClient` (type invariant).
        unsafe { aux(self.buf.as_ptr()) }
    }
}

impl Deref for HeldBuffer<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer is held, so its `len` bytes at `data` stay
        // valid and in place; nobody writes them meanwhile, as writing needs
        // the client exclusively and `'a` borrows it shared (type invariant).
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl Drop for HeldBuffer<'_> {
    fn drop(&mut self) {
        // SAFETY: `buf` is held once and released exactly once, here (type
        // invariant).
        unsafe { bindings::dm_bufio_release(self.buf.as_ptr()) };
    }
}

/// A held buffer of a client with the engine's 4 KiB block size.
///
/// # Invariants
///
/// The buffer is `BLOCK_SIZE` bytes long.
pub(crate) struct HeldBlock<'a>(HeldBuffer<'a>);

impl<'a> HeldBlock<'a> {
    fn new(held: HeldBuffer<'a>) -> pd::Result<Self> {
        if held.len != BLOCK_SIZE {
            return Err(pd::Error::Invalid);
        }
        // INVARIANT: checked just above.
        Ok(HeldBlock(held))
    }
}

impl Deref for HeldBlock<'_> {
    type Target = Block;
    fn deref(&self) -> &Block {
        // SAFETY: the held buffer's data is `BLOCK_SIZE` bytes (type
        // invariant) valid as long as `self` (see `HeldBuffer::deref`); a
        // `Block` is exactly that many bytes, with alignment 1.
        unsafe { &*self.0.data.as_ptr().cast::<Block>() }
    }
}

fn send_and_sync<T: Send + Sync>() {}
// Thin shares its metadata between the map path's readers and the worker:
// the engine over a bufio client must be usable from several threads.
const _: fn() =
    send_and_sync::<crate::persistent_data::transaction_manager::TransactionManager<BufioClient>>;

/// The metadata engine's errors for a failed kernel call: anything the
/// device reports is an I/O error, except running out of memory.
fn to_pd(e: Error) -> pd::Error {
    if e == kernel::error::code::ENOMEM {
        pd::Error::NoMem
    } else if e == EINVAL {
        pd::Error::Invalid
    } else {
        pd::Error::Io
    }
}

/// Checks a held block with `v` unless `v` already did (the aux record);
/// a failed check is logged with the block's number.
fn checked<'a>(held: HeldBuffer<'a>, b: u64, v: Option<ValidatorRef>) -> pd::Result<HeldBlock<'a>> {
    let block = HeldBlock::new(held)?;
    let aux = block.0.aux();
    match check_once(b, &block, aux.recorded(), v) {
        Ok(Some(r)) => aux.record(r),
        Ok(None) => {}
        Err(e) => {
            kernel::pr_err!(
                "metadata block {} failed {} validation: {}\n",
                b,
                v.map_or("no", |v| v.name()),
                e
            );
            return Err(e);
        }
    }
    Ok(block)
}

/// The kernel side of the metadata engine's block I/O seam. Every block
/// operation needs a client with the engine's 4 KiB blocks (`Invalid`
/// otherwise).
impl BlockIo for BufioClient {
    type Held<'a> = HeldBlock<'a>;

    fn nr_blocks(&self) -> u64 {
        // In 4 KiB blocks, whatever the client's block size.
        let bytes = BufioClient::nr_blocks(self).saturating_mul(self.block_size as u64);
        bytes / BLOCK_SIZE as u64
    }

    fn read(&self, b: u64, v: Option<ValidatorRef>) -> pd::Result<HeldBlock<'_>> {
        checked(BufioClient::read(self, b).map_err(to_pd)?, b, v)
    }

    fn try_read(&self, b: u64, v: Option<ValidatorRef>) -> pd::Result<HeldBlock<'_>> {
        match self.get(b).map_err(to_pd)? {
            Some(held) => checked(held, b, v),
            None => Err(pd::Error::WouldBlock),
        }
    }

    fn write(&mut self, b: u64, data: &Block, v: Option<ValidatorRef>) -> pd::Result<()> {
        if self.block_size != BLOCK_SIZE {
            return Err(pd::Error::Invalid);
        }
        self.write_block(b, data, v).map_err(to_pd)
    }

    fn flush(&mut self) -> pd::Result<()> {
        BufioClient::flush(self).map_err(to_pd)
    }

    fn prefetch(&self, b: u64) {
        BufioClient::prefetch(self, b)
    }

    fn drop_clean(&mut self) {
        // dm-bufio keeps the dirty and the in-flight buffers.
        self.forget(0, BufioClient::nr_blocks(self));
    }
}
