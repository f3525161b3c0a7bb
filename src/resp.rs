//! RESP2 command codec for the replication path: a strict, resumable parser for the commands a
//! master streams to its replicas (and a replica sends back), and an allocation-free encoder.
//!
//! # Why not a general RESP library
//!
//! The replication stream is counted in bytes: every byte the master sends after the RDB payload
//! advances the replication offset, and a replica that mis-frames even two bytes silently
//! diverges. So this parser:
//!
//! * validates every `\r\n` (general decoders often accept any two bytes after a bulk payload,
//!   which lets a corrupt frame swallow the start of the next command);
//! * keeps its place between reads, so a large argument arriving in small reads is scanned once
//!   (O(n) in total) instead of being re-parsed from the start on every read;
//! * hands back the exact bytes of each frame ([`Command::raw`]) so offsets can be summed and
//!   frames forwarded unchanged, with arguments as zero-copy slices of those bytes.
//!
//! # What it accepts
//!
//! * Multibulk commands `*<n>\r\n` followed by `n` bulk strings `$<len>\r\n<len bytes>\r\n`.
//!   Lengths follow the rules of Redis's own integer parser: decimal digits, no `+`, no leading
//!   zero (`0` alone is fine), no `-0`.
//! * `*0\r\n` and `*-1\r\n`, which Redis skips without running anything: [`Frame::Empty`], so the
//!   caller can still count their bytes. Redis also skips other negative counts (`*-10`); no
//!   master emits those, so here they are an error (a sign of desync).
//! * A bare `\n` or `\r\n`: [`Frame::Newline`]. Masters send `\n` as a keepalive before an RDB
//!   payload, and a loading replica sends `\n` to its master once a second.
//! * Inline commands (space-separated words ending in `\n` or `\r\n`) only when
//!   [`ParserLimits::allow_inline`] is set, which suits the replica→proxy direction. A Redis
//!   replica treats any non-multibulk data from its master other than an empty line as a protocol
//!   error ("Master using the inline protocol. Desync?"), so the master→proxy direction should
//!   leave it off. Inline words are split on ASCII whitespace like Redis does; quoting (`"…"`,
//!   `'…'`) would need unescaping, which cannot be zero-copy, so a line containing a quote
//!   character is rejected. Replicas never send quoted inline commands.
//!
//! # Errors
//!
//! Every [`ProtocolError`] names what was wrong and the stream offset of the offending byte,
//! counted from the first byte this parser ever saw. After an error the byte stream is
//! unusable: there is no way to find the next frame boundary in a stream that broke framing. The
//! parser remembers the error, returns it again on every later call, and leaves the caller's
//! buffer untouched so it can be logged; the caller should drop the connection (for a master
//! link, that means a full resync).

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// Bounds and mode switches for one [`CommandParser`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Largest accepted bulk string, in bytes. Redis's default `proto-max-bulk-len` is 512 MiB;
    /// if the master's was raised, raise this to match, or the proxy will reject writes the
    /// master accepted.
    pub max_bulk_len: usize,
    /// Largest accepted argument count of one multibulk command. The default, `i32::MAX`, is the
    /// bound recent Redis versions apply (older ones capped counts at 1,048,576); a lower cap
    /// could break replication of a legitimate huge `MSET` or `SADD` that the master accepted.
    /// Memory grows with the arguments actually received, not with the announced count, so a
    /// large limit is not an allocation risk.
    pub max_args: usize,
    /// Longest accepted inline line, excluding its `\n` (Redis: 64 KiB).
    pub max_inline_len: usize,
    /// Accept inline commands (see the module docs). When false, only multibulk frames and empty
    /// lines (`\n`, `\r\n`) are accepted.
    pub allow_inline: bool,
}

impl ParserLimits {
    /// Limits for the stream a master sends: multibulk and keepalive newlines only.
    pub const fn master_stream() -> Self {
        ParserLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: i32::MAX as usize,
            max_inline_len: 64 * 1024,
            allow_inline: false,
        }
    }

    /// Limits for what a replica sends: as [`ParserLimits::master_stream`], plus inline
    /// commands.
    pub const fn replica_stream() -> Self {
        ParserLimits {
            allow_inline: true,
            ..Self::master_stream()
        }
    }
}

impl Default for ParserLimits {
    /// The strict master-stream limits ([`ParserLimits::master_stream`]).
    fn default() -> Self {
        Self::master_stream()
    }
}

/// One complete unit of the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A multibulk command.
    Command(Command),
    /// An inline command; `raw` is the whole line including its `\n` or `\r\n`.
    Inline(Command),
    /// An empty line: `\n` (a keepalive) or `\r\n`.
    Newline { raw: Bytes },
    /// Bytes Redis consumes without running anything: `*0\r\n`, `*-1\r\n`, or (inline mode) a
    /// line holding only whitespace.
    Empty { raw: Bytes },
}

impl Frame {
    /// The exact bytes this frame occupied in the stream.
    pub fn raw(&self) -> &Bytes {
        match self {
            Frame::Command(command) | Frame::Inline(command) => &command.raw,
            Frame::Newline { raw } | Frame::Empty { raw } => raw,
        }
    }

    /// How many stream bytes this frame occupied.
    pub fn wire_len(&self) -> usize {
        self.raw().len()
    }

    /// The command carried by this frame, multibulk or inline.
    pub fn command(&self) -> Option<&Command> {
        match self {
            Frame::Command(command) | Frame::Inline(command) => Some(command),
            Frame::Newline { .. } | Frame::Empty { .. } => None,
        }
    }
}

/// A complete frame from [`CommandParser::parse_raw`]: its bytes and what it is; a command's
/// arguments are at [`CommandParser::arg_spans`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The exact bytes the frame occupied in the stream.
    pub raw: Bytes,
    /// What the frame is.
    pub kind: FrameKind,
}

/// The kinds of [`Frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A multibulk command.
    Command,
    /// An inline command.
    Inline,
    /// An empty line.
    Newline,
    /// `*0`, `*-1` or a blank inline line.
    Empty,
}

/// A parsed command. For commands produced by [`CommandParser`], `args` are slices of `raw` and
/// there is at least one argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The exact bytes the command occupied in the stream.
    pub raw: Bytes,
    /// The arguments, the command name first; zero-copy slices of `raw`.
    pub args: Vec<Bytes>,
}

impl Command {
    /// The command name as sent (any case); empty if there are no arguments.
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[][..], |name| &name[..])
    }

    /// Whether the command name equals `name`, ignoring ASCII case (masters propagate script
    /// commands in the case the script used, e.g. `incr`).
    pub fn name_eq_ignore_case(&self, name: &[u8]) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether there are no arguments at all (never true for parsed commands).
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `index` (0 is the command name).
    pub fn arg(&self, index: usize) -> Option<&Bytes> {
        self.args.get(index)
    }
}

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
    /// An argument count above [`ParserLimits::max_args`]; `at_least` is the value read so far.
    TooManyArgs {
        at_least: u64,
        limit: usize,
        offset: u64,
    },
    /// A bulk length above [`ParserLimits::max_bulk_len`]; `at_least` is the value read so far.
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
    /// An inline line longer than [`ParserLimits::max_inline_len`].
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

