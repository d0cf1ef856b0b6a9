// SPDX-License-Identifier: GPL-2.0

//! The target families dm-rs can register, and which ones `targets=` picks.

/// A family: target types that register together, all or none.
pub(crate) struct FamilyInfo {
    /// The family's name in `targets=` and log lines.
    pub(crate) name: &'static str,
    /// Its target names (upstream's; `targets=` accepts these too).
    pub(crate) members: &'static [&'static str],
    /// Whether dm-rs implements every member: only complete families
    /// register by default, so a default load never hides a C target.
    pub(crate) complete: bool,
}

/// Every family, in registration order.
pub(crate) const FAMILIES: &[FamilyInfo] = &[
    FamilyInfo {
        name: "snapshot",
        members: &["snapshot-origin", "snapshot", "snapshot-merge"],
        complete: true,
    },
    FamilyInfo {
        name: "thin",
        members: &["thin-pool", "thin"],
        complete: true,
    },
];

/// What the `targets=` parameter selects.
pub(crate) enum Selection<'a> {
    /// "" (the default): the complete families.
    Complete,
    /// "all": every family, complete or not (for tests).
    All,
    /// A comma-separated list of family or target names.
    Listed(&'a [u8]),
}

impl<'a> Selection<'a> {
    /// Parses `targets=`; the error is the first unknown word.
    pub(crate) fn parse(list: &'a [u8]) -> Result<Self, &'a [u8]> {
        match list {
            b"" => Ok(Self::Complete),
            b"all" => Ok(Self::All),
            _ => {
                if let Some(bad) = list
                    .split(|&b| b == b',')
                    .find(|w| !FAMILIES.iter().any(|f| names(f, w)))
                {
                    return Err(bad);
                }
                Ok(Self::Listed(list))
            }
        }
    }

    /// Whether family `f` is selected.
    pub(crate) fn selects(&self, f: &FamilyInfo) -> bool {
        match self {
            Self::Complete => f.complete,
            Self::All => true,
            Self::Listed(list) => list.split(|&b| b == b',').any(|w| names(f, w)),
        }
    }
}

/// Whether `word` names family `f` or one of its targets.
fn names(f: &FamilyInfo, word: &[u8]) -> bool {
    word == f.name.as_bytes() || f.members.iter().any(|m| word == m.as_bytes())
}
