//! The model's masters: execute client commands and return the replication entries a real
//! master of each dialect writes for them.
//!
//! - Pika 3.5.4 (`docs/pika-protocol.md#versions` and `#expiry-and-no-op-writes`): the binlog
//!   item's exec time is whole seconds, so the master runs each command at the start of its second.
//!   Relative TTLs become `pksetexat`/`expireat` with absolute seconds; conditional `SET … NX|XX`,
//!   `SETNX` and every other write are logged as sent (lower-case `setnx`), **even when they did
//!   nothing**; `MSET` and `DEL` are split per key. Pika never logs expiry.
//! - Redis 7 (`docs/redis-protocol.md#propagation`): TTLs travel as `SET k v PXAT ms` /
//!   `PEXPIREAT k ms`; writes that changed nothing propagate nothing; `GETSET` → `SET`,
//!   `INCRBYFLOAT` → `SET k v KEEPTTL`, `HINCRBYFLOAT` → `HSET`; a command that touches a
//!   logically expired key first deletes it and propagates `DEL k`, wrapped with the command's
//!   own propagation in `MULTI … EXEC`; `SELECT` precedes the first entry for another DB;
//!   [`Master::active_expire`] models the active expiry cycle.

use super::keyspace::{Effect, Failure, Keyspace, Reply};
use super::value::{DbKey, Record, State};
use super::{upper_name, Argv, ModelError, ModelErrorKind};
use crate::engine::{Dialect, PikaRelease};
use bytes::Bytes;

/// One replication entry: a command and the exec time the master attaches to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The command as it travels in the stream.
    pub argv: Argv,
    /// Exec time in ms: Pika's binlog header time (a multiple of 1000); for Redis, the instant
    /// the master executed the command.
    pub exec_ms: i64,
}

/// What one client command did on the master.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    /// The reply the client got.
    pub reply: Reply,
    /// The entries the master logged or propagated, in stream order.
    pub entries: Vec<Entry>,
}

/// A master of one dialect.
#[derive(Clone, Debug)]
pub struct Master {
    dialect: Dialect,
    pika_release: PikaRelease,
    keyspace: Keyspace,
    /// DB of the last entry written to the Redis stream (`None` before the first).
    stream_db: Option<u32>,
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn num(v: i64) -> Bytes {
    Bytes::from(v.to_string())
}

/// Whether a SET's options (from index 3) contain one of `names` (case-insensitive).
fn set_has_option(argv: &[Bytes], names: &[&str]) -> bool {
    argv.iter()
        .skip(3)
        .any(|a| names.iter().any(|n| a.eq_ignore_ascii_case(n.as_bytes())))
}

/// The value following SET option `name`, if present.
fn set_option_value<'a>(argv: &'a [Bytes], name: &str) -> Option<&'a Bytes> {
    let pos = argv
        .iter()
        .skip(3)
        .position(|a| a.eq_ignore_ascii_case(name.as_bytes()))?;
    argv.get(3 + pos + 1)
}

/// Keys a Redis command looks up (each lookup may expire the key first).
fn looked_up_keys(name: &str, argv: &[Bytes]) -> Vec<Bytes> {
    let mut keys: Vec<Bytes> = match name {
        "DEL" | "UNLINK" | "EXISTS" => argv.iter().skip(1).cloned().collect(),
        "MSET" => argv.iter().skip(1).step_by(2).cloned().collect(),
        "SMOVE" => argv.iter().skip(1).take(2).cloned().collect(),
        _ => argv.get(1).cloned().into_iter().collect(),
    };
    let mut seen = std::collections::BTreeSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    keys
}

fn is_read(name: &str) -> bool {
    matches!(name, "GET" | "EXISTS" | "HGET" | "TTL" | "PTTL")
}

impl Master {
    /// An empty master.
    pub fn new(dialect: Dialect) -> Self {
        Master {
            dialect,
            pika_release: PikaRelease::V3,
            keyspace: Keyspace::new(dialect),
            stream_db: None,
        }
    }

    /// The same (empty) master as a given Pika release: 4.0 logs INCR, INCRBY, INCRBYFLOAT and
    /// APPEND as `pksetexat k <sec or 0> <new value>` (APPEND on a missing key with an empty
    /// value), PSETEX as a millisecond `pksetexat`, PEXPIRE as `pexpireat <ms>`, and deletes a
    /// key on a client's own PEXPIREAT (its int32 cast), as the captured 4.0.1 session shows.
    pub fn with_pika_release(mut self, release: PikaRelease) -> Self {
        self.pika_release = release;
        self.keyspace = Keyspace::new(self.dialect).with_pika_release(release);
        self
    }

