// SPDX-License-Identifier: GPL-2.0

//! `wq` and `delayed`: our own workqueues and delayed work.

use super::expect;
use super::waiter::Waiter;
use crate::dm::delayed_work::{new_delayed_work, Delayed, DelayedWork, DelayedWorkItem};
use crate::dm::workqueue::{Concurrency, WorkQueue};
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;
use kernel::time::{msecs_to_jiffies, Jiffies, Ktime};
use kernel::workqueue::{impl_has_work, new_work, Work, WorkItem};

/// Work items per check.
const ITEMS: u64 = 64;
/// Generous upper bound for anything to happen under TCG on the debug kernel.
const PATIENCE_MS: u32 = 20_000;

/// A work item declared the way targets declare theirs: an `Arc` embedding a
/// kernel-crate `Work`.
#[pin_data]
struct Tick {
    #[pin]
    work: Work<Tick>,
    waiter: Arc<Waiter>,
}

impl_has_work! {
    impl HasWork<Self> for Tick { self.work }
}

impl WorkItem for Tick {
    type Pointer = Arc<Tick>;

    fn run(this: Arc<Tick>) {
        this.waiter.signal(true);
    }
}

/// Queues `ITEMS` closures numbered in order; each signals whether it ran
/// in that order.
fn spawn_numbered(wq: &WorkQueue, waiter: &Arc<Waiter>, seq: &Arc<AtomicU64>) -> Result {
    for i in 0..ITEMS {
        let w = waiter.clone();
        let s = seq.clone();
        wq.try_spawn(GFP_KERNEL, move || {
            let in_order = s
                .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            w.signal(in_order);
        })?;
    }
    Ok(())
}

/// Ordering on an ordered queue, `flush`, re-queueing an `Arc` item, and
/// destruction draining what is still queued.
pub(super) fn wq() -> Result<CString> {
    let ordered = WorkQueue::new(c_str!("dmrs-st-ordered"), Concurrency::Ordered)?;
    let waiter = Waiter::new()?;
    let seq = Arc::new(AtomicU64::new(0), GFP_KERNEL)?;
    spawn_numbered(&ordered, &waiter, &seq)?;
    ordered.flush();
    let t = waiter.tally();
    expect(t.done == ITEMS, "flush waits for every queued item")?;
    expect(t.failed == 0, "an ordered queue runs items in order")?;

    let wq = WorkQueue::new(c_str!("dmrs-st-wq"), Concurrency::PerCpu(0))?;
    let ticks = Waiter::new()?;
    let waiter = ticks.clone();
    let tick = Arc::pin_init(
        pin_init!(Tick {
            work <- new_work!("dmrs-st-tick"),
            waiter,
        }),
        GFP_KERNEL,
    )?;
    let mut requeued = 0;
    for n in 1..=8 {
        if wq.enqueue(tick.clone()).is_err() {
            break;
        }
        if ticks.wait_for(n, PATIENCE_MS).done != n {
            break;
        }
        requeued = n;
    }
    expect(
        requeued == 8,
        "an Arc work item runs each time it is queued",
    )?;

    // Dropping the queue with items still queued runs them all first.
    let drained = Waiter::new()?;
    let seq = Arc::new(AtomicU64::new(0), GFP_KERNEL)?;
    let q = WorkQueue::new(c_str!("dmrs-st-drain"), Concurrency::PerCpu(0))?;
    spawn_numbered(&q, &drained, &seq)?;
    drop(q);
    let d = drained.tally().done;
    expect(d == ITEMS, "destroying a queue drains it")?;
    CString::try_from_fmt(kernel::fmt!(
        "wq ok ordered={} misordered={} requeued={} drained={}",
        t.done,
        t.failed,
        requeued,
        d
    ))
}

/// Data of the delayed-work checks: when it was queued and fired, and how
/// many more times it re-arms itself.
struct Probe {
    waiter: Arc<Waiter>,
    /// If set, each run also queues a closure signalling it on the same
    /// queue, as thin-pool's waker wakes its worker.
    chained: Option<Arc<Waiter>>,
    rearm: AtomicU32,
    period: Jiffies,
    fired_ns: AtomicI64,
}

