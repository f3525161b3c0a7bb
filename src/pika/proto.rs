//! A field-level protobuf reader and splicer.
//!
//! The proxy edits a few fields of Pika's replication messages and must send everything else out
//! byte for byte: a frame it does not change must be identical on the wire, and fields it does not
//! know (added by newer Pika versions) must survive an edit. A generated decoder for an older
//! schema would drop those fields, so this module works on raw fields instead:
//!
//! * [`FieldIter`] / [`parse_message`] split a message into [`Field`]s (number, wire type, the
//!   record's bytes and its value's bytes) without copying; every wire type is handled, groups
//!   are skipped as one opaque field;
//! * [`Field`]'s accessors read varints, fixed values, strings and sub-messages, checking the
//!   wire type;
//! * [`MessageEditor`] re-encodes a message from its original bytes with some fields replaced,
//!   removed or inserted, copying every other record unchanged and in its original order;
//! * the `put_*` functions encode single fields the way C++ protobuf does.
//!
//! Malformed input is reported as a [`ProtoError`]; nothing here panics on bad bytes.

use bytes::BufMut;
use std::fmt;
use std::ops::Range;

/// Largest field number protobuf allows (2^29 - 1).
pub const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

/// Longest varint: 10 bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// Nesting limit for groups skipped as unknown fields (C++ protobuf's default recursion limit).
const MAX_GROUP_DEPTH: usize = 100;

/// Protobuf wire types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireType {
    /// 0: varint (int32, int64, uint32, uint64, sint*, bool, enum).
    Varint,
    /// 1: 8 little-endian bytes (fixed64, sfixed64, double).
    I64,
    /// 2: length-delimited (string, bytes, sub-message, packed repeated).
    Len,
    /// 3: start of a (deprecated) group.
    StartGroup,
    /// 4: end of a group.
    EndGroup,
    /// 5: 4 little-endian bytes (fixed32, sfixed32, float).
    I32,
}

impl WireType {
    /// The wire type for the low 3 bits of a tag, if valid (6 and 7 are not).
    pub fn from_bits(bits: u8) -> Option<WireType> {
        match bits {
            0 => Some(WireType::Varint),
            1 => Some(WireType::I64),
            2 => Some(WireType::Len),
            3 => Some(WireType::StartGroup),
            4 => Some(WireType::EndGroup),
            5 => Some(WireType::I32),
            _ => None,
        }
    }

    /// The low 3 bits of a tag for this wire type.
    pub fn bits(self) -> u8 {
        match self {
            WireType::Varint => 0,
            WireType::I64 => 1,
            WireType::Len => 2,
            WireType::StartGroup => 3,
            WireType::EndGroup => 4,
            WireType::I32 => 5,
        }
    }
}

impl fmt::Display for WireType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            WireType::Varint => "varint",
            WireType::I64 => "i64",
            WireType::Len => "len",
            WireType::StartGroup => "start-group",
            WireType::EndGroup => "end-group",
            WireType::I32 => "i32",
        };
        f.write_str(name)
    }
}

