//! Streaming, forward-only RDB scanner: it watches a full-sync payload go by, chunk by chunk,
//! while the proxy relays the same bytes unchanged to a replica.
//!
//! What it produces: every key that has a key-level expiry, as `(db, key, absolute ms)`, the
//! moment its key string has been read (the expiry opcode precedes the key); at the end a
//! [`RdbSummary`] with counts, small AUX fields (including `repl-stream-db`) and whether the
//! CRC-64 trailer verified.
//!
//! How: the input is split into small "items" (an opcode with its fixed fields, a length, a
//! string header) and string bodies. Items are parsed from the chunk in place; the rare item
//! cut by a chunk boundary is completed in a 64-byte carry buffer. String bodies are skipped by
//! counting, except keys of expiring entries and small AUX fields, which are collected (and
//! LZF-expanded when compressed). Values are walked with the per-type layouts of `layout.rs`,
//! never decoded. Memory is therefore O(largest expiring key), not
//! O(value). The CRC is updated once per chunk over the consumed range.
//!
//! Supported: RDB versions 1–12 (Redis up to 7.4; per `docs/redis-protocol.md#rdb` also 8.0–8.4).
//! Version 13+ is refused with [`RdbError::UnsupportedVersion`]: the Redis sources available to
//! this project stop at version 12, and a guessed layout would silently desynchronise the walk.
//!
//! End of input: the payload ends after `0xFF` and, from version 5, the 8-byte CRC
//! ([`RdbScanner::is_done`]). [`RdbScanner::feed`] treats any byte after that as an error
//! ([`RdbError::TrailingBytes`]); a caller that does not know where the payload ends (EOF-mark
//! framing) uses [`RdbScanner::feed_until_done`], which reports how much of the chunk belonged
//! to the RDB.
//!
//! After any error the scanner is poisoned: every later call returns the same error. The keys
//! already emitted stay valid facts about the bytes seen, but a caller should treat its
//! knowledge of the snapshot as incomplete.

pub mod crc64;
mod layout;
pub mod lzf;
pub(crate) mod writer;

#[cfg(test)]
pub(crate) mod tests;

use bytes::Bytes;
use layout::Op;
pub use writer::RdbWriter;

/// Keys longer than this are refused ([`RdbError::TooLarge`]): Redis caps strings at 512 MiB.
pub const DEFAULT_MAX_KEY_LEN: u64 = 512 * 1024 * 1024;
/// AUX keys and values longer than this are skipped rather than recorded in the summary.
pub const MAX_AUX_FIELD_LEN: u64 = 4096;
/// At most this many AUX fields are recorded in the summary (Redis writes about ten).
pub const MAX_AUX_FIELDS: usize = 64;
/// The largest item (opcode or header) that can be cut by a chunk boundary is 28 bytes.
const CARRY_CAPACITY: usize = 64;
/// The highest RDB version whose layout this scanner knows.
pub const MAX_RDB_VERSION: u32 = 12;
/// A collected key buffer above this capacity is released after use, so one huge key does not
/// pin its memory for the rest of the scan.
const CAPTURE_KEEP_CAPACITY: usize = 1 << 20;

/// A key that carries a key-level expiry in the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdbKeyExpiry {
    /// Database number (from the last SELECTDB; 0 before any).
    pub db: u32,
    /// The key, expanded if it was stored LZF-compressed or as an integer.
    pub key: Bytes,
    /// Absolute expiry in milliseconds since the Unix epoch.
    pub expire_ms: i64,
}

/// What a completed scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RdbSummary {
    /// RDB format version from the header.
    pub version: u32,
    /// Number of key records.
    pub keys: u64,
    /// Number of key records with a key-level expiry (each one was emitted).
    pub keys_with_expiry: u64,
    /// Keys whose type can hold per-field TTLs (hash types 22–25). Field TTLs are not
    /// extracted, so a caller that tracks them knows what it is missing.
    pub keys_with_field_ttl_layout: u64,
    /// Whether the trailer held a non-zero CRC, which then verified (a mismatch is an error).
    pub crc_checked: bool,
    /// The CRC trailer as stored (0 = not computed by the writer, or no trailer before v5).
    pub stored_crc: u64,
    /// The `repl-stream-db` AUX field: the DB the replication stream starts in.
    pub repl_stream_db: Option<u32>,
    /// AUX fields whose key and value are at most [`MAX_AUX_FIELD_LEN`] bytes (first
    /// [`MAX_AUX_FIELDS`] of them), in file order.
    pub aux: Vec<(String, String)>,
    /// FUNCTION2 records (function libraries).
    pub functions: u64,
    /// MODULE_AUX records.
    pub module_aux: u64,
    /// Bytes of the payload, from `R` of `REDIS` through the trailer.
    pub bytes: u64,
}

