//! Classification of replication-stream commands: which rule handles a command, its family
//! and its arity. Command names are matched case-insensitively without allocating.

use crate::families::Family;
use std::sync::OnceLock;

/// The rule a command falls under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Select,
    Multi,
    Exec,
    Discard,
    /// Known commands that touch no key's TTL (PING, PUBLISH, REPLCONF, LSET…).
    NoOp,
    Counter,
    AppendLike,
    HashWrite,
    ListPush,
    ListPushIfExists,
    SetAdd,
    SetMove,
    ZsetWrite,
    Set,
    SetNx,
    SetEx,
    PSetEx,
    GetSet,
    MSet,
    MSetNx,
    PkSetExAt,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    GetEx,
    Persist,
    Del,
    Rename,
    RenameNx,
    Move,
    Copy,
    SwapDb,
    FlushDb,
    FlushAll,
    Restore,
    Removal,
    StoreInto,
    PopPush,
}

/// (name, rule, minimum argc, maximum argc or 0 for unbounded), argc counting the name.
const COMMANDS: &[(&str, Cmd, usize, usize)] = &[
    ("select", Cmd::Select, 2, 2),
    ("multi", Cmd::Multi, 1, 1),
    ("exec", Cmd::Exec, 1, 1),
    ("discard", Cmd::Discard, 1, 1),
    ("ping", Cmd::NoOp, 1, 2),
    ("publish", Cmd::NoOp, 3, 3),
    ("spublish", Cmd::NoOp, 3, 3),
    ("replconf", Cmd::NoOp, 1, 0),
    ("function", Cmd::NoOp, 2, 0),
    ("script", Cmd::NoOp, 2, 0),
    ("lset", Cmd::NoOp, 4, 4),
    ("incr", Cmd::Counter, 2, 2),
    ("decr", Cmd::Counter, 2, 2),
    ("incrby", Cmd::Counter, 3, 3),
    ("decrby", Cmd::Counter, 3, 3),
    ("incrbyfloat", Cmd::Counter, 3, 3),
    ("append", Cmd::AppendLike, 3, 3),
    ("setrange", Cmd::AppendLike, 4, 4),
    ("setbit", Cmd::AppendLike, 4, 4),
    ("pfadd", Cmd::AppendLike, 2, 0),
    ("hset", Cmd::HashWrite, 4, 0),
    ("hmset", Cmd::HashWrite, 4, 0),
    ("hsetnx", Cmd::HashWrite, 4, 4),
    ("hincrby", Cmd::HashWrite, 4, 4),
    ("hincrbyfloat", Cmd::HashWrite, 4, 4),
    ("lpush", Cmd::ListPush, 3, 0),
    ("rpush", Cmd::ListPush, 3, 0),
    ("linsert", Cmd::ListPush, 5, 5),
    ("lpushx", Cmd::ListPushIfExists, 3, 0),
    ("rpushx", Cmd::ListPushIfExists, 3, 0),
    ("sadd", Cmd::SetAdd, 3, 0),
    ("smove", Cmd::SetMove, 4, 4),
    ("zadd", Cmd::ZsetWrite, 4, 0),
    ("zincrby", Cmd::ZsetWrite, 4, 4),
    ("geoadd", Cmd::ZsetWrite, 5, 0),
    ("set", Cmd::Set, 3, 0),
    ("setnx", Cmd::SetNx, 3, 3),
    ("setex", Cmd::SetEx, 4, 4),
    ("psetex", Cmd::PSetEx, 4, 4),
    ("getset", Cmd::GetSet, 3, 3),
    ("mset", Cmd::MSet, 3, 0),
    ("msetnx", Cmd::MSetNx, 3, 0),
    ("pksetexat", Cmd::PkSetExAt, 4, 4),
    ("expire", Cmd::Expire, 3, 4),
    ("pexpire", Cmd::PExpire, 3, 4),
    ("expireat", Cmd::ExpireAt, 3, 4),
    ("pexpireat", Cmd::PExpireAt, 3, 4),
    ("getex", Cmd::GetEx, 2, 4),
    ("persist", Cmd::Persist, 2, 2),
    ("del", Cmd::Del, 2, 0),
    ("unlink", Cmd::Del, 2, 0),
    ("getdel", Cmd::Del, 2, 2),
    ("rename", Cmd::Rename, 3, 3),
    ("renamenx", Cmd::RenameNx, 3, 3),
    ("move", Cmd::Move, 3, 3),
    ("copy", Cmd::Copy, 3, 6),
    ("swapdb", Cmd::SwapDb, 3, 3),
    ("flushdb", Cmd::FlushDb, 1, 2),
    ("flushall", Cmd::FlushAll, 1, 2),
    ("restore", Cmd::Restore, 4, 0),
    ("hdel", Cmd::Removal, 3, 0),
    ("srem", Cmd::Removal, 3, 0),
    ("spop", Cmd::Removal, 2, 3),
    ("lpop", Cmd::Removal, 2, 3),
    ("rpop", Cmd::Removal, 2, 3),
    ("lrem", Cmd::Removal, 4, 4),
    ("ltrim", Cmd::Removal, 4, 4),
    ("zrem", Cmd::Removal, 3, 0),
    ("zpopmin", Cmd::Removal, 2, 3),
    ("zpopmax", Cmd::Removal, 2, 3),
    ("zremrangebyscore", Cmd::Removal, 4, 4),
    ("zremrangebyrank", Cmd::Removal, 4, 4),
    ("zremrangebylex", Cmd::Removal, 4, 4),
    ("sinterstore", Cmd::StoreInto, 3, 0),
    ("sunionstore", Cmd::StoreInto, 3, 0),
    ("sdiffstore", Cmd::StoreInto, 3, 0),
    ("zunionstore", Cmd::StoreInto, 4, 0),
    ("zinterstore", Cmd::StoreInto, 4, 0),
    ("zdiffstore", Cmd::StoreInto, 4, 0),
    ("zrangestore", Cmd::StoreInto, 5, 0),
    ("rpoplpush", Cmd::PopPush, 3, 3),
    ("lmove", Cmd::PopPush, 5, 5),
];