/// Why bytes are not a well-formed protobuf message, or a field is not what the caller expected.
/// Offsets are relative to the start of the message being parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// The input ended inside a varint.
    TruncatedVarint {
        /// Offset of the varint's first byte.
        at: usize,
    },
    /// A varint longer than 10 bytes.
    VarintTooLong {
        /// Offset of the varint's first byte.
        at: usize,
    },
    /// A tag with field number 0, a number above 2^29-1, or wire type 6/7.
    InvalidTag {
        /// Offset of the tag.
        at: usize,
        /// The tag value read.
        tag: u64,
    },
    /// A length-delimited field whose length runs past the end of the message.
    LengthOutOfBounds {
        /// Offset of the field's tag.
        at: usize,
        /// Declared length.
        len: u64,
        /// Bytes actually left.
        available: usize,
    },
    /// A fixed-size value cut short by the end of the message.
    TruncatedFixed {
        /// Offset of the field's tag.
        at: usize,
        /// Bytes the value needs (4 or 8).
        needed: usize,
        /// Bytes actually left.
        available: usize,
    },
    /// An end-group tag without a matching start.
    UnexpectedEndGroup {
        /// Offset of the tag.
        at: usize,
        /// Its field number.
        number: u32,
    },
    /// A start-group tag whose end-group tag never comes.
    UnterminatedGroup {
        /// Offset of the start tag.
        at: usize,
        /// Its field number.
        number: u32,
    },
    /// Groups nested deeper than the recursion limit.
    GroupTooDeep {
        /// Offset of the innermost start tag.
        at: usize,
    },
    /// A known field encoded with a wire type its declared type never uses.
    WrongWireType {
        /// Field number.
        number: u32,
        /// What the schema implies.
        expected: WireType,
        /// What the bytes say.
        found: WireType,
    },
    /// A `string` field that the caller asked to read as text is not UTF-8.
    InvalidUtf8 {
        /// Field number.
        number: u32,
    },
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TruncatedVarint { at } => write!(f, "truncated varint at byte {at}"),
            ProtoError::VarintTooLong { at } => write!(f, "varint longer than 10 bytes at {at}"),
            ProtoError::InvalidTag { at, tag } => write!(f, "invalid tag {tag:#x} at byte {at}"),
            ProtoError::LengthOutOfBounds { at, len, available } => write!(
                f,
                "field at byte {at} declares {len} bytes but only {available} remain"
            ),
            ProtoError::TruncatedFixed {
                at,
                needed,
                available,
            } => write!(
                f,
                "fixed field at byte {at} needs {needed} bytes, {available} remain"
            ),
            ProtoError::UnexpectedEndGroup { at, number } => {
                write!(f, "unexpected end-group for field {number} at byte {at}")
            }
            ProtoError::UnterminatedGroup { at, number } => {
                write!(f, "group {number} starting at byte {at} is never closed")
            }
            ProtoError::GroupTooDeep { at } => write!(f, "groups nested too deep at byte {at}"),
            ProtoError::WrongWireType {
                number,
                expected,
                found,
            } => write!(
                f,
                "field {number}: expected wire type {expected}, found {found}"
            ),
            ProtoError::InvalidUtf8 { number } => write!(f, "field {number} is not UTF-8"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Reads a varint starting at `pos`; returns the value and the position after it.
///
/// Like C++ protobuf, a 10-byte varint is accepted and bits beyond 64 are dropped.
#[inline]
pub fn read_varint(buf: &[u8], pos: usize) -> Result<(u64, usize), ProtoError> {
    // Tags, lengths of small fields and most values in Pika's messages are single bytes.
    match buf.get(pos) {
        Some(&byte) if byte < 0x80 => return Ok((u64::from(byte), pos + 1)),
        Some(_) => {}
        None => return Err(ProtoError::TruncatedVarint { at: pos }),
    }
    read_varint_slow(buf, pos)
}

fn read_varint_slow(buf: &[u8], pos: usize) -> Result<(u64, usize), ProtoError> {
    let mut value: u64 = 0;
    for i in 0..MAX_VARINT_LEN {
        let Some(&byte) = buf.get(pos + i) else {
            return Err(ProtoError::TruncatedVarint { at: pos });
        };
        // The shift for i == 9 is 63: only the lowest bit of the 10th byte still fits.
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, pos + i + 1));
        }
    }
    Err(ProtoError::VarintTooLong { at: pos })
}

/// Number of bytes `value` takes as a varint.
pub fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 significant bits; 0 still takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as a varint.
pub fn put_varint<B: BufMut + ?Sized>(out: &mut B, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Number of bytes of the tag for `number` (the wire type does not change the length).
pub fn tag_len(number: u32) -> usize {
    varint_len(u64::from(number) << 3)
}

/// Appends a field tag.
pub fn put_tag<B: BufMut + ?Sized>(out: &mut B, number: u32, wire_type: WireType) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type.bits()));
}

/// Length of a whole varint field record.
pub fn varint_field_len(number: u32, value: u64) -> usize {
    tag_len(number) + varint_len(value)
}

/// Appends a varint field (uint32, uint64, enum, non-negative int values).
pub fn put_varint_field<B: BufMut + ?Sized>(out: &mut B, number: u32, value: u64) {
    put_tag(out, number, WireType::Varint);
    put_varint(out, value);
}

/// The varint C++ protobuf writes for an `int32`: negative values are sign-extended to 64 bits
/// (10 bytes on the wire).
pub fn int32_as_varint(value: i32) -> u64 {
    i64::from(value) as u64
}

/// Appends an `int32` field.
pub fn put_int32_field<B: BufMut + ?Sized>(out: &mut B, number: u32, value: i32) {
    put_varint_field(out, number, int32_as_varint(value));
}

