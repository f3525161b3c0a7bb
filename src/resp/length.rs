//! The `*<n>\r\n` and `$<len>\r\n` lines both parsers read: Redis's integer rules (no sign but
//! `*-1`, no leading zero), limits checked at every digit, resumable across reads.

use super::{LengthKind, ProtocolError};

/// Progress through one `*<n>\r\n` or `$<len>\r\n` line; survives across reads.
#[derive(Clone, Copy, Debug)]
pub(super) struct LengthLine {
    kind: LengthKind,
    /// Stream offset of the `*` or `$`.
    pub(super) header_offset: u64,
    negative: bool,
    digits: u32,
    value: u64,
    cr_seen: bool,
}

/// The value of a completed length line.
pub(super) enum LengthValue {
    /// A non-negative length or count.
    Count(u64),
    /// `*-1`.
    MinusOne,
}

impl LengthLine {
    pub(super) fn new(kind: LengthKind, header_offset: u64) -> Self {
        LengthLine {
            kind,
            header_offset,
            negative: false,
            digits: 0,
            value: 0,
            cr_seen: false,
        }
    }

    /// Consumes bytes of the line from `bytes` (whose first byte is at stream offset
    /// `base_offset`). Returns how many bytes it used and, once the `\n` has been seen, the value.
    /// Limits are checked at every digit so an absurd length fails before its line ends.
    #[inline]
    pub(super) fn feed(
        &mut self,
        bytes: &[u8],
        base_offset: u64,
        limit: usize,
    ) -> Result<(usize, Option<LengthValue>), ProtocolError> {
        let fresh = self.digits == 0 && !self.negative && !self.cr_seen;
        if fresh {
            if let Some((used, value)) = whole_plain_length_line(bytes) {
                if value <= limit as u64 {
                    return Ok((used, Some(LengthValue::Count(value))));
                }
            }
        }
        for (index, &byte) in bytes.iter().enumerate() {
            let offset = base_offset + index as u64;
            if self.cr_seen {
                if byte != b'\n' {
                    return Err(ProtocolError::MissingLineFeed {
                        found: byte,
                        offset,
                    });
                }
                let value = match (self.negative, self.value) {
                    (false, value) => LengthValue::Count(value),
                    // `feed` only lets a negative value of 1 get this far.
                    (true, _) => LengthValue::MinusOne,
                };
                return Ok((index + 1, Some(value)));
            }
            match byte {
                b'0'..=b'9' => self.push_digit(byte - b'0', limit)?,
                b'\r' if self.digits == 0 => {
                    return Err(ProtocolError::EmptyLength {
                        kind: self.kind,
                        offset: self.header_offset,
                    })
                }
                b'\r' => self.cr_seen = true,
                b'-' if self.digits == 0 && !self.negative => match self.kind {
                    LengthKind::BulkLen => {
                        return Err(ProtocolError::NegativeBulkLength {
                            offset: self.header_offset,
                        })
                    }
                    LengthKind::ArgCount => self.negative = true,
                },
                _ => {
                    return Err(ProtocolError::InvalidLengthByte {
                        kind: self.kind,
                        byte,
                        offset,
                    })
                }
            }
        }
        Ok((bytes.len(), None))
    }

    fn push_digit(&mut self, digit: u8, limit: usize) -> Result<(), ProtocolError> {
        let leading_zero = (self.digits == 1 && self.value == 0)
            || (self.digits == 0 && self.negative && digit == 0);
        if leading_zero {
            return Err(ProtocolError::LeadingZero {
                kind: self.kind,
                offset: self.header_offset,
            });
        }
        self.digits += 1;
        let value = self
            .value
            .checked_mul(10)
            .and_then(|tens| tens.checked_add(u64::from(digit)));
        self.value = value.unwrap_or(u64::MAX);
        let offset = self.header_offset;
        if self.negative {
            // Only `*-1` is meaningful; anything lower is desync.
            if self.value > 1 {
                return Err(ProtocolError::NegativeArgCount { offset });
            }
            return Ok(());
        }
        let over_limit = value.is_none() || self.value > limit as u64;
        if over_limit {
            let at_least = self.value;
            return Err(match self.kind {
                LengthKind::ArgCount => ProtocolError::TooManyArgs {
                    at_least,
                    limit,
                    offset,
                },
                LengthKind::BulkLen => ProtocolError::BulkTooLarge {
                    at_least,
                    limit,
                    offset,
                },
            });
        }
        Ok(())
    }
}

/// Fast path for the common case of a length line that arrived whole: `digits\r\n` with no sign
/// and no leading zero. Returns the bytes used and the value, or `None` for anything else (an
/// incomplete line, a sign, a malformed line), which the byte-by-byte path then handles and
/// reports exactly.
#[inline]
pub(super) fn whole_plain_length_line(bytes: &[u8]) -> Option<(usize, u64)> {
    // 19 digits cannot overflow a u64; longer lines go the slow way.
    const MAX_FAST_DIGITS: usize = 19;
    // Most lengths in a command are one or two digits (names, keys, small values).
    match *bytes {
        [d, b'\r', b'\n', ..] if d.is_ascii_digit() => return Some((3, u64::from(d - b'0'))),
        [d1 @ b'1'..=b'9', d0, b'\r', b'\n', ..] if d0.is_ascii_digit() => {
            return Some((4, u64::from(d1 - b'0') * 10 + u64::from(d0 - b'0')))
        }
        _ => {}
    }
    let mut value = 0u64;
    let mut digits = 0;
    for &byte in bytes.iter().take(MAX_FAST_DIGITS) {
        if !byte.is_ascii_digit() {
            break;
        }
        value = value * 10 + u64::from(byte - b'0');
        digits += 1;
    }
    let leading_zero = digits > 1 && bytes.first() == Some(&b'0');
    if digits == 0 || leading_zero {
        return None;
    }
    match bytes.get(digits..digits + 2)? {
        [b'\r', b'\n'] => Some((digits + 2, value)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast reader against the rule it implements, on every short line of digits and
    /// line-ending bytes.
    #[test]
    fn whole_lines_are_read_by_the_rule() {
        fn by_rule(bytes: &[u8]) -> Option<(usize, u64)> {
            let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 || digits > 19 || (digits > 1 && bytes[0] == b'0') {
                return None;
            }
            let value = std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()?;
            (bytes.get(digits..digits + 2)? == b"\r\n").then_some((digits + 2, value))
        }
        let alphabet = [b'0', b'1', b'5', b'9', b'\r', b'\n', b'x'];
        let mut line = Vec::new();
        for len in 0..=5u32 {
            for mut code in 0..alphabet.len().pow(len) {
                line.clear();
                for _ in 0..len {
                    line.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                assert_eq!(whole_plain_length_line(&line), by_rule(&line), "{line:?}");
                line.extend_from_slice(b"\r\n");
                assert_eq!(whole_plain_length_line(&line), by_rule(&line), "{line:?}");
            }
        }
        for line in [
            &b"1234567890123456789\r\n"[..],
            b"12345678901234567890\r\n",
            b"42\r\nx",
        ] {
            assert_eq!(whole_plain_length_line(line), by_rule(line), "{line:?}");
        }
    }
}
