// SPDX-License-Identifier: GPL-2.0

//! thin-pool's modes and upstream's rules for moving between them, as pure
//! state the pool's worker drives: it reports what happened (a metadata
//! failure, a commit, no data space, the no-space timeout, a table load)
//! and gets back the new mode and what to do about it.

use super::pool_table::PoolFeatures;

/// A thin-pool's mode, from most to least capable (the order matters:
/// messages and commits are refused from [`PoolMode::OutOfMetadataSpace`] on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolMode {
    /// Normal operation.
    Write,
    /// No free data block: writes needing a new block queue (or fail with
    /// `error_if_no_space`) until the data device grows.
    OutOfDataSpace,
    /// No free metadata block: read-only until the metadata device grows.
    OutOfMetadataSpace,
    /// Read-only: after a metadata failure, or as the table asked.
    ReadOnly,
    /// Metadata could not be rolled back: all I/O fails until repaired.
    Fail,
}

/// The error a bio completes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// `BLK_STS_IOERR`.
    Io,
    /// `BLK_STS_NOSPC`.
    NoSpace,
}

/// What the worker does with a bio (not a discard) taken off a thin's
/// deferred list or a cell it now holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BioHandling {
    /// Everything: provision, break sharing, remap.
    Full,
    /// Only what needs no new block: see [`PoolState::read_only_action`].
    ReadOnly,
    /// Fail it (`BLK_STS_IOERR`).
    Error,
}

/// Where the read-only handling leaves a bio after its block's lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOnlyAction {
    /// Remap it to its data block.
    Remap,
    /// A read of an unmapped block: zeros, or the external origin.
    ReadUnmapped,
    /// It needs a new block it cannot have now.
    Unserviceable(Unserviceable),
}

/// What becomes of a bio the pool cannot serve in its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unserviceable {
    /// Keep it on the thin's retry-on-resume list.
    Queue,
    /// Fail it with this error.
    Error(IoError),
}

/// What the worker does with a discard, and with a prepared discard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardHandling {
    /// Unmap (and pass down as configured).
    Process,
    /// Complete it successfully without doing anything.
    Succeed,
    /// Fail it (`BLK_STS_IOERR`).
    Error,
}

/// What the worker does with a prepared mapping (a finished copy or zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingHandling {
    /// Insert the mapping and release the cell.
    Insert,
    /// Fail the cell's bios with [`PoolState::io_error`].
    Error,
}

/// How the metadata must be opened after a mode change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataAccess {
    /// Read-only (`dm_pool_metadata_read_only`).
    ReadOnly,
    /// Read-write (`dm_pool_metadata_read_write`).
    ReadWrite,
    /// As it is.
    Unchanged,
}