/// Appends a `bool` field.
pub fn put_bool_field<B: BufMut + ?Sized>(out: &mut B, number: u32, value: bool) {
    put_varint_field(out, number, u64::from(value));
}

/// Length of a whole length-delimited field record with a payload of `payload_len` bytes.
pub fn len_field_len(number: u32, payload_len: usize) -> usize {
    tag_len(number) + varint_len(payload_len as u64) + payload_len
}

/// Appends a length-delimited field (string, bytes or an encoded sub-message).
pub fn put_len_field<B: BufMut + ?Sized>(out: &mut B, number: u32, payload: &[u8]) {
    put_len_prefix(out, number, payload.len());
    out.put_slice(payload);
}

/// Appends the tag and length of a length-delimited field whose `payload_len` bytes the caller
/// writes next (to build a sub-message in place without a temporary buffer).
pub fn put_len_prefix<B: BufMut + ?Sized>(out: &mut B, number: u32, payload_len: usize) {
    put_tag(out, number, WireType::Len);
    put_varint(out, payload_len as u64);
}

/// Reads a message whose fields come in one expected order with one-byte tags (field numbers
/// 1 to 15), the layout Pika's own encoder produces. Every method returns `None` as soon as the
/// bytes differ from what is expected; callers then fall back to [`FieldIter`], which accepts
/// any valid layout and explains what is wrong. Skips the general iterator's per-field result,
/// which costs more than the parsing on the per-item path.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedLayout<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ExpectedLayout<'a> {
    /// A reader at the start of `buf`, which holds exactly one message.
    pub fn new(buf: &'a [u8]) -> Self {
        ExpectedLayout { buf, pos: 0 }
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte was read.
    pub fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Consumes the one-byte tag of field `number` with `wire_type`.
    pub fn tag(&mut self, number: u32, wire_type: WireType) -> Option<()> {
        let expected = (number << 3) | u32::from(wire_type.bits());
        let &byte = self.buf.get(self.pos)?;
        (expected < 0x80 && u32::from(byte) == expected).then(|| self.pos += 1)
    }

    /// Consumes a varint value.
    pub fn varint(&mut self) -> Option<u64> {
        let (value, end) = read_varint(self.buf, self.pos).ok()?;
        self.pos = end;
        Some(value)
    }

    /// Consumes a length-delimited value and returns its payload.
    pub fn len_payload(&mut self) -> Option<&'a [u8]> {
        let (len, start) = read_varint(self.buf, self.pos).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let payload = self.buf.get(start..end)?;
        self.pos = end;
        Some(payload)
    }

    /// [`Self::tag`] then [`Self::varint`].
    pub fn varint_field(&mut self, number: u32) -> Option<u64> {
        self.tag(number, WireType::Varint)?;
        self.varint()
    }

    /// [`Self::tag`] then [`Self::len_payload`].
    pub fn len_field(&mut self, number: u32) -> Option<&'a [u8]> {
        self.tag(number, WireType::Len)?;
        self.len_payload()
    }
}

/// One field record of a message, borrowed from the message's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    number: u32,
    wire_type: WireType,
    start: usize,
    record: &'a [u8],
    value: &'a [u8],
    scalar: u64,
}

impl<'a> Field<'a> {
    /// Field number.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Wire type as encoded.
    pub fn wire_type(&self) -> WireType {
        self.wire_type
    }

