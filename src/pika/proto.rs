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
//!
//! The reader, the editor and the single-field encoding each have their own submodule; this
//! module holds the wire types and errors they share.

use std::fmt;

mod editor;
mod reader;
mod wire;

pub use editor::MessageEditor;
pub use reader::{parse_message, ExpectedLayout, Field, FieldIter};
pub use wire::{
    int32_as_varint, len_field_len, put_bool_field, put_int32_field, put_len_field, put_len_prefix,
    put_tag, put_varint, put_varint_field, read_varint, tag_len, varint_field_len, varint_len,
};

/// Largest field number protobuf allows (2^29 - 1).
pub const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

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

#[cfg(test)]
mod tests;
