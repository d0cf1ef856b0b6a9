// SPDX-License-Identifier: GPL-2.0

//! dm-io: reads and writes of a [`Region`] from or to a kernel buffer, waited
//! for or in the background, and cache flushes (empty `REQ_PREFLUSH` writes),
//! as snapshot's exception store and dm-log use.
//!
//! # Ownership
//!
//! - Synchronous calls borrow the buffer and return when the I/O is done.
//!   They sleep, so they run in a worker, never in `map` (a bio submitted
//!   from `map` only starts after `map` returns: waiting there deadlocks).
//! - A background I/O ([`DmIoClient::submit`]) takes the [`IoBuffer`], the
//!   [`Region`] (so its device) and a reference to the client into a
//!   [`PendingIo`]; only [`PendingIo::wait`] gives the buffer back, after the
//!   I/O completed. Dropping a [`PendingIo`] waits for the I/O first, so the
//!   buffer, device and client outlive every bio that uses them. The C
//!   completion runs in interrupt context and only signals the waiter; no
//!   Rust code of ours runs there.
//! - The client holds a [`ModuleRef`]; a leaked [`PendingIo`] keeps the
//!   client, and so dm-rs, loaded.
//!
//! C header: [`include/linux/dm-io.h`](srctree/include/linux/dm-io.h)

use super::bindings;
use super::device::DmDev;
use super::module_ref::ModuleRef;
use super::region::{Region, RegionDev};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::alloc::VVec;
use kernel::error::{
    code::{EINVAL, EIO, ENOMEM},
    Error,
};
use kernel::ffi::{c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::Opaque;

const SECTOR_SIZE: usize = 512;

/// A vmalloc'ed buffer of whole sectors for dm-io (`DM_IO_VMA` memory).
///
/// # Invariants
///
/// `data.len()` is a multiple of 512; when non-zero, `data` is vmalloc
/// memory (`VVec`).
pub(crate) struct IoBuffer {
    data: VVec<u8>,
}

impl IoBuffer {
    /// A zero-filled buffer of `sectors` sectors.
    pub(crate) fn new(sectors: u32) -> Result<Self> {
        let len = (sectors as usize).checked_mul(SECTOR_SIZE).ok_or(EINVAL)?;
        // INVARIANT: a multiple of 512 bytes, from vmalloc.
        Ok(IoBuffer {
            data: VVec::from_elem(0u8, len, GFP_KERNEL)?,
        })
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.data.as_slice()
    }

    /// The bytes, for filling before a write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.data.as_mut_slice()
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The buffer as dm-io memory. It takes `&mut self` because dm-io may
    /// write through the pointer (reads): the pointer must come from a unique
    /// borrow.
    fn memory(&mut self) -> bindings::dm_io_memory {
        vma_memory(self.data.as_mut_ptr())
    }

    /// The buffer as dm-io memory that dm-io only reads (writes to a device).
    fn memory_to_write(&self) -> bindings::dm_io_memory {
        vma_memory(self.data.as_ptr().cast_mut())
    }
}

impl AsRef<[u8]> for IoBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for IoBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

fn vma_memory(ptr: *mut u8) -> bindings::dm_io_memory {
    let mut mem = bindings::dm_io_memory {
        type_: bindings::dm_io_mem_type_DM_IO_VMA,
        offset: 0,
        ..Default::default()
    };
    mem.ptr.vma = ptr.cast::<c_void>();
    mem
}

/// What an I/O does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum IoOp {
    /// Device to buffer.
    Read,
    /// Buffer to device.
    Write,
    /// Buffer to device, on stable storage when it completes (`REQ_FUA`).
    WriteFua,
    /// The device's volatile cache flushed first, then buffer to device on
    /// stable storage (`REQ_PREFLUSH | REQ_FUA`): on completion this write
    /// and every write completed before it are stable. One request where a
    /// [`DmIoClient::flush`] and a [`IoOp::WriteFua`] would be two.
    WriteFlushFua,
}

impl IoOp {
    fn opf(self) -> u32 {
        match self {
            IoOp::Read => kernel::bindings::req_op_REQ_OP_READ,
            IoOp::Write => kernel::bindings::req_op_REQ_OP_WRITE,
            IoOp::WriteFua => {
                kernel::bindings::req_op_REQ_OP_WRITE
                    | 1u32 << kernel::bindings::req_flag_bits___REQ_FUA
            }
            IoOp::WriteFlushFua => {
                IoOp::WriteFua.opf() | 1u32 << kernel::bindings::req_flag_bits___REQ_PREFLUSH
            }
        }
    }
}