/// Why a payload could not be scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RdbError {
    /// The payload does not start with `REDIS` and four digits.
    BadMagic,
    /// The format version is outside 1..=[`MAX_RDB_VERSION`].
    UnsupportedVersion(u32),
    /// A value type this scanner cannot walk (pre-GA module values, unknown types).
    UnsupportedType(u8),
    /// A known record opcode this scanner cannot walk (pre-GA functions, which Redis itself
    /// refuses to load).
    UnsupportedOpcode(u8),
    /// The CRC-64 trailer does not match the bytes.
    CrcMismatch { expected: u64, computed: u64 },
    /// The payload ended before its EOF record and trailer.
    Truncated,
    /// A key longer than the configured limit.
    TooLarge(u64),
    /// Bytes arrived after the trailer.
    TrailingBytes,
    /// The bytes violate the format.
    Malformed(String),
}

impl std::fmt::Display for RdbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RdbError::BadMagic => write!(f, "not an RDB payload (no REDIS magic)"),
            RdbError::UnsupportedVersion(v) => write!(f, "unsupported RDB version {v}"),
            RdbError::UnsupportedType(t) => write!(f, "unsupported RDB value type {t}"),
            RdbError::UnsupportedOpcode(op) => write!(f, "unsupported RDB opcode 0x{op:02x}"),
            RdbError::CrcMismatch { expected, computed } => write!(
                f,
                "RDB CRC mismatch: trailer says 0x{expected:016x}, bytes give 0x{computed:016x}"
            ),
            RdbError::Truncated => write!(f, "RDB payload truncated"),
            RdbError::TooLarge(len) => write!(f, "RDB key of {len} bytes exceeds the limit"),
            RdbError::TrailingBytes => write!(f, "bytes after the end of the RDB payload"),
            RdbError::Malformed(why) => write!(f, "malformed RDB: {why}"),
        }
    }
}

impl std::error::Error for RdbError {}

/// Where the scan is in the record structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Expecting the 9-byte `REDISnnnn` header.
    Magic,
    /// Expecting an opcode or a value type byte.
    Record,
    /// Expecting the key string of a record whose type byte was read.
    Key,
    /// Expecting the key, then the value, of an AUX record.
    AuxKey,
    AuxValue,
    /// Expecting the payload string of a FUNCTION2 record.
    Function,
    /// Walking a value (or module AUX data) with the frame stack.
    Frames,
    /// Expecting the 8-byte CRC trailer.
    Crc,
    /// Trailer read.
    Done,
}

/// What a string being read is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Key,
    AuxKey,
    AuxValue,
    Function,
    /// Part of a value: skipped.
    Element,
}

/// Whether and how a string body is being collected into `capture`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Capture {
    Discard,
    Plain,
    Lzf { expanded_len: u64 },
}

/// Bytes to pass over before the next item: a string body or fixed-width raw bytes.
#[derive(Clone, Copy, Debug)]
enum Body {
    Raw {
        remaining: u64,
    },
    Str {
        remaining: u64,
        target: Target,
        capture: Capture,
    },
}

/// One level of a value walk: a layout program, its program counter and how many more times
/// it runs (for repeated bodies).
#[derive(Clone, Copy, Debug)]
struct Frame {
    ops: &'static [Op],
    pc: usize,
    remaining: u64,
}

/// The header of a string.
#[derive(Clone, Copy, Debug)]
enum StrHead {
    Int(i64),
    Plain(u64),
    Lzf {
        compressed_len: u64,
        expanded_len: u64,
    },
}