impl PoolMode {
    /// The mode word of the status line.
    pub fn status_word(self) -> &'static [u8] {
        match self {
            Self::Write => b"rw",
            Self::OutOfDataSpace => b"out_of_data_space",
            Self::OutOfMetadataSpace | Self::ReadOnly | Self::Fail => b"ro",
        }
    }

    /// Whether the metadata is read-only in this mode (the two read-only
    /// modes; fail mode is separate).
    pub fn is_read_only(self) -> bool {
        matches!(self, Self::OutOfMetadataSpace | Self::ReadOnly)
    }

    /// Whether pool messages are served; refused ones fail with
    /// `-EOPNOTSUPP` and [`MESSAGES_REFUSED`] is logged.
    pub fn accepts_messages(self) -> bool {
        self < Self::OutOfMetadataSpace
    }

    /// Whether a commit is attempted; a refused one fails with `-EINVAL`
    /// (and the flushes waiting for it fail with `BLK_STS_IOERR`).
    pub fn can_commit(self) -> bool {
        self < Self::OutOfMetadataSpace
    }

    /// Whether a bio fails at once in `map` (fail mode); flushes and
    /// discards otherwise always go to the worker.
    pub fn fails_in_map(self) -> bool {
        self == Self::Fail
    }

    /// How the worker handles a deferred bio.
    pub fn bio_handling(self) -> BioHandling {
        match self {
            Self::Write => BioHandling::Full,
            Self::OutOfDataSpace | Self::OutOfMetadataSpace | Self::ReadOnly => {
                BioHandling::ReadOnly
            }
            Self::Fail => BioHandling::Error,
        }
    }

    /// How the worker handles a deferred discard.
    pub fn discard_handling(self) -> DiscardHandling {
        match self {
            Self::Write | Self::OutOfDataSpace => DiscardHandling::Process,
            Self::OutOfMetadataSpace | Self::ReadOnly => DiscardHandling::Succeed,
            Self::Fail => DiscardHandling::Error,
        }
    }

    /// How the worker handles a prepared discard.
    pub fn prepared_discard_handling(self) -> DiscardHandling {
        self.discard_handling()
    }

    /// How the worker handles a prepared mapping.
    pub fn mapping_handling(self) -> MappingHandling {
        match self {
            Self::Write | Self::OutOfDataSpace => MappingHandling::Insert,
            Self::OutOfMetadataSpace | Self::ReadOnly | Self::Fail => MappingHandling::Error,
        }
    }

    /// The mode a freshly loaded table asks for.
    pub fn requested_by(features: &PoolFeatures) -> Self {
        if features.read_only {
            Self::ReadOnly
        } else {
            Self::Write
        }
    }

    /// The mode-change log words: `switching pool to <name><detail> mode`.
    fn description(self, error_if_no_space: bool) -> (&'static str, &'static str) {
        match self {
            Self::Write => ("write", ""),
            Self::OutOfDataSpace if error_if_no_space => ("out-of-data-space", " (error IO)"),
            Self::OutOfDataSpace => ("out-of-data-space", " (queue IO)"),
            Self::OutOfMetadataSpace | Self::ReadOnly => ("read-only", ""),
            Self::Fail => ("fail", ""),
        }
    }
}

/// Logged (`DMERR`, after `<pool name>: `) when a message is refused.
pub const MESSAGES_REFUSED: &str =
    "unable to service pool target messages in READ_ONLY or FAIL mode";
/// Logged (`DMERR`) when a commit leaves no free metadata block (less
/// the reserve).
pub const NO_FREE_METADATA: &str = "No free metadata blocks";
/// Logged (`DMERR`) when the free metadata count cannot be read after a
/// commit.
pub const METADATA_COUNT_FAILED: &str = "Could not get free metadata blocks";
/// Logged (`DMERR`, after `<pool name>: `) when write mode is refused
/// because the metadata needs checking.
pub const WRITE_REFUSED_NEEDS_CHECK: &str = "unable to switch pool to write mode until repaired.";

/// What a mode change asks of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct ModeChange {
    /// The mode before.
    pub old: PoolMode,
    /// The mode now.
    pub new: PoolMode,
    /// Write mode was asked for but refused: log [`WRITE_REFUSED_NEEDS_CHECK`].
    pub write_refused: bool,
    /// Switch the metadata to this.
    pub metadata: MetadataAccess,
    /// Fail every thin's retry-on-resume bios with this error.
    pub error_retry_list: Option<IoError>,
    /// Arm the no-space timer for this many seconds (if not already armed).
    pub arm_no_space_timer: Option<u32>,
    /// Cancel the no-space timer (and wait for it).
    pub cancel_no_space_timer: bool,
}

impl ModeChange {
    /// Whether the mode changed: raise a dm event and log
    /// `<pool name>: switching pool to <name><detail> mode` with
    /// [`Self::log_words`].
    pub fn notify(&self) -> bool {
        self.old != self.new
    }

    /// `(name, detail)` for the mode-change log line, given the pool's
    /// `error_if_no_space` after the change ([`PoolState::error_if_no_space`]).
    pub fn log_words(&self, error_if_no_space: bool) -> (&'static str, &'static str) {
        self.new.description(error_if_no_space)
    }
}

/// The `no_space_timeout` module parameter's default, in seconds.
pub const DEFAULT_NO_SPACE_TIMEOUT_SECS: u32 = 60;

