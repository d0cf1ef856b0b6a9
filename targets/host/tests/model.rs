//! Model-based property test of the pool API: random histories of device,
//! snapshot and mapping changes with commits, aborts, power cuts and
//! failed writes, each step checked against a simple model (see
//! `common/model.rs`), the disk against the last commit and both
//! checkers.

mod common;

use common::model::{Harness, Op};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    let dev = 0..5u64;
    prop_oneof![
        2 => dev.clone().prop_map(Op::CreateThin),
        2 => (dev.clone(), dev.clone()).prop_map(|(d, o)| Op::CreateSnap(d, o)),
        1 => dev.clone().prop_map(Op::Delete),
        8 => (dev.clone(), 0..700u64, 1..80u64, 1..3u64).prop_map(|(d, v, n, s)| Op::Map(d, v, n, s)),
        2 => (dev.clone(), 0..700u64).prop_map(|(d, v)| Op::Unmap(d, v)),
        2 => (dev.clone(), 0..700u64, 1..300u64).prop_map(|(d, v, n)| Op::RemoveRange(d, v, n)),
        1 => Just(Op::BumpTransactionId),
        1 => Just(Op::Reserve),
        1 => Just(Op::Release),
        1 => (1..300u64).prop_map(Op::GrowData),
        4 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => any::<u64>().prop_map(Op::Crash),
        // Enough mappings to overflow the block manager's small cache, so
        // metadata is written back (and fails) in the middle.
        1 => (dev.clone(), 0..700u64, 1..3000u64, 1..3u64, 0..3u64)
            .prop_map(|(d, v, n, s, a)| Op::FailingMap(d, v, n, s, a)),
        1 => (0..10u64, any::<u64>()).prop_map(|(a, s)| Op::CrashInCommit(a, s)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // The minimal failing case is printed; no file beside the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_matches_model(ops in proptest::collection::vec(op(), 1..70)) {
        let mut h = Harness::new(1024, 3000);
        for op in &ops {
            h.apply(op);
        }
        h.finish();
    }
}
