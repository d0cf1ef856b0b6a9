//! thin-pool's messages: what each decodes to, and upstream's warning text
//! for every refusal and failure.

use dm_rs_targets_host::thin::message::{parse_pool_message, MessageError, PoolMessage};
use proptest::prelude::*;

fn parse(line: &str) -> Result<PoolMessage, String> {
    parse_pool_message(line.split_ascii_whitespace().map(str::as_bytes))
        .map(|m| m.message)
        .map_err(|e| warning(&e))
}

fn warning(e: &MessageError<'_>) -> String {
    let mut out = Vec::new();
    e.emit(&mut out);
    String::from_utf8(out).unwrap()
}

fn failure(line: &str) -> String {
    let m = parse_pool_message(line.split_ascii_whitespace().map(str::as_bytes)).unwrap();
    let mut out = Vec::new();
    m.emit_failure(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn messages_decode() {
    assert_eq!(
        parse("create_thin 0"),
        Ok(PoolMessage::CreateThin { dev_id: 0 })
    );
    assert_eq!(
        parse("CREATE_THIN +16777215\n"),
        Ok(PoolMessage::CreateThin { dev_id: 16_777_215 })
    );
    assert_eq!(
        parse("create_snap 2 1"),
        Ok(PoolMessage::CreateSnap {
            dev_id: 2,
            origin_id: 1
        })
    );
    assert_eq!(parse("Delete 7"), Ok(PoolMessage::Delete { dev_id: 7 }));
    assert_eq!(
        parse("set_transaction_id 0 18446744073709551615"),
        Ok(PoolMessage::SetTransactionId {
            current: 0,
            new: u64::MAX
        })
    );
    assert_eq!(
        parse("reserve_metadata_snap"),
        Ok(PoolMessage::ReserveMetadataSnap)
    );
    assert_eq!(
        parse("release_metadata_snap"),
        Ok(PoolMessage::ReleaseMetadataSnap)
    );
}

#[test]
fn refusals_have_upstreams_warnings() {
    let cases = [
        ("", "Empty message received."),
        (
            "create",
            "Unrecognised thin pool target message received: create",
        ),
        (
            "Frob 1 2",
            "Unrecognised thin pool target message received: Frob",
        ),
        (
            "create_thin",
            "Message received with 1 arguments instead of 2.",
        ),
        (
            "create_thin 1 2",
            "Message received with 3 arguments instead of 2.",
        ),
        (
            "create_snap 1",
            "Message received with 2 arguments instead of 3.",
        ),
        (
            "create_snap 1 2 3 4 5",
            "Message received with 6 arguments instead of 3.",
        ),
        ("delete", "Message received with 1 arguments instead of 2."),
        (
            "set_transaction_id 1",
            "Message received with 2 arguments instead of 3.",
        ),
        (
            "reserve_metadata_snap now",
            "Message received with 2 arguments instead of 1.",
        ),
        (
            "release_metadata_snap a b",
            "Message received with 3 arguments instead of 1.",
        ),
        // The count is checked before the words.
        (
            "create_thin x y",
            "Message received with 3 arguments instead of 2.",
        ),
        (
            "create_thin x",
            "Message received with invalid device id: x",
        ),
        (
            "create_thin -1",
            "Message received with invalid device id: -1",
        ),
        (
            "create_thin 16777216",
            "Message received with invalid device id: 16777216",
        ),
        (
            "create_thin 0x1",
            "Message received with invalid device id: 0x1",
        ),
        // The new id is checked first, then the origin.
        (
            "create_snap a b",
            "Message received with invalid device id: a",
        ),
        (
            "create_snap 1 b",
            "Message received with invalid device id: b",
        ),
        (
            "delete 99999999",
            "Message received with invalid device id: 99999999",
        ),
        (
            "set_transaction_id x y",
            "set_transaction_id message: Unrecognised id x.",
        ),
        (
            "set_transaction_id 1 -2",
            "set_transaction_id message: Unrecognised new id -2.",
        ),
        (
            "set_transaction_id 18446744073709551616 1",
            "set_transaction_id message: Unrecognised id 18446744073709551616.",
        ),
    ];
    for (line, text) in cases {
        assert_eq!(parse(line), Err(text.to_string()), "{line}");
    }
}

#[test]
fn failures_quote_the_words_as_written() {
    assert_eq!(
        failure("create_thin +5"),
        "Creation of new thinly-provisioned device with id +5 failed."
    );
    assert_eq!(
        failure("create_snap 2 01"),
        "Creation of new snapshot 2 of device 01 failed."
    );
    assert_eq!(failure("delete 3"), "Deletion of thin device 3 failed.");
    assert_eq!(
        failure("set_transaction_id 4 5"),
        "Failed to change transaction id from 4 to 5."
    );
    assert_eq!(
        failure("RESERVE_METADATA_SNAP"),
        "reserve_metadata_snap message failed."
    );
    assert_eq!(
        failure("release_metadata_snap"),
        "release_metadata_snap message failed."
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn dev_ids_round_trip(id in 0u32..(1 << 24), origin in 0u32..(1 << 24)) {
        prop_assert_eq!(
            parse(&format!("create_snap {id} {origin}")),
            Ok(PoolMessage::CreateSnap { dev_id: id, origin_id: origin })
        );
        prop_assert_eq!(parse(&format!("delete {id}")), Ok(PoolMessage::Delete { dev_id: id }));
    }

    #[test]
    fn parse_never_panics(words in proptest::collection::vec("[a-z_0-9+\\-]{0,24}", 0..8)) {
        let _ = parse_pool_message(words.iter().map(|w| w.as_bytes()));
    }
}
