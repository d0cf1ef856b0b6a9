// SPDX-License-Identifier: GPL-2.0

//! `dmrs-pdata <metadata dev>`: a test-only target that runs the metadata
//! engine in the kernel, over dm-bufio, through the thin metadata layer
//! ([`PoolMetadata`]), for the guest tests. Registered only with
//! `selftest=1`; bios to it fail (it has no data path).
//!
//! Each `dmsetup message` runs one operation in the message callback (which
//! may sleep), under the `NoIo` scope as a pool's worker would, and answers
//! with one line (also shown by `dmsetup status`). A failed operation fails
//! the message with the engine's errno and logs why.
//!
//! - `format <data block size> <data blocks>`: format a blank device (block
//!   0 all zeros) and size the data space; `open <data block size>`: open
//!   formatted metadata; `close`: commit and close (upstream's close);
//!   `reopen`: drop the metadata without committing and open it again on a
//!   new dm-bufio client, as after a crash (devices open before are opened
//!   again).
//! - `create <dev>`, `snap <dev> <origin>`: a thin device, a snapshot.
//! - `insert <dev> <vblock> <dblock>`: take a reference on `dblock` and map
//!   `vblock` to it; `fill <dev> <vblock> <n>`: map `n` blocks from
//!   `vblock` on, each to a newly allocated data block; `remove <dev>
//!   <vblock>`.
//! - `lookup <dev> <vblock>` (blocking); `try-lookup <dev> <vblock>`
//!   (non-blocking, as the map path: `would_block` unless every block on
//!   the way is cached); `verify <dev> <vblock> <n> <dblock>`: `n` blocking
//!   lookups expecting `dblock`, `dblock + 1`, ...; `count <dev>`.
//! - `commit`, `abort`, `reserve-snap`, `release-snap` (the metadata
//!   snapshot).
//! - `drop-cache`: forget every clean metadata block dm-bufio caches;
//!   `prefetch`: read in the blocks non-blocking lookups missed.
//! - `stack [<op>]`: the deepest kernel stack use of any operation (or of
//!   `<op>`) so far, measured around each message
//!   ([`crate::dm::stack::measure`]).

use crate::dm::args::parse_u64;
use crate::dm::bufio::BufioClient;
use crate::dm::noio::noio_scope;
use crate::dm::stack::{measure, StackUse};
use crate::dm::sync::{new_mutex, Mutex};
use crate::dm::{
    ArgSet, CtrResult, DmDev, MapBio, MapResult, StatusType, StatusWriter, Target, TargetCtx,
    TargetError,
};
use crate::persistent_data::block_manager::{BlockManager, DEFAULT_CACHE_BLOCKS};
use crate::persistent_data::error::Error as PdError;
use crate::persistent_data::io::BLOCK_SIZE;
use crate::targets::thin::metadata::{NoHooks, OpenOptions, PoolMetadata, ThinDevice};
use core::fmt::Arguments;
use kernel::c_str;
use kernel::fmt;
use kernel::prelude::*;
use kernel::str::CString;

/// dm-bufio buffers kept before cleanup: a lookup's whole path (a thin
/// mapping tree is two btrees of at most a few levels each).
const MIN_BUFFERS: u32 = 16;

/// The metadata open on the device, and the thin devices opened on it.
struct Session {
    pmd: PoolMetadata<BufioClient>,
    devs: KVec<ThinDevice>,
}

impl Session {
    fn open(dev: &DmDev, data_block_size: u32, format: bool) -> Result<Self> {
        let mut client = BufioClient::new(dev, BLOCK_SIZE as u32)?;
        client.set_minimum_buffers(MIN_BUFFERS);
        let bm = BlockManager::new(client, DEFAULT_CACHE_BLOCKS);
        let opts = OpenOptions {
            data_block_size,
            format,
            read_only_device: false,
        };
        let pmd = pd(PoolMetadata::open(bm, opts, NoHooks))?;
        Ok(Session {
            pmd,
            devs: KVec::new(),
        })
    }

    /// Opens device `id` unless it is open; `Ok(false)` if it does not
    /// exist.
    fn ensure_open(&mut self, id: u64) -> Result<bool> {
        if self.devs.iter().any(|d| d.id() == id) {
            return Ok(true);
        }
        // Room first: an opened handle must not be lost.
        self.devs.reserve(1, GFP_KERNEL)?;
        match self.pmd.open_thin_device(id) {
            Ok(td) => {
                self.devs.push(td, GFP_KERNEL)?;
                Ok(true)
            }
            Err(PdError::NoData) => Ok(false),
            Err(e) => pd(Err(e)),
        }
    }