/// What the mode rules need to know besides the pool's own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeContext {
    /// The metadata's needs_check flag.
    pub needs_check: bool,
    /// `error_if_no_space` as the bound table asked for it.
    pub requested_error_if_no_space: bool,
    /// The `no_space_timeout` module parameter (seconds, 0: never).
    pub no_space_timeout_secs: u32,
}

/// A pool's mode and the flags upstream keeps beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolState {
    mode: PoolMode,
    // Whether the pool has run out of data space since it last entered write
    // mode; errors then are `NoSpace`. Upstream keeps it through read-only
    // and fail mode.
    out_of_data_space: bool,
    // The `error_if_no_space` in force: the table's, until the no-space
    // timeout sets it.
    error_if_no_space: bool,
}

impl Default for PoolState {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolState {
    /// A new pool: write mode (the first table load then sets its mode with
    /// [`Self::bind`]).
    pub fn new() -> Self {
        Self {
            mode: PoolMode::Write,
            out_of_data_space: false,
            error_if_no_space: false,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// Whether out-of-space I/O fails at once now.
    pub fn error_if_no_space(&self) -> bool {
        self.error_if_no_space
    }

    /// The error for failed cells and retry lists: `NoSpace` once the pool
    /// has run out of data space (until it is back in write mode).
    pub fn io_error(&self) -> IoError {
        if self.out_of_data_space {
            IoError::NoSpace
        } else {
            IoError::Io
        }
    }

    /// What becomes of a bio that needs a block the mode cannot give.
    pub fn unserviceable(&self) -> Unserviceable {
        match self.mode {
            PoolMode::OutOfDataSpace if !self.error_if_no_space => Unserviceable::Queue,
            PoolMode::OutOfDataSpace => Unserviceable::Error(IoError::NoSpace),
            // Write mode never gets here; upstream logs and fails it.
            _ => Unserviceable::Error(IoError::Io),
        }
    }

    /// The read-only handling of a bio after its lookup: `mapped` is
    /// `Some(shared)` for a mapped block, `None` for an unmapped one;
    /// `is_write` is the bio's data direction and `has_data` whether it
    /// carries any.
    pub fn read_only_action(
        &self,
        mapped: Option<bool>,
        is_write: bool,
        has_data: bool,
    ) -> ReadOnlyAction {
        match mapped {
            Some(true) if is_write && has_data => {
                ReadOnlyAction::Unserviceable(self.unserviceable())
            }
            Some(_) => ReadOnlyAction::Remap,
            None if is_write => ReadOnlyAction::Unserviceable(self.unserviceable()),
            None => ReadOnlyAction::ReadUnmapped,
        }
    }

    /// Moves to `requested`, by upstream's rules: never to write mode while
    /// the metadata needs checking (then the mode stays, or becomes
    /// read-only if it was write already); never out of fail mode.
    pub fn set_mode(&mut self, requested: PoolMode, ctx: &ModeContext) -> ModeChange {
        let old = self.mode;
        let mut new = requested;
        let mut write_refused = false;
        if new == PoolMode::Write && ctx.needs_check {
            write_refused = true;
            new = if old != PoolMode::Write {
                old
            } else {
                PoolMode::ReadOnly
            };
        }
        if old == PoolMode::Fail {
            new = PoolMode::Fail;
        }
        let mut change = ModeChange {
            old,
            new,
            write_refused,
            metadata: MetadataAccess::Unchanged,
            error_retry_list: None,
            arm_no_space_timer: None,
            cancel_no_space_timer: false,
        };
        match new {
            PoolMode::Fail | PoolMode::OutOfMetadataSpace | PoolMode::ReadOnly => {
                change.metadata = MetadataAccess::ReadOnly;
                change.error_retry_list = Some(self.io_error());
            }
            PoolMode::OutOfDataSpace => {
                self.out_of_data_space = true;
                if !self.error_if_no_space && ctx.no_space_timeout_secs != 0 {
                    change.arm_no_space_timer = Some(ctx.no_space_timeout_secs);
                }
            }
            PoolMode::Write => {
                change.cancel_no_space_timer = old == PoolMode::OutOfDataSpace;
                self.out_of_data_space = false;
                self.error_if_no_space = ctx.requested_error_if_no_space;
                change.metadata = MetadataAccess::ReadWrite;
            }
        }
        self.mode = new;
        change
    }

    /// A table is bound (pool preresume): its `error_if_no_space` takes
    /// effect and the pool moves to `requested` — what
    /// [`PoolMode::requested_by`] gave for a newly loaded table, or, for a
    /// resume without a reload, the mode the pool was last set to.
    pub fn bind(&mut self, requested: PoolMode, ctx: &ModeContext) -> ModeChange {
        self.error_if_no_space = ctx.requested_error_if_no_space;
        self.set_mode(requested, ctx)
    }

    /// A metadata operation failed. The caller has tried to abort the
    /// transaction and then to set the needs_check flag (in that order,
    /// whatever the first gave); fail mode if either failed, else read-only.
    pub fn metadata_operation_failed(
        &mut self,
        abort_ok: bool,
        set_needs_check_ok: bool,
        ctx: &ModeContext,
    ) -> ModeChange {
        let target = if abort_ok && set_needs_check_ok {
            PoolMode::ReadOnly
        } else {
            PoolMode::Fail
        };
        self.set_mode(target, ctx)
    }

    /// A commit succeeded; `free_metadata` and `free_data` are the free
    /// block counts read after it (`None` if reading failed). No metadata
    /// space: out-of-metadata-space mode. Data space again while out of it:
    /// back to write mode, and requeue every thin's retry-on-resume bios.
    pub fn committed(
        &mut self,
        free_metadata: Option<u64>,
        free_data: Option<u64>,
        ctx: &ModeContext,
    ) -> CommitOutcome {
        let mut outcome = CommitOutcome {
            change: None,
            requeue: false,
            out_of_metadata_space: None,
        };
        let reason = match free_metadata {
            None => Some(METADATA_COUNT_FAILED),
            Some(0) => Some(NO_FREE_METADATA),
            Some(_) => None,
        };
        if let (Some(reason), false) = (reason, self.mode.is_read_only()) {
            outcome.out_of_metadata_space = Some(reason);
            outcome.change = Some(self.set_mode(PoolMode::OutOfMetadataSpace, ctx));
        }
        // Not after the above: the pool is then out of metadata space.
        if self.mode == PoolMode::OutOfDataSpace && matches!(free_data, Some(n) if n > 0) {
            outcome.change = Some(self.set_mode(PoolMode::Write, ctx));
            outcome.requeue = true;
        }
        outcome
    }

    /// Allocation found no free data block even after a commit.
    pub fn out_of_data_space(&mut self, ctx: &ModeContext) -> ModeChange {
        self.set_mode(PoolMode::OutOfDataSpace, ctx)
    }

    /// The no-space timer fired. Returns `true` if the pool, still queueing
    /// out-of-space I/O, now fails it: the caller notifies (dm event and
    /// the out-of-data-space "(error IO)" log line) and fails every thin's
    /// retry-on-resume bios with `NoSpace`.
    pub fn no_space_timeout(&mut self) -> bool {
        if self.mode == PoolMode::OutOfDataSpace && !self.error_if_no_space {
            self.error_if_no_space = true;
            true
        } else {
            false
        }
    }

    /// The metadata device grew (preresume, needs_check clear): an
    /// out-of-metadata-space pool goes back to write mode.
    pub fn metadata_grown(&mut self, ctx: &ModeContext) -> Option<ModeChange> {
        (self.mode == PoolMode::OutOfMetadataSpace).then(|| self.set_mode(PoolMode::Write, ctx))
    }
}

/// What a successful commit changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct CommitOutcome {
    /// The mode change, if the mode was set.
    pub change: Option<ModeChange>,
    /// Move every thin's retry-on-resume bios back to its deferred list.
    pub requeue: bool,
    /// Why the pool went out of metadata space: log it (`DMERR`, no pool
    /// name) before the mode change.
    pub out_of_metadata_space: Option<&'static str>,
}