    /// Byte range of the whole record (tag included) within the message.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.record.len()
    }

    /// The whole record, tag included, exactly as in the message.
    pub fn record(&self) -> &'a [u8] {
        self.record
    }

    /// The value's bytes: the varint's bytes, the 4/8 fixed bytes, the payload of a
    /// length-delimited field (without its length), or the inside of a group.
    #[cfg(test)]
    pub fn value_bytes(&self) -> &'a [u8] {
        self.value
    }

    #[inline]
    fn expect(&self, expected: WireType) -> Result<(), ProtoError> {
        if self.wire_type == expected {
            Ok(())
        } else {
            Err(ProtoError::WrongWireType {
                number: self.number,
                expected,
                found: self.wire_type,
            })
        }
    }

    /// The value of a varint field.
    #[inline]
    pub fn varint(&self) -> Result<u64, ProtoError> {
        self.expect(WireType::Varint)?;
        Ok(self.scalar)
    }

    /// A `uint64` field.
    pub fn uint64(&self) -> Result<u64, ProtoError> {
        self.varint()
    }

    /// A `uint32` field. Like C++ protobuf, only the low 32 bits of the varint count.
    pub fn uint32(&self) -> Result<u32, ProtoError> {
        Ok(self.varint()? as u32)
    }

    /// An `int32` field (low 32 bits of the varint, two's complement).
    pub fn int32(&self) -> Result<i32, ProtoError> {
        Ok(self.varint()? as u32 as i32)
    }

    /// A `bool` field (any non-zero varint is true).
    pub fn bool(&self) -> Result<bool, ProtoError> {
        Ok(self.varint()? != 0)
    }

    /// A fixed64 / sfixed64 / double field's raw 64 bits.
    pub fn fixed64(&self) -> Result<u64, ProtoError> {
        self.expect(WireType::I64)?;
        Ok(self.scalar)
    }

    /// A fixed32 / sfixed32 / float field's raw 32 bits.
    pub fn fixed32(&self) -> Result<u32, ProtoError> {
        self.expect(WireType::I32)?;
        Ok(self.scalar as u32)
    }

    /// The payload of a `bytes` or `string` field.
    #[inline]
    pub fn bytes(&self) -> Result<&'a [u8], ProtoError> {
        self.expect(WireType::Len)?;
        Ok(self.value)
    }

    /// A `string` field checked as UTF-8. (Pika's proto2 C++ code does not enforce UTF-8, so
    /// views return bytes; this is for callers that want text.)
    pub fn string(&self) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| ProtoError::InvalidUtf8 {
            number: self.number,
        })
    }

    /// The fields of a sub-message field.
    pub fn message(&self) -> Result<FieldIter<'a>, ProtoError> {
        Ok(FieldIter::new(self.bytes()?))
    }
}

/// Iterates over the field records of one message. Stops after the first error.
#[derive(Clone, Debug)]
pub struct FieldIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> FieldIter<'a> {
    /// Iterates over the fields of `buf`, which must hold exactly one message.
    pub fn new(buf: &'a [u8]) -> Self {
        FieldIter {
            buf,
            pos: 0,
            failed: false,
        }
    }

    // Forced inline: returned by value through memory, the 64-byte result costs more than the
    // parsing (store-forwarding stalls in the callers' loops).
    #[inline(always)]
    fn read_field(&mut self) -> Result<Field<'a>, ProtoError> {
        let start = self.pos;
        let (number, wire_type, after_tag) = read_tag(self.buf, start)?;
        // Varint and length-delimited fields are nearly all there is; testing them before the
        // general match avoids a jump table that mispredicts as the two alternate.
        let (value, scalar, end) = if wire_type == WireType::Varint {
            varint_value(self.buf, after_tag)?
        } else if wire_type == WireType::Len {
            len_value(self.buf, start, after_tag)?
        } else {
            self.read_rare_value(number, wire_type, start, after_tag)?
        };
        self.pos = end;
        Ok(Field {
            number,
            wire_type,
            start,
            record: &self.buf[start..end],
            value: &self.buf[value],
            scalar,
        })
    }

    /// Any value, in particular fixed-size values and groups: (value range, scalar, end of
    /// record).
    fn read_rare_value(
        &self,
        number: u32,
        wire_type: WireType,
        start: usize,
        after_tag: usize,
    ) -> Result<(Range<usize>, u64, usize), ProtoError> {
        Ok(match wire_type {
            WireType::Varint => varint_value(self.buf, after_tag)?,
            WireType::Len => len_value(self.buf, start, after_tag)?,
            WireType::I64 => {
                let raw = fixed_bytes::<8>(self.buf, start, after_tag)?;
                (
                    after_tag..after_tag + 8,
                    u64::from_le_bytes(raw),
                    after_tag + 8,
                )
            }
            WireType::I32 => {
                let raw = fixed_bytes::<4>(self.buf, start, after_tag)?;
                let v = u32::from_le_bytes(raw);
                (after_tag..after_tag + 4, u64::from(v), after_tag + 4)
            }
            WireType::StartGroup => {
                let (inner_end, end) = skip_group(self.buf, number, start, after_tag, 1)?;
                (after_tag..inner_end, 0, end)
            }
            WireType::EndGroup => {
                return Err(ProtoError::UnexpectedEndGroup { at: start, number });
            }
        })
    }
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = Result<Field<'a>, ProtoError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let result = self.read_field();
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

