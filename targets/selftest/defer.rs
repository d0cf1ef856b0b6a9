// SPDX-License-Identifier: GPL-2.0

//! `dmrs-defer <dev>`: a pass-through that can hold, split, zero or fail the
//! bios it maps, so a guest test can drive bio ownership (held bios, bio
//! lists, per-bio data, `end_io`, `accept_partial`), queue limits, the target
//! handle and message output through dm core.
//!
//! Table line: `dmrs-defer <dev> [<#features> <feature>...]` with features
//! `flush_bios <n>`, `discards`, `flush_supported`, `max_discard_granularity`,
//! `write_zeroes`, `accounts_remapped_io`, `max_io_len <sectors>`.
//!
//! Messages: `mode pass|hold|zero|error`, `mode split <sectors>`; `endio
//! pass|retry|nospace` (what `end_io` does with a failed held bio: let it
//! fail, take it back to hold it again, or turn the error into ENOSPC); for
//! the bios held so far: `release` (resubmit to the device), `release-zero`
//! (end reads as zeros), `fail` (end with an I/O error), `fail-final` (the
//! same, marked not to be taken back), `drop` (drop the handles), `requeue`;
//! `finish-returned` ends the bio `end_io` took back successfully; `event`
//! raises a table event; `name` and `stats` answer in the message result.

use crate::dm::args::{eq_ignore_case, parse_u64, ArgSpec};
use crate::dm::{
    ArgSet, BioList, BioOp, BlkStatus, CtrResult, DeviceVisitor, DmDev, EndioBio, EndioResult,
    HeldBio, IrqSpinLock, MapBio, MapResult, QueueLimits, ReturnedBio, StatusType, StatusWriter,
    Target, TargetCtx, TargetError, TargetHandle,
};
use core::fmt::Write;
use kernel::c_str;
use kernel::ffi::c_int;
use kernel::prelude::*;

/// What `map` does with the next bio.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Hold,
    /// Split bios longer than this many sectors (0 must be refused).
    Split(u32),
    /// Reads complete as zeros without I/O; writes pass.
    Zero,
    Error,
    /// Have dm core requeue (map again later) this many more bios.
    Requeue(u32),
}

/// What `end_io` does with a held bio that failed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EndioMode {
    Pass,
    /// Take it back (`DM_ENDIO_INCOMPLETE`) onto the held list, once.
    Retry,
    /// Have dm core requeue every held bio (`DM_ENDIO_REQUEUE`), failed or
    /// not: outside a noflush suspend dm core fails it.
    Requeue,
    /// Complete it with `BLK_STS_NOSPC` instead.
    NoSpace,
}

#[derive(Default, Clone, Copy)]
struct Stats {
    mapped: u64,
    writes: u64,
    fua: u64,
    flushes: u64,
    max_flush_nr: u32,
    retried: u64,
    requeued: u64,
    released: u64,
    held: u64,
    held_completed: u64,
    errors: u64,
    partial: u64,
    refused: u64,
}

struct State {
    mode: Mode,
    endio: EndioMode,
    held: BioList<Defer>,
    /// The last bio `end_io` took back (one at a time is enough here).
    returned: Option<ReturnedBio<Defer>>,
    stats: Stats,
}

/// Per-bio data: whether `map` held the bio, and how often `end_io` took
/// it back.
#[derive(Default, Clone, Copy)]
pub(crate) struct Tag {
    held: bool,
    /// How often `end_io` took the bio back; `u8::MAX`: never again.
    retries: u8,
}

/// One `dmrs-defer` target.
#[pin_data]
pub(crate) struct Defer {
    dev: DmDev,
    len: u64,
    discards: bool,
    write_zeroes: bool,
    handle: TargetHandle,
    #[pin]
    state: IrqSpinLock<State>,
}

impl Defer {
    fn take_held(&self) -> BioList<Defer> {
        self.state.with(|st| st.held.take_all())
    }
}

