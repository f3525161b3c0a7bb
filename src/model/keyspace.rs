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

use super::value::{format_float, DbKey, Record, State, Value};
use crate::engine::{Dialect, PikaRelease};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// Largest string a SETRANGE may build in the model (keeps replays of odd streams bounded).
const MAX_STRING_LEN: usize = 1 << 20;

/// Pika rejects `pksetexat` timestamps at or above this (int32 seconds).
const PIKA_MAX_TIMESTAMP: i64 = i32::MAX as i64;

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

/// Which flag an EXPIRE-family command carries (Redis 7 only).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ExpireFlag {
    None,
    Nx,
    Xx,
    Gt,
    Lt,
}

/// The expiry option of a SET.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetExpiry {
    None,
    KeepTtl,
    /// An absolute deadline in ms, already computed for this keyspace's precision.
    At(i64),
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
        let n = argv.len();
        let need = |ok: bool| if ok { Ok(()) } else { Err(arity(name)) };
        match name {
            "SET" => {
                need(n >= 3)?;
                self.set(db, argv, now)
            }
            "SETEX" | "PSETEX" => {
                need(n == 4)?;
                let ttl = int_arg(&argv[2])?;
                let ttl_ms = if name == "SETEX" {
                    ttl.checked_mul(1000)
                        .ok_or_else(|| rejected("invalid expire time"))?
                } else {
                    ttl
                };
                if ttl <= 0 || (self.is_pika() && ttl_ms < 1000) {
                    return Err(rejected(format!(
                        "invalid expire time in '{}' command",
                        name.to_ascii_lowercase()
                    )));
                }
                let deadline = self.relative_deadline(now, ttl_ms)?;
                self.put_string(db, &argv[1], argv[3].clone(), Some(deadline));
                let mut e = Effect::new(Reply::Ok, true);
                e.deadline_ms = Some(deadline);
                Ok(e)
            }
            "PKSETEXAT" => {
                if !self.is_pika() {
                    return Err(Failure::Unknown(name.to_ascii_lowercase()));
                }
                need(n == 4)?;
                let ts = int_arg(&argv[2])?;
                if ts >= PIKA_MAX_TIMESTAMP {
                    return Err(rejected("invalid timestamp (>= INT32_MAX)"));
                }
                let deadline = match ts {
                    0 => None,
                    t if t < 0 => Some(now - 1),
                    // The 4.0 replica's int32 cast: lands already expired.
                    t if self.replica && self.is_pika_4_0() => {
                        Some(pika_4_0_int32_ms(t.saturating_mul(1000)))
                    }
                    t => Some(Self::seconds_to_ms(t)?),
                };
                self.put_string(db, &argv[1], argv[3].clone(), deadline);
                let mut e = Effect::new(Reply::Ok, true);
                e.deadline_ms = deadline;
                Ok(e)
            }
            "SETNX" => {
                need(n == 3)?;
                if self.live(db, &argv[1], now).is_some() {
                    return Ok(Effect::new(Reply::Int(0), false));
                }
                self.put_string(db, &argv[1], argv[2].clone(), None);
                Ok(Effect::new(Reply::Int(1), true))
            }
            "GETSET" => {
                need(n == 3)?;
                let old = self.string_at(db, &argv[1], now)?;
                self.put_string(db, &argv[1], argv[2].clone(), None);
                let reply = old.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v));
                Ok(Effect::new(reply, true))
            }
            "GET" => {
                need(n == 2)?;
                let v = self.string_at(db, &argv[1], now)?;
                Ok(Effect::new(
                    v.map_or(Reply::Nil, |(v, _)| Reply::Bulk(v)),
                    false,
                ))
            }
            "EXISTS" => {
                need(n >= 2)?;
                let count = argv[1..]
                    .iter()
                    .filter(|k| self.live(db, k, now).is_some())
                    .count();
                Ok(Effect::new(Reply::Int(count as i64), false))
            }
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                let by = match name {
                    "INCR" => {
                        need(n == 2)?;
                        1
                    }
                    "DECR" => {
                        need(n == 2)?;
                        -1
                    }
                    "INCRBY" => {
                        need(n == 3)?;
                        int_arg(&argv[2])?
                    }
                    _ => {
                        need(n == 3)?;
                        int_arg(&argv[2])?
                            .checked_neg()
                            .ok_or_else(|| rejected("decrement would overflow"))?
                    }
                };
                let cur = self.string_at(db, &argv[1], now)?;
                let (old, deadline) = match cur {
                    None => (0, None),
                    Some((v, d)) => (
                        parse_i64(&v).ok_or_else(|| {
                            Failure::Failed("value is not an integer or out of range".into())
                        })?,
                        d,
                    ),
                };
                let new = old.checked_add(by).ok_or_else(|| {
                    Failure::Failed("increment or decrement would overflow".into())
                })?;
                self.put_string(db, &argv[1], int_bytes(new), deadline);
                Ok(Effect::new(Reply::Int(new), true))
            }
            "INCRBYFLOAT" => {
                need(n == 3)?;
                let by = float_arg(&argv[2])?;
                let cur = self.string_at(db, &argv[1], now)?;
                let (old, deadline) = match cur {
                    None => (0.0, None),
                    Some((v, d)) => (
                        parse_f64(&v)
                            .ok_or_else(|| Failure::Failed("value is not a valid float".into()))?,
                        d,
                    ),
                };
                let new = old + by;
                if !new.is_finite() {
                    return Err(Failure::Failed(
                        "increment would produce NaN or Infinity".into(),
                    ));
                }
                let text = Bytes::from(format_float(new));
                self.put_string(db, &argv[1], text.clone(), deadline);
                let mut e = Effect::new(Reply::Bulk(text.clone()), true);
                e.float_result = Some(text);
                Ok(e)
            }
            "APPEND" => {
                need(n == 3)?;
                let cur = self.string_at(db, &argv[1], now)?;
                let (mut buf, deadline) = match cur {
                    None => (Vec::new(), None),
                    Some((v, d)) => (v.to_vec(), d),
                };
                buf.extend_from_slice(&argv[2]);
                if buf.len() > MAX_STRING_LEN {
                    return Err(Failure::Failed(
                        "string exceeds maximum allowed size".into(),
                    ));
                }
                let len = buf.len() as i64;
                self.put_string(db, &argv[1], Bytes::from(buf), deadline);
                Ok(Effect::new(Reply::Int(len), true))
            }
            "SETRANGE" => {
                need(n == 4)?;
                let offset = int_arg(&argv[2])?;
                let offset =
                    usize::try_from(offset).map_err(|_| rejected("offset is out of range"))?;
                let cur = self.string_at(db, &argv[1], now)?;
                let piece = &argv[3];
                let (mut buf, deadline) = match cur {
                    None if piece.is_empty() => return Ok(Effect::new(Reply::Int(0), false)),
                    None => (Vec::new(), None),
                    Some((v, d)) => (v.to_vec(), d),
                };
                if piece.is_empty() {
                    return Ok(Effect::new(Reply::Int(buf.len() as i64), false));
                }
                let end = offset
                    .checked_add(piece.len())
                    .filter(|e| *e <= MAX_STRING_LEN)
                    .ok_or_else(|| Failure::Failed("string exceeds maximum allowed size".into()))?;
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[offset..end].copy_from_slice(piece);
                let len = buf.len() as i64;
                self.put_string(db, &argv[1], Bytes::from(buf), deadline);
                Ok(Effect::new(Reply::Int(len), true))
            }
            "MSET" => {
                need(n >= 3 && n % 2 == 1)?;
                for pair in argv[1..].chunks(2) {
                    self.put_string(db, &pair[0], pair[1].clone(), None);
                }
                Ok(Effect::new(Reply::Ok, true))
            }
            "DEL" | "UNLINK" => {
                need(n >= 2)?;
                let mut deleted = 0;
                for key in &argv[1..] {
                    if self.live_mut(db, key, now).is_some() {
                        self.records.remove(&(db, key.clone()));
                        deleted += 1;
                    }
                }
                Ok(Effect::new(Reply::Int(deleted), deleted > 0))
            }
            "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => self.expire(db, name, argv, now),
            "PERSIST" => {
                need(n == 2)?;
                match self.live_mut(db, &argv[1], now) {
                    Some(r) if r.deadline_ms.is_some() => {
                        r.deadline_ms = None;
                        Ok(Effect::new(Reply::Int(1), true))
                    }
                    _ => Ok(Effect::new(Reply::Int(0), false)),
                }
            }
            "HSET" | "HMSET" => {
                need(n >= 4 && n % 2 == 0)?;
                let rec = self.live_or_create(db, &argv[1], now, Value::Hash(BTreeMap::new()));
                let Value::Hash(h) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let mut added = 0;
                for pair in argv[2..].chunks(2) {
                    if h.insert(pair[0].clone(), pair[1].clone()).is_none() {
                        added += 1;
                    }
                }
                let reply = if name == "HSET" {
                    Reply::Int(added)
                } else {
                    Reply::Ok
                };
                Ok(Effect::new(reply, true))
            }
            "HSETNX" => {
                need(n == 4)?;
                let rec = self.live_or_create(db, &argv[1], now, Value::Hash(BTreeMap::new()));
                let Value::Hash(h) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let added = if h.contains_key(&argv[2]) {
                    false
                } else {
                    h.insert(argv[2].clone(), argv[3].clone());
                    true
                };
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(added as i64), added))
            }
            "HINCRBY" | "HINCRBYFLOAT" => {
                need(n == 4)?;
                let float = name == "HINCRBYFLOAT";
                let (by_int, by_float) = if float {
                    (0, float_arg(&argv[3])?)
                } else {
                    (int_arg(&argv[3])?, 0.0)
                };
                // Check the stored data before creating anything, so a failure leaves no trace.
                let current = match self.live(db, &argv[1], now) {
                    None => None,
                    Some(Record {
                        value: Value::Hash(h),
                        ..
                    }) => h.get(&argv[2]).cloned(),
                    Some(_) => return Err(wrong_type()),
                };
                let (text, reply, float_result) = if float {
                    let old = match &current {
                        None => 0.0,
                        Some(v) => parse_f64(v)
                            .ok_or_else(|| Failure::Failed("hash value is not a float".into()))?,
                    };
                    let new = old + by_float;
                    if !new.is_finite() {
                        return Err(Failure::Failed(
                            "increment would produce NaN or Infinity".into(),
                        ));
                    }
                    let text = Bytes::from(format_float(new));
                    (text.clone(), Reply::Bulk(text.clone()), Some(text))
                } else {
                    let old = match &current {
                        None => 0,
                        Some(v) => parse_i64(v).ok_or_else(|| {
                            Failure::Failed("hash value is not an integer".into())
                        })?,
                    };
                    let new = old.checked_add(by_int).ok_or_else(|| {
                        Failure::Failed("increment or decrement would overflow".into())
                    })?;
                    (int_bytes(new), Reply::Int(new), None)
                };
                let rec = self.live_or_create(db, &argv[1], now, Value::Hash(BTreeMap::new()));
                if let Value::Hash(h) = &mut rec.value {
                    h.insert(argv[2].clone(), text);
                }
                let mut e = Effect::new(reply, true);
                e.float_result = float_result;
                Ok(e)
            }
            "HDEL" => {
                need(n >= 3)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::Hash(h) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let removed = argv[2..].iter().filter(|f| h.remove(*f).is_some()).count() as i64;
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(removed), removed > 0))
            }
            "HGET" => {
                need(n == 3)?;
                match self.live(db, &argv[1], now) {
                    None => Ok(Effect::new(Reply::Nil, false)),
                    Some(Record {
                        value: Value::Hash(h),
                        ..
                    }) => Ok(Effect::new(
                        h.get(&argv[2])
                            .map_or(Reply::Nil, |v| Reply::Bulk(v.clone())),
                        false,
                    )),
                    Some(_) => Err(wrong_type()),
                }
            }
            "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" => {
                need(n >= 3)?;
                let only_existing = name.ends_with('X');
                if only_existing {
                    match self.live(db, &argv[1], now) {
                        None => return Ok(Effect::new(Reply::Int(0), false)),
                        Some(Record {
                            value: Value::List(_),
                            ..
                        }) => {}
                        Some(_) => return Err(wrong_type()),
                    }
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::List(VecDeque::new()));
                let Value::List(l) = &mut rec.value else {
                    return Err(wrong_type());
                };
                for v in &argv[2..] {
                    if name.starts_with('L') {
                        l.push_front(v.clone());
                    } else {
                        l.push_back(v.clone());
                    }
                }
                Ok(Effect::new(Reply::Int(l.len() as i64), true))
            }
            "LPOP" | "RPOP" => {
                need(n == 2)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Nil, false));
                };
                let Value::List(l) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let popped = if name == "LPOP" {
                    l.pop_front()
                } else {
                    l.pop_back()
                };
                self.drop_if_empty(db, &argv[1]);
                Ok(match popped {
                    Some(v) => Effect::new(Reply::Bulk(v), true),
                    None => Effect::new(Reply::Nil, false),
                })
            }
            "SADD" => {
                need(n >= 3)?;
                let rec = self.live_or_create(db, &argv[1], now, Value::Set(BTreeSet::new()));
                let Value::Set(s) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let added = argv[2..].iter().filter(|m| s.insert((*m).clone())).count() as i64;
                Ok(Effect::new(Reply::Int(added), added > 0))
            }
            "SREM" => {
                need(n >= 3)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::Set(s) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let removed = argv[2..].iter().filter(|m| s.remove(*m)).count() as i64;
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(removed), removed > 0))
            }
            "SMOVE" => {
                need(n == 4)?;
                let (src, dst, member) = (&argv[1], &argv[2], &argv[3]);
                let src_has = match self.live(db, src, now) {
                    None => false,
                    Some(Record {
                        value: Value::Set(s),
                        ..
                    }) => s.contains(member),
                    Some(_) => return Err(wrong_type()),
                };
                match self.live(db, dst, now) {
                    None
                    | Some(Record {
                        value: Value::Set(_),
                        ..
                    }) => {}
                    Some(_) => return Err(wrong_type()),
                }
                if !src_has {
                    return Ok(Effect::new(Reply::Int(0), false));
                }
                if src == dst {
                    return Ok(Effect::new(Reply::Int(1), false));
                }
                if let Some(Record {
                    value: Value::Set(s),
                    ..
                }) = self.live_mut(db, src, now)
                {
                    s.remove(member);
                }
                self.drop_if_empty(db, src);
                let rec = self.live_or_create(db, dst, now, Value::Set(BTreeSet::new()));
                if let Value::Set(s) = &mut rec.value {
                    s.insert(member.clone());
                }
                Ok(Effect::new(Reply::Int(1), true))
            }
            "ZADD" => {
                need(n >= 4 && n % 2 == 0)?;
                let mut pairs = Vec::with_capacity((n - 2) / 2);
                for pair in argv[2..].chunks(2) {
                    pairs.push((float_arg(&pair[0])?, pair[1].clone()));
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::Zset(BTreeMap::new()));
                let Value::Zset(z) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let (mut added, mut changed) = (0, false);
                for (score, member) in pairs {
                    match z.insert(member, score) {
                        None => {
                            added += 1;
                            changed = true;
                        }
                        Some(old) if old != score => changed = true,
                        Some(_) => {}
                    }
                }
                Ok(Effect::new(Reply::Int(added), changed))
            }
            "ZINCRBY" => {
                need(n == 4)?;
                let by = float_arg(&argv[2])?;
                let old = match self.live(db, &argv[1], now) {
                    None => None,
                    Some(Record {
                        value: Value::Zset(z),
                        ..
                    }) => z.get(&argv[3]).copied(),
                    Some(_) => return Err(wrong_type()),
                };
                let new = old.unwrap_or(0.0) + by;
                if !new.is_finite() {
                    return Err(Failure::Failed(
                        "resulting score is not a number (NaN)".into(),
                    ));
                }
                let rec = self.live_or_create(db, &argv[1], now, Value::Zset(BTreeMap::new()));
                if let Value::Zset(z) = &mut rec.value {
                    z.insert(argv[3].clone(), new);
                }
                let changed = old != Some(new);
                Ok(Effect::new(
                    Reply::Bulk(Bytes::from(format_float(new))),
                    changed,
                ))
            }
            "ZREM" => {
                need(n >= 3)?;
                let Some(rec) = self.live_mut(db, &argv[1], now) else {
                    return Ok(Effect::new(Reply::Int(0), false));
                };
                let Value::Zset(z) = &mut rec.value else {
                    return Err(wrong_type());
                };
                let removed = argv[2..].iter().filter(|m| z.remove(*m).is_some()).count() as i64;
                self.drop_if_empty(db, &argv[1]);
                Ok(Effect::new(Reply::Int(removed), removed > 0))
            }
            "TTL" | "PTTL" => {
                need(n == 2)?;
                let reply = match self.live(db, &argv[1], now) {
                    None => -2,
                    Some(Record {
                        deadline_ms: None, ..
                    }) => -1,
                    Some(Record {
                        deadline_ms: Some(d),
                        ..
                    }) => {
                        let left = d - now;
                        if name == "TTL" {
                            (left + 500) / 1000
                        } else {
                            left
                        }
                    }
                };
                Ok(Effect::new(Reply::Int(reply), false))
            }
            _ => Err(Failure::Unknown(name.to_ascii_lowercase())),
        }
    }

    fn set(&mut self, db: u32, argv: &[Bytes], now: i64) -> Exec {
        let (mut nx, mut xx, mut get) = (false, false, false);
        let mut expiry = SetExpiry::None;
        let mut i = 3;
        while i < argv.len() {
            let opt = argv[i].to_ascii_uppercase();
            let redis_only = matches!(opt.as_slice(), b"EXAT" | b"PXAT" | b"KEEPTTL" | b"GET");
            if redis_only && self.is_pika() {
                return Err(rejected("syntax error"));
            }
            match opt.as_slice() {
                b"NX" if !xx => nx = true,
                b"XX" if !nx => xx = true,
                b"GET" => get = true,
                b"KEEPTTL" if expiry == SetExpiry::None => expiry = SetExpiry::KeepTtl,
                b"EX" | b"PX" | b"EXAT" | b"PXAT" if expiry == SetExpiry::None => {
                    let raw = argv
                        .get(i + 1)
                        .ok_or_else(|| rejected("syntax error"))
                        .and_then(|v| int_arg(v))?;
                    i += 1;
                    let invalid = || rejected("invalid expire time in 'set' command");
                    if raw <= 0 {
                        return Err(invalid());
                    }
                    let deadline = match opt.as_slice() {
                        b"EX" => self.relative_deadline(now, Self::seconds_to_ms(raw)?)?,
                        b"PX" => {
                            if self.is_pika() && raw < 1000 {
                                return Err(invalid());
                            }
                            self.relative_deadline(now, raw)?
                        }
                        b"EXAT" => Self::seconds_to_ms(raw)?,
                        _ => self.absolute_ms(raw),
                    };
                    expiry = SetExpiry::At(deadline);
                }
                _ => return Err(rejected("syntax error")),
            }
            i += 1;
        }
        let key = &argv[1];
        let current = if get {
            self.string_at(db, key, now)?
        } else {
            self.live(db, key, now)
                .map(|r| (Bytes::new(), r.deadline_ms))
        };
        let reply_old = |c: &Option<(Bytes, Option<i64>)>| match c {
            Some((v, _)) if get => Reply::Bulk(v.clone()),
            _ if get => Reply::Nil,
            _ => Reply::Ok,
        };
        let exists = current.is_some();
        if (nx && exists) || (xx && !exists) {
            let reply = if get { reply_old(&current) } else { Reply::Nil };
            return Ok(Effect::new(reply, false));
        }
        let deadline = match expiry {
            SetExpiry::None => None,
            SetExpiry::KeepTtl => current.as_ref().and_then(|(_, d)| *d),
            SetExpiry::At(d) => Some(d),
        };
        self.put_string(db, key, argv[2].clone(), deadline);
        let mut e = Effect::new(reply_old(&current), true);
        if let SetExpiry::At(d) = expiry {
            e.deadline_ms = Some(d);
        }
        Ok(e)
    }

    fn expire(&mut self, db: u32, name: &str, argv: &[Bytes], now: i64) -> Exec {
        let n = argv.len();
        if !(n == 3 || (n == 4 && !self.is_pika())) {
            return Err(if n == 4 {
                rejected("syntax error")
            } else {
                arity(name)
            });
        }
        let flag = match argv.get(3).map(|f| f.to_ascii_uppercase()) {
            None => ExpireFlag::None,
            Some(f) => match f.as_slice() {
                b"NX" => ExpireFlag::Nx,
                b"XX" => ExpireFlag::Xx,
                b"GT" => ExpireFlag::Gt,
                b"LT" => ExpireFlag::Lt,
                _ => return Err(rejected("unsupported option")),
            },
        };
        let raw = int_arg(&argv[2])?;
        let when = match name {
            "EXPIRE" => self.relative_deadline(now, Self::seconds_to_ms(raw)?)?,
            "PEXPIRE" => self.relative_deadline(now, raw)?,
            "EXPIREAT" => Self::seconds_to_ms(raw)?,
            _ if self.is_pika_4_0() => pika_4_0_int32_ms(raw),
            _ => self.absolute_ms(raw),
        };
        let key = &argv[1];
        let pika = self.is_pika();
        let replica = self.replica;
        let Some(rec) = self.live_mut(db, key, now) else {
            return Ok(Effect::new(Reply::Int(0), false));
        };
        let current = rec.deadline_ms;
        let allowed = match flag {
            ExpireFlag::None => true,
            ExpireFlag::Nx => current.is_none(),
            ExpireFlag::Xx => current.is_some(),
            // A key without TTL counts as an infinite TTL.
            ExpireFlag::Gt => current.is_some_and(|c| when > c),
            ExpireFlag::Lt => current.is_none_or(|c| when < c),
        };
        if !allowed {
            return Ok(Effect::new(Reply::Int(0), false));
        }
        // A relative TTL ≤ 0 deletes on both servers, and Redis deletes for an absolute time at
        // or before now (checkAlreadyExpired). Pika deletes for ts ≤ 0 and otherwise stores the
        // timestamp: a key is stale only once its second is over, which no reader can tell
        // from a deleted one.
        let relative = matches!(name, "EXPIRE" | "PEXPIRE");
        let deletes = if relative || (!pika && !replica) {
            when <= now
        } else if !pika {
            when < now
        } else {
            raw <= 0 || when < now
        };
        if deletes {
            self.records.remove(&(db, key.clone()));
            let mut e = Effect::new(Reply::Int(1), true);
            e.deleted_by_expire = true;
            return Ok(e);
        }
        rec.deadline_ms = Some(when);
        let mut e = Effect::new(Reply::Int(1), true);
        e.deadline_ms = Some(when);
        Ok(e)
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
