//! Command semantics shared by the model's masters and replicas: one keyspace that executes a
//! command at a given instant and expires keys by that instant (its own clock).
//!
//! The dialect decides precision and syntax: a Pika keyspace keeps deadlines in whole seconds
//! (relative TTLs count from the start of the current second, millisecond TTLs and absolute
//! millisecond times are truncated to seconds), knows `pksetexat`, and rejects the Redis-only
//! forms (`SET … EXAT|PXAT|KEEPTTL|GET`, `EXPIRE … NX|XX|GT|LT`). A Redis keyspace keeps
//! milliseconds and rejects `pksetexat`.
//!
//! Simplifications (documented in the module docs of [`crate::model`]): Pika keeps one keyspace
//! per type, so a string and a hash may share a name there; the model keeps one record per name,
//! and its histories never reuse a name across types.
//!
//! This module holds the records, the dialect's clock arithmetic and the dispatch by command; the
//! commands themselves live in its submodules, by the type of key they act on.

use super::value::{format_float, DbKey, Record, State, Value};
use crate::engine::{Dialect, PikaRelease};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

mod collections;
mod keys;
mod strings;

/// A command's reply, kept for readable traces.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK` (also `+QUEUED`-free acknowledgements).
    Ok,
    /// Null bulk / nil.
    Nil,
    /// Integer reply.
    Int(i64),
    /// Bulk string reply.
    Bulk(Bytes),
    /// Error reply (the command had no effect).
    Error(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("OK"),
            Reply::Nil => f.write_str("(nil)"),
            Reply::Int(i) => write!(f, "{i}"),
            Reply::Bulk(b) => write!(f, "\"{}\"", super::value::show_bytes(b)),
            Reply::Error(e) => write!(f, "(error) {e}"),
        }
    }
}

/// Why a command did not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server does not know the command.
    Unknown(String),
    /// Arity, syntax or argument range: a server rejects it before execution (a Pika replica
    /// then retries the item forever).
    Rejected(String),
    /// The command ran into the stored data (wrong type, not an integer, overflow): an error
    /// reply, no effect.
    Failed(String),
}

/// What a successful command did, as far as replication cares.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Effect {
    /// The reply.
    pub reply: Reply,
    /// True when the command changed the data set (Redis propagates only then).
    pub dirty: bool,
    /// The absolute deadline (ms) the command gave the key, when it set one.
    pub deadline_ms: Option<i64>,
    /// True when an expire command deleted the key because the time was already past.
    pub deleted_by_expire: bool,
    /// The new value of a float increment (INCRBYFLOAT, HINCRBYFLOAT).
    pub float_result: Option<Bytes>,
}

impl Effect {
    fn new(reply: Reply, dirty: bool) -> Self {
        Effect {
            reply,
            dirty,
            deadline_ms: None,
            deleted_by_expire: false,
            float_result: None,
        }
    }
}

type Exec = Result<Effect, Failure>;

fn rejected(msg: impl Into<String>) -> Failure {
    Failure::Rejected(msg.into())
}

fn wrong_type() -> Failure {
    Failure::Failed("WRONGTYPE Operation against a key holding the wrong kind of value".into())
}

