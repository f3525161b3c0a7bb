//! Reading a message's fields without copying: [`FieldIter`] accepts any valid layout and says
//! what is wrong with an invalid one, [`ExpectedLayout`] reads Pika's own layout faster.

use super::wire::read_varint;
use super::{ProtoError, WireType, MAX_FIELD_NUMBER};
use std::ops::Range;

/// Nesting limit for groups skipped as unknown fields (C++ protobuf's default recursion limit).
const MAX_GROUP_DEPTH: usize = 100;

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
    pub(super) number: u32,
    wire_type: WireType,
    start: usize,
    pub(super) record: &'a [u8],
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
pub(super) fn read_tag(buf: &[u8], pos: usize) -> Result<(u32, WireType, usize), ProtoError> {
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
