//! [`ProtocolError`]: what was wrong with a stream, and the stream offset where it was found.

use std::fmt;

/// Which kind of length line a length error was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LengthKind {
    /// `*<n>`: the argument count of a multibulk command.
    ArgCount,
    /// `$<len>`: the length of one bulk string.
    BulkLen,
}

impl fmt::Display for LengthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LengthKind::ArgCount => "multibulk count",
            LengthKind::BulkLen => "bulk length",
        })
    }
}

/// Why a byte stream is not valid RESP2 for the replication path. Offsets count from the first
/// byte the parser ever saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A byte that cannot appear in a length line (not a digit, or a misplaced `-`).
    InvalidLengthByte {
        kind: LengthKind,
        byte: u8,
        offset: u64,
    },
    /// A length line without digits (`*\r\n`, `$-\r\n`).
    EmptyLength { kind: LengthKind, offset: u64 },
    /// A length with a leading zero (`$05`, `*00`) or `-0`, which Redis's parser rejects.
    LeadingZero { kind: LengthKind, offset: u64 },
    /// A negative bulk length (`$-1` is a null reply, never part of a command).
    NegativeBulkLength { offset: u64 },
    /// An argument count below -1.
    NegativeArgCount { offset: u64 },
    /// An argument count above [`ParserLimits::max_args`](super::ParserLimits::max_args);
    /// `at_least` is the value read so far.
    TooManyArgs {
        at_least: u64,
        limit: usize,
        offset: u64,
    },
    /// A bulk length above [`ParserLimits::max_bulk_len`](super::ParserLimits::max_bulk_len);
    /// `at_least` is the value read so far.
    BulkTooLarge {
        at_least: u64,
        limit: usize,
        offset: u64,
    },
    /// A `\r` in a length line or an empty line that is not followed by `\n`.
    MissingLineFeed { found: u8, offset: u64 },
    /// An element of a multibulk command that does not start with `$`.
    ExpectedBulk { found: u8, offset: u64 },
    /// The two bytes after a bulk payload are not `\r\n`.
    MissingBulkTerminator {
        bulk_len: usize,
        found: [u8; 2],
        offset: u64,
    },
    /// A frame that is neither multibulk nor an empty line while inline commands are disallowed.
    InlineNotAllowed { found: u8, offset: u64 },
    /// An inline line longer than
    /// [`ParserLimits::max_inline_len`](super::ParserLimits::max_inline_len).
    InlineTooLong { limit: usize, offset: u64 },
    /// An inline line containing a quote character (quoting is not supported, see module docs).
    InlineQuote { offset: u64 },
    /// The caller removed bytes from the buffer that the parser had already validated (it must
    /// only append between calls).
    BufferShrank { validated: usize, len: usize },
}

/// Renders one byte for an error message: printable ASCII as itself, anything else escaped.
struct ShownByte(u8);

impl fmt::Display for ShownByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.0.escape_ascii())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtocolError::InvalidLengthByte { kind, byte, offset } => write!(
                f,
                "invalid byte {} in {kind} at byte {offset}",
                ShownByte(byte)
            ),
            ProtocolError::EmptyLength { kind, offset } => {
                write!(f, "{kind} without digits at byte {offset}")
            }
            ProtocolError::LeadingZero { kind, offset } => {
                write!(f, "{kind} with a leading zero at byte {offset}")
            }
            ProtocolError::NegativeBulkLength { offset } => {
                write!(f, "negative bulk length at byte {offset}")
            }
            ProtocolError::NegativeArgCount { offset } => {
                write!(f, "multibulk count below -1 at byte {offset}")
            }
            ProtocolError::TooManyArgs {
                at_least,
                limit,
                offset,
            } => write!(
                f,
                "multibulk count of at least {at_least} exceeds the limit of {limit} at byte {offset}"
            ),
            ProtocolError::BulkTooLarge {
                at_least,
                limit,
                offset,
            } => write!(
                f,
                "bulk length of at least {at_least} exceeds the limit of {limit} bytes at byte {offset}"
            ),
            ProtocolError::MissingLineFeed { found, offset } => write!(
                f,
                "expected LF after CR at byte {offset}, found {}",
                ShownByte(found)
            ),
            ProtocolError::ExpectedBulk { found, offset } => write!(
                f,
                "expected '$' at byte {offset}, found {}",
                ShownByte(found)
            ),
            ProtocolError::MissingBulkTerminator {
                bulk_len,
                found,
                offset,
            } => write!(
                f,
                "expected CRLF after bulk of {bulk_len} bytes at byte {offset}, found \"{}\"",
                found.escape_ascii()
            ),
            ProtocolError::InlineNotAllowed { found, offset } => write!(
                f,
                "expected '*' or an empty line at byte {offset}, found {} (inline commands are not allowed on this link)",
                ShownByte(found)
            ),
            ProtocolError::InlineTooLong { limit, offset } => write!(
                f,
                "inline line longer than {limit} bytes at byte {offset}"
            ),
            ProtocolError::InlineQuote { offset } => write!(
                f,
                "quoted inline argument at byte {offset} (quoting is not supported)"
            ),
            ProtocolError::BufferShrank { validated, len } => write!(
                f,
                "buffer shrank to {len} bytes below the {validated} bytes already validated"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}
