// SPDX-License-Identifier: GPL-2.0

//! Merging a snapshot's exceptions back into its origin (upstream's
//! `snapshot_merge_next_chunks`, `merge_callback`): the store hands out its
//! most recent run of consecutive exceptions
//! ([`ExceptionStore::prepare_merge`]); the other snapshots of the origin
//! first get their copies of those origin chunks; writes to the run's
//! chunks are held and writes already on their way to the COW chunks
//! drained; kcopyd copies the run back; the origin is flushed; the store
//! forgets the run durably ([`ExceptionStore::commit_merge`]), so a merge
//! interrupted at any point resumes where it stopped; the table drops the
//! run and the held writes go to the origin. Then the next run, until none
//! is left.
//!
//! One run at a time: the first step on the snapshot's ordered workqueue,
//! each next one from the completion of the run before (the store's I/O
//! and the waits sleep; both are process context).

use super::exceptions::SnapCore;
use super::merge_target::SnapshotMerge;
use super::origins;
use super::store::{Chunk, Exception, ExceptionStore, MergeRun};
use crate::dm::kcopyd::{CopyResult, Dests};
use crate::dm::noio::noio_scope;
use crate::dm::region::Region;
use crate::dm::{BioList, BlkStatus};
use kernel::prelude::*;
use kernel::sync::Arc;

/// A merging snapshot's merge progress (in its state, under its lock).
#[derive(Default)]
pub(crate) struct MergeState {
    /// A merge step is queued or in flight.
    running: bool,
    /// Asked to stop after the current step.
    shutdown: bool,
    /// The run being copied back: `first..first + count`.
    first: Chunk,
    count: u64,
    /// Writes to the run's chunks, sent to the origin once it is merged.
    pub(crate) held: BioList<SnapshotMerge>,
}

impl MergeState {
    /// True while origin chunk `chunk` is being merged.
    pub(crate) fn merging(&self, chunk: Chunk) -> bool {
        chunk >= self.first && chunk - self.first < self.count
    }

    /// Clears the run, handing back the writes held for it.
    fn release(&mut self) -> BioList<SnapshotMerge> {
        self.first = 0;
        self.count = 0;
        self.held.take_all()
    }
}

/// How a merge step ended when it did not go on.
enum Stop {
    /// Nothing left to merge, or asked to stop.
    Done,
    /// An error: the status says `Merge failed`; held writes fail.
    Failed,
}