    /// The dialect this master writes.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Execute a client command in `db` at `t_ms`. Syntax errors and unknown commands are
    /// errors (nothing happens); errors against the data (wrong type, not an integer) are error
    /// replies that log nothing.
    pub fn execute(&mut self, db: u32, argv: &[Bytes], t_ms: i64) -> Result<Executed, ModelError> {
        let name = upper_name(argv)?;
        if matches!(
            name.as_str(),
            "MULTI" | "EXEC" | "DISCARD" | "SELECT" | "PKSETEXAT"
        ) {
            return Err(ModelError::new(
                ModelErrorKind::Rejected,
                argv,
                "client transactions, SELECT and internal commands are not modelled on masters",
            ));
        }
        match self.dialect {
            Dialect::Pika => self.execute_pika(db, &name, argv, t_ms),
            Dialect::Redis => self.execute_redis(db, &name, argv, t_ms),
        }
    }

    fn execute_pika(
        &mut self,
        db: u32,
        name: &str,
        argv: &[Bytes],
        t_ms: i64,
    ) -> Result<Executed, ModelError> {
        if db != 0 {
            return Err(ModelError::new(
                ModelErrorKind::Rejected,
                argv,
                "the Pika model has one DB (Pika replicates each DB as its own stream)",
            ));
        }
        // The binlog carries whole seconds; a 3.5 master's own view is that second too, a 4.0
        // master's is its ms clock (and its deadlines are in ms).
        let now = t_ms.div_euclid(1000) * 1000;
        let clock = match self.pika_release {
            PikaRelease::V3 => now,
            PikaRelease::V4 => t_ms,
        };
        let key = argv.get(1).cloned().unwrap_or_default();
        let was_missing = self.keyspace.live(db, &key, clock).is_none();
        let reply = match self.keyspace.exec(db, name, argv, clock) {
            Ok(effect) => effect.reply,
            Err(Failure::Failed(msg)) => {
                return Ok(Executed {
                    reply: Reply::Error(msg),
                    entries: Vec::new(),
                })
            }
            Err(f) => return Err(ModelError::from_failure(f, argv)),
        };
        let logged = match self.pika_release {
            PikaRelease::V4 => {
                let after = self.keyspace.live(db, &key, clock);
                pika_4_0_log(name, argv, t_ms, after, was_missing)
            }
            PikaRelease::V3 => None,
        };
        let logged = match name {
            // Pika logs a move as the removal and the add it made, and nothing when the source
            // lacked the member (`SMoveCmd::DoBinlog` in 3.5.4 and 4.0.x).
            "SMOVE" => Some(match reply {
                Reply::Int(1) => vec![
                    vec![b("srem"), argv[1].clone(), argv[3].clone()],
                    vec![b("sadd"), argv[2].clone(), argv[3].clone()],
                ],
                _ => Vec::new(),
            }),
            _ => logged,
        };
        let entries = logged
            .unwrap_or_else(|| pika_log(name, argv, now))
            .into_iter()
            .map(|argv| Entry { argv, exec_ms: now })
            .collect();
        Ok(Executed { reply, entries })
    }

    fn execute_redis(
        &mut self,
        db: u32,
        name: &str,
        argv: &[Bytes],
        t_ms: i64,
    ) -> Result<Executed, ModelError> {
        let mut purged: Vec<(Bytes, Record)> = Vec::new();
        for key in looked_up_keys(name, argv) {
            if let Some(rec) = self.keyspace.take_if_expired(db, &key, t_ms) {
                purged.push((key, rec));
            }
        }
        let mut ops: Vec<Argv> = purged
            .iter()
            .map(|(k, _)| vec![b("DEL"), k.clone()])
            .collect();
        let reply = match self.keyspace.exec(db, name, argv, t_ms) {
            Ok(effect) => {
                ops.extend(redis_propagation(name, argv, &effect));
                effect.reply
            }
            Err(Failure::Failed(msg)) => Reply::Error(msg),
            Err(f) => {
                // Rejected before execution: a real server looks nothing up.
                for (key, rec) in purged {
                    self.keyspace.restore(db, key, rec);
                }
                return Err(ModelError::from_failure(f, argv));
            }
        };
        let entries = self.frame_redis(db, ops, t_ms);
        Ok(Executed { reply, entries })
    }