/// Why an item could not be parsed. The error is boxed so that the results on the hot path
/// stay two registers wide.
enum Stop {
    /// The item continues past the available bytes.
    NeedMore,
    Fail(Box<RdbError>),
}

impl Stop {
    /// For calls that consume no input and so cannot run short.
    fn into_error(self) -> RdbError {
        match self {
            Stop::NeedMore => malformed("internal: short read outside an item"),
            Stop::Fail(err) => *err,
        }
    }
}

impl From<RdbError> for Stop {
    fn from(e: RdbError) -> Self {
        Stop::Fail(Box::new(e))
    }
}

fn malformed(why: impl Into<String>) -> RdbError {
    RdbError::Malformed(why.into())
}

/// Reads fixed-size fields from the bytes available for one item.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let bytes = self.buf.get(self.pos..self.pos + n).ok_or(Stop::NeedMore)?;
        self.pos += n;
        Ok(bytes)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A length, or for a `11xxxxxx` byte the special string encoding it names: returns
    /// `(value, is_special)`.
    #[inline]
    fn length_or_special(&mut self) -> Result<(u64, bool), Stop> {
        let first = self.u8()?;
        Ok(match first >> 6 {
            0 => (u64::from(first & 0x3f), false),
            1 => {
                let second = self.u8()?;
                ((u64::from(first & 0x3f) << 8) | u64::from(second), false)
            }
            3 => (u64::from(first & 0x3f), true),
            _ => match first {
                0x80 => (u64::from(u32::from_be_bytes(self.array()?)), false),
                0x81 => (u64::from_be_bytes(self.array()?), false),
                other => {
                    return Err(malformed(format!("unknown length encoding 0x{other:02x}")).into())
                }
            },
        })
    }

    /// A length where a string is not expected. Like Redis's loader, a special-encoding byte
    /// reads as its low 6 bits.
    fn length(&mut self) -> Result<u64, Stop> {
        Ok(self.length_or_special()?.0)
    }

    #[inline]
    fn string_head(&mut self) -> Result<StrHead, Stop> {
        let (value, special) = self.length_or_special()?;
        if !special {
            return Ok(StrHead::Plain(value));
        }
        Ok(match value {
            0 => StrHead::Int(i64::from(i8::from_le_bytes(self.array()?))),
            1 => StrHead::Int(i64::from(i16::from_le_bytes(self.array()?))),
            2 => StrHead::Int(i64::from(i32::from_le_bytes(self.array()?))),
            3 => {
                let compressed_len = self.length()?;
                let expanded_len = self.length()?;
                StrHead::Lzf {
                    compressed_len,
                    expanded_len,
                }
            }
            other => return Err(malformed(format!("unknown string encoding {other}")).into()),
        })
    }
}

/// Incremental RDB scanner; see the module documentation.
#[derive(Clone, Debug)]
pub struct RdbScanner {
    phase: Phase,
    /// Value walk; depth is bounded by the static layouts (at most 4).
    frames: Vec<Frame>,
    body: Option<Body>,
    carry: [u8; CARRY_CAPACITY],
    carry_len: usize,
    crc: u64,
    /// Whether consumed bytes still count towards the CRC (false from the byte after 0xFF).
    crc_open: bool,
    db: u32,
    pending_expire_ms: Option<i64>,
    /// Type byte and layout of the record whose key is being read.
    pending_type: u8,
    pending_layout: &'static [Op],
    aux_key: Option<String>,
    /// Collected string bytes (raw or LZF-compressed).
    capture: Vec<u8>,
    /// LZF output; swapped with `capture` after expansion.
    expanded: Vec<u8>,
    max_key_len: u64,
    summary: RdbSummary,
    failed: Option<RdbError>,
}

impl Default for RdbScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl RdbScanner {
    /// A scanner expecting the start of a payload, with the default key limit (512 MiB).
    pub fn new() -> Self {
        Self::with_max_key_len(DEFAULT_MAX_KEY_LEN)
    }