    /// Device `id`'s handle, opening it if need be.
    fn open_dev(&mut self, id: u64) -> Result<&ThinDevice> {
        if !self.ensure_open(id)? {
            pr_err!("pdata: no thin device {}\n", id);
            return Err(ENOENT);
        }
        find(&self.devs, id)
    }

    /// Closes every thin device; returns their ids.
    fn close_devs(&mut self) -> Result<KVec<u64>> {
        let mut ids = KVec::with_capacity(self.devs.len(), GFP_KERNEL)?;
        for td in core::mem::take(&mut self.devs) {
            ids.push(td.id(), GFP_KERNEL)?;
            self.pmd.close_thin_device(td);
        }
        Ok(ids)
    }
}

/// Device `id`'s handle if it is open already (never does I/O).
fn find(devs: &[ThinDevice], id: u64) -> Result<&ThinDevice> {
    devs.iter().find(|d| d.id() == id).ok_or(ENOENT)
}

/// The engine's error as the kernel's, logged by the caller.
fn pd<T>(r: core::result::Result<T, PdError>) -> Result<T> {
    r.map_err(|e| {
        pr_err!("pdata: engine error {}\n", e);
        Error::from_errno(e.to_errno())
    })
}

/// The deepest stack use of one operation so far.
#[derive(Clone, Copy, Default)]
struct StackRecord {
    op: [u8; 16],
    usage: StackUse,
}

impl StackRecord {
    fn op(&self) -> &str {
        let end = self
            .op
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.op.len());
        core::str::from_utf8(self.op.get(..end).unwrap_or(&[])).unwrap_or("?")
    }
}

/// Operations whose stack use is kept (more than there are messages).
const STACK_RECORDS: usize = 32;

/// One `dmrs-pdata` device.
#[pin_data]
pub(crate) struct Pdata {
    dev: DmDev,
    #[pin]
    session: Mutex<Option<Session>>,
    /// The last message's result line.
    #[pin]
    last: Mutex<Option<CString>>,
    #[pin]
    stack: Mutex<[StackRecord; STACK_RECORDS]>,
}

/// The next argument as a number.
fn num(args: &mut ArgSet<'_>) -> Result<u64> {
    args.shift().and_then(parse_u64).ok_or(EINVAL)
}

fn line(args: Arguments<'_>) -> Result<CString> {
    CString::try_from_fmt(args)
}

impl Pdata {
    fn run(&self, cmd: &[u8], args: &mut ArgSet<'_>) -> Result<CString> {
        let mut guard = self.session.lock();
        let slot = &mut *guard;
        match cmd {
            b"format" | b"open" | b"close" | b"reopen" => self.life_cycle(slot, cmd, args),
            _ => Self::run_open(slot.as_mut().ok_or(ENOENT)?, cmd, args),
        }
    }

    /// Opening and closing the metadata. Not inlined: its frame holds
    /// whole `Session`s, which the other operations' stack need not carry.
    #[inline(never)]
    fn life_cycle(
        &self,
        slot: &mut Option<Session>,
        cmd: &[u8],
        args: &mut ArgSet<'_>,
    ) -> Result<CString> {
        match cmd {
            b"close" => {
                let mut s = slot.take().ok_or(ENOENT)?;
                s.close_devs()?;
                pd(s.pmd.close())?;
                return line(fmt!("closed"));
            }
            b"reopen" => {
                let mut s = slot.take().ok_or(ENOENT)?;
                let dbs = s.pmd.data_block_size();
                let ids = s.close_devs()?;
                // Dropped without a commit: only what was committed stays.
                drop(s);
                let mut s = Session::open(&self.dev, dbs, false)?;
                let mut opened = 0;
                for id in ids {
                    if s.ensure_open(id)? {
                        opened += 1;
                    }
                }
                *slot = Some(s);
                return line(fmt!("reopened devices={}", opened));
            }
            _ => {}
        }
        if slot.is_some() {
            return Err(EBUSY);
        }
        let dbs = u32::try_from(num(args)?).map_err(|_| EINVAL)?;
        let format = cmd == b"format";
        let data_blocks = if format { num(args)? } else { 0 };
        let mut s = Session::open(&self.dev, dbs, format)?;
        if format {
            pd(s.pmd.resize_data_dev(data_blocks))?;
            pd(s.pmd.commit())?;
        }
        let text = line(fmt!(
            "{} data_blocks={} free_data={} metadata_blocks={}",
            if format { "formatted" } else { "opened" },
            pd(s.pmd.data_dev_size())?,
            pd(s.pmd.free_data_blocks())?,
            pd(s.pmd.metadata_dev_size())?
        ));
        *slot = Some(s);
        text
    }

