// SPDX-License-Identifier: GPL-2.0

//! The snapshot's optional feature arguments (`[<#features> [<feature>]*]`
//! after the chunk size): what a discard to the snapshot does.

use core::fmt;

/// The discard features of one snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// A discard of a whole chunk with an exception zeroes its copy.
    pub discard_zeroes_cow: bool,
    /// The discard also goes to the origin (as a second discard bio).
    pub discard_passdown_origin: bool,
}

impl Features {
    /// Parses the words after the store arguments: none, or a count (0-2)
    /// and that many feature names (case-insensitive); words after those
    /// are ignored, as upstream does. Errors are upstream's constructor
    /// messages.
    pub fn parse(words: &[&str]) -> Result<Self, &'static str> {
        let mut f = Features::default();
        let Some((count, rest)) = words.split_first() else {
            return Ok(f);
        };
        let n: usize = match count.parse() {
            Ok(n) if n <= 2 => n,
            _ => return Err("Invalid number of feature arguments"),
        };
        let names = rest.get(..n).ok_or("Invalid number of feature arguments")?;
        for name in names {
            if name.eq_ignore_ascii_case("discard_zeroes_cow") {
                f.discard_zeroes_cow = true;
            } else if name.eq_ignore_ascii_case("discard_passdown_origin") {
                f.discard_passdown_origin = true;
            } else {
                return Err("Unrecognised feature requested");
            }
        }
        if f.discard_passdown_origin && !f.discard_zeroes_cow {
            return Err("discard_passdown_origin feature depends on discard_zeroes_cow");
        }
        Ok(f)
    }

    /// How many discard bios dm core sends per discard: none without
    /// `discard_zeroes_cow` (the device then takes no discards), a second
    /// one for the origin with `discard_passdown_origin`.
    pub fn discard_bios(&self) -> u32 {
        match (self.discard_zeroes_cow, self.discard_passdown_origin) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        }
    }

    /// The table line's feature part as upstream prints it (nothing when
    /// no feature is set), with its leading space.
    pub fn fmt_table(&self, w: &mut dyn fmt::Write) -> fmt::Result {
        let n = u32::from(self.discard_zeroes_cow) + u32::from(self.discard_passdown_origin);
        if n == 0 {
            return Ok(());
        }
        write!(w, " {n}")?;
        if self.discard_zeroes_cow {
            w.write_str(" discard_zeroes_cow")?;
        }
        if self.discard_passdown_origin {
            w.write_str(" discard_passdown_origin")?;
        }
        Ok(())
    }
}
