// SPDX-License-Identifier: GPL-2.0

//! Carrying out the pool's mode changes (`mode.rs` decides them): the
//! metadata's read-only switch, the log line and dm event, and the bios
//! queued while the pool was out of data space (failed, or given back to
//! the worker once there is space again).

use super::mode::{IoError, ModeChange, ModeContext, PoolMode, WRITE_REFUSED_NEEDS_CHECK};
use super::pool::{kerr, Pool, PoolName};
use super::thin_target::ThinState;
use crate::dm::noio::noio_scope;
use crate::dm::ratelimit::dm_err_limit;
use crate::dm::{params, BlkStatus};
use crate::persistent_data::error::Error as PdError;
use core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The block layer status of an I/O error the mode decided.
pub(crate) fn status_of(e: IoError) -> BlkStatus {
    match e {
        IoError::Io => BlkStatus::IO_ERROR,
        IoError::NoSpace => BlkStatus::NO_SPACE,
    }
}

fn mode_to_u8(m: PoolMode) -> u8 {
    match m {
        PoolMode::Write => 0,
        PoolMode::OutOfDataSpace => 1,
        PoolMode::OutOfMetadataSpace => 2,
        PoolMode::ReadOnly => 3,
        PoolMode::Fail => 4,
    }
}

pub(crate) fn mode_from_u8(m: u8) -> PoolMode {
    match m {
        0 => PoolMode::Write,
        1 => PoolMode::OutOfDataSpace,
        2 => PoolMode::OutOfMetadataSpace,
        3 => PoolMode::ReadOnly,
        _ => PoolMode::Fail,
    }
}

impl Pool {
    /// What the mode rules need to know now. Takes the metadata semaphore.
    pub(crate) fn mode_ctx(&self) -> ModeContext {
        ModeContext {
            needs_check: self.md.read().needs_check(),
            requested_error_if_no_space: self.features().error_if_no_space,
            no_space_timeout_secs: params::no_space_timeout(),
        }
    }

    /// The mode now (a copy `map` reads without locks).
    pub(crate) fn mode(&self) -> PoolMode {
        mode_from_u8(self.flags.mode.load(Ordering::Acquire))
    }

    /// Carries out `change` for the pool whose thins are `thins`. Called
    /// without the metadata semaphore held.
    pub(crate) fn carry_out(&self, thins: &[Arc<ThinState>], change: ModeChange) {
        self.flags
            .mode
            .store(mode_to_u8(change.new), Ordering::Release);
        match change.metadata {
            super::mode::MetadataAccess::ReadOnly => self.md.write().set_read_only(),
            super::mode::MetadataAccess::ReadWrite => self.md.write().set_read_write(),
            super::mode::MetadataAccess::Unchanged => {}
        }
        let handle = self.handle();
        let name = PoolName::of(handle.as_ref());
        if change.write_refused {
            pr_err!("{}: {}\n", name, WRITE_REFUSED_NEEDS_CHECK);
        }
        if change.arm_no_space_timer.is_some() || change.cancel_no_space_timer {
            self.flags.no_space_ticks.store(0, Ordering::Release);
        }
        if let Some(e) = change.error_retry_list {
            fail_retry_lists(thins, status_of(e));
        }
        if change.notify() {
            let eins = self.state.lock().error_if_no_space();
            let (word, suffix) = change.log_words(eins);
            pr_info!("{}: switching pool to {}{} mode\n", name, word, suffix);
            if let Some(h) = handle {
                h.table_event();
            }
        }
    }

    /// Upstream's `commit`, if anything changed since the last commit
    /// (the worker's periodic and flush commits, a full data device).
    pub(crate) fn commit_and_check(self: &Arc<Self>, thins: &[Arc<ThinState>]) -> Result {
        self.commit_checked(thins, false)
    }

    /// Upstream's `commit`, whatever changed (status, suspend, after a
    /// message, a resize, and before the metadata reserve is used): once
    /// the pool is in service the superblock is written even if nothing
    /// changed, so that status notices a metadata device that fails
    /// writes (as upstream's, which lvm2 relies on to see a failed pool).
    pub(crate) fn commit_now(self: &Arc<Self>, thins: &[Arc<ThinState>]) -> Result {
        self.commit_checked(thins, true)
    }