    /// Wrap one command's propagated ops in MULTI/EXEC when there are several, and precede them
    /// with SELECT when the stream is on another DB.
    fn frame_redis(&mut self, db: u32, ops: Vec<Argv>, t_ms: i64) -> Vec<Entry> {
        if ops.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(ops.len() + 3);
        if self.stream_db != Some(db) {
            out.push(vec![b("SELECT"), num(i64::from(db))]);
            self.stream_db = Some(db);
        }
        let wrap = ops.len() > 1;
        if wrap {
            out.push(vec![b("MULTI")]);
        }
        out.extend(ops);
        if wrap {
            out.push(vec![b("EXEC")]);
        }
        out.into_iter()
            .map(|argv| Entry {
                argv,
                exec_ms: t_ms,
            })
            .collect()
    }

    /// The active expiry cycle reaching `key` at `t_ms`: a Redis master deletes a logically
    /// expired key and propagates `DEL` (with `SELECT` when needed). Pika logs nothing.
    pub fn active_expire(&mut self, db: u32, key: &[u8], t_ms: i64) -> Vec<Entry> {
        if self.dialect == Dialect::Pika {
            return Vec::new();
        }
        let key = Bytes::copy_from_slice(key);
        match self.keyspace.take_if_expired(db, &key, t_ms) {
            Some(_) => self.frame_redis(db, vec![vec![b("DEL"), key]], t_ms),
            None => Vec::new(),
        }
    }

    /// The alive record of `key` at `t_ms`.
    pub fn record_at(&self, db: u32, key: &[u8], t_ms: i64) -> Option<&Record> {
        self.keyspace.live(db, &Bytes::copy_from_slice(key), t_ms)
    }

    /// Every stored record, alive or not (a Redis master keeps expired keys until touched).
    pub fn records(&self) -> impl Iterator<Item = (&DbKey, &Record)> {
        self.keyspace.records().iter()
    }

    /// The alive keys at `t_ms`.
    pub fn state_at(&self, t_ms: i64) -> State {
        self.keyspace.state_at(t_ms)
    }

    /// The alive keys at `t_ms`, one per line.
    pub fn dump(&self, t_ms: i64) -> String {
        self.state_at(t_ms).to_string()
    }
}

/// What Pika 4.0.1 writes where it differs from 3.5.4 (`None`: the same), given the key's
/// record after the command and whether the key was missing before it.
fn pika_4_0_log(
    name: &str,
    argv: &[Bytes],
    t_ms: i64,
    after: Option<&Record>,
    was_missing: bool,
) -> Option<Vec<Argv>> {
    let int = |i: usize| super::keyspace::parse_i64(&argv[i]).unwrap_or(0);
    match name {
        "INCR" | "INCRBY" | "INCRBYFLOAT" | "APPEND" => {
            let after = after?;
            let super::value::Value::Str(value) = &after.value else {
                return None;
            };
            let ts = after.deadline_ms.map_or(0, |d| d / 1000);
            let value = if name == "APPEND" && was_missing {
                Bytes::new()
            } else {
                value.clone()
            };
            Some(vec![vec![b("pksetexat"), argv[1].clone(), num(ts), value]])
        }
        // 4.0 logs these in milliseconds. A real 4.0 master also keeps its own deadlines in
        // ms; the model keeps whole seconds (as for 3.5), so it logs its own deadline in ms.
        "PSETEX" => Some(vec![vec![
            b("pksetexat"),
            argv[1].clone(),
            num(after?.deadline_ms?),
            argv[3].clone(),
        ]]),
        "PEXPIRE" => Some(vec![vec![
            b("pexpireat"),
            argv[1].clone(),
            num(after.and_then(|r| r.deadline_ms).unwrap_or(t_ms + int(2))),
        ]]),
        "PEXPIREAT" => Some(vec![argv.to_vec()]),
        _ => None,
    }
}