/// Longest command name in [`COMMANDS`].
const MAX_NAME: usize = 16;

/// Find the rule for a command name (any case).
pub fn classify(name: &[u8]) -> Option<Cmd> {
    spec(name).map(|s| s.cmd)
}

/// A known command: its rule and its arity (argument count including the name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The rule.
    pub cmd: Cmd,
    min: usize,
    /// 0 for no upper bound.
    max: usize,
}

impl Spec {
    /// Whether `argc` arguments (the name included) are a valid call.
    pub fn arity_ok(&self, argc: usize) -> bool {
        argc >= self.min && (self.max == 0 || argc <= self.max)
    }
}

/// The rule and arity of a command name (any case). Every entry of the stream asks, so the
/// name is read as two lowercased words and found in an open-addressed table of them: no
/// per-byte loop, no general-purpose hasher, one comparison of two words on a hit.
pub fn spec(name: &[u8]) -> Option<Spec> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let words = name_words(name);
    let table = by_name();
    let mut at = slot_of(words);
    loop {
        match &table[at] {
            Some(entry) if entry.words == words && entry.len == name.len() => {
                return Some(entry.spec)
            }
            Some(_) => at = (at + 1) % SLOTS,
            None => return None,
        }
    }
}

/// Slots of the name table (a power of two, over three times the number of names).
const SLOTS: usize = 256;

/// A command name as two little-endian words of its lowercased bytes, zero-padded.
type NameWords = (u64, u64);

#[derive(Clone, Copy, Debug)]
struct NameEntry {
    words: NameWords,
    /// The name's length (a name ending in NUL bytes has the words of a shorter one).
    len: usize,
    spec: Spec,
}

fn name_words(name: &[u8]) -> NameWords {
    let mut bytes = [0u8; MAX_NAME];
    bytes[..name.len()].copy_from_slice(name);
    let (low, high) = bytes.split_at(8);
    let low = u64::from_le_bytes(low.try_into().unwrap_or_default());
    let high = u64::from_le_bytes(high.try_into().unwrap_or_default());
    (ascii_lowercase_word(low), ascii_lowercase_word(high))
}

/// `to_ascii_lowercase` on the eight bytes of `word` at once: bytes `A`..=`Z` get bit 5 set,
/// every other byte (non-ASCII included) is left alone.
fn ascii_lowercase_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    let low7 = word & !HIGH;
    // Per byte, no carry between bytes: the high bit is set when the byte is at least `A`,
    // respectively past `Z`.
    let from_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let past_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = from_a & !past_z & !word & HIGH;
    word | (upper >> 2)
}

