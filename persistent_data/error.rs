// SPDX-License-Identifier: GPL-2.0

//! The engine's error type, with the errno each variant maps to upstream.

use core::fmt;

/// Errors returned by every layer of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A key, block or entry is not present (`-ENODATA`).
    NoData,
    /// An allocation failed (`-ENOMEM`).
    NoMem,
    /// A space map has no free block (`-ENOSPC`).
    NoSpace,
    /// The device failed an I/O (`-EIO`).
    Io,
    /// A block's checksum or structure is wrong (`-EILSEQ`).
    BadChecksum,
    /// A block records a different location than the one it was read from
    /// (`-ENOTBLK`).
    BadBlockNumber,
    /// Inconsistent metadata or a bad argument (`-EINVAL`).
    Invalid,
    /// The block is locked in a conflicting mode (`-EBUSY`).
    Busy,
    /// The operation would have to block (`-EWOULDBLOCK`).
    WouldBlock,
    /// The block manager is read-only (`-EPERM`).
    ReadOnly,
    /// The object already exists (`-EEXIST`).
    Exists,
    /// The transaction was poisoned by an operation that failed half way;
    /// it must be aborted (`-EINVAL`, as upstream's commit in fail mode).
    Poisoned,
}

/// Result type used throughout the engine.
pub type Result<T = ()> = core::result::Result<T, Error>;

impl Error {
    /// The negative errno upstream returns for the same condition.
    pub fn to_errno(self) -> i32 {
        match self {
            Error::NoData => -61,         // ENODATA
            Error::NoMem => -12,          // ENOMEM
            Error::NoSpace => -28,        // ENOSPC
            Error::Io => -5,              // EIO
            Error::BadChecksum => -84,    // EILSEQ
            Error::BadBlockNumber => -15, // ENOTBLK
            Error::Invalid => -22,        // EINVAL
            Error::Busy => -16,           // EBUSY
            Error::WouldBlock => -11,     // EWOULDBLOCK == EAGAIN
            Error::ReadOnly => -1,        // EPERM
            Error::Exists => -17,         // EEXIST
            Error::Poisoned => -22,       // EINVAL
        }
    }

    /// Short name, for log messages.
    pub fn name(self) -> &'static str {
        match self {
            Error::NoData => "ENODATA",
            Error::NoMem => "ENOMEM",
            Error::NoSpace => "ENOSPC",
            Error::Io => "EIO",
            Error::BadChecksum => "EILSEQ",
            Error::BadBlockNumber => "ENOTBLK",
            Error::Invalid => "EINVAL",
            Error::Busy => "EBUSY",
            Error::WouldBlock => "EWOULDBLOCK",
            Error::ReadOnly => "EPERM",
            Error::Exists => "EEXIST",
            Error::Poisoned => "EINVAL (transaction poisoned by a failed operation: abort it)",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_match_linux() {
        assert_eq!(Error::NoData.to_errno(), -61);
        assert_eq!(Error::BadChecksum.to_errno(), -84);
        assert_eq!(Error::BadBlockNumber.to_errno(), -15);
        assert_eq!(Error::WouldBlock.to_errno(), -11);
        assert_eq!(Error::ReadOnly.to_errno(), -1);
        assert_eq!(Error::Exists.to_errno(), -17);
    }
}