/// What Pika 3.5.4 writes to the binlog for a command that did not fail (at `now`, a whole
/// second in ms).
fn pika_log(name: &str, argv: &[Bytes], now: i64) -> Vec<Argv> {
    let sec = now / 1000;
    let pksetexat = |key: &Bytes, ts: i64, value: &Bytes| {
        vec![b("pksetexat"), key.clone(), num(ts), value.clone()]
    };
    let expireat = |key: &Bytes, ts: i64| vec![b("expireat"), key.clone(), num(ts)];
    // Arity was checked by the execution that succeeded, so the indexes below exist; the
    // integer arguments parsed there too.
    let int = |i: usize| super::keyspace::parse_i64(&argv[i]).unwrap_or(0);
    match name {
        _ if is_read(name) => Vec::new(),
        "SETEX" => vec![pksetexat(&argv[1], sec + int(2), &argv[3])],
        "PSETEX" => vec![pksetexat(&argv[1], sec + int(2) / 1000, &argv[3])],
        "SET" if set_has_option(argv, &["NX", "XX"]) => vec![argv.to_vec()],
        "SET" => {
            let ttl_secs = if let Some(v) = set_option_value(argv, "EX") {
                super::keyspace::parse_i64(v)
            } else {
                set_option_value(argv, "PX")
                    .and_then(|v| super::keyspace::parse_i64(v))
                    .map(|ms| ms / 1000)
            };
            match ttl_secs {
                Some(s) => vec![pksetexat(&argv[1], sec + s, &argv[2])],
                None => vec![argv.to_vec()],
            }
        }
        "SETNX" => vec![vec![b("setnx"), argv[1].clone(), argv[2].clone()]],
        "EXPIRE" => vec![expireat(&argv[1], sec + int(2))],
        "PEXPIRE" => vec![expireat(&argv[1], sec + int(2) / 1000)],
        "PEXPIREAT" => vec![expireat(&argv[1], int(2) / 1000)],
        "MSET" => argv[1..]
            .chunks(2)
            .map(|p| vec![b("set"), p[0].clone(), p[1].clone()])
            .collect(),
        "DEL" => argv[1..]
            .iter()
            .map(|k| vec![argv[0].clone(), k.clone()])
            .collect(),
        _ => vec![argv.to_vec()],
    }
}