/// A dm-io client: the bio set and mempool I/O is allocated from.
///
/// # Invariants
///
/// `c` came from `dm_io_client_create` and is destroyed only in `drop`.
pub(crate) struct DmIoClient {
    c: NonNull<bindings::dm_io_client>,
    _module: ModuleRef,
}

// SAFETY: a dm-io client is a mempool and a bio set, both thread-safe.
unsafe impl Send for DmIoClient {}
// SAFETY: as for `Send`; `&self` only issues I/O.
unsafe impl Sync for DmIoClient {}

impl DmIoClient {
    /// Creates a client.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions.
        let c = unsafe { bindings::dm_io_client_create() };
        // SAFETY: only inspects the pointer value.
        let r = unsafe { bindings::dmrs_ptr_err_or_zero(c.cast()) };
        if r != 0 {
            return Err(Error::from_errno(r as i32));
        }
        // INVARIANT: a fresh client.
        Ok(DmIoClient {
            c: NonNull::new(c).ok_or(ENOMEM)?,
            _module: ModuleRef::new(),
        })
    }

    fn request(
        &self,
        opf: u32,
        mem: bindings::dm_io_memory,
        context: *mut c_void,
    ) -> bindings::dm_io_request {
        let notify = bindings::dm_io_notify {
            fn_: if context.is_null() {
                None
            } else {
                Some(io_done)
            },
            context,
        };
        bindings::dm_io_request {
            bi_opf: opf,
            mem,
            notify,
            client: self.c.as_ptr(),
        }
    }

    /// Runs a request synchronously over `regions`.
    fn run_sync(
        &self,
        opf: u32,
        mem: bindings::dm_io_memory,
        regions: &mut [bindings::dm_io_region],
    ) -> Result {
        let mut req = self.request(opf, mem, core::ptr::null_mut());
        let mut error_bits: c_ulong = 0;
        // SAFETY: the client is live (type invariant); the request's memory
        // and the regions' devices are valid for the whole call, which waits
        // for the I/O (no notify function).
        let r = unsafe {
            bindings::dm_io(
                &mut req,
                regions.len() as u32,
                regions.as_mut_ptr(),
                &mut error_bits,
                bindings::dmrs_ioprio_default(),
            )
        };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        if error_bits != 0 {
            return Err(EIO);
        }
        Ok(())
    }

    /// Reads `region` into `buf` (exactly as long as the region) and waits.
    pub(crate) fn read(&self, region: &Region<impl RegionDev>, buf: &mut IoBuffer) -> Result {
        if buf.len() != region.bytes() {
            return Err(EINVAL);
        }
        self.run_sync(IoOp::Read.opf(), buf.memory(), &mut [region.as_raw()])
    }

    /// Writes `buf` (exactly as long as the region) to `region` and waits.
    pub(crate) fn write(
        &self,
        region: &Region<impl RegionDev>,
        buf: &IoBuffer,
        op: IoOp,
    ) -> Result {
        if op == IoOp::Read || buf.len() != region.bytes() {
            return Err(EINVAL);
        }
        self.run_sync(op.opf(), buf.memory_to_write(), &mut [region.as_raw()])
    }

    /// Flushes `dev`'s volatile cache (an empty `REQ_PREFLUSH` write) and
    /// waits.
    pub(crate) fn flush(&self, dev: &DmDev) -> Result {
        let empty = bindings::dm_io_region {
            bdev: dev.bdev(),
            sector: 0,
            count: 0,
        };
        let mem = bindings::dm_io_memory {
            type_: bindings::dm_io_mem_type_DM_IO_KMEM,
            ..Default::default()
        };
        let opf = kernel::bindings::req_op_REQ_OP_WRITE
            | 1u32 << kernel::bindings::req_flag_bits___REQ_PREFLUSH;
        self.run_sync(opf, mem, &mut [empty])
    }

    /// Starts `op` between `region` and `buf` (exactly as long as the
    /// region) in the background. On error nothing was issued and the buffer
    /// is handed back.
    pub(crate) fn submit(
        this: &Arc<Self>,
        op: IoOp,
        region: Region,
        buf: IoBuffer,
    ) -> Result<PendingIo, (Error, IoBuffer)> {
        if buf.len() != region.bytes() {
            return Err((EINVAL, buf));
        }
        let Ok(slot) = KBox::<IoCompletion>::new_uninit(GFP_KERNEL) else {
            return Err((ENOMEM, buf));
        };
        let completion: Pin<KBox<IoCompletion>> = KBox::write(
            slot,
            IoCompletion {
                done: Opaque::uninit(),
                error_bits: AtomicUsize::new(0),
            },
        )
        .into();
        // SAFETY: `done` is pinned on the heap and initialised here, before
        // any use.
        unsafe { bindings::dmrs_init_completion(completion.done.get()) };
        let io = InFlight {
            completion,
            buf,
            region,
            _client: this.clone(),
        };
        let context = (&*io.completion as *const IoCompletion)
            .cast_mut()
            .cast::<c_void>();
        let mut io = io;
        let mut req = this.request(op.opf(), io.buf.memory(), context);
        let mut raw = io.region.as_raw();
        // SAFETY: the client is live; with a notify function and one region,
        // `dm_io` either fails before issuing anything (returning non-zero,
        // no callback) or returns 0 and calls `io_done` exactly once with
        // `context` when all bios completed. The completion, buffer, device
        // and client are owned by `io` and `PendingIo` waits for that call
        // before releasing them.
        let r = unsafe {
            bindings::dm_io(
                &mut req,
                1,
                &mut raw,
                core::ptr::null_mut(),
                bindings::dmrs_ioprio_default(),
            )
        };
        if r != 0 {
            return Err((Error::from_errno(r), io.buf));
        }
        Ok(PendingIo { io: Some(io) })
    }
}