const USAGE: &CStr = c_str!("dmrs-defer: expected <dev> [<#features> <feature>...]");
const FEATURES: ArgSpec = ArgSpec {
    min: 0,
    max: 8,
    error: c_str!("dmrs-defer: invalid number of feature arguments"),
};
const FLUSH_BIOS: ArgSpec = ArgSpec {
    min: 1,
    max: 4,
    error: c_str!("dmrs-defer: invalid flush_bios"),
};
const MAX_IO_LEN: ArgSpec = ArgSpec {
    min: 8,
    max: 1 << 20,
    error: c_str!("dmrs-defer: invalid max_io_len"),
};

/// Features that change the queue limits.
#[derive(Default)]
struct Features {
    discards: bool,
    write_zeroes: bool,
}

/// Parses the feature group and applies it to the target under construction.
fn features(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Features> {
    let mut f = Features::default();
    let bad = TargetError::new(EINVAL, c_str!("dmrs-defer: unknown feature"));
    let mut group = args.read_group(&FEATURES)?;
    while let Some(word) = group.peek(0) {
        group.consume(1);
        if eq_ignore_case(word, "flush_bios") {
            ti.set_num_flush_bios(group.read_u32(&FLUSH_BIOS)?);
        } else if eq_ignore_case(word, "discards") {
            ti.set_num_discard_bios(1);
            ti.set_discards_supported(true);
            f.discards = true;
        } else if eq_ignore_case(word, "flush_supported") {
            ti.set_flush_supported(true);
        } else if eq_ignore_case(word, "max_discard_granularity") {
            ti.set_max_discard_granularity(true);
        } else if eq_ignore_case(word, "write_zeroes") {
            ti.set_num_write_zeroes_bios(1);
            f.write_zeroes = true;
        } else if eq_ignore_case(word, "accounts_remapped_io") {
            ti.set_accounts_remapped_io(true);
        } else if eq_ignore_case(word, "max_io_len") {
            let n = group.read_u32(&MAX_IO_LEN)?;
            ti.set_max_io_len(u64::from(n))
                .map_err(|err| TargetError::new(err, c_str!("dmrs-defer: max_io_len refused")))?;
        } else {
            return Err(bad);
        }
    }
    Ok(f)
}

#[vtable]
impl Target for Defer {
    const NAME: &'static CStr = c_str!("dmrs-defer");
    const VERSION: [u32; 3] = [0, 1, 0];
    type PerBio = Tag;

    fn new(ti: &mut TargetCtx, args: &mut ArgSet<'_>) -> CtrResult<Pin<KBox<Self>>> {
        let path = args.shift_or(USAGE)?;
        let dev = ti.get_device(path, c_str!("dmrs-defer: cannot get device"))?;
        ti.set_num_flush_bios(1);
        let f = if args.is_empty() {
            Features::default()
        } else {
            features(ti, args)?
        };
        if !args.is_empty() {
            return Err(TargetError::new(EINVAL, USAGE));
        }
        let len = ti.len();
        if ti.begin() > 0 || len > dev.nr_sectors() {
            return Err(TargetError::new(
                EINVAL,
                c_str!("dmrs-defer: must start at 0 and fit the device"),
            ));
        }
        let handle = ti.handle();
        KBox::pin_init(
            pin_init!(Defer {
                dev,
                len,
                discards: f.discards,
                write_zeroes: f.write_zeroes,
                handle,
                state <- crate::new_irq_spinlock!(
                    State {
                        mode: Mode::Pass,
                        endio: EndioMode::Pass,
                        held: BioList::new(),
                        returned: None,
                        stats: Stats::default(),
                    },
                    "dmrs_defer::state"
                ),
            }),
            GFP_KERNEL,
        )
        .map_err(|_| TargetError::new(ENOMEM, c_str!("dmrs-defer: out of memory")))
    }

    fn map(&self, mut bio: MapBio<'_, Self>) -> MapResult {
        let sector = bio.sector();
        if bio.is_empty_flush() {
            let nr = bio.target_bio_nr();
            self.state.with(|st| {
                st.stats.flushes += 1;
                st.stats.max_flush_nr = st.stats.max_flush_nr.max(nr);
            });
            return bio.remap(&self.dev, sector);
        }
        // No bio ends inside `with`: ending one calls our `end_io`, which
        // takes the lock.
        let (write, fua) = (bio.is_write(), bio.is_fua());
        let mode = self.state.with(|st| {
            st.stats.mapped += 1;
            st.stats.writes += u64::from(write);
            st.stats.fua += u64::from(fua);
            let mode = st.mode;
            if let Mode::Requeue(n) = mode {
                st.stats.requeued += 1;
                st.mode = if n > 1 {
                    Mode::Requeue(n - 1)
                } else {
                    Mode::Pass
                };
            }
            mode
        });
        debug_assert!(!bio.per_bio().held);
        match mode {
            Mode::Pass => bio.remap(&self.dev, sector),
            Mode::Error => bio.kill(),
            Mode::Requeue(_) => bio.requeue(),
            Mode::Hold => {
                bio.per_bio_mut().held = true;
                let (held, result) = bio.hold();
                self.state.with(|st| {
                    st.held.push(held);
                    st.stats.held += 1;
                });
                result
            }
            Mode::Split(n) => {
                if bio.sectors() > n {
                    let accepted = bio.accept_partial(n).is_ok();
                    self.state.with(|st| {
                        if accepted {
                            st.stats.partial += 1;
                        } else {
                            st.stats.refused += 1;
                        }
                    });
                }
                bio.remap(&self.dev, sector)
            }
            Mode::Zero if bio.op() == BioOp::Read => match bio.zero_fill() {
                Ok(()) => bio.end(BlkStatus::OK),
                Err(_) => bio.kill(),
            },
            Mode::Zero => bio.remap(&self.dev, sector),
        }
    }

    fn end_io(&self, mut bio: EndioBio<'_, Self>) -> EndioResult {
        let failed = !bio.status().is_ok();
        let tag = *bio.per_bio();
        let endio = self.state.with(|st| {
            st.stats.held_completed += u64::from(tag.held);
            st.stats.errors += u64::from(failed);
            st.endio
        });
        if !tag.held {
            return bio.done();
        }
        if endio == EndioMode::Requeue {
            self.state.with(|st| st.stats.requeued += 1);
            return bio.requeue();
        }
        if !failed {
            return bio.done();
        }
        match endio {
            EndioMode::Retry if tag.retries == 0 => {
                bio.per_bio_mut().retries += 1;
                let (returned, result) = bio.hold();
                let previous = self.state.with(|st| {
                    st.stats.retried += 1;
                    st.stats.held_completed -= 1;
                    st.returned.replace(returned)
                });
                // Outside the lock: ending it calls `end_io` again.
                drop(previous);
                result
            }
            EndioMode::NoSpace => bio.done_with(BlkStatus::NO_SPACE),
            _ => bio.done(),
        }
    }

    fn presuspend(&self) {
        // Suspend waits for every bio in flight: give back what we hold.
        // A noflush suspend keeps requeued bios for after the resume.
        let held = self.take_held();
        if held.is_empty() {
            return;
        }
        let noflush = self.handle.noflush_suspending();
        for bio in held {
            if noflush {
                bio.requeue();
            } else {
                let sector = bio.sector();
                bio.submit_to(&self.dev, sector);
            }
        }
    }

    fn status(&self, ty: StatusType, _flags: u32, out: &mut StatusWriter<'_>) {
        match ty {
            StatusType::Info => {
                let (s, pending, returned) = self
                    .state
                    .with(|st| (st.stats, st.held.count_bios(), st.returned.is_some()));
                let _ = write!(
                    out,
                    "held={} pending={} mapped={} held_completed={} errors={} partial={} refused={} \
                     writes={} fua={} flushes={} max_flush_nr={} retried={} requeued={} released={} \
                     returned={}",
                    s.held,
                    pending,
                    s.mapped,
                    s.held_completed,
                    s.errors,
                    s.partial,
                    s.refused,
                    s.writes,
                    s.fua,
                    s.flushes,
                    s.max_flush_nr,
                    s.retried,
                    s.requeued,
                    s.released,
                    u8::from(returned)
                );
            }
            StatusType::Table => out.push_bytes(self.dev.name().as_bytes()),
            StatusType::Ima => {}
        }
    }

    fn message(&self, args: &mut ArgSet<'_>, out: &mut StatusWriter<'_>) -> Result {
        let cmd = args.shift().ok_or(EINVAL)?;
        let word = |w: &str| eq_ignore_case(cmd, w);
        if word("mode") {
            let m = args.shift().ok_or(EINVAL)?;
            let mode = if eq_ignore_case(m, "pass") {
                Mode::Pass
            } else if eq_ignore_case(m, "hold") {
                Mode::Hold
            } else if eq_ignore_case(m, "zero") {
                Mode::Zero
            } else if eq_ignore_case(m, "error") {
                Mode::Error
            } else if eq_ignore_case(m, "split") {
                let n = args.shift().and_then(parse_u64).ok_or(EINVAL)?;
                Mode::Split(u32::try_from(n).map_err(|_| EINVAL)?)
            } else if eq_ignore_case(m, "requeue") {
                let n = args.shift().and_then(parse_u64).ok_or(EINVAL)?;
                Mode::Requeue(u32::try_from(n).map_err(|_| EINVAL)?.max(1))
            } else {
                return Err(EINVAL);
            };
            self.state.with(|st| st.mode = mode);
        } else if word("endio") {
            let m = args.shift().ok_or(EINVAL)?;
            let endio = if eq_ignore_case(m, "pass") {
                EndioMode::Pass
            } else if eq_ignore_case(m, "retry") {
                EndioMode::Retry
            } else if eq_ignore_case(m, "nospace") {
                EndioMode::NoSpace
            } else if eq_ignore_case(m, "requeue") {
                EndioMode::Requeue
            } else {
                return Err(EINVAL);
            };
            self.state.with(|st| st.endio = endio);
        } else if word("release-zero") {
            for mut bio in self.take_held() {
                if bio.zero_fill().is_ok() {
                    bio.end_ok();
                } else {
                    let sector = bio.sector();
                    bio.submit_to(&self.dev, sector);
                }
            }
        } else if word("release") {
            let mut released = 0;
            for bio in self.take_held() {
                if bio.per_bio().held {
                    released += 1;
                }
                let sector = bio.sector();
                bio.submit_to(&self.dev, sector);
            }
            self.state.with(|st| st.stats.released += released);
        } else if word("finish-returned") {
            let returned = self.state.with(|st| st.returned.take());
            let mut returned = returned.ok_or(ENOENT)?;
            // Mark it so that `end_io`, called again, does not take it back.
            returned.per_bio_mut().retries = u8::MAX;
            if returned.per_bio().held {
                returned.end(BlkStatus::OK);
            } else {
                returned.requeue();
            }
        } else if word("fail") || word("fail-final") {
            let last = word("fail-final");
            for mut bio in self.take_held() {
                if last {
                    bio.per_bio_mut().retries = u8::MAX;
                }
                bio.end(BlkStatus::IO_ERROR);
            }
        } else if word("drop") {
            let held: BioList<Defer> = self.take_held();
            drop(held);
        } else if word("requeue") {
            self.take_held().for_each(HeldBio::requeue);
        } else if word("event") {
            self.handle.table_event();
        } else if word("name") {
            let name = self.handle.device_name().ok_or(EINVAL)?;
            out.push_bytes(name.as_bytes());
        } else if word("stats") {
            let s = self.state.with(|st| st.stats);
            let suspended = u8::from(self.handle.suspended());
            let _ = write!(
                out,
                "mapped={} held={} suspended={}",
                s.mapped, s.held, suspended
            );
        } else {
            return Err(EINVAL);
        }
        if args.is_empty() {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    fn iterate_devices(&self, visitor: &mut DeviceVisitor<'_>) -> c_int {
        visitor.visit(&self.dev, 0, self.len)
    }

    fn io_hints(&self, limits: &mut QueueLimits<'_>) {
        // Visible in sysfs: proves io_hints ran and its setters work.
        limits.set_io_min(limits.io_min().max(4096));
        limits.set_io_opt(limits.io_opt().max(65536));
        if self.discards {
            limits.set_discard_granularity(4096);
            limits.set_max_hw_discard_sectors(limits.max_sectors().max(8));
        } else if limits.max_hw_discard_sectors() > 0 {
            limits.set_max_hw_discard_sectors(0);
        }
        if !self.write_zeroes {
            limits.set_max_write_zeroes_sectors(0);
        }
    }
}
