// SPDX-License-Identifier: GPL-2.0

//! `rwsem`: readers and writers of an `RwSemaphore` running as work items,
//! a kernel-crate `Mutex` taken by the same workers, and the try/downgrade
//! rules checked in the message's own task.

use super::expect;
use super::waiter::Waiter;
use crate::dm::sync::{new_mutex, new_rwsem, Mutex, RwSemaphore};
use crate::dm::workqueue::{Concurrency, WorkQueue};
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

const WRITERS: u64 = 4;
const READERS: u64 = 4;
const ROUNDS: u64 = 2_000;
const PATIENCE_MS: u32 = 60_000;

/// Two counters a writer always changes together: a reader seeing them
/// differ has seen a write half done.
#[derive(Default)]
struct Pair {
    a: u64,
    b: u64,
}

#[pin_data]
struct Shared {
    #[pin]
    pair: RwSemaphore<Pair>,
    #[pin]
    rounds: Mutex<u64>,
}

/// Exclusion rules, checked without blocking.
fn rules(sem: &RwSemaphore<Pair>) -> Result {
    let r1 = sem.read();
    expect(sem.try_read().is_some(), "readers share")?;
    expect(sem.try_write().is_none(), "a reader keeps writers out")?;
    drop(r1);
    let w = sem.write();
    expect(sem.try_read().is_none(), "a writer keeps readers out")?;
    let r = w.downgrade();
    expect(
        sem.try_read().is_some(),
        "a downgraded writer lets readers in",
    )?;
    expect(
        sem.try_write().is_none(),
        "a downgraded writer still keeps writers out",
    )?;
    drop(r);
    expect(sem.try_write().is_some(), "a free semaphore can be written")
}

pub(super) fn rwsem() -> Result<CString> {
    let shared = Arc::pin_init(
        pin_init!(Shared {
            pair <- new_rwsem!(Pair::default(), "dmrs-st-pair"),
            rounds <- new_mutex!(0, "dmrs-st-rounds"),
        }),
        GFP_KERNEL,
    )?;
    rules(&shared.pair)?;

    let wq = WorkQueue::new(c_str!("dmrs-st-rwsem"), Concurrency::PerCpu(0))?;
    let done = Waiter::new()?;
    for i in 0..WRITERS + READERS {
        let s = shared.clone();
        let w = done.clone();
        let writer = i < WRITERS;
        wq.try_spawn(GFP_KERNEL, move || {
            let mut torn = false;
            for _ in 0..ROUNDS {
                if writer {
                    let mut p = s.pair.write();
                    p.a += 1;
                    p.b += 1;
                } else {
                    let p = s.pair.read();
                    torn |= p.a != p.b;
                }
                *s.rounds.lock() += 1;
            }
            w.signal(!torn);
        })?;
    }
    let t = done.wait_for(WRITERS + READERS, PATIENCE_MS);
    drop(wq);
    expect(t.done == WRITERS + READERS, "every worker finished")?;
    expect(t.failed == 0, "no reader saw a half-done write")?;
    let a = shared.pair.read().a;
    expect(a == WRITERS * ROUNDS, "every write counted")?;
    let rounds = *shared.rounds.lock();
    expect(
        rounds == (WRITERS + READERS) * ROUNDS,
        "the mutex serialised workers",
    )?;
    CString::try_from_fmt(kernel::fmt!(
        "rwsem ok writes={} rounds={} torn=0",
        a,
        rounds
    ))
}