    /// Commits, refused (`EINVAL`) from out-of-metadata-space mode on. A
    /// failure is a failed metadata operation (read-only or fail mode);
    /// after a commit the free space decides the mode: no metadata space
    /// left (less the reserve) is out-of-metadata-space mode, data space
    /// again after running out is write mode, and the queued bios go back
    /// to the worker.
    fn commit_checked(self: &Arc<Self>, thins: &[Arc<ThinState>], always: bool) -> Result {
        if !self.mode().can_commit() {
            return Err(EINVAL);
        }
        let r = {
            let mut md = self.md.write();
            if always || md.changed_this_transaction() {
                noio_scope(|| md.commit())
            } else {
                Ok(())
            }
        };
        if let Err(e) = r {
            self.metadata_operation_failed(thins, "dm_pool_commit_metadata", e);
            return Err(kerr(e));
        }
        let (free_meta, free_data) = {
            let md = self.md.read();
            (md.free_metadata_blocks().ok(), md.free_data_blocks().ok())
        };
        let ctx = self.mode_ctx();
        let outcome = self.state.lock().committed(free_meta, free_data, &ctx);
        if let Some(reason) = outcome.out_of_metadata_space {
            pr_err!("{}\n", reason);
        }
        if let Some(change) = outcome.change {
            self.carry_out(thins, change);
        }
        if outcome.requeue {
            self.requeue_retries(thins);
            Pool::wake(self);
        }
        Ok(())
    }

    /// Moves every thin's queued out-of-space bios back to the worker.
    pub(crate) fn requeue_retries(&self, thins: &[Arc<ThinState>]) {
        for t in thins {
            t.lists.with(|l| {
                let retry = l.retry.take_all();
                for bio in retry {
                    l.deferred.push(bio);
                }
            });
        }
    }

    /// Metadata operation `op` failed with `e` (upstream's
    /// `metadata_operation_failed`): logged, the transaction is aborted
    /// and needs_check set, then read-only mode, or fail mode if either of
    /// those failed. Called without the metadata semaphore held.
    pub(crate) fn metadata_operation_failed(&self, thins: &[Arc<ThinState>], op: &str, e: PdError) {
        let name = self.log_name();
        dm_err_limit!(
            "{}: metadata operation '{}' failed: error = {}\n",
            name,
            op,
            e.to_errno()
        );
        dm_err_limit!("{}: aborting current metadata transaction\n", name);
        let (abort_ok, nc_ok) = {
            let mut md = self.md.write();
            // The abort rereads the last commit from the device; if that
            // fails the metadata is gone until repaired.
            let abort_ok = noio_scope(|| md.abort()).is_ok();
            if !abort_ok {
                pr_err!("{}: failed to abort metadata transaction\n", name);
            }
            let nc_ok = noio_scope(|| md.set_needs_check()).is_ok();
            if !nc_ok {
                pr_err!("{}: failed to set 'needs_check' flag in metadata\n", name);
            }
            (abort_ok, nc_ok)
        };
        let ctx = self.mode_ctx();
        let change = self
            .state
            .lock()
            .metadata_operation_failed(abort_ok, nc_ok, &ctx);
        self.carry_out(thins, change);
    }

    /// The pool ran out of data space (even after a commit).
    pub(crate) fn out_of_data_space(&self, thins: &[Arc<ThinState>]) {
        let ctx = self.mode_ctx();
        let change = self.state.lock().out_of_data_space(&ctx);
        self.carry_out(thins, change);
    }

    /// Called by the worker: fails the queued bios once the pool has been
    /// out of data space for `no_space_timeout` seconds.
    pub(crate) fn check_no_space_timeout(&self, thins: &[Arc<ThinState>]) {
        let timeout = params::no_space_timeout();
        if timeout == 0 || self.flags.no_space_ticks.load(Ordering::Acquire) < timeout {
            return;
        }
        if self.state.lock().no_space_timeout() {
            let handle = self.handle();
            let name = PoolName::of(handle.as_ref());
            pr_info!(
                "{}: switching pool to out-of-data-space (error IO) mode\n",
                name
            );
            fail_retry_lists(thins, BlkStatus::NO_SPACE);
            if let Some(h) = handle {
                h.table_event();
            }
        }
    }
}

/// Ends every thin's queued out-of-space bios with `status`.
fn fail_retry_lists(thins: &[Arc<ThinState>], status: BlkStatus) {
    for t in thins {
        let bios = t.lists.with(|l| l.retry.take_all());
        for bio in bios {
            bio.end(status);
        }
    }
}