/// Splits a message into its field records, in wire order.
pub fn parse_message(buf: &[u8]) -> Result<Vec<Field<'_>>, ProtoError> {
    FieldIter::new(buf).collect()
}

/// A varint value after a tag: (value range, value, end of record).
#[inline]
fn varint_value(buf: &[u8], after_tag: usize) -> Result<(Range<usize>, u64, usize), ProtoError> {
    let (v, end) = read_varint(buf, after_tag)?;
    Ok((after_tag..end, v, end))
}

/// A length-delimited value after a tag: (payload range, payload length, end of record).
#[inline]
fn len_value(
    buf: &[u8],
    tag_at: usize,
    after_tag: usize,
) -> Result<(Range<usize>, u64, usize), ProtoError> {
    let (len, payload_start) = read_varint(buf, after_tag)?;
    let available = buf.len() - payload_start;
    if len > available as u64 {
        return Err(ProtoError::LengthOutOfBounds {
            at: tag_at,
            len,
            available,
        });
    }
    let end = payload_start + len as usize;
    Ok((payload_start..end, len, end))
}

#[inline]
fn read_tag(buf: &[u8], pos: usize) -> Result<(u32, WireType, usize), ProtoError> {
    let (tag, after) = read_varint(buf, pos)?;
    let number = tag >> 3;
    let wire_type = WireType::from_bits((tag & 7) as u8);
    match wire_type {
        Some(wt) if number != 0 && number <= u64::from(MAX_FIELD_NUMBER) => {
            Ok((number as u32, wt, after))
        }
        _ => Err(ProtoError::InvalidTag { at: pos, tag }),
    }
}

fn fixed_bytes<const N: usize>(
    buf: &[u8],
    tag_at: usize,
    pos: usize,
) -> Result<[u8; N], ProtoError> {
    let slice = buf.get(pos..pos + N).ok_or(ProtoError::TruncatedFixed {
        at: tag_at,
        needed: N,
        available: buf.len() - pos,
    })?;
    let mut raw = [0u8; N];
    raw.copy_from_slice(slice);
    Ok(raw)
}

/// Skips the inside of a group that started with tag `number` at `start`; returns the offset of
/// its end-group tag and the offset after that tag.
fn skip_group(
    buf: &[u8],
    number: u32,
    start: usize,
    mut pos: usize,
    depth: usize,
) -> Result<(usize, usize), ProtoError> {
    if depth > MAX_GROUP_DEPTH {
        return Err(ProtoError::GroupTooDeep { at: start });
    }
    loop {
        if pos >= buf.len() {
            return Err(ProtoError::UnterminatedGroup { at: start, number });
        }
        let tag_at = pos;
        let (inner_number, wire_type, after_tag) = read_tag(buf, pos)?;
        pos = match wire_type {
            WireType::Varint => varint_value(buf, after_tag)?.2,
            WireType::I64 => {
                fixed_bytes::<8>(buf, tag_at, after_tag)?;
                after_tag + 8
            }
            WireType::I32 => {
                fixed_bytes::<4>(buf, tag_at, after_tag)?;
                after_tag + 4
            }
            WireType::Len => len_value(buf, tag_at, after_tag)?.2,
            WireType::StartGroup => skip_group(buf, inner_number, tag_at, after_tag, depth + 1)?.1,
            WireType::EndGroup => {
                if inner_number != number {
                    return Err(ProtoError::UnexpectedEndGroup {
                        at: tag_at,
                        number: inner_number,
                    });
                }
                return Ok((tag_at, after_tag));
            }
        };
    }
}

/// Re-encodes a message from its original bytes with some fields changed.
///
/// Every record that is not replaced or removed is copied byte for byte, in its original place,
/// including fields this crate does not know. With no edits the output equals the input.
///
/// Replacements are whole records (tag included); the `set_*` helpers build them. A field that
/// is set but was absent is inserted before the first field with a higher number, which is where
/// C++ protobuf (which writes fields in number order) would have put it.
#[derive(Clone, Debug)]
pub struct MessageEditor<'a> {
    original: &'a [u8],
    fields: Vec<Field<'a>>,
    /// Parallel to `fields`: `Some(bytes)` replaces that record (`Some(empty)` removes it).
    replacements: Vec<Option<Vec<u8>>>,
    /// New records, each written just before `fields[index]` (or at the end for `fields.len()`).
    insertions: Vec<(usize, Vec<u8>)>,
}