/// What Redis 7 propagates for a command that ran (before expiry DELs and framing).
fn redis_propagation(name: &str, argv: &[Bytes], effect: &Effect) -> Vec<Argv> {
    if !effect.dirty {
        return Vec::new();
    }
    let set_pxat = |deadline: i64| {
        vec![
            b("SET"),
            argv[1].clone(),
            argv[2].clone(),
            b("PXAT"),
            num(deadline),
        ]
    };
    match (name, effect.deadline_ms, &effect.float_result) {
        ("SET", Some(d), _) if set_has_option(argv, &["EX", "PX", "EXAT"]) => vec![set_pxat(d)],
        ("SETEX" | "PSETEX", Some(d), _) => vec![vec![
            b("SET"),
            argv[1].clone(),
            argv[3].clone(),
            b("PXAT"),
            num(d),
        ]],
        ("GETSET", _, _) => vec![vec![b("SET"), argv[1].clone(), argv[2].clone()]],
        ("INCRBYFLOAT", _, Some(v)) => {
            vec![vec![b("SET"), argv[1].clone(), v.clone(), b("KEEPTTL")]]
        }
        ("HINCRBYFLOAT", _, Some(v)) => {
            vec![vec![b("HSET"), argv[1].clone(), argv[2].clone(), v.clone()]]
        }
        ("EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT", _, _) if effect.deleted_by_expire => {
            vec![vec![b("DEL"), argv[1].clone()]]
        }
        ("EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT", Some(d), _) => {
            let mut out = vec![b("PEXPIREAT"), argv[1].clone(), num(d)];
            // The NX/XX/GT/LT flag is kept.
            out.extend(argv.get(3).cloned());
            vec![out]
        }
        _ => vec![argv.to_vec()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|a| Bytes::from(a.to_string())).collect()
    }

    fn lines(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| super::super::value::show_argv(&e.argv))
            .collect()
    }

    const T0: i64 = 1_795_470_051_707;

    #[test]
    fn pika_logs_like_3_5_4() {
        let mut m = Master::new(Dialect::Pika);
        let mut log = |cmd: &str, t: i64| lines(&m.execute(0, &argv(cmd), t).unwrap().entries);
        assert_eq!(log("SETEX k3 3 100", T0), ["pksetexat k3 1795470054 100"]);
        assert_eq!(log("SET a2 v PX 30500", T0), ["pksetexat a2 1795470081 v"]);
        assert_eq!(log("SET a3 v XX EX 30", T0), ["SET a3 v XX EX 30"]);
        assert_eq!(log("SETNX k3 w", T0), ["setnx k3 w"]);
        assert_eq!(log("PEXPIRE k3 15000", T0), ["expireat k3 1795470066"]);
        assert_eq!(
            log("PEXPIREAT k3 2000000000123", T0),
            ["expireat k3 2000000000"]
        );
        assert_eq!(log("MSET m1 1 m2 2", T0), ["set m1 1", "set m2 2"]);
        assert_eq!(log("DEL m1 nosuch", T0), ["DEL m1", "DEL nosuch"]);
        assert_eq!(log("GET m2", T0), Vec::<String>::new());
        assert_eq!(log("HINCRBY h3 n 1", T0), ["HINCRBY h3 n 1"]);
        // A move is logged as the removal and the add it made, and not at all when it moved
        // nothing (`SMoveCmd::DoBinlog`).
        log("SADD s1 m", T0);
        assert_eq!(log("SMOVE s1 s2 m", T0), ["srem s1 m", "sadd s2 m"]);
        assert_eq!(log("SMOVE s1 s2 m", T0), Vec::<String>::new());
        let e = m.execute(0, &argv("INCR m2"), T0).unwrap();
        assert_eq!(e.entries[0].exec_ms, 1_795_470_051_000);
    }

    /// The 3.5.4 capture `pika-3.5.4-noop-expire` (and 4.0.1 lid 20): EXPIRE on an absent key
    /// replies 0 and is logged anyway, as is EXPIRE on a persistent list.
    #[test]
    fn pika_logs_expire_on_an_absent_key() {
        let mut m = Master::new(Dialect::Pika);
        let t = 1_796_605_965_000;
        let e = m.execute(0, &argv("EXPIRE nosuchkey 10"), t).unwrap();
        assert_eq!(e.reply, Reply::Int(0));
        assert_eq!(lines(&e.entries), ["expireat nosuchkey 1796605975"]);
        let mut log = |cmd: &str, t: i64| lines(&m.execute(0, &argv(cmd), t).unwrap().entries);
        assert_eq!(log("RPUSH q x", t + 1000), ["RPUSH q x"]);
        assert_eq!(log("EXPIRE q 10", t + 2000), ["expireat q 1796605977"]);
    }

    #[test]
    fn redis_propagates_effects_and_expiry_deletes() {
        let mut m = Master::new(Dialect::Redis);
        let mut log = |cmd: &str, t: i64| lines(&m.execute(0, &argv(cmd), t).unwrap().entries);
        assert_eq!(
            log("SET x 5 PX 50", 1_000),
            ["SELECT 0", "SET x 5 PXAT 1050"]
        );
        assert_eq!(log("INCR x", 2_000), ["MULTI", "DEL x", "INCR x", "EXEC"]);
        assert_eq!(log("SET y 1 EX 1", 2_000), ["SET y 1 PXAT 3000"]);
        assert_eq!(log("INCRBYFLOAT y 1.5", 2_000), ["SET y 2.5 KEEPTTL"]);
        assert_eq!(log("SET y 3 NX", 2_000), Vec::<String>::new());
        assert_eq!(log("EXPIRE y 5 GT", 2_000), ["PEXPIREAT y 7000 GT"]);
        assert_eq!(log("EXPIRE y -1", 2_000), ["DEL y"]);
        assert_eq!(log("GETSET y 4", 2_000), ["SET y 4"]);
        assert_eq!(log("HINCRBYFLOAT h f 0.5", 2_000), ["HSET h f 0.5"]);
        assert_eq!(log("DEL nosuch", 2_000), Vec::<String>::new());
        assert!(m.execute(0, &argv("SET x 1 EX 1"), 2_000).is_ok());
        assert!(m.active_expire(0, b"x", 3_000).is_empty());
        assert_eq!(lines(&m.active_expire(0, b"x", 3_001)), ["DEL x"]);
        let e = m.execute(1, &argv("SET z 1"), 3_000).unwrap();
        assert_eq!(lines(&e.entries), ["SELECT 1", "SET z 1"]);
    }
}