impl DelayedWorkItem for Probe {
    fn run(this: &Delayed<Self>) {
        this.fired_ns
            .store(Ktime::ktime_get().to_ns(), Ordering::Relaxed);
        this.waiter.signal(true);
        if let Some(w) = &this.chained {
            let w = w.clone();
            let queued = this
                .workqueue()
                .try_spawn(GFP_KERNEL, move || w.signal(true));
            if queued.is_err() {
                this.waiter.signal(false);
            }
        }
        let again = this
            .rearm
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if again {
            this.queue(this.period);
        }
    }
}

fn probe(
    wq: &Arc<WorkQueue>,
    rearm: u32,
    period_ms: u32,
    chained: Option<Arc<Waiter>>,
) -> Result<DelayedWork<Probe>> {
    new_delayed_work!(
        wq.clone(),
        Probe {
            waiter: Waiter::new()?,
            chained,
            rearm: AtomicU32::new(rearm),
            period: msecs_to_jiffies(period_ms),
            fired_ns: AtomicI64::new(0),
        },
        "dmrs-st-probe"
    )
}

/// Delayed work fires after its delay, not before; cancel, modify and a
/// self-re-arming handler (queueing work on its queue each time) stopped by
/// `cancel_sync`; dropping a handle with its timer pending (the guest test
/// then waits past the deadline).
pub(super) fn delayed() -> Result<CString> {
    let wq = Arc::new(
        WorkQueue::new(c_str!("dmrs-st-delayed"), Concurrency::Ordered)?,
        GFP_KERNEL,
    )?;

    let p = probe(&wq, 0, 0, None)?;
    let t0 = Ktime::ktime_get().to_ns();
    expect(p.queue(msecs_to_jiffies(200)), "queue on an idle work")?;
    expect(!p.queue(1), "queue on a pending work reports it pending")?;
    let fired = p.waiter.wait_for(1, PATIENCE_MS).done;
    expect(fired == 1, "delayed work fires")?;
    let fire_ms = (p.fired_ns.load(Ordering::Relaxed) - t0) / 1_000_000;
    expect(fire_ms >= 150, "delayed work waits for its delay")?;

    let c = probe(&wq, 0, 0, None)?;
    c.queue(msecs_to_jiffies(10_000));
    expect(c.cancel_sync(), "cancel_sync finds the work pending")?;
    expect(
        c.waiter.wait_for(1, 300).done == 0,
        "a cancelled work does not run",
    )?;
    expect(
        !c.modify(0),
        "modify queues an idle work again after cancel_sync",
    )?;
    expect(
        c.waiter.wait_for(1, PATIENCE_MS).done == 1,
        "work runs after cancel_sync",
    )?;

    let m = probe(&wq, 0, 0, None)?;
    m.queue(msecs_to_jiffies(10_000));
    expect(
        m.modify(msecs_to_jiffies(20)),
        "modify finds the work pending",
    )?;
    expect(
        m.waiter.wait_for(1, PATIENCE_MS).done == 1,
        "modify brings the deadline forward",
    )?;

    let x = probe(&wq, 0, 0, None)?;
    x.queue(msecs_to_jiffies(10_000));
    expect(x.cancel(), "cancel finds the work pending")?;
    expect(
        x.waiter.wait_for(1, 300).done == 0,
        "a cancelled work does not run",
    )?;

    let chained = Waiter::new()?;
    let r = probe(&wq, u32::MAX, 10, Some(chained.clone()))?;
    r.queue(0);
    expect(
        r.waiter.wait_for(5, PATIENCE_MS).done >= 5,
        "a handler re-arms itself",
    )?;
    // Pending or running at this instant: either way it must stop.
    r.cancel_sync();
    let stopped = r.waiter.tally().done;
    expect(
        r.waiter.wait_for(stopped + 1, 200).done == stopped,
        "nothing runs after cancel_sync",
    )?;
    expect(
        r.waiter.tally().failed == 0,
        "the handler queues work on its queue",
    )?;
    let chain = chained.wait_for(stopped, PATIENCE_MS).done;
    expect(chain == stopped, "each run's queued work ran")?;

    // Dropped with its timer pending: the timer must never fire into freed memory.
    let d = probe(&wq, 0, 0, None)?;
    d.queue(msecs_to_jiffies(1_000));
    drop(d);
    drop(r);
    drop(wq);
    CString::try_from_fmt(kernel::fmt!(
        "delayed ok fire_ms={} cancel=ok modify=ok periodic={} chained={}",
        fire_ms,
        stopped,
        chain
    ))
}
