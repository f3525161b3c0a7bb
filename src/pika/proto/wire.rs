//! The wire's building blocks: varints, tags and single field records, read and written the way
//! C++ protobuf does.

use super::{ProtoError, WireType};
use bytes::BufMut;

/// Longest varint: 10 bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

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