fn slot_of((low, high): NameWords) -> usize {
    ((low ^ high.rotate_left(31)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SLOTS
}

fn by_name() -> &'static [Option<NameEntry>; SLOTS] {
    static BY_NAME: OnceLock<[Option<NameEntry>; SLOTS]> = OnceLock::new();
    BY_NAME.get_or_init(|| {
        let mut table = [None; SLOTS];
        for &(name, cmd, min, max) in COMMANDS {
            let entry = NameEntry {
                words: name_words(name.as_bytes()),
                len: name.len(),
                spec: Spec { cmd, min, max },
            };
            let mut at = slot_of(entry.words);
            while table[at].is_some() {
                at = (at + 1) % SLOTS;
            }
            table[at] = Some(entry);
        }
        table
    })
}

impl Cmd {
    /// Whether the command writes its first key keeping that key's TTL, creating it without
    /// one when missing (INCR, APPEND, HSET, RPUSH, SADD, ZADD…): the writes the engine follows
    /// with the key's deadline.
    pub fn keeps_ttl(self) -> bool {
        matches!(
            self,
            Cmd::Counter
                | Cmd::AppendLike
                | Cmd::HashWrite
                | Cmd::ListPush
                | Cmd::SetAdd
                | Cmd::ZsetWrite
        )
    }

    /// Whether the command writes the string under its key (MSET: under each of its keys);
    /// Pika 3.x keeps other types beside it.
    pub fn writes_string(self) -> bool {
        matches!(
            self,
            Cmd::Counter
                | Cmd::AppendLike
                | Cmd::Set
                | Cmd::SetNx
                | Cmd::SetEx
                | Cmd::PSetEx
                | Cmd::GetSet
                | Cmd::MSet
                | Cmd::MSetNx
                | Cmd::PkSetExAt
                | Cmd::GetEx
        )
    }

    /// The family whose switch governs this command's rewrites.
    pub fn family(self) -> Option<Family> {
        Some(match self {
            Cmd::Counter => Family::StringCounter,
            Cmd::AppendLike => Family::StringAppend,
            Cmd::Set | Cmd::SetNx | Cmd::GetSet => Family::StringSet,
            Cmd::SetEx
            | Cmd::PSetEx
            | Cmd::Expire
            | Cmd::PExpire
            | Cmd::ExpireAt
            | Cmd::PExpireAt
            | Cmd::GetEx
            | Cmd::Persist
            | Cmd::PkSetExAt
            | Cmd::Rename
            | Cmd::RenameNx => Family::Expire,
            Cmd::HashWrite => Family::Hash,
            Cmd::ListPush | Cmd::ListPushIfExists | Cmd::PopPush => Family::List,
            Cmd::SetAdd | Cmd::SetMove => Family::Set,
            Cmd::ZsetWrite => Family::Zset,
            _ => return None,
        })
    }
}

/// Arity of a command by name, for validating what the engine emits.
pub fn arity_ok(name: &[u8], argc: usize) -> bool {
    spec(name).is_some_and(|s| s.arity_ok(argc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_listed_once() {
        assert_eq!(by_name().iter().flatten().count(), COMMANDS.len());
        let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
        for &(name, cmd, ..) in COMMANDS {
            assert_eq!(
                classify(name.to_uppercase().as_bytes()),
                Some(cmd),
                "{name}"
            );
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(classify(b"INCR"), Some(Cmd::Counter));
        assert_eq!(classify(b"incr"), Some(Cmd::Counter));
        assert_eq!(classify(b"PkSetExAt"), Some(Cmd::PkSetExAt));
        assert_eq!(classify(b"nosuchcommand"), None);
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"zremrangebyscore"), Some(Cmd::Removal));
        assert_eq!(classify(b"ZREMRANGEBYSCORE"), Some(Cmd::Removal));
        assert_eq!(classify(b"zremrangebyscorex"), None);
        assert_eq!(classify(b"incr\0"), None);
        assert_eq!(classify(b"inc"), None);
        assert_eq!(classify(b"in\xc3r"), None, "not ASCII");
        assert_eq!(classify(b"zremrangebyrank\xf8"), None);
        assert_eq!(classify(b"INCR\0\0\0\0\0\0\0\0\0\0\0\0"), None);
    }

    #[test]
    fn lowercasing_a_word_matches_the_standard_library() {
        for byte in 0..=255u8 {
            let word = u64::from_le_bytes([byte, b'A', b'z', 0xff, b'@', b'[', b'`', b'{']);
            let expected = u64::from_le_bytes(
                [byte, b'A', b'z', 0xff, b'@', b'[', b'`', b'{'].map(|b| b.to_ascii_lowercase()),
            );
            assert_eq!(ascii_lowercase_word(word), expected, "{byte:#x}");
            let spread = u64::from_le_bytes([byte; 8]);
            assert_eq!(
                ascii_lowercase_word(spread),
                u64::from_le_bytes([byte.to_ascii_lowercase(); 8])
            );
        }
    }

    #[test]
    fn every_name_fits_the_buffer() {
        for (name, ..) in COMMANDS {
            assert!(name.len() <= MAX_NAME, "{name}");
            assert_eq!(name.to_ascii_lowercase(), *name);
        }
    }

    #[test]
    fn arity() {
        assert!(arity_ok(b"expireat", 3));
        assert!(!arity_ok(b"expireat", 2));
        assert!(arity_ok(b"pksetexat", 4));
        assert!(!arity_ok(b"pksetexat", 5));
        assert!(arity_ok(b"SET", 7));
        assert!(!arity_ok(b"SET", 2));
        assert!(!arity_ok(b"APPEND", 4));
    }
}
