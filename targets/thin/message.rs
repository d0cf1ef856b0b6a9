// SPDX-License-Identifier: GPL-2.0

//! thin-pool's messages (`dmsetup message <pool> 0 ...`), parsed with
//! upstream's checks; refusals and failures carry upstream's warning text.

use super::number::{is_keyword, kstrtoull};
use super::status::StatusSink;
use super::thin_table::parse_dev_id;

/// A pool message, checked and decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMessage {
    /// `create_thin <dev id>`
    CreateThin {
        /// The new thin's id.
        dev_id: u32,
    },
    /// `create_snap <dev id> <origin id>`
    CreateSnap {
        /// The new snapshot's id.
        dev_id: u32,
        /// The id of the thin it snapshots.
        origin_id: u32,
    },
    /// `delete <dev id>`
    Delete {
        /// The id of the thin to delete.
        dev_id: u32,
    },
    /// `set_transaction_id <current id> <new id>`
    SetTransactionId {
        /// The id the metadata must have now.
        current: u64,
        /// The id to set.
        new: u64,
    },
    /// `reserve_metadata_snap` (commit first, then hold a metadata root).
    ReserveMetadataSnap,
    /// `release_metadata_snap`
    ReleaseMetadataSnap,
}

/// A message as received: what it asks and its argument words, which the
/// failure warning quotes as they were written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedMessage<'a> {
    /// What the message asks.
    pub message: PoolMessage,
    // The words after the message name (empty where there are fewer).
    args: [&'a [u8]; 2],
}

/// Why a message was refused (`-EINVAL`); [`Self::emit`] writes upstream's
/// warning (`DMWARN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError<'a> {
    /// No words at all (dm core refuses these before the target sees them).
    Empty,
    /// Not one of the six messages.
    Unknown {
        /// The message name as written.
        name: &'a [u8],
    },
    /// The wrong number of words, counting the name.
    ArgCount {
        /// Words received.
        got: usize,
        /// Words the message takes.
        wanted: usize,
    },
    /// A device id that is not a decimal number of at most 24 bits.
    DevId {
        /// The word as written.
        word: &'a [u8],
    },
    /// `set_transaction_id`'s current id is not a decimal number.
    CurrentTransactionId {
        /// The word as written.
        word: &'a [u8],
    },
    /// `set_transaction_id`'s new id is not a decimal number.
    NewTransactionId {
        /// The word as written.
        word: &'a [u8],
    },
}

impl MessageError<'_> {
    /// Writes upstream's warning for this refusal.
    pub fn emit(&self, out: &mut dyn StatusSink) {
        match *self {
            Self::Empty => out.put(b"Empty message received."),
            Self::Unknown { name } => {
                out.put_all(&[b"Unrecognised thin pool target message received: ", name]);
            }
            Self::ArgCount { got, wanted } => {
                out.put(b"Message received with ");
                out.put_u64(got as u64);
                out.put(b" arguments instead of ");
                out.put_u64(wanted as u64);
                out.put(b".");
            }
            Self::DevId { word } => {
                out.put_all(&[b"Message received with invalid device id: ", word]);
            }
            Self::CurrentTransactionId { word } => {
                out.put_all(&[b"set_transaction_id message: Unrecognised id ", word, b"."])
            }
            Self::NewTransactionId { word } => out.put_all(&[
                b"set_transaction_id message: Unrecognised new id ",
                word,
                b".",
            ]),
        }
    }
}

/// The message names, the words each takes (name included), and what the
/// parsed words make of it.
type Decode = for<'a> fn(&[&'a [u8]; 2]) -> Result<PoolMessage, MessageError<'a>>;
const MESSAGES: [(&str, usize, Decode); 6] = [
    ("create_thin", 2, |&[id, _]| {
        Ok(PoolMessage::CreateThin {
            dev_id: dev_id(id)?,
        })
    }),
    ("create_snap", 3, |&[id, origin]| {
        Ok(PoolMessage::CreateSnap {
            dev_id: dev_id(id)?,
            origin_id: dev_id(origin)?,
        })
    }),
    ("delete", 2, |&[id, _]| {
        Ok(PoolMessage::Delete {
            dev_id: dev_id(id)?,
        })
    }),
    ("set_transaction_id", 3, |&[current, new]| {
        Ok(PoolMessage::SetTransactionId {
            current: kstrtoull(current)
                .ok_or(MessageError::CurrentTransactionId { word: current })?,
            new: kstrtoull(new).ok_or(MessageError::NewTransactionId { word: new })?,
        })
    }),
    ("reserve_metadata_snap", 1, |_| {
        Ok(PoolMessage::ReserveMetadataSnap)
    }),
    ("release_metadata_snap", 1, |_| {
        Ok(PoolMessage::ReleaseMetadataSnap)
    }),
];

fn dev_id(word: &[u8]) -> Result<u32, MessageError<'_>> {
    parse_dev_id(word).ok_or(MessageError::DevId { word })
}

/// Parses a pool message's words (its name first; names are
/// case-insensitive). The caller first refuses every message while the
/// pool's mode does not accept them ([`super::mode::PoolMode::accepts_messages`]).
pub fn parse_pool_message<'a, I>(words: I) -> Result<ParsedMessage<'a>, MessageError<'a>>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut words = words.into_iter();
    let name = words.next().ok_or(MessageError::Empty)?;
    let (_, wanted, decode) = MESSAGES
        .iter()
        .find(|(n, _, _)| is_keyword(name, n))
        .ok_or(MessageError::Unknown { name })?;
    let mut args: [&'a [u8]; 2] = [&[]; 2];
    let mut got = 1;
    for word in words {
        if let Some(slot) = args.get_mut(got - 1) {
            *slot = word;
        }
        got += 1;
    }
    if got != *wanted {
        return Err(MessageError::ArgCount {
            got,
            wanted: *wanted,
        });
    }
    let message = decode(&args)?;
    Ok(ParsedMessage { message, args })
}

impl ParsedMessage<'_> {
    /// Writes upstream's warning for when the metadata refused the message
    /// (the message then fails with the metadata's error).
    pub fn emit_failure(&self, out: &mut dyn StatusSink) {
        let [first, second] = self.args;
        match self.message {
            PoolMessage::CreateThin { .. } => out.put_all(&[
                b"Creation of new thinly-provisioned device with id ",
                first,
                b" failed.",
            ]),
            PoolMessage::CreateSnap { .. } => out.put_all(&[
                b"Creation of new snapshot ",
                first,
                b" of device ",
                second,
                b" failed.",
            ]),
            PoolMessage::Delete { .. } => {
                out.put_all(&[b"Deletion of thin device ", first, b" failed."])
            }
            PoolMessage::SetTransactionId { .. } => out.put_all(&[
                b"Failed to change transaction id from ",
                first,
                b" to ",
                second,
                b".",
            ]),
            PoolMessage::ReserveMetadataSnap => {
                out.put_all(&[b"reserve_metadata_snap message failed."])
            }
            PoolMessage::ReleaseMetadataSnap => {
                out.put_all(&[b"release_metadata_snap message failed."])
            }
        }
    }
}
