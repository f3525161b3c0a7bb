//! Classification of replication-stream commands: which rule handles a command, its family
//! and its arity. Command names are matched case-insensitively without allocating.

use crate::families::Family;
use std::collections::HashMap;
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

/// The rule and arity of a command name (any case); one hash lookup, since every entry of the
/// stream asks (a scan of the command table cost more than the rest of a pass-through decision).
pub fn spec(name: &[u8]) -> Option<Spec> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    let mut lower = [0u8; MAX_NAME];
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    by_name().get(&lower[..name.len()]).copied()
}

fn by_name() -> &'static HashMap<&'static [u8], Spec, foldhash::fast::FixedState> {
    static BY_NAME: OnceLock<HashMap<&'static [u8], Spec, foldhash::fast::FixedState>> =
        OnceLock::new();
    BY_NAME.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|&(name, cmd, min, max)| (name.as_bytes(), Spec { cmd, min, max }))
            .collect()
    })
}

impl Cmd {
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
        assert_eq!(by_name().len(), COMMANDS.len());
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
