// SPDX-License-Identifier: GPL-2.0

//! One thin device's details, the values of the device details tree
//! (`struct disk_device_details`, 24 little-endian bytes). They hold no
//! references.

use crate::persistent_data::btree::PlainValues;
use crate::persistent_data::endian::{le32, le64};
use crate::persistent_data::error::Result;

/// Bytes of an encoded [`DeviceDetails`].
pub const DETAILS_SIZE: usize = 24;

/// The details tree's value type.
pub const DETAILS_VALUES: PlainValues = PlainValues(DETAILS_SIZE);

/// A thin device's details.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceDetails {
    /// Blocks mapped.
    pub mapped_blocks: u64,
    /// The pool's transaction id when the device was created.
    pub transaction_id: u64,
    /// The pool's time when the device was created.
    pub creation_time: u32,
    /// The pool's time when the device (or its origin) was last
    /// snapshotted: blocks mapped before it are shared.
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    /// Decodes 24 bytes; `Invalid` if `v` is shorter.
    pub fn unpack(v: &[u8]) -> Result<Self> {
        Ok(DeviceDetails {
            mapped_blocks: le64(v, 0)?,
            transaction_id: le64(v, 8)?,
            creation_time: le32(v, 16)?,
            snapshotted_time: le32(v, 20)?,
        })
    }

    /// Encodes to the 24 on-disk bytes.
    pub fn pack(&self) -> [u8; DETAILS_SIZE] {
        let bytes = self
            .mapped_blocks
            .to_le_bytes()
            .into_iter()
            .chain(self.transaction_id.to_le_bytes())
            .chain(self.creation_time.to_le_bytes())
            .chain(self.snapshotted_time.to_le_bytes());
        let mut d = [0u8; DETAILS_SIZE];
        d.iter_mut().zip(bytes).for_each(|(dst, src)| *dst = src);
        d
    }

    /// True if a block mapped at `time` may be shared with a snapshot
    /// (it was mapped before this device was last snapshotted).
    pub fn shared_since(&self, time: u32) -> bool {
        self.snapshotted_time > time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistent_data::error::Error;

    #[test]
    fn round_trip_and_layout() {
        let d = DeviceDetails {
            mapped_blocks: 0x1122_3344_5566_7788,
            transaction_id: 9,
            creation_time: 0xaabb_ccdd,
            snapshotted_time: 3,
        };
        let b = d.pack();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(b[8], 9);
        assert_eq!(&b[16..20], &0xaabb_ccddu32.to_le_bytes());
        assert_eq!(b[20], 3);
        assert_eq!(DeviceDetails::unpack(&b), Ok(d));
        assert_eq!(DeviceDetails::unpack(&b[..23]), Err(Error::Invalid));
    }

    #[test]
    fn sharing_follows_the_snapshot_time() {
        let d = DeviceDetails {
            snapshotted_time: 5,
            ..DeviceDetails::default()
        };
        assert!(d.shared_since(4));
        assert!(!d.shared_since(5));
        assert!(!d.shared_since(6));
    }
}
