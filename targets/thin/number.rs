// SPDX-License-Identifier: GPL-2.0

//! Numbers in table lines and messages, read the way upstream's C reads them,
//! so the same words are accepted and refused.

/// Upstream's `kstrtoull(word, 10)`: an optional `+`, at least one decimal
/// digit, an optional single trailing newline, nothing else; overflow fails.
pub fn kstrtoull(word: &[u8]) -> Option<u64> {
    let word = word.strip_prefix(b"+").unwrap_or(word);
    let digits = word.strip_suffix(b"\n").unwrap_or(word);
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// Whether the kernel's `isspace` holds for `b` (its ctype table is Latin-1:
/// the no-break space 0xA0 counts).
fn kernel_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Upstream's `sscanf(word, "%u%c", &v, &c) == 1` (how `dm_read_arg` reads
/// a count): leading white space, then decimal digits up to the end of the
/// word. Like the kernel's scanner, the digits wrap instead of failing on
/// overflow and the result keeps the low 32 bits.
pub fn scan_u32(word: &[u8]) -> Option<u32> {
    let start = word.iter().position(|&b| !kernel_isspace(b))?;
    let digits = word.get(start..)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u64, |v, &b| {
        v.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
    });
    // Truncation is the point: C stores the value in an `unsigned int`.
    Some(value as u32)
}

/// Upstream's `strcasecmp(word, keyword) == 0` for an ASCII keyword.
pub fn is_keyword(word: &[u8], keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword.as_bytes())
}
