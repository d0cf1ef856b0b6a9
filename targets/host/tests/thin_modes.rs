//! thin-pool's modes: what each does with I/O, messages and commits, and
//! upstream's rules for moving between them (set_pool_mode and its callers
//! in 6.12's dm-thin.c).

use dm_rs_targets_host::thin::mode::{
    BioHandling, DiscardHandling, IoError, MappingHandling, MetadataAccess, ModeChange,
    ModeContext, PoolMode, PoolState, ReadOnlyAction, Unserviceable,
};
use dm_rs_targets_host::thin::pool_table::PoolFeatures;

use PoolMode::*;

const MODES: [PoolMode; 5] = [Write, OutOfDataSpace, OutOfMetadataSpace, ReadOnly, Fail];

fn ctx(needs_check: bool, eins: bool, timeout: u32) -> ModeContext {
    ModeContext {
        needs_check,
        requested_error_if_no_space: eins,
        no_space_timeout_secs: timeout,
    }
}

const PLAIN: ModeContext = ModeContext {
    needs_check: false,
    requested_error_if_no_space: false,
    no_space_timeout_secs: 60,
};

/// A pool in `mode`, reached by upstream's own transitions.
fn in_mode(mode: PoolMode, eins: bool) -> PoolState {
    let c = ctx(false, eins, 60);
    let mut s = PoolState::new();
    let _ = s.bind(Write, &c);
    let _ = s.set_mode(mode, &c);
    assert_eq!(s.mode(), mode);
    s
}

#[test]
fn what_each_mode_does() {
    // mode, status word, read-only, messages, commit, fails in map, bios,
    // discards, prepared mappings
    use BioHandling as B;
    use DiscardHandling as D;
    use MappingHandling as M;
    #[rustfmt::skip]
    let table = [
        (Write, "rw", false, true, true, false, B::Full, D::Process, M::Insert),
        (OutOfDataSpace, "out_of_data_space", false, true, true, false, B::ReadOnly, D::Process, M::Insert),
        (OutOfMetadataSpace, "ro", true, false, false, false, B::ReadOnly, D::Succeed, M::Error),
        (ReadOnly, "ro", true, false, false, false, B::ReadOnly, D::Succeed, M::Error),
        (Fail, "ro", false, false, false, true, B::Error, D::Error, M::Error),
    ];
    for (mode, word, ro, msgs, commit, map_fails, bios, discards, mappings) in table {
        assert_eq!(mode.status_word(), word.as_bytes(), "{mode:?}");
        assert_eq!(mode.is_read_only(), ro, "{mode:?}");
        assert_eq!(mode.accepts_messages(), msgs, "{mode:?}");
        assert_eq!(mode.can_commit(), commit, "{mode:?}");
        assert_eq!(mode.fails_in_map(), map_fails, "{mode:?}");
        assert_eq!(mode.bio_handling(), bios, "{mode:?}");
        assert_eq!(mode.discard_handling(), discards, "{mode:?}");
        assert_eq!(mode.prepared_discard_handling(), discards, "{mode:?}");
        assert_eq!(mode.mapping_handling(), mappings, "{mode:?}");
    }
}

#[test]
fn read_only_handling_after_lookup() {
    use ReadOnlyAction::{ReadUnmapped, Remap};
    let queue = ReadOnlyAction::Unserviceable(Unserviceable::Queue);
    let nospc = ReadOnlyAction::Unserviceable(Unserviceable::Error(IoError::NoSpace));
    let ioerr = ReadOnlyAction::Unserviceable(Unserviceable::Error(IoError::Io));
    // (mapped: None | Some(shared)), is_write, has_data
    let cases = [
        (None, false, true),
        (None, true, true),
        (None, true, false),
        (Some(false), true, true),
        (Some(false), false, true),
        (Some(true), false, true),
        (Some(true), true, true),
        (Some(true), true, false),
    ];
    let expect = |unserviceable| {
        [
            ReadUnmapped,
            unserviceable,
            unserviceable,
            Remap,
            Remap,
            Remap,
            unserviceable,
            Remap,
        ]
    };
    for (state, want) in [
        (in_mode(OutOfDataSpace, false), expect(queue)),
        (in_mode(OutOfDataSpace, true), expect(nospc)),
        (in_mode(OutOfMetadataSpace, false), expect(ioerr)),
        (in_mode(ReadOnly, false), expect(ioerr)),
    ] {
        for ((mapped, w, d), want) in cases.iter().zip(want) {
            assert_eq!(
                state.read_only_action(*mapped, *w, *d),
                want,
                "{:?} {mapped:?} {w} {d}",
                state.mode()
            );
        }
    }
}

/// Upstream's set_pool_mode, written out independently: the mode it lands
/// in for (old, requested, needs_check).
fn expected_mode(old: PoolMode, requested: PoolMode, needs_check: bool) -> PoolMode {
    if old == Fail {
        Fail
    } else if requested == Write && needs_check {
        if old == Write {
            ReadOnly
        } else {
            old
        }
    } else {
        requested
    }
}

