// SPDX-License-Identifier: GPL-2.0

//! The `struct bio` a target sees in `map` and `end_io`.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use super::bindings;
use super::device::DmDev;
use kernel::types::Opaque;

/// Operation of a bio (`REQ_OP_*`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum BioOp {
    Read,
    Write,
    Flush,
    Discard,
    SecureErase,
    WriteZeroes,
    /// Zone management and driver-private operations.
    Other(u32),
}

/// A bio lent to a target by dm core.
///
/// # Invariants
///
/// The wrapped `struct bio` is valid for the lifetime of the reference, and
/// the target that holds the reference is the only one touching it (dm core
/// hands a bio to one callback at a time).
#[repr(transparent)]
pub(crate) struct Bio(Opaque<kernel::bindings::bio>);

impl Bio {
    /// # Safety
    ///
    /// `ptr` must be a valid bio that the caller may access exclusively for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut kernel::bindings::bio) -> &'a Self {
        // SAFETY: `Bio` is a transparent wrapper of `bio`; validity and
        // exclusivity are the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn raw(&self) -> *mut kernel::bindings::bio {
        self.0.get()
    }

    /// First sector the bio addresses.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: the bio is valid (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_sector }
    }

    /// Redirects the bio to another sector.
    pub(crate) fn set_sector(&self, sector: u64) {
        // SAFETY: the bio is valid and ours alone (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_sector = sector };
    }

    /// Remaining size in bytes.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: the bio is valid (type invariant).
        unsafe { (*self.raw()).bi_iter.bi_size }
    }

    /// Remaining size in 512-byte sectors.
    pub(crate) fn sectors(&self) -> u32 {
        // SAFETY: the bio is valid (type invariant).
        unsafe { bindings::dmrs_bio_sectors(self.raw()) }
    }

    /// The operation.
    pub(crate) fn op(&self) -> BioOp {
        // SAFETY: the bio is valid (type invariant).
        let op = unsafe { bindings::dmrs_bio_op(self.raw()) };
        match op {
            kernel::bindings::req_op_REQ_OP_READ => BioOp::Read,
            kernel::bindings::req_op_REQ_OP_WRITE => BioOp::Write,
            kernel::bindings::req_op_REQ_OP_FLUSH => BioOp::Flush,
            kernel::bindings::req_op_REQ_OP_DISCARD => BioOp::Discard,
            kernel::bindings::req_op_REQ_OP_SECURE_ERASE => BioOp::SecureErase,
            kernel::bindings::req_op_REQ_OP_WRITE_ZEROES => BioOp::WriteZeroes,
            other => BioOp::Other(other),
        }
    }

    /// Whether the operation writes (data direction WRITE).
    pub(crate) fn is_write(&self) -> bool {
        // SAFETY: the bio is valid (type invariant).
        unsafe { bindings::dmrs_bio_is_write(self.raw()) }
    }

    fn has_flag(&self, bit: u32) -> bool {
        // SAFETY: the bio is valid (type invariant).
        let opf = unsafe { (*self.raw()).bi_opf };
        opf & (1u32 << bit) != 0
    }

    /// Whether the bio asks for a cache flush before it (`REQ_PREFLUSH`).
    pub(crate) fn is_preflush(&self) -> bool {
        self.has_flag(kernel::bindings::req_flag_bits___REQ_PREFLUSH)
    }

    /// Whether the bio must reach stable storage (`REQ_FUA`).
    pub(crate) fn is_fua(&self) -> bool {
        self.has_flag(kernel::bindings::req_flag_bits___REQ_FUA)
    }

    /// Points the bio at an underlying device of the target.
    pub(crate) fn set_dev(&self, dev: &DmDev) {
        // SAFETY: the bio is ours (type invariant) and the device is open
        // while the target that owns `dev` exists.
        unsafe { bindings::dmrs_bio_set_dev(self.raw(), dev.bdev()) };
    }

    /// Tells dm core to process only the first `sectors` now and send the rest
    /// in another bio. Only valid from `map`.
    pub(crate) fn accept_partial(&self, sectors: u32) {
        // SAFETY: the bio is one dm core passed to `map` (only caller).
        unsafe { bindings::dm_accept_partial_bio(self.raw(), sectors) };
    }
}
