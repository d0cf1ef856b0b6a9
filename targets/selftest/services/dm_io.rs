// SPDX-License-Identifier: GPL-2.0

//! `dmio`: synchronous and background reads and writes of a byte pattern,
//! and a flush, on the second device; the guest test checks the bytes there
//! and the device's flush counter.

use super::expect;
use super::waiter::Waiter;
use crate::dm::dm_io::{DmIoClient, IoBuffer, IoOp, PendingIo};
use crate::dm::region::Region;
use crate::dm::DmDev;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

/// Background I/Os a range is split into.
const PIECES: u64 = 4;
const PATIENCE_MS: u32 = 20_000;

fn filled(sectors: u64, byte: u8) -> Result<IoBuffer> {
    let mut buf = IoBuffer::new(u32::try_from(sectors).map_err(|_| EINVAL)?)?;
    buf.as_mut_slice().fill(byte);
    Ok(buf)
}

fn mismatches(buf: &IoBuffer, byte: u8) -> usize {
    buf.as_slice().iter().filter(|&&b| b != byte).count()
}

fn verdict(what: &str, sectors: u64, bad: usize) -> Result<CString> {
    if bad != 0 {
        pr_err!("services dmio {}: {} bytes differ\n", what, bad);
        return Err(EIO);
    }
    CString::try_from_fmt(kernel::fmt!("dmio {} ok sectors={}", what, sectors))
}

/// Writes `byte` over `count` sectors at `sector`, waiting (`fua`: with FUA).
pub(super) fn write(dev: &DmDev, sector: u64, count: u64, byte: u8, fua: bool) -> Result<CString> {
    let client = DmIoClient::new()?;
    let region = Region::new(dev.clone(), sector, count)?;
    let op = if fua { IoOp::WriteFua } else { IoOp::Write };
    client.write(&region, &filled(count, byte)?, op)?;
    verdict(if fua { "fua" } else { "write" }, count, 0)
}

/// Reads `count` sectors at `sector`, waiting, and checks every byte is `byte`.
pub(super) fn read(dev: &DmDev, sector: u64, count: u64, byte: u8) -> Result<CString> {
    let client = DmIoClient::new()?;
    let region = Region::new(dev.clone(), sector, count)?;
    let mut buf = IoBuffer::new(u32::try_from(count).map_err(|_| EINVAL)?)?;
    client.read(&region, &mut buf)?;
    verdict("read", count, mismatches(&buf, byte))
}

/// Splits the range into pieces, submits them all, then waits for each;
/// a read checks every byte is `byte`.
pub(super) fn background(
    dev: &DmDev,
    sector: u64,
    count: u64,
    byte: u8,
    op: IoOp,
) -> Result<CString> {
    let client = Arc::new(DmIoClient::new()?, GFP_KERNEL)?;
    let piece = count.div_ceil(PIECES).max(1);
    let mut pending: KVec<PendingIo> = KVec::new();
    let mut at = 0;
    while at < count {
        let n = piece.min(count - at);
        let start = sector.checked_add(at).ok_or(EINVAL)?;
        let buf = filled(n, if op == IoOp::Read { !byte } else { byte })?;
        let io = DmIoClient::submit(&client, op, Region::new(dev.clone(), start, n)?, buf)
            .map_err(|(e, _)| e)?;
        pending.push(io, GFP_KERNEL)?;
        at += n;
    }
    let pieces = pending.len();
    // The last piece is seen to complete without anyone waiting on it.
    if let Some(last) = pending.as_slice().last() {
        let nap = Waiter::new()?;
        let mut polls = 0;
        while !last.is_done() && polls < PATIENCE_MS / 10 {
            nap.wait_for(1, 10);
            polls += 1;
        }
        expect(last.is_done(), "a background I/O reports its completion")?;
    }
    let mut bad = 0;
    for io in pending {
        let (status, buf) = io.wait();
        status?;
        if op == IoOp::Read {
            bad += mismatches(&buf, byte);
        }
    }
    let what = if op == IoOp::Read { "aread" } else { "awrite" };
    pr_info!(
        "services dmio {}: {} pieces submitted before the first wait\n",
        what,
        pieces
    );
    verdict(what, count, bad)
}

/// Flushes the device's cache.
pub(super) fn flush(dev: &DmDev) -> Result<CString> {
    DmIoClient::new()?.flush(dev)?;
    CString::try_from_fmt(kernel::fmt!("dmio flush ok"))
}