impl SnapCore {
    /// Starts merging unless a merge is running (upstream's `start_merge`).
    pub(crate) fn start_merge(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            if st.merge.running {
                return;
            }
            st.merge.running = true;
        }
        let core = self.clone();
        if !self.spawn(move || core.merge_next()) {
            self.merge_stop(Stop::Done);
        }
    }

    /// Stops the merge and waits until its step in flight has finished
    /// (upstream's `stop_merge`); it resumes with [`Self::start_merge`].
    pub(crate) fn stop_merge(&self) {
        let mut st = self.state.lock();
        st.merge.shutdown = true;
        while st.merge.running {
            self.merge_stopped.wait(&mut st);
        }
        st.merge.shutdown = false;
    }

    /// Ends the merge: not running any more, the writes held for the run
    /// released (to the origin, or failed after an error).
    fn merge_stop(&self, how: Stop) {
        let held = {
            let mut st = self.state.lock();
            if let Stop::Failed = how {
                st.health.merge_failed = true;
            }
            st.merge.running = false;
            self.merge_stopped.notify_all();
            st.merge.release()
        };
        for b in held {
            match how {
                Stop::Done => {
                    let sector = b.sector();
                    b.submit_to(&self.origin, sector);
                }
                Stop::Failed => b.end(BlkStatus::IO_ERROR),
            }
        }
    }

    /// One merge step: the store's next run, copied back to the origin.
    fn merge_next(self: &Arc<Self>) {
        let run = {
            // The store's metadata I/O goes under the commit lock.
            let _commit = self.commit_io.lock();
            let mut st = self.state.lock();
            if st.merge.shutdown {
                drop(st);
                return self.merge_stop(Stop::Done);
            }
            if st.health.invalid {
                drop(st);
                pr_err!("Snapshot is invalid: can't merge\n");
                return self.merge_stop(Stop::Done);
            }
            ExceptionStore::<Exception>::prepare_merge(&mut st.store)
        };
        let run = match run {
            Ok(Some(run)) => run,
            Ok(None) => return self.merge_stop(Stop::Done),
            Err(_) => {
                pr_err!("Read error in exception store: shutting down merge\n");
                return self.merge_stop(Stop::Failed);
            }
        };
        let Some((from, to, count)) = run.copy_extent(self.chunk, self.origin.nr_sectors()) else {
            pr_err!("Merge run past the end of the origin: shutting down merge\n");
            return self.merge_stop(Stop::Failed);
        };
        // The other snapshots copy these origin chunks first.
        let len = u64::from(run.len) * u64::from(self.chunk.sectors());
        origins::wait_for_copies(&self.origin, to, len);
        let first = run.first().old;
        {
            let mut st = self.state.lock();
            st.merge.first = first;
            st.merge.count = run.len.into();
        }
        // Writes already on their way to these COW chunks finish first.
        for c in run.chunks_last_first() {
            self.wait_for_tracked(c);
        }
        let regions = Region::new(self.cow.clone(), from, count).and_then(|f| {
            let mut dests = Dests::new();
            dests
                .push(Region::new(self.origin.clone(), to, count)?)
                .map_err(|_| EINVAL)?;
            Ok((f, dests))
        });
        let Ok((from, to)) = regions else {
            pr_err!("Out of memory: shutting down merge\n");
            return self.merge_stop(Stop::Failed);
        };
        let core = self.clone();
        // The next step runs in kcopyd's completion (process context, as
        // upstream's `merge_callback`): its flush, commit and next copy
        // sleep there, with nothing else of this client's waiting behind
        // it; a hop to the workqueue would cost a wake-up a run and move
        // the step between CPUs.
        let done = move |r: CopyResult| noio_scope(|| core.merge_copied(run, r));
        if self.copy(from, to, done).is_err() {
            pr_err!("Could not copy a merge run: shutting down merge\n");
            self.merge_stop(Stop::Failed);
        }
    }

    /// A run was copied back: make it durable, forget it, go on.
    fn merge_copied(self: &Arc<Self>, run: MergeRun, r: CopyResult) {
        if !r.is_ok() {
            if r.read_err {
                pr_err!("Read error: shutting down merge.\n");
            } else {
                pr_err!("Write error: shutting down merge.\n");
            }
            return self.merge_stop(Stop::Failed);
        }
        let flushed = match &self.dm_io {
            Some(io) => io.flush(&self.origin).is_ok(),
            None => false,
        };
        if !flushed {
            pr_err!("Flush after merge failed: shutting down merge\n");
            return self.merge_stop(Stop::Failed);
        }
        let held = {
            let _commit = self.commit_io.lock();
            let mut st = self.state.lock();
            if ExceptionStore::<Exception>::commit_merge(&mut st.store, run.len).is_err() {
                drop(st);
                pr_err!("Write error in exception store: shutting down merge\n");
                return self.merge_stop(Stop::Failed);
            }
            let len = run.last.old - run.first().old + 1;
            if let Err((_, c)) = st.table.remove_back_from(run.last.old, len) {
                drop(st);
                pr_err!(
                    "Corruption detected: exception for block {} is on disk but not in memory\n",
                    c
                );
                return self.merge_stop(Stop::Failed);
            }
            st.merge.release()
        };
        for b in held {
            let sector = b.sector();
            b.submit_to(&self.origin, sector);
        }
        self.merge_next();
    }
}