#[test]
fn set_mode_follows_upstreams_rules_for_every_pair() {
    for old in MODES {
        for requested in MODES {
            for needs_check in [false, true] {
                for eins in [false, true] {
                    for timeout in [0, 60] {
                        let mut s = in_mode(old, eins);
                        let was_nospc = s.io_error();
                        let c = ctx(needs_check, eins, timeout);
                        let ch = s.set_mode(requested, &c);
                        let new = expected_mode(old, requested, needs_check);
                        let what = format!(
                            "{old:?} -> {requested:?} nc={needs_check} eins={eins} t={timeout}"
                        );
                        assert_eq!(s.mode(), new, "{what}");
                        assert_eq!((ch.old, ch.new), (old, new), "{what}");
                        assert_eq!(ch.notify(), old != new, "{what}");
                        assert_eq!(
                            ch.write_refused,
                            requested == Write && needs_check,
                            "{what}"
                        );
                        let meta = match new {
                            Write => MetadataAccess::ReadWrite,
                            OutOfDataSpace => MetadataAccess::Unchanged,
                            _ => MetadataAccess::ReadOnly,
                        };
                        assert_eq!(ch.metadata, meta, "{what}");
                        let retry = matches!(new, Fail | OutOfMetadataSpace | ReadOnly)
                            .then_some(was_nospc);
                        assert_eq!(ch.error_retry_list, retry, "{what}");
                        let arm =
                            (new == OutOfDataSpace && !eins && timeout != 0).then_some(timeout);
                        assert_eq!(ch.arm_no_space_timer, arm, "{what}");
                        assert_eq!(
                            ch.cancel_no_space_timer,
                            new == Write && old == OutOfDataSpace,
                            "{what}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn out_of_data_space_errors_stay_nospc_until_write_mode() {
    let mut s = in_mode(Write, false);
    assert_eq!(s.io_error(), IoError::Io);
    let ch = s.out_of_data_space(&PLAIN);
    assert_eq!(ch.arm_no_space_timer, Some(60));
    assert_eq!(s.io_error(), IoError::NoSpace);
    assert_eq!(s.unserviceable(), Unserviceable::Queue);
    // A metadata failure now: read-only, and the retry list fails with NOSPC.
    let ch = s.metadata_operation_failed(true, true, &PLAIN);
    assert_eq!(
        (ch.new, ch.error_retry_list),
        (ReadOnly, Some(IoError::NoSpace))
    );
    assert_eq!(s.io_error(), IoError::NoSpace);
    assert_eq!(s.unserviceable(), Unserviceable::Error(IoError::Io));
    let _ = s.set_mode(Write, &PLAIN);
    assert_eq!(s.io_error(), IoError::Io);
}

#[test]
fn no_space_timeout_turns_queueing_into_errors_once() {
    let mut s = in_mode(OutOfDataSpace, false);
    assert!(!s.error_if_no_space());
    assert!(s.no_space_timeout());
    assert!(s.error_if_no_space());
    assert_eq!(s.unserviceable(), Unserviceable::Error(IoError::NoSpace));
    assert!(!s.no_space_timeout());
    // Back in write mode the table's setting returns.
    let (ch, requeue) = {
        let o = s.committed(Some(10), Some(5), &PLAIN);
        (o.change.unwrap(), o.requeue)
    };
    assert!(requeue);
    assert_eq!(
        (ch.old, ch.new, ch.cancel_no_space_timer),
        (OutOfDataSpace, Write, true)
    );
    assert!(!s.error_if_no_space());
    // Not out of space, or erroring already: nothing to do.
    assert!(!in_mode(Write, false).no_space_timeout());
    assert!(!in_mode(OutOfDataSpace, true).no_space_timeout());
    assert!(!in_mode(ReadOnly, false).no_space_timeout());
    // error_if_no_space: no timer at all.
    let ch = in_mode(Write, true).out_of_data_space(&ctx(false, true, 60));
    assert_eq!(ch.arm_no_space_timer, None);
    // no_space_timeout=0: no timer.
    let ch = in_mode(Write, false).out_of_data_space(&ctx(false, false, 0));
    assert_eq!(ch.arm_no_space_timer, None);
}

#[test]
fn commits_find_space_gone_or_back() {
    // No free metadata after a commit: out of metadata space.
    let mut s = in_mode(Write, false);
    let o = s.committed(Some(0), Some(100), &PLAIN);
    assert_eq!(
        o.change.map(|c| (c.old, c.new)),
        Some((Write, OutOfMetadataSpace))
    );
    assert!(!o.requeue);
    assert_eq!(o.out_of_metadata_space, Some("No free metadata blocks"));
    // Already read-only: no second mode change, nothing logged.
    let o = s.committed(Some(0), Some(100), &PLAIN);
    assert_eq!((o.change, o.out_of_metadata_space), (None, None));
    // Failing to read the count counts as none.
    let mut s = in_mode(OutOfDataSpace, false);
    let o = s.committed(None, Some(100), &PLAIN);
    assert_eq!(o.change.map(|c| c.new), Some(OutOfMetadataSpace));
    assert!(!o.requeue);
    assert_eq!(
        o.out_of_metadata_space,
        Some("Could not get free metadata blocks")
    );
    // Plenty of both in write mode: nothing happens.
    let mut s = in_mode(Write, false);
    let o = s.committed(Some(5), Some(5), &PLAIN);
    assert_eq!((o.change, o.out_of_metadata_space), (None, None));
    // Still no data: stays out of data space.
    let mut s = in_mode(OutOfDataSpace, false);
    let o = s.committed(Some(5), Some(0), &PLAIN);
    assert_eq!(
        (o.change, o.requeue, s.mode()),
        (None, false, OutOfDataSpace)
    );
    let o = s.committed(Some(5), None, &PLAIN);
    assert_eq!((o.change, o.requeue), (None, false));
    // Data back but needs_check: write refused, bios requeued anyway.
    let mut s = in_mode(OutOfDataSpace, false);
    let o = s.committed(Some(5), Some(1), &ctx(true, false, 60));
    let ch: ModeChange = o.change.unwrap();
    assert!(ch.write_refused && o.requeue);
    assert_eq!(s.mode(), OutOfDataSpace);
}

#[test]
fn metadata_failures_go_read_only_or_fail() {
    for (abort_ok, flag_ok, want) in [
        (true, true, ReadOnly),
        (false, true, Fail),
        (true, false, Fail),
        (false, false, Fail),
    ] {
        let mut s = in_mode(Write, false);
        let ch = s.metadata_operation_failed(abort_ok, flag_ok, &PLAIN);
        assert_eq!((ch.old, ch.new, s.mode()), (Write, want, want));
        assert!(ch.notify());
        assert_eq!(ch.metadata, MetadataAccess::ReadOnly);
    }
    // Fail is final: nothing brings the pool back.
    let mut s = in_mode(Fail, false);
    for m in MODES {
        assert_eq!(s.set_mode(m, &PLAIN).new, Fail);
        assert_eq!(s.bind(m, &PLAIN).new, Fail);
    }
    assert_eq!(s.metadata_grown(&PLAIN), None);
    assert_eq!(s.committed(Some(1), Some(1), &PLAIN).change, None);
}

#[test]
fn table_loads_pick_the_mode() {
    let ro = PoolFeatures {
        read_only: true,
        ..PoolFeatures::default()
    };
    assert_eq!(PoolMode::requested_by(&ro), ReadOnly);
    assert_eq!(PoolMode::requested_by(&PoolFeatures::default()), Write);
    // A reload without read_only brings a read-only pool back to write...
    let mut s = in_mode(ReadOnly, false);
    let ch = s.bind(Write, &PLAIN);
    assert_eq!((ch.new, ch.metadata), (Write, MetadataAccess::ReadWrite));
    // ...unless the metadata needs checking.
    let mut s = in_mode(ReadOnly, false);
    let ch = s.bind(Write, &ctx(true, false, 60));
    assert_eq!(
        (ch.new, ch.write_refused, ch.notify()),
        (ReadOnly, true, false)
    );
    // Resuming a write-mode pool whose metadata needs checking: read-only.
    let mut s = in_mode(Write, false);
    assert_eq!(s.bind(Write, &ctx(true, false, 60)).new, ReadOnly);
    // A load takes the table's error_if_no_space, the timeout's is undone.
    let mut s = in_mode(OutOfDataSpace, false);
    assert!(s.no_space_timeout());
    let ch = s.bind(OutOfDataSpace, &PLAIN);
    assert!(!s.error_if_no_space());
    assert_eq!(ch.arm_no_space_timer, Some(60));
    let ch = s.bind(OutOfDataSpace, &ctx(false, true, 60));
    assert!(s.error_if_no_space());
    assert_eq!(ch.arm_no_space_timer, None);
    assert_eq!(
        ch.log_words(s.error_if_no_space()),
        ("out-of-data-space", " (error IO)")
    );
}

#[test]
fn metadata_growth_leaves_out_of_metadata_space() {
    let mut s = in_mode(OutOfMetadataSpace, false);
    let ch = s.metadata_grown(&PLAIN).unwrap();
    assert_eq!((ch.old, ch.new), (OutOfMetadataSpace, Write));
    for m in [Write, OutOfDataSpace, ReadOnly] {
        assert_eq!(in_mode(m, false).metadata_grown(&PLAIN), None);
    }
}

#[test]
fn mode_change_log_words_are_upstreams() {
    let words = |m: PoolMode, eins: bool| {
        let mut s = in_mode(if m == Write { ReadOnly } else { Write }, eins);
        let ch = s.set_mode(m, &ctx(false, eins, 60));
        ch.log_words(s.error_if_no_space())
    };
    assert_eq!(words(Write, false), ("write", ""));
    assert_eq!(
        words(OutOfDataSpace, false),
        ("out-of-data-space", " (queue IO)")
    );
    assert_eq!(
        words(OutOfDataSpace, true),
        ("out-of-data-space", " (error IO)")
    );
    assert_eq!(words(OutOfMetadataSpace, false), ("read-only", ""));
    assert_eq!(words(ReadOnly, false), ("read-only", ""));
    assert_eq!(words(Fail, false), ("fail", ""));
}