impl Drop for DmIoClient {
    fn drop(&mut self) {
        // SAFETY: the client is live and destroyed once, here; every
        // background I/O holds an `Arc` of it, so none is in flight.
        unsafe { bindings::dm_io_client_destroy(self.c.as_ptr()) };
    }
}

/// Signalled from the I/O's completion.
struct IoCompletion {
    done: Opaque<kernel::bindings::completion>,
    error_bits: AtomicUsize,
}

impl IoCompletion {
    /// Waits for the signal and returns the I/O's outcome.
    fn wait(&self) -> Result {
        // SAFETY: `done` was initialised at submission; `io_done` signals it
        // once; after this returns `io_done` no longer touches it.
        unsafe { kernel::bindings::wait_for_completion(self.done.get()) };
        if self.error_bits.load(Ordering::Relaxed) != 0 {
            Err(EIO)
        } else {
            Ok(())
        }
    }
}

/// # Safety
///
/// Called once by dm-io with the `context` of `DmIoClient::submit`, an
/// `IoCompletion` that stays alive until its waiter has been woken.
unsafe extern "C" fn io_done(error_bits: c_ulong, context: *mut c_void) {
    // SAFETY: by the function contract.
    let c = unsafe { &*context.cast::<IoCompletion>() };
    c.error_bits.store(error_bits, Ordering::Relaxed);
    // SAFETY: `done` is initialised; `complete` orders the store above before
    // the waiter wakes, and is the last access to `c`.
    unsafe { kernel::bindings::complete(c.done.get()) };
}

/// What a background I/O keeps until it completes.
struct InFlight {
    completion: Pin<KBox<IoCompletion>>,
    buf: IoBuffer,
    region: Region,
    _client: Arc<DmIoClient>,
}

impl InFlight {
    fn finish(self) -> (Result, IoBuffer) {
        let status = self.completion.wait();
        (status, self.buf)
    }
}

/// A background I/O in flight; waits for it on drop.
pub(crate) struct PendingIo {
    // `Some` until `wait` or `drop` takes it.
    io: Option<InFlight>,
}

impl PendingIo {
    /// Whether the I/O has completed (`wait` then returns at once).
    pub(crate) fn is_done(&self) -> bool {
        match &self.io {
            // SAFETY: the completion was initialised at submission.
            Some(io) => unsafe { kernel::bindings::completion_done(io.completion.done.get()) },
            None => true,
        }
    }

    /// Waits for the I/O and returns its outcome and the buffer.
    pub(crate) fn wait(mut self) -> (Result, IoBuffer) {
        match self.io.take() {
            Some(io) => io.finish(),
            // Unreachable: only `wait` (consuming) and `drop` take `io`.
            None => (Err(EINVAL), IoBuffer { data: VVec::new() }),
        }
    }
}

impl Drop for PendingIo {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            let _ = io.finish();
        }
    }
}