impl<'a> MessageEditor<'a> {
    /// Parses `original` for editing.
    pub fn new(original: &'a [u8]) -> Result<Self, ProtoError> {
        let fields = parse_message(original)?;
        let replacements = vec![None; fields.len()];
        Ok(MessageEditor {
            original,
            fields,
            replacements,
            insertions: Vec::new(),
        })
    }

    /// The original fields, in wire order.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// Index of the last original occurrence of `number` (the one a parser keeps for a
    /// singular field).
    pub fn last_index(&self, number: u32) -> Option<usize> {
        self.fields.iter().rposition(|f| f.number == number)
    }

    /// Replaces the record at `index` with `record` (a complete record, tag included).
    /// Does nothing for an index out of range.
    pub fn replace_at(&mut self, index: usize, record: Vec<u8>) {
        if let Some(slot) = self.replacements.get_mut(index) {
            *slot = Some(record);
        }
    }

    /// Removes every occurrence of `number`.
    pub fn remove(&mut self, number: u32) {
        for (field, slot) in self.fields.iter().zip(self.replacements.iter_mut()) {
            if field.number == number {
                *slot = Some(Vec::new());
            }
        }
        self.insertions
            .retain(|(_, record)| record_number(record) != Some(number));
    }

    /// Sets a singular field to the given record: replaces its last occurrence and removes any
    /// earlier ones, or inserts it in field-number order when absent.
    pub fn set_record(&mut self, number: u32, record: Vec<u8>) {
        match self.last_index(number) {
            Some(last) => {
                self.remove(number);
                self.replace_at(last, record);
            }
            None => {
                self.insertions
                    .retain(|(_, existing)| record_number(existing) != Some(number));
                let before = self
                    .fields
                    .iter()
                    .position(|f| f.number > number)
                    .unwrap_or(self.fields.len());
                self.insertions.push((before, record));
                // Keep insertions at one position in field-number order.
                self.insertions
                    .sort_by_key(|(index, record)| (*index, record_number(record)));
            }
        }
    }

    /// Sets a varint field (uint32/uint64/enum/bool).
    pub fn set_varint(&mut self, number: u32, value: u64) {
        let mut record = Vec::with_capacity(varint_field_len(number, value));
        put_varint_field(&mut record, number, value);
        self.set_record(number, record);
    }

    /// Sets a `bytes`/`string`/sub-message field to `payload`.
    pub fn set_bytes(&mut self, number: u32, payload: &[u8]) {
        let mut record = Vec::with_capacity(len_field_len(number, payload.len()));
        put_len_field(&mut record, number, payload);
        self.set_record(number, record);
    }

    /// Edits the sub-message in field `number` (its last original occurrence, or an empty
    /// message when absent) and sets the field to the result.
    ///
    /// The edit starts from the original bytes: an earlier replacement of the same field in this
    /// editor is overwritten.
    pub fn edit_message<E, F>(&mut self, number: u32, edit: F) -> Result<(), E>
    where
        E: From<ProtoError>,
        F: FnOnce(&mut MessageEditor<'a>) -> Result<(), E>,
    {
        let payload: &'a [u8] = match self.last_index(number) {
            Some(index) => self.fields[index].bytes()?,
            None => &[],
        };
        let mut sub = MessageEditor::new(payload)?;
        edit(&mut sub)?;
        let sub_len = sub.encoded_len();
        let mut record = Vec::with_capacity(len_field_len(number, sub_len));
        put_len_prefix(&mut record, number, sub_len);
        sub.write_to(&mut record);
        self.set_record(number, record);
        Ok(())
    }

    /// Whether any edit was made.
    pub fn is_modified(&self) -> bool {
        !self.insertions.is_empty() || self.replacements.iter().any(Option::is_some)
    }

    /// Length of the re-encoded message.
    pub fn encoded_len(&self) -> usize {
        let kept: usize = self
            .fields
            .iter()
            .zip(&self.replacements)
            .map(|(field, replacement)| match replacement {
                Some(bytes) => bytes.len(),
                None => field.record.len(),
            })
            .sum();
        kept + self.insertions.iter().map(|(_, r)| r.len()).sum::<usize>()
    }