fn arity(name: &str) -> Failure {
    Failure::Rejected(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

/// Parse a strict decimal i64 (optional '-', digits only).
pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    v.is_finite().then_some(v)
}

fn int_arg(b: &[u8]) -> Result<i64, Failure> {
    parse_i64(b).ok_or_else(|| rejected("value is not an integer or out of range"))
}

fn float_arg(b: &[u8]) -> Result<f64, Failure> {
    parse_f64(b).ok_or_else(|| rejected("value is not a valid float"))
}

fn int_bytes(v: i64) -> Bytes {
    Bytes::from(v.to_string())
}

/// One node's data: `(db, key) → record`, expiring by the instant each command runs at.
#[derive(Clone, Debug)]
pub(crate) struct Keyspace {
    dialect: Dialect,
    records: BTreeMap<DbKey, Record>,
    /// Applies a replication stream: an absolute expiry at exactly `now` is stored (the key is
    /// still alive at its deadline), while a master executing a client's EXPIREAT deletes it.
    replica: bool,
    /// Pika 4.0 reads the timestamps of `pksetexat` (on a replica) and `pexpireat` (on both
    /// nodes) as int32 milliseconds.
    pika_release: PikaRelease,
}

/// What Pika 4.0 makes of an absolute time in ms: `static_cast<int32_t>`, which turns every
/// current date into one in January 1970 (or before), so the key is dead at once.
fn pika_4_0_int32_ms(ms: i64) -> i64 {
    i64::from(ms as i32)
}

impl Keyspace {
    pub(crate) fn new(dialect: Dialect) -> Self {
        Keyspace {
            pika_release: PikaRelease::V3,
            replica: false,
            dialect,
            records: BTreeMap::new(),
        }
    }

    /// Every stored record, alive or not.
    pub(crate) fn records(&self) -> &BTreeMap<DbKey, Record> {
        &self.records
    }

    /// The record of `key` if it is alive at `now`.
    pub(crate) fn live(&self, db: u32, key: &Bytes, now: i64) -> Option<&Record> {
        self.records
            .get(&(db, key.clone()))
            .filter(|r| r.is_alive_at(now))
    }

    /// Remove `key` when it is stored but no longer alive at `now`; true when it did.
    pub(crate) fn remove_if_expired(&mut self, db: u32, key: &Bytes, now: i64) -> bool {
        self.take_if_expired(db, key, now).is_some()
    }

    /// Remove and return `key`'s record when it is stored but no longer alive at `now`.
    pub(crate) fn take_if_expired(&mut self, db: u32, key: &Bytes, now: i64) -> Option<Record> {
        let dk = (db, key.clone());
        match self.records.get(&dk) {
            Some(r) if !r.is_alive_at(now) => self.records.remove(&dk),
            _ => None,
        }
    }

    /// Put back a record taken by [`Keyspace::take_if_expired`].
    pub(crate) fn restore(&mut self, db: u32, key: Bytes, record: Record) {
        self.records.insert((db, key), record);
    }

    /// The alive records at `now`.
    pub(crate) fn state_at(&self, now: i64) -> State {
        State {
            keys: self
                .records
                .iter()
                .filter(|(_, r)| r.is_alive_at(now))
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
        }
    }

    /// The alive record of `key`, mutable; a stale record is dropped first (own-clock expiry).
    fn live_mut(&mut self, db: u32, key: &Bytes, now: i64) -> Option<&mut Record> {
        self.remove_if_expired(db, key, now);
        self.records.get_mut(&(db, key.clone()))
    }

    /// The alive record of `key`, created with `empty` (no TTL) when absent.
    fn live_or_create(&mut self, db: u32, key: &Bytes, now: i64, empty: Value) -> &mut Record {
        self.remove_if_expired(db, key, now);
        self.records
            .entry((db, key.clone()))
            .or_insert_with(|| Record::persistent(empty))
    }

    fn drop_if_empty(&mut self, db: u32, key: &Bytes) {
        let dk = (db, key.clone());
        if self
            .records
            .get(&dk)
            .is_some_and(|r| r.value.is_empty_aggregate())
        {
            self.records.remove(&dk);
        }
    }

    /// The alive string value and deadline of `key`; an error when it holds another type.
    fn string_at(
        &self,
        db: u32,
        key: &Bytes,
        now: i64,
    ) -> Result<Option<(Bytes, Option<i64>)>, Failure> {
        match self.live(db, key, now) {
            None => Ok(None),
            Some(Record {
                value: Value::Str(s),
                deadline_ms,
            }) => Ok(Some((s.clone(), *deadline_ms))),
            Some(_) => Err(wrong_type()),
        }
    }

    fn put_string(&mut self, db: u32, key: &Bytes, value: Bytes, deadline_ms: Option<i64>) {
        self.records.insert(
            (db, key.clone()),
            Record {
                value: Value::Str(value),
                deadline_ms,
            },
        );
    }

    /// The same keyspace, applying a replication stream.
    pub(crate) fn for_replica(dialect: Dialect) -> Self {
        Keyspace {
            replica: true,
            ..Keyspace::new(dialect)
        }
    }

    fn is_pika(&self) -> bool {
        self.dialect == Dialect::Pika
    }

    /// The same keyspace with the quirks of a Pika release.
    pub(crate) fn with_pika_release(mut self, release: PikaRelease) -> Self {
        self.pika_release = release;
        self
    }

    fn is_pika_4_0(&self) -> bool {
        self.is_pika() && self.pika_release == PikaRelease::V4
    }

    /// Deadline for a TTL of `ttl_ms` counted from `now`, at this keyspace's precision. Pika
    /// 3.5 counts whole seconds from the start of the current second and truncates ms TTLs.
    fn relative_deadline(&self, now: i64, ttl_ms: i64) -> Result<i64, Failure> {
        let overflow = || rejected("invalid expire time");
        // A Pika 4.0 master keeps its deadlines in ms from its ms clock (it logs them in whole
        // seconds: its replicas drop a key up to a second before it does).
        let ms_clock = self.is_pika_4_0() && !self.replica;
        if self.is_pika() && !ms_clock {
            let secs = ttl_ms / 1000;
            now.div_euclid(1000)
                .checked_add(secs)
                .and_then(|s| s.checked_mul(1000))
                .ok_or_else(overflow)
        } else {
            now.checked_add(ttl_ms).ok_or_else(overflow)
        }
    }

    /// An absolute time given in ms, at this keyspace's precision.
    fn absolute_ms(&self, ms: i64) -> i64 {
        if self.is_pika() {
            (ms / 1000) * 1000
        } else {
            ms
        }
    }

    fn seconds_to_ms(secs: i64) -> Result<i64, Failure> {
        secs.checked_mul(1000)
            .ok_or_else(|| rejected("invalid expire time"))
    }

    /// Execute one keyspace command (name already upper-cased) at `now`.
    pub(crate) fn exec(&mut self, db: u32, name: &str, argv: &[Bytes], now: i64) -> Exec {
        match name {
            "SET" | "SETEX" | "PSETEX" | "PKSETEXAT" | "SETNX" | "GETSET" | "GET" | "INCR"
            | "DECR" | "INCRBY" | "DECRBY" | "INCRBYFLOAT" | "APPEND" | "SETRANGE" | "MSET" => {
                self.exec_string(db, name, argv, now)
            }
            "EXISTS" | "DEL" | "UNLINK" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT"
            | "PERSIST" | "TTL" | "PTTL" | "FLUSHDB" => self.exec_key(db, name, argv, now),
            "HSET" | "HMSET" | "HSETNX" | "HINCRBY" | "HINCRBYFLOAT" | "HDEL" | "HGET"
            | "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" | "LINSERT" | "LPOP" | "RPOP" | "SADD"
            | "SREM" | "SMOVE" | "ZADD" | "ZINCRBY" | "ZREM" | "GEOADD" => {
                self.exec_collection(db, name, argv, now)
            }
            _ => Err(Failure::Unknown(name.to_ascii_lowercase())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|a| Bytes::from(a.to_string())).collect()
    }

    fn run(ks: &mut Keyspace, cmd: &str, now: i64) -> Exec {
        let a = argv(cmd);
        let name = String::from_utf8_lossy(&a[0]).to_ascii_uppercase();
        ks.exec(0, &name, &a, now)
    }

    fn key(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn geoadd_scores_are_the_servers_geohashes() {
        let mut ks = Keyspace::new(Dialect::Redis);
        // Scores read back from redis-server 7 after the same GEOADD.
        let added = run(
            &mut ks,
            "GEOADD g 13.361389 38.115556 palermo 15.087269 37.502669 catania \
             -180 -85.05112878 sw 180 85.05112878 ne",
            0,
        );
        assert!(matches!(
            added,
            Ok(Effect {
                reply: Reply::Int(4),
                ..
            })
        ));
        let Some(Record {
            value: Value::Zset(z),
            deadline_ms: None,
            ..
        }) = ks.live(0, &key("g"), 0)
        else {
            panic!("no zset");
        };
        let score = |m: &str| z.get(&key(m)).copied();
        assert_eq!(score("palermo"), Some(3_479_099_956_230_698.0));
        assert_eq!(score("catania"), Some(3_479_447_370_796_909.0));
        assert_eq!(score("sw"), Some(0.0));
        assert_eq!(score("ne"), Some(13_510_798_882_111_488.0));
        assert!(run(&mut ks, "GEOADD g 181 0 x", 0).is_err());
        assert!(run(&mut ks, "GEOADD g 1 2", 0).is_err());
    }

    #[test]
    fn pika_counts_relative_ttls_in_whole_seconds() {
        let mut ks = Keyspace::new(Dialect::Pika);
        run(&mut ks, "SET k v PX 2500", 10_700).unwrap();
        assert_eq!(ks.live(0, &key("k"), 0).unwrap().deadline_ms, Some(12_000));
        assert!(matches!(
            run(&mut ks, "SET k v PXAT 99999", 10_700),
            Err(Failure::Rejected(_))
        ));
        assert!(matches!(
            run(&mut ks, "pksetexat k 2147483647 v", 0),
            Err(Failure::Rejected(_))
        ));
        run(&mut ks, "pksetexat k 0 v", 0).unwrap();
        assert_eq!(ks.live(0, &key("k"), 0).unwrap().deadline_ms, None);
    }

    #[test]
    fn writes_on_a_stale_key_start_from_scratch() {
        let mut ks = Keyspace::new(Dialect::Pika);
        run(&mut ks, "pksetexat k 10 100", 0).unwrap();
        assert_eq!(
            run(&mut ks, "INCR k", 9_999).unwrap().reply,
            Reply::Int(101)
        );
        // Alive *at* its deadline (Pika: stale once the second is over).
        assert_eq!(
            run(&mut ks, "INCR k", 10_000).unwrap().reply,
            Reply::Int(102)
        );
        assert_eq!(run(&mut ks, "INCR k", 10_001).unwrap().reply, Reply::Int(1));
        assert_eq!(ks.live(0, &key("k"), 0).unwrap().deadline_ms, None);
    }

    #[test]
    fn expireat_in_the_past_or_on_absent_keys() {
        let mut ks = Keyspace::new(Dialect::Pika);
        assert_eq!(
            run(&mut ks, "expireat h 5", 0).unwrap().reply,
            Reply::Int(0)
        );
        run(&mut ks, "HSET h f v", 0).unwrap();
        let e = run(&mut ks, "expireat h 0", 1_000).unwrap();
        assert!(e.deleted_by_expire);
        assert!(ks.records().is_empty());
    }

    #[test]
    fn redis_expire_flags_compare_with_the_current_ttl() {
        let mut ks = Keyspace::new(Dialect::Redis);
        run(&mut ks, "SET k v PX 5000", 1_000).unwrap();
        assert!(!run(&mut ks, "PEXPIREAT k 5000 GT", 1_000).unwrap().dirty);
        assert!(run(&mut ks, "PEXPIREAT k 7000 GT", 1_000).unwrap().dirty);
        assert!(run(&mut ks, "PEXPIREAT k 3000 LT", 1_000).unwrap().dirty);
        assert_eq!(ks.live(0, &key("k"), 0).unwrap().deadline_ms, Some(3_000));
        run(&mut ks, "SET k w KEEPTTL", 2_000).unwrap();
        assert_eq!(ks.live(0, &key("k"), 0).unwrap().deadline_ms, Some(3_000));
        assert!(matches!(
            run(&mut ks, "pksetexat k 1 v", 0),
            Err(Failure::Unknown(_))
        ));
    }

    #[test]
    fn conditional_set_and_type_errors() {
        let mut ks = Keyspace::new(Dialect::Redis);
        assert!(run(&mut ks, "SET k v XX", 0).unwrap().reply == Reply::Nil);
        assert!(run(&mut ks, "SET k v NX EX 3", 0).unwrap().dirty);
        assert!(!run(&mut ks, "SET k w NX", 1).unwrap().dirty);
        run(&mut ks, "HSET h f 1", 0).unwrap();
        assert!(matches!(run(&mut ks, "INCR h", 0), Err(Failure::Failed(_))));
        assert!(matches!(
            run(&mut ks, "HINCRBY h f x", 0),
            Err(Failure::Rejected(_))
        ));
        run(&mut ks, "HSET h g abc", 0).unwrap();
        assert!(matches!(
            run(&mut ks, "HINCRBY h g 1", 0),
            Err(Failure::Failed(_))
        ));
    }

    #[test]
    fn aggregates_vanish_when_emptied() {
        let mut ks = Keyspace::new(Dialect::Redis);
        run(&mut ks, "SADD a m", 0).unwrap();
        assert_eq!(run(&mut ks, "SMOVE a b m", 0).unwrap().reply, Reply::Int(1));
        assert!(ks.live(0, &key("a"), 0).is_none());
        run(&mut ks, "RPUSH l x", 0).unwrap();
        run(&mut ks, "LPOP l", 0).unwrap();
        assert!(ks.live(0, &key("l"), 0).is_none());
        assert!(!run(&mut ks, "LPUSHX l y", 0).unwrap().dirty);
    }
}
