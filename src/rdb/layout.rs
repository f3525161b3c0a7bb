//! How each RDB value type is laid out, as a tiny program the scanner interprets to skip a value
//! without decoding it. Only structure is described (counts, strings, fixed-width fields), so a
//! value of any size is walked with a stack of at most four frames and no buffering.
//!
//! Layout facts (Redis `rdbLoadObject`, RDB versions 1–12):
//! - streams (15/19/21): listpack count, then (16-byte node key string, listpack string) per
//!   node; length, last-id ms and seq; types 19+ add first-id, max-deleted-id (ms, seq each) and
//!   entries-added; then groups: name, last-id ms and seq, types 19+ an entries-read counter; the
//!   group PEL (16-byte raw id, 8-byte delivery time, delivery count); consumers: name, 8-byte
//!   seen time, type 21 an 8-byte active time, and their PEL of 16-byte raw ids;
//! - hashes with field TTLs: 24 has an 8-byte minimum expiry, then (ttl, field, value) triples;
//!   22 (7.4 release candidates) has no minimum expiry; 25 has the minimum expiry before its
//!   listpack blob, 23 is just the blob;
//! - module values (7): module id, then opcodes ending with 0 (1/2 integer length, 3 four-byte
//!   float, 4 eight-byte double, 5 string).

/// One structural step of a value layout.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    /// A string in any encoding, skipped.
    Str,
    /// A length whose value does not matter.
    Len,
    /// Fixed-width raw bytes.
    Skip(u8),
    /// A length `n`, then the body `n` times.
    Rep(&'static [Op]),
    /// Pre-RDB-8 ZSET score: a 1-byte length then that many ASCII bytes, except that 253, 254
    /// and 255 stand for NaN, +inf and -inf with no bytes following.
    OldZsetScore,
    /// Module serialisation opcodes up to and including the 0 terminator.
    ModuleOps,
}

use Op::*;

const STRINGS: &[Op] = &[Rep(&[Str])];
const PAIRS: &[Op] = &[Rep(&[Str, Str])];
const BLOB: &[Op] = &[Str];

const STREAM_GROUP_PEL: &[Op] = &[Skip(16), Skip(8), Len];
const STREAM_CONSUMER_PEL: &[Op] = &[Skip(16)];
const STREAM_CONSUMER_V1: &[Op] = &[Str, Skip(8), Rep(STREAM_CONSUMER_PEL)];
const STREAM_CONSUMER_V3: &[Op] = &[Str, Skip(8), Skip(8), Rep(STREAM_CONSUMER_PEL)];
const STREAM_GROUP_V1: &[Op] = &[
    Str,
    Len,
    Len,
    Rep(STREAM_GROUP_PEL),
    Rep(STREAM_CONSUMER_V1),
];
const STREAM_GROUP_V2: &[Op] = &[
    Str,
    Len,
    Len,
    Len,
    Rep(STREAM_GROUP_PEL),
    Rep(STREAM_CONSUMER_V1),
];
const STREAM_GROUP_V3: &[Op] = &[
    Str,
    Len,
    Len,
    Len,
    Rep(STREAM_GROUP_PEL),
    Rep(STREAM_CONSUMER_V3),
];
const STREAM_V1: &[Op] = &[Rep(&[Str, Str]), Len, Len, Len, Rep(STREAM_GROUP_V1)];
const STREAM_V2: &[Op] = &[
    Rep(&[Str, Str]),
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Rep(STREAM_GROUP_V2),
];
const STREAM_V3: &[Op] = &[
    Rep(&[Str, Str]),
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Len,
    Rep(STREAM_GROUP_V3),
];

/// What follows a MODULE_AUX header (module id, when-opcode and when already read).
pub(crate) const MODULE_AUX_BODY: &[Op] = &[ModuleOps];

/// The layout of a value of RDB type `value_type`, or `None` when the scanner cannot walk it
/// (unknown types, and 6: pre-GA module values, which carry no length information).
pub(crate) fn value_layout(value_type: u8) -> Option<&'static [Op]> {
    Some(match value_type {
        0 => BLOB,
        1 | 2 => STRINGS,
        3 => &[Rep(&[Str, OldZsetScore])],
        4 => PAIRS,
        5 => &[Rep(&[Str, Skip(8)])],
        7 => &[Len, ModuleOps],
        // zipmap, ziplist, intset and listpack encodings are each one string blob.
        9..=13 | 16 | 17 | 20 | 23 => BLOB,
        14 => STRINGS,
        15 => STREAM_V1,
        18 => &[Rep(&[Len, Str])],
        19 => STREAM_V2,
        21 => STREAM_V3,
        22 => &[Rep(&[Len, Str, Str])],
        24 => &[Skip(8), Rep(&[Len, Str, Str])],
        25 => &[Skip(8), Str],
        _ => return None,
    })
}

/// Whether values of this type can carry per-field TTLs (Redis 7.4 hash field expiry).
pub(crate) fn has_field_ttls(value_type: u8) -> bool {
    matches!(value_type, 22..=25)
}