    /// The operations on open metadata.
    #[inline(never)]
    fn run_open(s: &mut Session, cmd: &[u8], args: &mut ArgSet<'_>) -> Result<CString> {
        match cmd {
            b"create" => {
                let dev = num(args)?;
                pd(s.pmd.create_thin(dev))?;
                s.open_dev(dev)?;
                line(fmt!("created {}", dev))
            }
            b"snap" => {
                let (dev, origin) = (num(args)?, num(args)?);
                pd(s.pmd.create_snap(dev, origin))?;
                s.open_dev(dev)?;
                line(fmt!("snapshot {} of {}", dev, origin))
            }
            b"insert" => {
                let (dev, vblock, dblock) = (num(args)?, num(args)?, num(args)?);
                s.open_dev(dev)?;
                pd(s.pmd.inc_data_range(dblock, dblock.saturating_add(1)))?;
                let td = find(&s.devs, dev)?;
                pd(s.pmd.insert_block(td, vblock, dblock))?;
                line(fmt!("inserted {} {} {}", dev, vblock, dblock))
            }
            b"fill" => {
                let (dev, vblock, n) = (num(args)?, num(args)?, num(args)?);
                s.open_dev(dev)?;
                let (mut first, mut last) = (None, 0);
                for v in vblock..vblock.saturating_add(n) {
                    let d = pd(s.pmd.alloc_data_block())?;
                    let td = find(&s.devs, dev)?;
                    pd(s.pmd.insert_block(td, v, d))?;
                    first.get_or_insert(d);
                    last = d;
                }
                let first = first.ok_or(EINVAL)?;
                line(fmt!("filled {} dblocks={}..{}", n, first, last))
            }
            b"remove" => {
                let (dev, vblock) = (num(args)?, num(args)?);
                s.open_dev(dev)?;
                let td = find(&s.devs, dev)?;
                pd(s.pmd.remove_block(td, vblock))?;
                line(fmt!("removed {} {}", dev, vblock))
            }
            b"lookup" => {
                let (dev, vblock) = (num(args)?, num(args)?);
                s.open_dev(dev)?;
                let td = find(&s.devs, dev)?;
                match s.pmd.find_block(td, vblock, true) {
                    Ok(r) => line(fmt!("mapped {} shared={}", r.block, u8::from(r.shared))),
                    Err(PdError::NoData) => line(fmt!("unmapped")),
                    Err(e) => pd(Err(e)),
                }
            }
            b"try-lookup" => {
                let (dev, vblock) = (num(args)?, num(args)?);
                let td = find(&s.devs, dev)?;
                match s.pmd.find_block(td, vblock, false) {
                    Ok(r) => line(fmt!("hit {}", r.block)),
                    Err(PdError::WouldBlock) => line(fmt!("would_block")),
                    Err(PdError::NoData) => line(fmt!("unmapped")),
                    Err(e) => pd(Err(e)),
                }
            }
            b"verify" => {
                let (dev, vblock, n, dblock) = (num(args)?, num(args)?, num(args)?, num(args)?);
                s.open_dev(dev)?;
                let td = find(&s.devs, dev)?;
                let (mut ok, mut missing, mut wrong) = (0u64, 0u64, 0u64);
                for i in 0..n {
                    match s.pmd.find_block(td, vblock.saturating_add(i), true) {
                        Ok(r) if r.block == dblock.saturating_add(i) => ok += 1,
                        Ok(_) => wrong += 1,
                        Err(PdError::NoData) => missing += 1,
                        Err(e) => return pd(Err(e)),
                    }
                }
                line(fmt!("verify ok={} missing={} wrong={}", ok, missing, wrong))
            }
            b"count" => {
                let dev = num(args)?;
                s.open_dev(dev)?;
                let td = find(&s.devs, dev)?;
                line(fmt!("mapped_blocks={}", pd(s.pmd.mapped_count(td))?))
            }
            b"commit" => {
                pd(s.pmd.commit())?;
                line(fmt!("committed"))
            }
            b"abort" => {
                pd(s.pmd.abort())?;
                line(fmt!("aborted"))
            }
            b"reserve-snap" => {
                pd(s.pmd.reserve_metadata_snap())?;
                line(fmt!("held_root={}", pd(s.pmd.metadata_snap())?))
            }
            b"release-snap" => {
                pd(s.pmd.release_metadata_snap())?;
                line(fmt!("released"))
            }
            b"drop-cache" => {
                let client = pd(s.pmd.block_manager())?.io();
                client.forget(0, client.nr_blocks());
                line(fmt!("dropped"))
            }
            b"prefetch" => {
                s.pmd.issue_prefetches();
                line(fmt!("prefetching"))
            }
            _ => Err(EINVAL),
        }
    }