/// Progress through one `*<n>\r\n` or `$<len>\r\n` line; survives across reads.
#[derive(Clone, Copy, Debug)]
struct LengthLine {
    kind: LengthKind,
    /// Stream offset of the `*` or `$`.
    header_offset: u64,
    negative: bool,
    digits: u32,
    value: u64,
    cr_seen: bool,
}

/// The value of a completed length line.
enum LengthValue {
    /// A non-negative length or count.
    Count(u64),
    /// `*-1`.
    MinusOne,
}

impl LengthLine {
    fn new(kind: LengthKind, header_offset: u64) -> Self {
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
    fn feed(
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
fn whole_plain_length_line(bytes: &[u8]) -> Option<(usize, u64)> {
    // 19 digits cannot overflow a u64; longer lines go the slow way.
    const MAX_FAST_DIGITS: usize = 19;
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
    (bytes.get(digits..digits + 2)? == b"\r\n").then_some((digits + 2, value))
}

/// One complete multibulk command starting at `input[from]`, read in a single pass: returns
/// where the frame ends, and appends each argument's `(start, end)` position in `input` to
/// `spans`.
///
/// This is the common case on a replication link (a read or a Pika item usually holds whole
/// commands), and it needs none of the bookkeeping that lets [`CommandParser`] stop and resume
/// anywhere. It answers `None` for everything else: an incomplete frame, an inline or empty
/// frame, a length over `limits`, anything malformed; `spans` may then have been appended to.
/// The resumable parser reads the same bytes and gives the exact verdict; where this answers,
/// the two agree.
pub fn whole_command(
    input: &[u8],
    from: usize,
    limits: &ParserLimits,
    spans: &mut Vec<(usize, usize)>,
) -> Option<usize> {
    if *input.get(from)? != b'*' {
        return None;
    }
    let (used, count) = whole_plain_length_line(input.get(from + 1..)?)?;
    if count == 0 || count > limits.max_args as u64 {
        return None;
    }
    let mut position = from + 1 + used;
    for _ in 0..count {
        if *input.get(position)? != b'$' {
            return None;
        }
        let (used, len) = whole_plain_length_line(input.get(position + 1..)?)?;
        if len > limits.max_bulk_len as u64 {
            return None;
        }
        let start = position + 1 + used;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if input.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        spans.push((start, end));
        position = end + 2;
    }
    Some(position)
}

/// Where the parser is inside the current frame.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Waiting for the first byte of a frame.
    FrameStart,
    /// Reading the digits after `*`.
    ArgCount(LengthLine),
    /// Waiting for the `$` of the next element.
    BulkHeader,
    /// Reading the digits after `$`.
    BulkLen(LengthLine),
    /// Waiting until a whole payload of this length plus its `\r\n` has arrived.
    BulkPayload { len: usize },
    /// Saw `\r` as the first byte of a frame on a link without inline commands.
    EmptyLineCr,
    /// Looking for the `\n` that ends an inline line; bytes before `scanned` hold none.
    InlineLine { scanned: usize },
}

/// A resumable RESP2 command parser for one connection. See the module docs for what it
/// accepts.
///
/// Between calls the caller may only append to the buffer. The parser remembers how far into
/// the current frame it has validated, so every byte is examined once however the stream is
/// split into reads.
#[derive(Debug)]
pub struct CommandParser {
    limits: ParserLimits,
    stage: Stage,
    /// Bytes of the current (incomplete) frame already validated, from the buffer's front.
    validated: usize,
    /// Arguments the current multibulk command announced.
    args_expected: usize,
    /// Argument (start, end) positions within the current frame; reused across frames.
    arg_spans: Vec<(usize, usize)>,
    /// Stream bytes in completed frames.
    consumed: u64,
    bytes_examined: u64,
    failure: Option<ProtocolError>,
}

/// Up-front argument slots to reserve for an announced count; more are added as arguments
/// actually arrive, so a forged huge count cannot make the parser allocate.
const MAX_PRESIZED_ARGS: usize = 1024;

impl CommandParser {
    pub fn new(limits: ParserLimits) -> Self {
        CommandParser {
            limits,
            stage: Stage::FrameStart,
            validated: 0,
            args_expected: 0,
            arg_spans: Vec::new(),
            consumed: 0,
            bytes_examined: 0,
            failure: None,
        }
    }

    pub fn limits(&self) -> &ParserLimits {
        &self.limits
    }

    /// Total bytes the parser has looked at since it was created. Each stream byte is counted
    /// once when it is validated (inline lines twice: once to find the line end, once to split
    /// words), so this stays close to the stream length however the bytes were split into reads.
    pub fn bytes_examined(&self) -> u64 {
        self.bytes_examined
    }

    /// Total bytes of all frames returned so far: the stream offset of the next frame.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// While a bulk argument is arriving: how long the buffer must be to hold the current
    /// frame up to the end of that argument (its `\r\n` included). A reader can reserve that
    /// much at once, so a large value is received into its final place instead of being moved
    /// each time the buffer doubles. `None` between arguments.
    pub fn buffer_len_for_current_argument(&self) -> Option<usize> {
        match self.stage {
            Stage::BulkPayload { len } => self.validated.checked_add(len)?.checked_add(2),
            _ => None,
        }
    }

    /// The error that made the stream unusable, if any.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failure.as_ref()
    }

    /// Parses the next frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame: append more bytes and call
    /// again. When a frame completes, exactly its bytes are split off the front of `buf`. After
    /// an error, every later call returns the same error and `buf` is left as it was.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        Ok(self.parse_raw(buf)?.map(|frame| self.build_frame(frame)))
    }