    /// Writes the re-encoded message.
    pub fn write_to<B: BufMut + ?Sized>(&self, out: &mut B) {
        let mut insertions = self.insertions.iter().peekable();
        for (index, (field, replacement)) in self.fields.iter().zip(&self.replacements).enumerate()
        {
            while let Some((_, record)) = insertions.next_if(|(before, _)| *before == index) {
                out.put_slice(record);
            }
            match replacement {
                Some(bytes) => out.put_slice(bytes),
                None => out.put_slice(field.record),
            }
        }
        for (_, record) in insertions {
            out.put_slice(record);
        }
    }

    /// The re-encoded message.
    pub fn to_vec(&self) -> Vec<u8> {
        if !self.is_modified() {
            return self.original.to_vec();
        }
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }
}

/// Field number of a record built by this module (for ordering insertions).
fn record_number(record: &[u8]) -> Option<u32> {
    read_tag(record, 0).ok().map(|(number, _, _)| number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn varints_round_trip_and_have_the_right_length() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&out, 0).unwrap(), (v, out.len()));
        }
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn varint_errors() {
        assert_eq!(
            read_varint(&[0x80, 0x80], 0),
            Err(ProtoError::TruncatedVarint { at: 0 })
        );
        assert_eq!(
            read_varint(&[0xff; 11], 0),
            Err(ProtoError::VarintTooLong { at: 0 })
        );
        // 10-byte varint with overflow bits: accepted, high bits dropped (as C++ does).
        let (v, end) = read_varint(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            0,
        )
        .unwrap();
        assert_eq!((v, end), (u64::MAX, 10));
    }

    #[test]
    fn int32_negative_is_ten_bytes() {
        let mut out = Vec::new();
        put_int32_field(&mut out, 6, -1);
        assert_eq!(out.len(), 11);
        let fields = parse_message(&out).unwrap();
        assert_eq!(fields[0].int32().unwrap(), -1);
    }

    #[test]
    fn parses_every_wire_type() {
        // 1: varint 150; 2: fixed64; 3: len "ab"; 4: group { 1: varint 1 }; 5: fixed32
        let msg = hex("08 9601  11 0102030405060708  1a 02 6162  23 0801 24  2d 01000000");
        let fields = parse_message(&msg).unwrap();
        let kinds: Vec<_> = fields.iter().map(|f| (f.number(), f.wire_type())).collect();
        assert_eq!(
            kinds,
            vec![
                (1, WireType::Varint),
                (2, WireType::I64),
                (3, WireType::Len),
                (4, WireType::StartGroup),
                (5, WireType::I32)
            ]
        );
        assert_eq!(fields[0].varint().unwrap(), 150);
        assert_eq!(fields[1].fixed64().unwrap(), 0x0807060504030201);
        assert_eq!(fields[2].bytes().unwrap(), b"ab");
        assert_eq!(fields[3].value_bytes(), &[0x08, 0x01]);
        assert_eq!(fields[3].record(), &[0x23, 0x08, 0x01, 0x24]);
        assert_eq!(fields[4].fixed32().unwrap(), 1);
        assert_eq!(fields[2].range(), 12..16);
        let rebuilt: Vec<u8> = fields.iter().flat_map(|f| f.record().to_vec()).collect();
        assert_eq!(rebuilt, msg);
    }

    #[test]
    fn malformed_messages_are_errors() {
        // Length beyond the body.
        assert!(matches!(
            parse_message(&hex("0a 05 6162")),
            Err(ProtoError::LengthOutOfBounds {
                at: 0,
                len: 5,
                available: 2
            })
        ));
        // Truncated varint value and truncated tag.
        assert!(matches!(
            parse_message(&hex("08 96")),
            Err(ProtoError::TruncatedVarint { at: 1 })
        ));
        assert!(matches!(
            parse_message(&hex("0801 80")),
            Err(ProtoError::TruncatedVarint { at: 2 })
        ));
        // Field number 0 and wire types 6/7.
        assert!(matches!(
            parse_message(&hex("00 01")),
            Err(ProtoError::InvalidTag { .. })
        ));
        assert!(matches!(
            parse_message(&hex("0e 01")),
            Err(ProtoError::InvalidTag { .. })
        ));
        assert!(matches!(
            parse_message(&hex("0f 01")),
            Err(ProtoError::InvalidTag { .. })
        ));
        // Truncated fixed values.
        assert!(matches!(
            parse_message(&hex("09 0102")),
            Err(ProtoError::TruncatedFixed { needed: 8, .. })
        ));
        assert!(matches!(
            parse_message(&hex("0d 01")),
            Err(ProtoError::TruncatedFixed { needed: 4, .. })
        ));
        // Groups: stray end, unterminated, mismatched end.
        assert!(matches!(
            parse_message(&hex("0c")),
            Err(ProtoError::UnexpectedEndGroup { .. })
        ));
        assert!(matches!(
            parse_message(&hex("0b 0801")),
            Err(ProtoError::UnterminatedGroup { .. })
        ));
        assert!(matches!(
            parse_message(&hex("0b 14")),
            Err(ProtoError::UnexpectedEndGroup { number: 2, .. })
        ));
        // Deeply nested groups stop at the limit instead of exhausting the stack.
        let mut deep = vec![0x0b; 200];
        deep.extend(vec![0x0c; 200]);
        assert!(matches!(
            parse_message(&deep),
            Err(ProtoError::GroupTooDeep { .. })
        ));
        // Wrong wire type for an accessor.
        let len_field = hex("0a 00");
        let fields = parse_message(&len_field).unwrap();
        assert!(matches!(
            fields[0].varint(),
            Err(ProtoError::WrongWireType {
                number: 1,
                expected: WireType::Varint,
                found: WireType::Len
            })
        ));
    }

    #[test]
    fn editor_without_edits_is_identity() {
        let msg = hex("08 04 2a 04 0801 1001 b006 05");
        let editor = MessageEditor::new(&msg).unwrap();
        assert!(!editor.is_modified());
        assert_eq!(editor.to_vec(), msg);
        assert_eq!(editor.encoded_len(), msg.len());
    }

    #[test]
    fn editor_replaces_in_place_and_keeps_unknown_fields() {
        // 1: 4, 99 (unknown): 5, 3: "x"
        let msg = hex("08 04 98 06 05 1a 01 78");
        let mut editor = MessageEditor::new(&msg).unwrap();
        editor.set_varint(1, 300);
        editor.set_bytes(3, b"yz");
        assert_eq!(editor.to_vec(), hex("08 ac02 98 06 05 1a 02 797a"));
    }

    #[test]
    fn editor_inserts_in_number_order() {
        let msg = hex("08 01 18 03 98 06 05");
        let mut editor = MessageEditor::new(&msg).unwrap();
        editor.set_varint(2, 2);
        editor.set_varint(4, 4);
        editor.set_varint(100, 7);
        assert_eq!(
            editor.to_vec(),
            hex("08 01 10 02 18 03 20 04 98 06 05 a0 06 07")
        );
        // Setting the same absent field twice keeps only the last value.
        editor.set_varint(2, 9);
        assert_eq!(
            editor.to_vec(),
            hex("08 01 10 09 18 03 20 04 98 06 05 a0 06 07")
        );
    }

    #[test]
    fn editor_collapses_duplicates_of_a_singular_field() {
        let msg = hex("08 01 10 05 08 02");
        let mut editor = MessageEditor::new(&msg).unwrap();
        editor.set_varint(1, 3);
        assert_eq!(editor.to_vec(), hex("10 05 08 03"));
        editor.remove(1);
        assert_eq!(editor.to_vec(), hex("10 05"));
    }

    #[test]
    fn editor_edits_nested_messages() {
        // 5: { 1: 0, 2: 0, 99: 1 }
        let msg = hex("08 04 2a 07 0800 1000 9806 01");
        let mut editor = MessageEditor::new(&msg).unwrap();
        editor
            .edit_message::<ProtoError, _>(5, |sub| {
                sub.set_varint(2, 159);
                sub.set_varint(4, 2);
                Ok(())
            })
            .unwrap();
        assert_eq!(editor.to_vec(), hex("08 04 2a 0a 0800 109f01 2002 9806 01"));
        // An absent sub-message is created.
        let type_only = hex("08 04");
        let mut editor = MessageEditor::new(&type_only).unwrap();
        editor
            .edit_message::<ProtoError, _>(2, |sub| {
                sub.set_varint(1, 1);
                Ok(())
            })
            .unwrap();
        assert_eq!(editor.to_vec(), hex("08 04 12 02 0801"));
        // A sub-message field with the wrong wire type is an error.
        let varint_2 = hex("10 04");
        let mut editor = MessageEditor::new(&varint_2).unwrap();
        assert!(editor.edit_message::<ProtoError, _>(2, |_| Ok(())).is_err());
    }
}