    /// A scanner that refuses keys longer than `max_key_len` bytes.
    pub fn with_max_key_len(max_key_len: u64) -> Self {
        RdbScanner {
            phase: Phase::Magic,
            frames: Vec::with_capacity(8),
            body: None,
            carry: [0; CARRY_CAPACITY],
            carry_len: 0,
            crc: 0,
            crc_open: true,
            db: 0,
            pending_expire_ms: None,
            pending_type: 0,
            pending_layout: &[],
            aux_key: None,
            capture: Vec::new(),
            expanded: Vec::new(),
            max_key_len,
            summary: RdbSummary::default(),
            failed: None,
        }
    }

    /// Whether the EOF record and its trailer have been read.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Feeds the next chunk, of any size and split anywhere. Appends the expiring keys whose key
    /// string completed in it to `out`. Bytes after the trailer are an error
    /// ([`RdbError::TrailingBytes`]).
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<RdbKeyExpiry>) -> Result<(), RdbError> {
        let used = self.feed_until_done(chunk, out)?;
        if used < chunk.len() {
            let err = RdbError::TrailingBytes;
            self.failed = Some(err.clone());
            return Err(err);
        }
        Ok(())
    }

    /// Like [`feed`](Self::feed), but stops at the end of the payload and returns how many bytes
    /// of `chunk` belong to it: all of them unless the trailer ended inside the chunk. For
    /// framings where the caller learns the end of the payload from the payload itself.
    pub fn feed_until_done(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<RdbKeyExpiry>,
    ) -> Result<usize, RdbError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.scan(chunk, out) {
            Ok(used) => Ok(used),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Declares the payload complete and returns what was found. Fails with
    /// [`RdbError::Truncated`] unless the trailer was read.
    pub fn finish(self) -> Result<RdbSummary, RdbError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        if self.phase != Phase::Done {
            return Err(RdbError::Truncated);
        }
        Ok(self.summary)
    }

    fn scan(&mut self, chunk: &[u8], out: &mut Vec<RdbKeyExpiry>) -> Result<usize, RdbError> {
        let mut pos = 0;
        loop {
            if let Some(body) = &mut self.body {
                if pos == chunk.len() {
                    break;
                }
                let remaining = match body {
                    Body::Raw { remaining } | Body::Str { remaining, .. } => remaining,
                };
                let n = (*remaining).min((chunk.len() - pos) as u64) as usize;
                *remaining -= n as u64;
                let finished = *remaining == 0;
                if let Body::Str { capture, .. } = body {
                    if *capture != Capture::Discard {
                        self.capture.extend_from_slice(&chunk[pos..pos + n]);
                    }
                }
                pos += n;
                if finished {
                    if let Some(Body::Str {
                        target, capture, ..
                    }) = self.body.take()
                    {
                        self.finish_string(target, capture, out)
                            .map_err(Stop::into_error)?;
                    }
                }
                continue;
            }
            self.settle();
            if self.body.is_some() {
                continue;
            }
            if self.phase == Phase::Done || pos == chunk.len() {
                break;
            }
            let used = if self.carry_len == 0 {
                match self.step(&chunk[pos..], out) {
                    Ok(used) => used,
                    Err(Stop::NeedMore) => {
                        let rest = &chunk[pos..];
                        if rest.len() > CARRY_CAPACITY {
                            return Err(malformed("record header longer than the carry buffer"));
                        }
                        self.carry[..rest.len()].copy_from_slice(rest);
                        self.carry_len = rest.len();
                        pos = chunk.len();
                        break;
                    }
                    Err(Stop::Fail(err)) => return Err(*err),
                }
            } else {
                let held = self.carry_len;
                let topped = (CARRY_CAPACITY - held).min(chunk.len() - pos);
                self.carry[held..held + topped].copy_from_slice(&chunk[pos..pos + topped]);
                let view = self.carry;
                match self.step(&view[..held + topped], out) {
                    // The held bytes alone were not enough, so a successful parse always
                    // reaches into the new chunk.
                    Ok(used) if used > held => {
                        self.carry_len = 0;
                        used - held
                    }
                    Ok(_) => return Err(malformed("internal: carried item parsed short")),
                    Err(Stop::NeedMore) => {
                        if held + topped == CARRY_CAPACITY {
                            return Err(malformed("record header longer than the carry buffer"));
                        }
                        self.carry_len = held + topped;
                        pos += topped;
                        break;
                    }
                    Err(Stop::Fail(err)) => return Err(*err),
                }
            };
            pos += used;
            if self.crc_open && matches!(self.phase, Phase::Crc | Phase::Done) {
                // That item was the EOF opcode: the CRC covers it and none of the trailer.
                self.crc = crc64::update(self.crc, &chunk[..pos]);
                self.crc_open = false;
            }
        }
        if self.crc_open {
            self.crc = crc64::update(self.crc, &chunk[..pos]);
        }
        self.summary.bytes += pos as u64;
        Ok(pos)
    }

    /// Makes every transition that needs no input: finished value frames are popped (ending
    /// the value when the stack empties) and fixed-width skips become bodies.
    fn settle(&mut self) {
        if self.phase != Phase::Frames {
            return;
        }
        loop {
            let Some(frame) = self.frames.last_mut() else {
                self.phase = Phase::Record;
                return;
            };
            if frame.pc == frame.ops.len() {
                frame.remaining -= 1;
                if frame.remaining == 0 {
                    self.frames.pop();
                } else {
                    frame.pc = 0;
                }
                continue;
            }
            if let Op::Skip(n) = frame.ops[frame.pc] {
                frame.pc += 1;
                self.body = Some(Body::Raw {
                    remaining: u64::from(n),
                });
            }
            return;
        }
    }

    /// Parses one item from `input` and applies it. State changes only on success, so a
    /// `NeedMore` can be retried with more bytes.
    fn step(&mut self, input: &[u8], out: &mut Vec<RdbKeyExpiry>) -> Result<usize, Stop> {
        let mut cur = Cursor { buf: input, pos: 0 };
        match self.phase {
            Phase::Magic => {
                let header: [u8; 9] = cur.array()?;
                if &header[..5] != b"REDIS" || !header[5..].iter().all(u8::is_ascii_digit) {
                    return Err(RdbError::BadMagic.into());
                }
                let version = header[5..]
                    .iter()
                    .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
                if !(1..=MAX_RDB_VERSION).contains(&version) {
                    return Err(RdbError::UnsupportedVersion(version).into());
                }
                self.summary.version = version;
                self.phase = Phase::Record;
            }
            Phase::Record => self.step_record(&mut cur)?,
            Phase::Key | Phase::AuxKey | Phase::AuxValue | Phase::Function => {
                let target = match self.phase {
                    Phase::Key => Target::Key,
                    Phase::AuxKey => Target::AuxKey,
                    Phase::AuxValue => Target::AuxValue,
                    _ => Target::Function,
                };
                let head = cur.string_head()?;
                self.start_string(head, target, &mut cur, out)?;
            }
            Phase::Frames => self.step_frame(&mut cur, out)?,
            Phase::Crc => {
                let stored = u64::from_le_bytes(cur.array()?);
                self.summary.stored_crc = stored;
                if stored != 0 {
                    if stored != self.crc {
                        return Err(RdbError::CrcMismatch {
                            expected: stored,
                            computed: self.crc,
                        }
                        .into());
                    }
                    self.summary.crc_checked = true;
                }
                self.phase = Phase::Done;
            }
            Phase::Done => return Err(RdbError::TrailingBytes.into()),
        }
        Ok(cur.pos)
    }

    fn step_record(&mut self, cur: &mut Cursor<'_>) -> Result<(), Stop> {
        use writer::opcode;
        match cur.u8()? {
            opcode::AUX => self.phase = Phase::AuxKey,
            opcode::RESIZEDB => {
                cur.length()?;
                cur.length()?;
            }
            opcode::EXPIRETIME_MS => {
                self.pending_expire_ms = Some(i64::from_le_bytes(cur.array()?));
            }
            opcode::EXPIRETIME => {
                let seconds = i64::from(i32::from_le_bytes(cur.array()?));
                self.pending_expire_ms = Some(seconds * 1000);
            }
            opcode::SELECTDB => {
                let db = cur.length()?;
                self.db = u32::try_from(db)
                    .map_err(|_| malformed(format!("SELECTDB {db} out of range")))?;
            }
            opcode::EOF => {
                // Before version 5 there is no CRC trailer.
                self.phase = if self.summary.version >= 5 {
                    Phase::Crc
                } else {
                    Phase::Done
                };
            }
            opcode::FREQ => {
                cur.u8()?;
            }
            opcode::IDLE => {
                cur.length()?;
            }
            opcode::MODULE_AUX => {
                cur.length()?; // module id
                let when_opcode = cur.length()?;
                cur.length()?; // when
                if when_opcode != 2 {
                    return Err(malformed(format!(
                        "MODULE_AUX when-opcode {when_opcode}, expected 2 (unsigned integer)"
                    ))
                    .into());
                }
                self.summary.module_aux += 1;
                self.frames.push(Frame {
                    ops: layout::MODULE_AUX_BODY,
                    pc: 0,
                    remaining: 1,
                });
                self.phase = Phase::Frames;
            }
            opcode::FUNCTION_PRE_GA => {
                return Err(RdbError::UnsupportedOpcode(opcode::FUNCTION_PRE_GA).into())
            }
            opcode::FUNCTION2 => self.phase = Phase::Function,
            opcode::SLOT_INFO => {
                cur.length()?; // slot id
                cur.length()?; // slot size
                cur.length()?; // expires slot size
            }
            value_type => {
                self.pending_layout = layout::value_layout(value_type)
                    .ok_or(RdbError::UnsupportedType(value_type))?;
                self.pending_type = value_type;
                self.phase = Phase::Key;
            }
        }
        Ok(())
    }

    fn step_frame(
        &mut self,
        cur: &mut Cursor<'_>,
        out: &mut Vec<RdbKeyExpiry>,
    ) -> Result<(), Stop> {
        let Some(&op) = self.frames.last().and_then(|frame| frame.ops.get(frame.pc)) else {
            return Err(malformed("internal: value walk without a pending step").into());
        };
        match op {
            Op::Str => {
                let head = cur.string_head()?;
                self.advance_pc();
                self.start_string(head, Target::Element, cur, out)?;
            }
            Op::Len => {
                cur.length()?;
                self.advance_pc();
            }
            Op::Rep(body) => {
                let count = cur.length()?;
                self.advance_pc();
                if count > 0 {
                    self.frames.push(Frame {
                        ops: body,
                        pc: 0,
                        remaining: count,
                    });
                }
            }
            Op::OldZsetScore => {
                let len = cur.u8()?;
                self.advance_pc();
                if len < 253 {
                    self.body = Some(Body::Raw {
                        remaining: u64::from(len),
                    });
                }
            }
            Op::ModuleOps => match cur.length()? {
                0 => self.advance_pc(),
                1 | 2 => {
                    cur.length()?;
                }
                3 => {
                    cur.array::<4>()?;
                }
                4 => {
                    cur.array::<8>()?;
                }
                5 => {
                    let head = cur.string_head()?;
                    self.start_string(head, Target::Element, cur, out)?;
                }
                other => return Err(malformed(format!("unknown module opcode {other}")).into()),
            },
            Op::Skip(_) => return Err(malformed("internal: unsettled fixed-width skip").into()),
        }
        Ok(())
    }

    fn advance_pc(&mut self) {
        if let Some(frame) = self.frames.last_mut() {
            frame.pc += 1;
        }
    }

    /// Sets up reading a string's body after its header, or completes it at once.
    #[inline]
    fn start_string(
        &mut self,
        head: StrHead,
        target: Target,
        cur: &mut Cursor<'_>,
        out: &mut Vec<RdbKeyExpiry>,
    ) -> Result<(), Stop> {
        let (wanted, limit) = match target {
            Target::Key => (self.pending_expire_ms.is_some(), self.max_key_len),
            Target::AuxKey | Target::AuxValue => (true, MAX_AUX_FIELD_LEN),
            Target::Function | Target::Element => (false, 0),
        };
        if target == Target::Key {
            let key_len = match head {
                StrHead::Int(_) => 0,
                StrHead::Plain(len) => len,
                StrHead::Lzf {
                    compressed_len,
                    expanded_len,
                } => compressed_len.max(expanded_len),
            };
            if key_len > self.max_key_len {
                return Err(RdbError::TooLarge(key_len).into());
            }
        }
        self.capture.clear();
        match head {
            StrHead::Int(value) => {
                let capture = if wanted {
                    self.capture.extend_from_slice(value.to_string().as_bytes());
                    Capture::Plain
                } else {
                    Capture::Discard
                };
                self.finish_string(target, capture, out)
            }
            StrHead::Plain(len) => {
                let capture = if wanted && len <= limit {
                    Capture::Plain
                } else {
                    Capture::Discard
                };
                self.begin_body(len, target, capture, cur, out)
            }
            StrHead::Lzf {
                compressed_len,
                expanded_len,
            } => {
                let capture = if wanted && compressed_len <= limit && expanded_len <= limit {
                    Capture::Lzf { expanded_len }
                } else {
                    Capture::Discard
                };
                self.begin_body(compressed_len, target, capture, cur, out)
            }
        }
    }

    /// Reads a string body of `len` bytes: at once when the rest of the item's input holds it
    /// (the common case for small strings, which saves a round through the main loop),
    /// otherwise as a pending body that later chunks complete.
    #[inline]
    fn begin_body(
        &mut self,
        len: u64,
        target: Target,
        capture: Capture,
        cur: &mut Cursor<'_>,
        out: &mut Vec<RdbKeyExpiry>,
    ) -> Result<(), Stop> {
        let available = cur.buf.len() - cur.pos;
        if len <= available as u64 {
            let start = cur.pos;
            cur.pos += len as usize;
            if capture != Capture::Discard {
                self.capture.extend_from_slice(&cur.buf[start..cur.pos]);
            }
            return self.finish_string(target, capture, out);
        }
        self.body = Some(Body::Str {
            remaining: len,
            target,
            capture,
        });
        Ok(())
    }

    /// Acts on a string that has been read completely (collected in `capture` unless
    /// `capture` is `Discard`).
    fn finish_string(
        &mut self,
        target: Target,
        capture: Capture,
        out: &mut Vec<RdbKeyExpiry>,
    ) -> Result<(), Stop> {
        if let Capture::Lzf { expanded_len } = capture {
            let expanded_len = usize::try_from(expanded_len)
                .map_err(|_| malformed("LZF length exceeds the address space"))?;
            lzf::decompress(&self.capture, expanded_len, &mut self.expanded)
                .map_err(|e| malformed(e.to_string()))?;
            std::mem::swap(&mut self.capture, &mut self.expanded);
        }
        let captured = capture != Capture::Discard;
        match target {
            Target::Key => {
                self.summary.keys += 1;
                if let Some(expire_ms) = self.pending_expire_ms.take() {
                    self.summary.keys_with_expiry += 1;
                    out.push(RdbKeyExpiry {
                        db: self.db,
                        key: Bytes::copy_from_slice(&self.capture),
                        expire_ms,
                    });
                }
                if layout::has_field_ttls(self.pending_type) {
                    self.summary.keys_with_field_ttl_layout += 1;
                }
                self.frames.push(Frame {
                    ops: self.pending_layout,
                    pc: 0,
                    remaining: 1,
                });
                self.phase = Phase::Frames;
            }
            Target::AuxKey => {
                self.aux_key =
                    captured.then(|| String::from_utf8_lossy(&self.capture).into_owned());
                self.phase = Phase::AuxValue;
            }
            Target::AuxValue => {
                if let (Some(key), true) = (self.aux_key.take(), captured) {
                    let value = String::from_utf8_lossy(&self.capture).into_owned();
                    if key.eq_ignore_ascii_case("repl-stream-db") {
                        self.summary.repl_stream_db = value.trim().parse().ok();
                    }
                    if self.summary.aux.len() < MAX_AUX_FIELDS {
                        self.summary.aux.push((key, value));
                    }
                }
                self.phase = Phase::Record;
            }
            Target::Function => {
                self.summary.functions += 1;
                self.phase = Phase::Record;
            }
            Target::Element => {}
        }
        if self.capture.capacity() > CAPTURE_KEEP_CAPACITY {
            self.capture = Vec::new();
        }
        if self.expanded.capacity() > CAPTURE_KEEP_CAPACITY {
            self.expanded = Vec::new();
        }
        Ok(())
    }
}