    /// Records `usage` if it is the deepest of `cmd` so far.
    fn record_stack(&self, cmd: &[u8], usage: StackUse) {
        let mut recs = self.stack.lock();
        let name = cmd.get(..16).unwrap_or(cmd);
        let known = recs.iter().position(|r| r.op().as_bytes() == name);
        let free = || recs.iter().position(|r| r.op().is_empty());
        let Some(i) = known.or_else(free) else {
            return;
        };
        if let Some(r) = recs.get_mut(i) {
            if usage.deepest > r.usage.deepest {
                r.usage = usage;
                r.op = [0; 16];
                if let Some(dst) = r.op.get_mut(..name.len()) {
                    dst.copy_from_slice(name);
                }
            }
        }
    }

    /// `stack`: the deepest operation; `stack OP`: operation OP.
    fn stack_line(&self, args: &mut ArgSet<'_>) -> Result<CString> {
        let recs = self.stack.lock();
        let rec = match args.shift() {
            Some(op) => recs.iter().find(|r| r.op().as_bytes() == op.as_bytes()),
            None => recs.iter().max_by_key(|r| r.usage.deepest),
        }
        .ok_or(ENOENT)?;
        let u = rec.usage;
        line(fmt!(
            "stack deepest={} own={} at_entry={} size={} op={}",
            u.deepest,
            u.own(),
            u.at_entry,
            u.size,
            rec.op()
        ))
    }
}

#[vtable]
impl Target for Pdata {
    const NAME: &'static CStr = c_str!("dmrs-pdata");
    const SHORT_NAME: &'static CStr = c_str!("dmrs-pd");
    const VERSION: [u32; 3] = [1, 0, 0];
    type PerBio = ();

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        let usage = c_str!("pdata: expects one metadata device");
        if args.len() != 1 {
            return Err(TargetError::new(EINVAL, usage));
        }
        let dev = ti.get_device(args.shift_or(usage)?, c_str!("pdata: cannot get device"))?;
        KBox::pin_init(
            pin_init!(Pdata {
                dev,
                session <- new_mutex!(None),
                last <- new_mutex!(None),
                stack <- new_mutex!([StackRecord::default(); STACK_RECORDS]),
            }),
            GFP_KERNEL,
        )
        .map_err(|e| TargetError::new(e, c_str!("pdata: out of memory")))
    }

    fn map(&self, bio: MapBio<'_, Self>) -> MapResult {
        bio.kill()
    }

    fn message(&self, args: &mut ArgSet<'_>, out: &mut StatusWriter<'_>) -> Result {
        let cmd = args.shift().ok_or(EINVAL)?.as_bytes();
        let r = if cmd == b"stack" {
            self.stack_line(args)
        } else {
            let (r, usage) = measure(|| noio_scope(|| self.run(cmd, args)));
            self.record_stack(cmd, usage);
            r
        };
        match r {
            Ok(text) => {
                out.push_bytes(text.as_bytes());
                *self.last.lock() = Some(text);
                Ok(())
            }
            Err(e) => {
                pr_err!(
                    "pdata: {} failed: {:?}\n",
                    core::str::from_utf8(cmd).unwrap_or("?"),
                    e
                );
                *self.last.lock() = CString::try_from_fmt(fmt!("failed {:?}", e)).ok();
                Err(e)
            }
        }
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        match ty {
            StatusType::Info => match &*self.last.lock() {
                Some(text) => out.push_bytes(text.as_bytes()),
                None => out.push_bytes(b"-"),
            },
            StatusType::Table => out.push_bytes(self.dev.name().as_bytes()),
            StatusType::Ima => {}
        }
    }
}
