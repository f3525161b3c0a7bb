//! The parsers: the resumable [`CommandParser`] that keeps its place between reads, and
//! [`whole_command`], the single-pass reader of a command that arrived whole, which the
//! resumable parser tries first.

use super::length::{whole_plain_length_line, LengthLine, LengthValue};
use super::{Command, Frame, FrameKind, LengthKind, ParserLimits, ProtocolError, RawFrame};
use bytes::{Bytes, BytesMut};

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
        if !matches!(input.get(end..end.checked_add(2)?)?, [b'\r', b'\n']) {
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

#[cfg(test)]
mod tests;