    /// [`Self::parse`] without cutting a command's arguments into `Bytes` handles (each an
    /// atomic reference count): they stay readable as ranges of the frame's bytes through
    /// [`Self::arg_spans`] until the next call.
    pub fn parse_raw(&mut self, buf: &mut BytesMut) -> Result<Option<RawFrame>, ProtocolError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        // One huge command must not pin its span table for the life of the connection.
        if matches!(self.stage, Stage::FrameStart)
            && self.arg_spans.capacity() > 4 * MAX_PRESIZED_ARGS
        {
            self.arg_spans = Vec::new();
        }
        match self.advance(buf) {
            Ok(None) => Ok(None),
            Ok(Some(kind)) => Ok(Some(self.take_raw(buf, kind))),
            Err(error) => {
                self.failure = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Where each argument of the last frame [`Self::parse_raw`] returned lies in its `raw`
    /// bytes, as `(start, end)`; empty for a frame that is not a command.
    pub fn arg_spans(&self) -> &[(usize, usize)] {
        &self.arg_spans
    }

    fn offset_of(&self, position: usize) -> u64 {
        self.consumed + position as u64
    }

    /// Validates as much of the current frame as `buf` holds.
    fn advance(&mut self, buf: &BytesMut) -> Result<Option<FrameKind>, ProtocolError> {
        if buf.len() < self.validated {
            return Err(ProtocolError::BufferShrank {
                validated: self.validated,
                len: buf.len(),
            });
        }
        loop {
            match self.stage {
                Stage::FrameStart => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    match first {
                        b'*' => {
                            self.arg_spans.clear();
                            if let Some(len) =
                                whole_command(buf, 0, &self.limits, &mut self.arg_spans)
                            {
                                self.bytes_examined += len as u64;
                                self.validated = len;
                                self.args_expected = self.arg_spans.len();
                                return Ok(Some(FrameKind::Command));
                            }
                            self.bytes_examined += 1;
                            self.validated = 1;
                            let line = LengthLine::new(LengthKind::ArgCount, self.consumed);
                            self.stage = Stage::ArgCount(line);
                        }
                        b'\n' => {
                            self.bytes_examined += 1;
                            self.validated = 1;
                            return Ok(Some(FrameKind::Newline));
                        }
                        _ if self.limits.allow_inline => {
                            self.stage = Stage::InlineLine { scanned: 0 };
                        }
                        b'\r' => {
                            self.bytes_examined += 1;
                            self.validated = 1;
                            self.stage = Stage::EmptyLineCr;
                        }
                        found => {
                            return Err(ProtocolError::InlineNotAllowed {
                                found,
                                offset: self.consumed,
                            })
                        }
                    }
                }
                Stage::ArgCount(mut line) => {
                    let limit = self.limits.max_args;
                    let Some(value) = self.feed_length(buf, &mut line, limit)? else {
                        self.stage = Stage::ArgCount(line);
                        return Ok(None);
                    };
                    match value {
                        LengthValue::MinusOne | LengthValue::Count(0) => {
                            return Ok(Some(FrameKind::Empty));
                        }
                        LengthValue::Count(count) => {
                            // `feed` capped the count at `max_args`, a usize.
                            let count = usize::try_from(count).unwrap_or(usize::MAX);
                            self.args_expected = count;
                            self.arg_spans.clear();
                            self.arg_spans.reserve(count.min(MAX_PRESIZED_ARGS));
                            self.stage = Stage::BulkHeader;
                        }
                    }
                }
                Stage::BulkHeader => {
                    let Some(&byte) = buf.get(self.validated) else {
                        return Ok(None);
                    };
                    let offset = self.offset_of(self.validated);
                    if byte != b'$' {
                        return Err(ProtocolError::ExpectedBulk {
                            found: byte,
                            offset,
                        });
                    }
                    self.bytes_examined += 1;
                    self.validated += 1;
                    self.stage = Stage::BulkLen(LengthLine::new(LengthKind::BulkLen, offset));
                }
                Stage::BulkLen(mut line) => {
                    let limit = self.limits.max_bulk_len;
                    let Some(value) = self.feed_length(buf, &mut line, limit)? else {
                        self.stage = Stage::BulkLen(line);
                        return Ok(None);
                    };
                    let len = match value {
                        LengthValue::Count(len) => usize::try_from(len).unwrap_or(usize::MAX),
                        // Bulk lines reject '-' before this point.
                        LengthValue::MinusOne => {
                            return Err(ProtocolError::NegativeBulkLength {
                                offset: line.header_offset,
                            })
                        }
                    };
                    self.stage = Stage::BulkPayload { len };
                }
                Stage::BulkPayload { len } => {
                    let start = self.validated;
                    let payload_end = start.saturating_add(len);
                    let Some(frame_end) = payload_end.checked_add(2) else {
                        return Err(ProtocolError::BulkTooLarge {
                            at_least: len as u64,
                            limit: self.limits.max_bulk_len,
                            offset: self.offset_of(start),
                        });
                    };
                    let Some(terminator) = buf.get(payload_end..frame_end) else {
                        return Ok(None);
                    };
                    if terminator != b"\r\n" {
                        return Err(ProtocolError::MissingBulkTerminator {
                            bulk_len: len,
                            found: [terminator[0], terminator[1]],
                            offset: self.offset_of(payload_end),
                        });
                    }
                    self.bytes_examined += (len + 2) as u64;
                    self.validated = frame_end;
                    self.arg_spans.push((start, payload_end));
                    if self.arg_spans.len() == self.args_expected {
                        return Ok(Some(FrameKind::Command));
                    }
                    self.stage = Stage::BulkHeader;
                }
                Stage::EmptyLineCr => {
                    let Some(&byte) = buf.get(self.validated) else {
                        return Ok(None);
                    };
                    if byte != b'\n' {
                        return Err(ProtocolError::MissingLineFeed {
                            found: byte,
                            offset: self.offset_of(self.validated),
                        });
                    }
                    self.bytes_examined += 1;
                    self.validated += 1;
                    return Ok(Some(FrameKind::Newline));
                }
                Stage::InlineLine { scanned } => return self.scan_inline(buf, scanned),
            }
        }
    }

    /// Feeds the unvalidated bytes of `buf` to a length line.
    #[inline]
    fn feed_length(
        &mut self,
        buf: &BytesMut,
        line: &mut LengthLine,
        limit: usize,
    ) -> Result<Option<LengthValue>, ProtocolError> {
        let pending = &buf[self.validated..];
        let base_offset = self.offset_of(self.validated);
        let (used, value) = line.feed(pending, base_offset, limit)?;
        self.bytes_examined += used as u64;
        self.validated += used;
        Ok(value)
    }

    /// Looks for the end of an inline line, resuming after the `scanned` bytes already searched,
    /// and splits the line into words once it is complete.
    fn scan_inline(
        &mut self,
        buf: &BytesMut,
        scanned: usize,
    ) -> Result<Option<FrameKind>, ProtocolError> {
        let limit = self.limits.max_inline_len;
        let unsearched = &buf[scanned..];
        let newline = unsearched.iter().position(|&byte| byte == b'\n');
        let searched = newline.map_or(unsearched.len(), |index| index + 1);
        self.bytes_examined += searched as u64;
        // The line's length counts every byte before its `\n`, so the check below gives the same
        // verdict whether or not the `\n` has arrived yet.
        let line_len = newline.map_or(buf.len(), |index| scanned + index);
        if line_len > limit {
            return Err(ProtocolError::InlineTooLong {
                limit,
                offset: self.offset_of(limit),
            });
        }
        if newline.is_none() {
            self.validated = buf.len();
            self.stage = Stage::InlineLine { scanned: buf.len() };
            return Ok(None);
        }
        self.validated = line_len + 1;
        let mut content = &buf[..line_len];
        if let [rest @ .., b'\r'] = content {
            content = rest;
        }
        if content.is_empty() {
            return Ok(Some(FrameKind::Newline));
        }
        self.bytes_examined += content.len() as u64;
        if let Some(quote) = content.iter().position(|&b| b == b'"' || b == b'\'') {
            return Err(ProtocolError::InlineQuote {
                offset: self.offset_of(quote),
            });
        }
        self.arg_spans.clear();
        let mut word_start = None;
        for (index, &byte) in content.iter().enumerate() {
            match (is_inline_separator(byte), word_start) {
                (true, Some(start)) => {
                    self.arg_spans.push((start, index));
                    word_start = None;
                }
                (false, None) => word_start = Some(index),
                _ => {}
            }
        }
        if let Some(start) = word_start {
            self.arg_spans.push((start, content.len()));
        }
        if self.arg_spans.is_empty() {
            return Ok(Some(FrameKind::Empty));
        }
        Ok(Some(FrameKind::Inline))
    }

    /// Splits the completed frame off `buf` and resets for the next one.
    fn take_raw(&mut self, buf: &mut BytesMut, kind: FrameKind) -> RawFrame {
        let raw = buf.split_to(self.validated).freeze();
        self.consumed += self.validated as u64;
        self.validated = 0;
        self.stage = Stage::FrameStart;
        if matches!(kind, FrameKind::Newline | FrameKind::Empty) {
            // `arg_spans` describes the last frame: a frame without arguments has none.
            self.arg_spans.clear();
        }
        RawFrame { raw, kind }
    }

    fn build_frame(&self, RawFrame { raw, kind }: RawFrame) -> Frame {
        let spans = &self.arg_spans;
        let command = |raw: Bytes| Command {
            args: spans
                .iter()
                .map(|&(start, end)| raw.slice(start..end))
                .collect(),
            raw,
        };
        match kind {
            FrameKind::Command => Frame::Command(command(raw)),
            FrameKind::Inline => Frame::Inline(command(raw)),
            FrameKind::Newline => Frame::Newline { raw },
            FrameKind::Empty => Frame::Empty { raw },
        }
    }
}

/// The bytes Redis's inline splitter treats as word separators (C `isspace`).
fn is_inline_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Appends `args` to `out` as one multibulk command (`*<n>\r\n` then `$<len>\r\n<arg>\r\n` per
/// argument), reserving the exact space first.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    out.reserve(encoded_len(args));
    put_array_header(out, args.len());
    for arg in args {
        put_bulk(out, arg.as_ref());
    }
}

/// Appends `*<count>\r\n`, the start of a multibulk command of `count` arguments.
pub fn put_array_header(out: &mut BytesMut, count: usize) {
    put_length_line(out, b'*', count);
}

/// Appends one bulk string: `$<len>\r\n<bytes>\r\n`.
pub fn put_bulk(out: &mut BytesMut, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    put_length_line(out, b'$', bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

/// Appends `value` in decimal as one bulk string, formatted on the stack.
pub fn put_bulk_int(out: &mut BytesMut, value: i64) {
    // A sign and up to 20 digits.
    let mut text = [0u8; 21];
    let end = text.len();
    let mut start = write_decimal_before(&mut text, end, value.unsigned_abs());
    if value < 0 {
        start -= 1;
        text[start] = b'-';
    }
    put_bulk(out, &text[start..]);
}

/// Writes `value` in decimal so that it ends just before `buf[end]`; returns where it starts.
/// `buf[..end]` must have room for 20 digits.
fn write_decimal_before(buf: &mut [u8], end: usize, value: u64) -> usize {
    let mut start = end;
    let mut rest = value;
    loop {
        start -= 1;
        buf[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return start;
        }
    }
}

/// The exact number of bytes [`encode_command`] appends for `args`.
pub fn encoded_len<A: AsRef<[u8]>>(args: &[A]) -> usize {
    let header = 1 + decimal_len(args.len()) + 2;
    args.iter().fold(header, |total, arg| {
        let len = arg.as_ref().len();
        total + 1 + decimal_len(len) + 2 + len + 2
    })
}

/// Number of decimal digits of `value`.
fn decimal_len(value: usize) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `prefix`, `value` in decimal and `\r\n`, assembled on the stack so the line costs
/// one copy into `out`.
fn put_length_line(out: &mut BytesMut, prefix: u8, value: usize) {
    // Prefix + up to 20 digits (usize::MAX on 64-bit targets) + CRLF.
    let mut line = [0u8; 23];
    let digits_end = line.len() - 2;
    line[digits_end..].copy_from_slice(b"\r\n");
    let mut start = write_decimal_before(&mut line, digits_end, value as u64);
    start -= 1;
    line[start] = prefix;
    out.put_slice(&line[start..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn raw_frames_carry_the_same_arguments_as_frames() {
        let mut stream = BytesMut::new();
        encode_command(&["SET", "k", "v"], &mut stream);
        stream.extend_from_slice(b"\nPING x\r\n*0\r\n");
        encode_command(&["INCR", "n"], &mut stream);
        let inline = ParserLimits {
            allow_inline: true,
            ..ParserLimits::master_stream()
        };
        let mut framed = CommandParser::new(inline);
        let mut raw = CommandParser::new(inline);
        let (mut a, mut b) = (stream.clone(), stream);
        loop {
            let frame = framed.parse(&mut a).unwrap();
            let raw_frame = raw.parse_raw(&mut b).unwrap();
            let (Some(frame), Some(raw_frame)) = (frame, raw_frame) else {
                assert!(a.is_empty() && b.is_empty());
                break;
            };
            assert_eq!(frame.raw(), &raw_frame.raw);
            let args: Vec<&[u8]> = raw
                .arg_spans()
                .iter()
                .map(|&(s, e)| &raw_frame.raw[s..e])
                .collect();
            match (frame, raw_frame.kind) {
                (Frame::Command(cmd), FrameKind::Command)
                | (Frame::Inline(cmd), FrameKind::Inline) => {
                    let expected: Vec<&[u8]> = cmd.args.iter().map(|a| a.as_ref()).collect();
                    assert_eq!(args, expected);
                }
                (Frame::Newline { .. }, FrameKind::Newline)
                | (Frame::Empty { .. }, FrameKind::Empty) => {}
                (frame, kind) => panic!("{frame:?} read as {kind:?}"),
            }
        }
    }

    #[test]
    fn a_large_argument_announces_the_buffer_it_needs() {
        let mut parser = CommandParser::new(ParserLimits::master_stream());
        let mut frame = BytesMut::new();
        encode_command(&[&b"SET"[..], b"k", &[b'x'; 100_000]], &mut frame);
        let mut buf = BytesMut::from(&frame[..4096]);
        assert_eq!(parser.buffer_len_for_current_argument(), None);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert_eq!(parser.buffer_len_for_current_argument(), Some(frame.len()));
        buf.extend_from_slice(&frame[4096..]);
        assert!(matches!(
            parser.parse(&mut buf),
            Ok(Some(Frame::Command(_)))
        ));
        assert_eq!(parser.buffer_len_for_current_argument(), None);
    }

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Real captured bytes (see [`crate::fixtures`]).
    fn fixture(relative: &str) -> Vec<u8> {
        crate::fixtures::read(relative).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fixture_text(relative: &str) -> String {
        String::from_utf8(fixture(relative)).unwrap()
    }

    /// Feeds `input` in the given chunk sizes (cycled), collecting every frame.
    fn parse_chunked(
        limits: ParserLimits,
        input: &[u8],
        chunk_sizes: &[usize],
    ) -> Result<Vec<Frame>, ProtocolError> {
        let mut parser = CommandParser::new(limits);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        let mut sizes = chunk_sizes.iter().cycle();
        while fed < input.len() {
            let size = (*sizes.next().unwrap()).max(1);
            let end = (fed + size).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            while let Some(frame) = parser.parse(&mut buf)? {
                frames.push(frame);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        assert_eq!(parser.consumed(), input.len() as u64);
        Ok(frames)
    }

    fn parse_all(limits: ParserLimits, input: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        parse_chunked(limits, input, &[input.len().max(1)])
    }

    fn commands(frames: &[Frame]) -> Vec<&Command> {
        frames.iter().filter_map(Frame::command).collect()
    }

    fn words(command: &Command) -> String {
        let words: Vec<String> = command
            .args
            .iter()
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        words.join(" ")
    }

    /// Every argument must be a slice of the frame's own bytes, not a copy.
    fn assert_zero_copy(command: &Command) {
        let raw = command.raw.as_ptr_range();
        for arg in &command.args {
            let arg = arg.as_ptr_range();
            assert!(raw.start <= arg.start && arg.end <= raw.end);
        }
    }

    /// A small stream mixing every frame kind a replica link can carry.
    fn mixed_replica_stream() -> Vec<u8> {
        let mut stream = BytesMut::new();
        stream.extend_from_slice(b"\n");
        encode_command(&["PING"], &mut stream);
        stream.extend_from_slice(b"\r\n*0\r\n*-1\r\n");
        encode_command(&["SET", "key:1", "", "PXAT", "1795469009768"], &mut stream);
        stream.extend_from_slice(b"  REPLCONF ACK\t1309 \r\n \t \nPING\n");
        encode_command(&[&b"bin\r\n\x00\xff"[..], b"$3\r\n"], &mut stream);
        stream.extend_from_slice(b"\n");
        stream.to_vec()
    }

    #[test]
    fn mixed_stream_frames() {
        let frames = parse_all(ParserLimits::replica_stream(), &mixed_replica_stream()).unwrap();
        let kinds: Vec<String> = frames
            .iter()
            .map(|frame| match frame {
                Frame::Command(c) => format!("cmd {}", words(c)),
                Frame::Inline(c) => format!("inline {}", words(c)),
                Frame::Newline { raw } => format!("newline {}", raw.len()),
                Frame::Empty { raw } => format!("empty {}", raw.len()),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "newline 1",
                "cmd PING",
                "newline 2",
                "empty 4",
                "empty 5",
                "cmd SET key:1  PXAT 1795469009768",
                "inline REPLCONF ACK 1309",
                "empty 4",
                "inline PING",
                "cmd bin\r\n\0\u{fffd} $3\r\n",
                "newline 1",
            ]
        );
        let inline = frames[6].command().unwrap();
        assert_eq!(&inline.raw[..], b"  REPLCONF ACK\t1309 \r\n");
        assert!(inline.name_eq_ignore_case(b"replconf"));
        assert_eq!(inline.len(), 3);
        assert_eq!(inline.arg(2).map(|a| &a[..]), Some(&b"1309"[..]));
        assert_eq!(inline.arg(3), None);
        for frame in &frames {
            if let Some(command) = frame.command() {
                assert_zero_copy(command);
            }
        }
    }

    #[test]
    fn byte_at_a_time_equals_one_shot() {
        let limits = ParserLimits::replica_stream();
        let mut inputs = vec![mixed_replica_stream()];
        inputs.push(fixture("redis-7.0.15/propagation-stream.bin"));
        inputs.push(fixture("redis-7.0.15/expiry-stream.bin"));
        for input in inputs {
            let one_shot = parse_all(limits, &input).unwrap();
            assert_eq!(parse_chunked(limits, &input, &[1]).unwrap(), one_shot);
            assert_eq!(
                parse_chunked(limits, &input, &[3, 7, 1, 64]).unwrap(),
                one_shot
            );
        }
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let input = mixed_replica_stream();
        let limits = ParserLimits::replica_stream();
        let one_shot = parse_all(limits, &input).unwrap();
        for split in 0..=input.len() {
            let mut parser = CommandParser::new(limits);
            let mut buf = BytesMut::from(&input[..split]);
            let mut frames = Vec::new();
            while let Some(frame) = parser.parse(&mut buf).unwrap() {
                frames.push(frame);
            }
            buf.extend_from_slice(&input[split..]);
            while let Some(frame) = parser.parse(&mut buf).unwrap() {
                frames.push(frame);
            }
            assert_eq!(frames, one_shot, "split at {split}");
            assert!(buf.is_empty());
        }
    }

    /// Command counts per case-folded name, as the fixture sidecars list them.
    fn name_counts(commands: &[&Command]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for command in commands {
            let name = String::from_utf8_lossy(command.name()).to_ascii_uppercase();
            *counts.entry(name).or_default() += 1;
        }
        counts
    }

    /// Parses a sidecar line such as "* Command counts (case-folded): APPEND 2, COPY 1".
    fn documented_counts(sidecar: &str) -> BTreeMap<String, usize> {
        let line = sidecar
            .lines()
            .find(|line| line.contains("Command counts (case-folded):"))
            .unwrap();
        let list = line.split_once("):").unwrap().1;
        list.split(',')
            .map(|entry| {
                let (name, count) = entry.trim().rsplit_once(' ').unwrap();
                (name.to_string(), count.parse().unwrap())
            })
            .collect()
    }

    /// Parses a sidecar line such as "* MULTI…EXEC blocks: [2130,2239), [2283,2439)".
    fn documented_ranges(sidecar: &str, label: &str) -> Vec<(u64, u64)> {
        let line = sidecar.lines().find(|line| line.contains(label)).unwrap();
        line.split('[')
            .skip(1)
            .map(|range| {
                let (start, end) = range.split_once(')').unwrap().0.split_once(',').unwrap();
                (start.trim().parse().unwrap(), end.trim().parse().unwrap())
            })
            .collect()
    }

    /// (start, end) stream offsets of each command, from `base`.
    fn command_ranges(frames: &[Frame], base: u64) -> Vec<(u64, u64, &Command)> {
        let mut offset = base;
        let mut ranges = Vec::new();
        for frame in frames {
            let start = offset;
            offset += frame.wire_len() as u64;
            if let Some(command) = frame.command() {
                ranges.push((start, offset, command));
            }
        }
        ranges
    }

    fn multi_exec_blocks(ranges: &[(u64, u64, &Command)]) -> Vec<(u64, u64)> {
        let mut blocks = Vec::new();
        let mut open = None;
        for &(start, end, command) in ranges {
            if command.name_eq_ignore_case(b"MULTI") {
                open = Some(start);
            } else if command.name_eq_ignore_case(b"EXEC") {
                blocks.push((open.take().unwrap(), end));
            }
        }
        blocks
    }

    fn reencode(command: &Command) -> BytesMut {
        let mut out = BytesMut::new();
        encode_command(&command.args, &mut out);
        assert_eq!(out.len(), encoded_len(&command.args));
        out
    }

    #[test]
    fn propagation_stream_fixture() {
        let input = fixture("redis-7.0.15/propagation-stream.bin");
        let sidecar = fixture_text("redis-7.0.15/propagation-stream.md");
        let frames = parse_all(ParserLimits::master_stream(), &input).unwrap();
        assert!(frames.iter().all(|f| matches!(f, Frame::Command(_))));
        let commands = commands(&frames);
        assert_eq!(commands.len(), 112);
        let total: usize = commands.iter().map(|c| c.raw.len()).sum();
        assert_eq!(total, 3940);
        assert_eq!(total, input.len());
        for command in &commands {
            assert_eq!(reencode(command), command.raw);
            assert_zero_copy(command);
        }
        assert_eq!(name_counts(&commands), documented_counts(&sidecar));

        let ranges = command_ranges(&frames, 0);
        assert_eq!(words(ranges[0].2), "SELECT 0");
        assert_eq!((ranges[0].0, ranges[0].1), (0, 23));
        let last = ranges.last().unwrap();
        assert_eq!(
            (words(last.2).as_str(), last.0, last.1),
            ("FLUSHALL", 3922, 3940)
        );
        assert_eq!(
            multi_exec_blocks(&ranges),
            documented_ranges(&sidecar, "MULTI…EXEC blocks:")
        );
    }

    #[test]
    fn expiry_stream_fixture_matches_its_listing() {
        let input = fixture("redis-7.0.15/expiry-stream.bin");
        let sidecar = fixture_text("redis-7.0.15/expiry-stream.md");
        // "Byte i of this file is replication offset 209+i."
        let base = 209;
        let frames = parse_all(ParserLimits::master_stream(), &input).unwrap();
        let ranges = command_ranges(&frames, base);
        assert_eq!(ranges.len(), 68);
        assert_eq!(input.len(), 2167);

        // The sidecar's "Full command listing" table: | start | end | command |.
        let listing: Vec<(u64, u64, String)> = sidecar
            .split("## Full command listing")
            .nth(1)
            .unwrap()
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let start = cells.get(1)?.parse().ok()?;
                let end = cells.get(2)?.parse().ok()?;
                Some((start, end, cells.get(3)?.to_string()))
            })
            .collect();
        assert_eq!(listing.len(), 68);
        for ((start, end, command), (doc_start, doc_end, doc_words)) in ranges.iter().zip(&listing)
        {
            assert_eq!(
                (*start, *end, words(command)),
                (*doc_start, *doc_end, doc_words.clone())
            );
            assert_eq!(reencode(command), command.raw);
        }

        let commands = commands(&frames);
        assert_eq!(name_counts(&commands), documented_counts(&sidecar));
        assert_eq!(
            multi_exec_blocks(&ranges),
            documented_ranges(&sidecar, "MULTI…EXEC blocks:")
        );
    }

    /// Command end offsets from a replica→master sidecar table (`| 0–14 | PING |`, with `×3`
    /// rows standing for three equal commands).
    fn documented_replica_ends(sidecar: &str) -> Vec<u64> {
        let mut ends = Vec::new();
        for line in sidecar.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let Some((start, end)) = cells.get(1).and_then(|range| range.split_once('–')) else {
                continue;
            };
            let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) else {
                continue;
            };
            let repeats = cells
                .get(2)
                .and_then(|described| described.rsplit_once('×'))
                .and_then(|(_, n)| n.parse::<u64>().ok())
                .unwrap_or(1);
            let each = (end - start) / repeats;
            ends.extend((1..=repeats).map(|i| start + each * i));
        }
        ends
    }

    #[test]
    fn real_replica_bytes_parse_fully() {
        let limits = ParserLimits::replica_stream();
        let conn1 = fixture("redis-7.0.15/replica-conn1-replica-to-master.bin");
        let sidecar1 = fixture_text("redis-7.0.15/replica-conn1-replica-to-master.md");
        let frames = parse_all(limits, &conn1).unwrap();
        let ranges = command_ranges(&frames, 0);
        assert_eq!(ranges.len(), 15);
        let ends: Vec<u64> = ranges.iter().map(|r| r.1).collect();
        assert_eq!(ends, documented_replica_ends(&sidecar1));
        assert_eq!(words(ranges[5].2), "PSYNC ? -1");
        let acks: Vec<String> = ranges[6..].iter().map(|r| words(r.2)).collect();
        assert_eq!(acks[0], "REPLCONF ACK 1000");
        assert_eq!(acks[8], "REPLCONF ACK 1416");

        let conn2 = fixture("redis-7.0.15/replica-conn2-replica-to-master.bin");
        let frames = parse_all(limits, &conn2).unwrap();
        let ranges = command_ranges(&frames, 0);
        assert_eq!(ranges.len(), 7);
        assert_eq!(words(ranges[5].2), format!("PSYNC {} 1417", "1".repeat(40)));
        assert_eq!((ranges[5].0, ranges[5].1), (212, 284));
        assert_eq!(words(ranges[6].2), "REPLCONF ACK 1457");

        // A loading replica interleaves bare newlines once a second.
        let mut with_keepalives = Vec::new();
        for (start, end, _) in command_ranges(&parse_all(limits, &conn1).unwrap(), 0) {
            with_keepalives.extend_from_slice(&conn1[start as usize..end as usize]);
            with_keepalives.push(b'\n');
        }
        let frames = parse_chunked(limits, &with_keepalives, &[5, 1, 16]).unwrap();
        assert_eq!(frames.len(), 30);
        assert_eq!(commands(&frames).len(), 15);
        let newlines = frames
            .iter()
            .filter(|f| matches!(f, Frame::Newline { raw } if &raw[..] == b"\n"))
            .count();
        assert_eq!(newlines, 15);
    }

    #[test]
    fn master_stream_rejects_inline_but_accepts_empty_lines() {
        let frames = parse_all(
            ParserLimits::master_stream(),
            b"\n\r\n*1\r\n$4\r\nping\r\n\n",
        )
        .unwrap();
        assert_eq!(frames.len(), 4);
        assert!(matches!(&frames[1], Frame::Newline { raw } if &raw[..] == b"\r\n"));
        let error = parse_all(ParserLimits::master_stream(), b"\nPING\r\n").unwrap_err();
        assert_eq!(
            error,
            ProtocolError::InlineNotAllowed {
                found: b'P',
                offset: 1
            }
        );
        // A stream resumed mid-command, as after PSYNC at a wrong offset.
        let error = parse_all(ParserLimits::master_stream(), b"\r\n2\r\n").unwrap_err();
        assert_eq!(
            error,
            ProtocolError::InlineNotAllowed {
                found: b'2',
                offset: 2
            }
        );
        let error = parse_all(ParserLimits::master_stream(), b"\rX").unwrap_err();
        assert_eq!(
            error,
            ProtocolError::MissingLineFeed {
                found: b'X',
                offset: 1
            }
        );
    }

    #[test]
    fn malformed_inputs_give_the_right_error() {
        use LengthKind::*;
        use ProtocolError::*;
        let small = ParserLimits {
            max_bulk_len: 100,
            max_args: 5,
            max_inline_len: 64,
            allow_inline: true,
        };
        let short_lines = ParserLimits {
            max_inline_len: 8,
            ..small
        };
        let table: Vec<(&[u8], ParserLimits, ProtocolError)> = vec![
            (
                b"*1\r\n$3\r\nGETxx",
                small,
                MissingBulkTerminator {
                    bulk_len: 3,
                    found: *b"xx",
                    offset: 11,
                },
            ),
            (
                b"*1\r\n$3\r\nGET\r\r",
                small,
                MissingBulkTerminator {
                    bulk_len: 3,
                    found: *b"\r\r",
                    offset: 11,
                },
            ),
            (
                b"*3\r\n$3\r\nSET\r\ngarbage",
                small,
                ExpectedBulk {
                    found: b'g',
                    offset: 13,
                },
            ),
            (b"*2\r\n$-2\r\n", small, NegativeBulkLength { offset: 4 }),
            (b"*2\r\n$-1\r\n", small, NegativeBulkLength { offset: 4 }),
            (b"*-2\r\n", small, NegativeArgCount { offset: 0 }),
            (b"*-10\r\n", small, NegativeArgCount { offset: 0 }),
            (
                b"*-0\r\n",
                small,
                LeadingZero {
                    kind: ArgCount,
                    offset: 0,
                },
            ),
            (
                b"*01\r\n",
                small,
                LeadingZero {
                    kind: ArgCount,
                    offset: 0,
                },
            ),
            (
                b"*1\r\n$00\r\n",
                small,
                LeadingZero {
                    kind: BulkLen,
                    offset: 4,
                },
            ),
            (
                b"*\r\n",
                small,
                EmptyLength {
                    kind: ArgCount,
                    offset: 0,
                },
            ),
            (
                b"*-\r\n",
                small,
                EmptyLength {
                    kind: ArgCount,
                    offset: 0,
                },
            ),
            (
                b"*1\r\n$\r\n",
                small,
                EmptyLength {
                    kind: BulkLen,
                    offset: 4,
                },
            ),
            (
                b"*1x\r\n",
                small,
                InvalidLengthByte {
                    kind: ArgCount,
                    byte: b'x',
                    offset: 2,
                },
            ),
            (
                b"*+1\r\n",
                small,
                InvalidLengthByte {
                    kind: ArgCount,
                    byte: b'+',
                    offset: 1,
                },
            ),
            (
                b"*1\r\n$3 \r\n",
                small,
                InvalidLengthByte {
                    kind: BulkLen,
                    byte: b' ',
                    offset: 6,
                },
            ),
            (
                b"*1\r\n$1-\r\n",
                small,
                InvalidLengthByte {
                    kind: BulkLen,
                    byte: b'-',
                    offset: 6,
                },
            ),
            (
                b"*1\rx",
                small,
                MissingLineFeed {
                    found: b'x',
                    offset: 3,
                },
            ),
            (
                b"*1\n",
                small,
                InvalidLengthByte {
                    kind: ArgCount,
                    byte: b'\n',
                    offset: 2,
                },
            ),
            (
                b"*6\r\n",
                small,
                TooManyArgs {
                    at_least: 6,
                    limit: 5,
                    offset: 0,
                },
            ),
            (
                b"*1\r\n$101\r\n",
                small,
                BulkTooLarge {
                    at_least: 101,
                    limit: 100,
                    offset: 4,
                },
            ),
            // Rejected at the digit that crosses the limit, long before the line ends.
            (
                b"*1\r\n$99999999999999999999999999999999",
                ParserLimits::master_stream(),
                BulkTooLarge {
                    at_least: 999_999_999,
                    limit: 512 * 1024 * 1024,
                    offset: 4,
                },
            ),
            (
                b"*1\r\n$18446744073709551616\r\n",
                ParserLimits {
                    max_bulk_len: usize::MAX,
                    ..small
                },
                BulkTooLarge {
                    at_least: u64::MAX,
                    limit: usize::MAX,
                    offset: 4,
                },
            ),
            (
                b"*1\r\n:1\r\n",
                small,
                ExpectedBulk {
                    found: b':',
                    offset: 4,
                },
            ),
            (
                b"+OK\r\n",
                ParserLimits::master_stream(),
                InlineNotAllowed {
                    found: b'+',
                    offset: 0,
                },
            ),
            (b"SET a \"b c\"\n", small, InlineQuote { offset: 6 }),
            (b"ECHO 'x'\n", small, InlineQuote { offset: 5 }),
            (
                b"123456789\n",
                short_lines,
                InlineTooLong {
                    limit: 8,
                    offset: 8,
                },
            ),
            (
                b"123456789",
                short_lines,
                InlineTooLong {
                    limit: 8,
                    offset: 8,
                },
            ),
            (
                b"\n12345678\r\n",
                short_lines,
                InlineTooLong {
                    limit: 8,
                    offset: 9,
                },
            ),
        ];
        for (input, limits, expected) in table {
            for chunk in [input.len(), 1, 2] {
                let error = parse_chunked(limits, input, &[chunk]).unwrap_err();
                assert_eq!(
                    error,
                    expected,
                    "input {:?} chunk {chunk}",
                    input.escape_ascii()
                );
            }
            assert!(!expected.to_string().is_empty());
        }
        // Lines exactly at the inline limit pass.
        let frames = parse_all(short_lines, b"1234567\r\n12345678\n").unwrap();
        assert_eq!(commands(&frames).len(), 2);
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let error = parse_all(
            ParserLimits::master_stream(),
            b"*1\r\n$4\r\nping\r\n*2\r\n$3\r\nDEL\r\n$5\r\nhelloXY",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected CRLF after bulk of 5 bytes at byte 36, found \"XY\""
        );
        let error = parse_all(ParserLimits::master_stream(), b"*1\r\n$\x01").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid byte '\\x01' in bulk length at byte 5"
        );
    }

    #[test]
    fn an_error_poisons_the_parser() {
        let mut parser = CommandParser::new(ParserLimits::master_stream());
        let mut buf = BytesMut::from(&b"*1\r\n$1\r\nxyz"[..]);
        let first = parser.parse(&mut buf).unwrap_err();
        assert_eq!(parser.failure(), Some(&first));
        assert_eq!(buf.len(), 11, "the buffer is left for logging");
        buf.clear();
        buf.extend_from_slice(b"*1\r\n$4\r\nping\r\n");
        assert_eq!(parser.parse(&mut buf).unwrap_err(), first);
    }

    #[test]
    fn a_truncated_buffer_is_reported_not_a_panic() {
        let mut parser = CommandParser::new(ParserLimits::master_stream());
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1"[..]);
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
        buf.truncate(3);
        assert!(matches!(
            parser.parse(&mut buf),
            Err(ProtocolError::BufferShrank { .. })
        ));
    }

    #[test]
    fn empty_multibulk_counts_its_bytes() {
        let mut parser = CommandParser::new(ParserLimits::master_stream());
        let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"[..]);
        let empty = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(
            empty,
            Frame::Empty {
                raw: Bytes::from_static(b"*0\r\n")
            }
        );
        let null = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(null.wire_len(), 5);
        assert!(null.command().is_none());
        assert_eq!(parser.consumed(), 9);
        let ping = parser.parse(&mut buf).unwrap().unwrap();
        assert!(ping.command().unwrap().name_eq_ignore_case(b"ping"));
        assert_eq!(parser.parse(&mut buf).unwrap(), None);
    }

    /// A large argument arriving in socket-sized reads must be examined once, not re-scanned
    /// from the frame start on every read.
    #[test]
    fn large_argument_in_small_reads_is_scanned_once() {
        let value = vec![b'v'; 4 * 1024 * 1024];
        let args: [&[u8]; 3] = [b"SET", b"big", &value];
        let mut input = BytesMut::new();
        encode_command(&args, &mut input);

        let mut parser = CommandParser::new(ParserLimits::master_stream());
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut polls = 0;
        for chunk in input.chunks(16 * 1024) {
            buf.extend_from_slice(chunk);
            polls += 1;
            while let Some(frame) = parser.parse(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert!(polls >= 256);
        assert_eq!(frames.len(), 1);
        let command = frames[0].command().unwrap();
        assert_eq!(command.arg(2).unwrap().len(), value.len());
        assert_eq!(command.raw.len(), input.len());
        assert!(
            parser.bytes_examined() < 2 * input.len() as u64,
            "examined {} bytes of {}",
            parser.bytes_examined(),
            input.len()
        );
        assert!(parser.bytes_examined() >= input.len() as u64);
    }

    #[test]
    fn encoded_len_is_exact() {
        let boundaries = [0usize, 1, 9, 10, 11, 99, 100, 999, 1000, 12345];
        for &len in &boundaries {
            let arg = vec![b'a'; len];
            let args = vec![arg.clone(); len.min(12)];
            let mut out = BytesMut::new();
            encode_command(&args, &mut out);
            assert_eq!(out.len(), encoded_len(&args));
            let mut expected = format!("*{}\r\n", args.len()).into_bytes();
            for arg in &args {
                expected.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
                expected.extend_from_slice(arg);
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(&out[..], &expected[..]);
        }
        for value in [0usize, 7, 10, 99, 100, 1_000_000, usize::MAX] {
            let mut out = BytesMut::new();
            put_length_line(&mut out, b'$', value);
            assert_eq!(out, format!("${value}\r\n").as_bytes());
            assert_eq!(decimal_len(value), value.to_string().len());
        }
    }

    proptest! {
        #[test]
        fn random_argv_round_trips_with_random_chunking(
            commands in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8),
                1..12,
            ),
            chunk_sizes in prop::collection::vec(1usize..50, 1..10),
            keepalive_every in 0usize..4,
        ) {
            let mut input = BytesMut::new();
            let mut expected = Vec::new();
            for (index, args) in commands.iter().enumerate() {
                encode_command(args, &mut input);
                expected.push(Some(args.clone()));
                if keepalive_every > 0 && index % keepalive_every == 0 {
                    input.extend_from_slice(b"\n");
                    expected.push(None);
                }
            }
            let frames = parse_chunked(ParserLimits::master_stream(), &input, &chunk_sizes)
                .unwrap();
            let parsed: Vec<Option<Vec<Vec<u8>>>> = frames
                .iter()
                .map(|frame| match frame {
                    Frame::Command(command) => {
                        Some(command.args.iter().map(|arg| arg.to_vec()).collect())
                    }
                    _ => None,
                })
                .collect();
            prop_assert_eq!(parsed, expected);
            for frame in &frames {
                if let Frame::Command(command) = frame {
                    prop_assert_eq!(&reencode(command)[..], &command.raw[..]);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_chunking_never_matters(
            input in prop::collection::vec(
                prop_oneof![
                    Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'-'),
                    Just(b'0'), Just(b'1'), Just(b'3'), Just(b' '), Just(b'"'), any::<u8>(),
                ],
                0..80,
            ),
            chunk in 1usize..9,
            allow_inline in any::<bool>(),
        ) {
            let limits = ParserLimits {
                max_bulk_len: 40,
                max_args: 6,
                max_inline_len: 20,
                allow_inline,
            };
            // Compare outcomes up to the point where input runs out.
            let outcome = |chunk: usize| {
                let mut parser = CommandParser::new(limits);
                let mut buf = BytesMut::new();
                let mut frames = Vec::new();
                for piece in input.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    loop {
                        match parser.parse(&mut buf) {
                            Ok(Some(frame)) => frames.push(frame),
                            Ok(None) => break,
                            Err(error) => return (frames, Some(error)),
                        }
                    }
                }
                (frames, None)
            };
            let whole = outcome(input.len().max(1));
            prop_assert_eq!(outcome(chunk), whole.clone());
            let consumed: usize = whole.0.iter().map(Frame::wire_len).sum();
            prop_assert!(consumed <= input.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Wherever the single-pass reader answers, even on damaged bytes, it agrees with the
        /// resumable parser fed one byte at a time (which never takes the single pass), and it
        /// answers for every whole command.
        #[test]
        fn single_pass_reader_agrees_with_the_resumable_parser(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..5),
            damage in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), prop_oneof![
                Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'0'),
                Just(b'1'), Just(b'9'), any::<u8>(),
            ]), 0..3),
            cut in any::<prop::sample::Index>(),
            trailing in prop::collection::vec(any::<u8>(), 0..6),
        ) {
            let limits = ParserLimits {
                max_bulk_len: 10,
                max_args: 3,
                max_inline_len: 20,
                allow_inline: false,
            };
            let mut input = BytesMut::new();
            encode_command(&args, &mut input);
            let whole = input.len();
            let within_limits = args.len() <= 3 && args.iter().all(|arg| arg.len() <= 10);
            let mut spans = Vec::new();
            if within_limits {
                prop_assert_eq!(whole_command(&input, 0, &limits, &mut spans), Some(whole));
            }
            let mut input = input.to_vec();
            // Mostly hit the framing bytes, where a missed check would hide.
            let framing: Vec<usize> = (0..input.len())
                .filter(|&i| matches!(input[i], b'*' | b'$' | b'\r' | b'\n'))
                .collect();
            for (on_framing, at, byte) in &damage {
                let at = if *on_framing {
                    framing[at.index(framing.len())]
                } else {
                    at.index(input.len())
                };
                input[at] = *byte;
            }
            input.truncate(cut.index(input.len() + 1));
            input.extend_from_slice(&trailing);

            spans.clear();
            let Some(end) = whole_command(&input, 0, &limits, &mut spans) else {
                return Ok(());
            };
            let mut parser = CommandParser::new(limits);
            let mut buf = BytesMut::new();
            let mut frame = None;
            for &byte in &input {
                buf.put_u8(byte);
                if let Ok(Some(found)) = parser.parse_raw(&mut buf) {
                    frame = Some(found);
                    break;
                }
            }
            let frame = frame.expect("the resumable parser finds the frame");
            prop_assert_eq!(frame.kind, FrameKind::Command);
            prop_assert_eq!(frame.raw.len(), end);
            prop_assert_eq!(parser.arg_spans(), &spans[..]);
        }
    }
}
