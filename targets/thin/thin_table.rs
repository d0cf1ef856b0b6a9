// SPDX-License-Identifier: GPL-2.0

//! thin's table line, `<pool dev> <dev id> [<external origin dev>]`,
//! parsed with upstream's checks and error texts and written back the way
//! upstream's table status writes it.

use super::number::kstrtoull;
use super::status::{EmitDevice, StatusSink};

/// Largest thin device id: ids are 24-bit.
pub const MAX_DEV_ID: u32 = (1 << 24) - 1;

/// Reads a thin device id as upstream does: a decimal number (`kstrtoull`)
/// no larger than [`MAX_DEV_ID`].
pub fn parse_dev_id(word: &[u8]) -> Option<u32> {
    kstrtoull(word)
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n <= MAX_DEV_ID)
}

/// Why a thin table line was refused; [`Self::text`] is upstream's
/// `ti->error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThinCtrError {
    /// Not two or three arguments.
    ArgCount,
    /// The external origin word is the pool device word.
    SameOrigin,
    /// The device id is not a decimal number of at most 24 bits.
    DevId,
    // The rest are found by the caller; here for their texts. Upstream's
    // errno is `-EINVAL` unless noted.
    /// Allocating the thin failed (`-ENOMEM`).
    OutOfMemory,
    /// Opening the external origin failed (its errno).
    OpenOrigin,
    /// Opening the pool device failed (its errno).
    OpenPool,
    /// The pool device is not a mapped device.
    NoPoolDevice,
    /// The pool device has no thin-pool.
    NoPool,
    /// The pool is in fail mode.
    PoolFailed,
    /// The metadata could not open the thin (its errno).
    OpenThin,
    /// The pool is suspended.
    PoolSuspended,
}

impl ThinCtrError {
    /// The error text, NUL-terminated for `ti->error`.
    pub fn text_with_nul(self) -> &'static [u8] {
        match self {
            Self::ArgCount => b"Invalid argument count\0",
            Self::SameOrigin => b"Error setting origin device\0",
            Self::DevId => b"Invalid device id\0",
            Self::OutOfMemory => b"Out of memory\0",
            Self::OpenOrigin => b"Error opening origin device\0",
            Self::OpenPool => b"Error opening pool device\0",
            Self::NoPoolDevice => b"Couldn't get pool mapped device\0",
            Self::NoPool => b"Couldn't find pool object\0",
            Self::PoolFailed => b"Couldn't open thin device, Pool is in fail mode\0",
            Self::OpenThin => b"Couldn't open thin internal device\0",
            Self::PoolSuspended => b"Unable to activate thin device while pool is suspended\0",
        }
    }

    /// The error text.
    pub fn text(self) -> &'static [u8] {
        let t = self.text_with_nul();
        t.strip_suffix(b"\0").unwrap_or(t)
    }

    /// Whether upstream finds this only after opening the origin (if any)
    /// and the pool device: the caller must then try to open them first and
    /// report a failure to open ([`Self::OpenOrigin`], [`Self::OpenPool`])
    /// instead of this error.
    pub fn found_after_open(self) -> bool {
        matches!(self, Self::DevId)
    }
}

/// A parsed thin table line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinTable<'a> {
    /// The pool device word.
    pub pool_dev: &'a [u8],
    /// The thin device id.
    pub dev_id: u32,
    /// The external origin device word, if any.
    pub origin_dev: Option<&'a [u8]>,
}

impl<'a> ThinTable<'a> {
    /// Parses the words of a thin table line (after the target name).
    pub fn parse<I>(args: I) -> Result<Self, ThinCtrError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut args = args.into_iter();
        let (Some(pool_dev), Some(dev_id), origin_dev, None) =
            (args.next(), args.next(), args.next(), args.next())
        else {
            return Err(ThinCtrError::ArgCount);
        };
        if origin_dev == Some(pool_dev) {
            return Err(ThinCtrError::SameOrigin);
        }
        let dev_id = parse_dev_id(dev_id).ok_or(ThinCtrError::DevId)?;
        Ok(Self {
            pool_dev,
            dev_id,
            origin_dev,
        })
    }

    /// Writes the table line with the devices as loaded.
    pub fn emit(&self, out: &mut dyn StatusSink) {
        let origin = self.origin_dev;
        emit_thin_table(
            out,
            &self.pool_dev,
            self.dev_id,
            origin.as_ref().map(|o| o as &dyn EmitDevice),
        );
    }
}

/// Writes a thin table line as upstream's table status does:
/// `<pool> <dev id>[ <origin>]`, no trailing space. (While the pool is in
/// fail mode upstream writes `Fail` instead, for every status type.)
pub fn emit_thin_table(
    out: &mut dyn StatusSink,
    pool_dev: &dyn EmitDevice,
    dev_id: u32,
    origin_dev: Option<&dyn EmitDevice>,
) {
    pool_dev.emit_device(out);
    out.put(b" ");
    out.put_u64(u64::from(dev_id));
    if let Some(origin) = origin_dev {
        out.put(b" ");
        origin.emit_device(out);
    }
}
