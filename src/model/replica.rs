//! The model's replicas: apply stream entries at the replica's own time and expire keys by the
//! replica's own clock.
//!
//! That is Pika's behaviour (`docs/pika-protocol.md#expiry-and-no-op-writes`). For the Redis
//! dialect it models a target that also expires by its own clock (kvrocks, a Pika fed by a Redis
//! stream, a promoted replica; `docs/redis-protocol.md#replica-expiry`): a real Redis replica waits
//! for the master's DEL instead and does not need the rewrite. So `SET k v NX EX s` counts from the
//! replica's apply time, and a write on a key whose deadline has passed on the replica's clock
//! starts from an absent key.

use super::keyspace::Keyspace;
use super::value::{DbKey, Record, State};
use super::{upper_name, Argv, ModelError, ModelErrorKind};
use crate::engine::{Dialect, PikaRelease};
use bytes::Bytes;

/// Highest DB index a Redis-dialect replica accepts in SELECT.
const MAX_DB: i64 = 15;

/// A replica of one dialect.
#[derive(Clone, Debug)]
pub struct Replica {
    dialect: Dialect,
    release: PikaRelease,
    keyspace: Keyspace,
    db: u32,
    /// Commands queued since MULTI (Redis dialect), applied together at EXEC.
    queued: Option<Vec<Argv>>,
}

impl Replica {
    /// An empty replica.
    pub fn new(dialect: Dialect) -> Self {
        Replica {
            dialect,
            release: PikaRelease::V3,
            keyspace: Keyspace::for_replica(dialect),
            db: 0,
            queued: None,
        }
    }

    /// The same (empty) replica as a given Pika release (4.0 misreads `pksetexat` and
    /// `pexpireat` timestamps as int32 milliseconds).
    pub fn with_pika_release(mut self, release: PikaRelease) -> Self {
        self.keyspace = Keyspace::for_replica(self.dialect).with_pika_release(release);
        self.release = release;
        self
    }

    /// The dialect this replica understands.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// True between a MULTI and its EXEC/DISCARD.
    pub fn in_transaction(&self) -> bool {
        self.queued.is_some()
    }

    /// The DB the next command applies to.
    pub fn selected_db(&self) -> u32 {
        self.db
    }

    /// Apply one stream command at `at_ms` (the replica's clock). A command that fails leaves
    /// the data unchanged; a transaction applies every queued command at the EXEC's time and
    /// reports the first failure after applying the rest, as a server does.
    pub fn apply(&mut self, argv: &[Bytes], at_ms: i64) -> Result<(), ModelError> {
        let name = upper_name(argv)?;
        let redis = self.dialect == Dialect::Redis;
        match name.as_str() {
            "MULTI" | "EXEC" | "DISCARD" if !redis => Err(ModelError::new(
                ModelErrorKind::UnknownCommand,
                argv,
                "Pika 3.5 has no transactions",
            )),
            "MULTI" if self.queued.is_some() => Err(ModelError::new(
                ModelErrorKind::Rejected,
                argv,
                "MULTI calls can not be nested",
            )),
            "MULTI" => {
                self.queued = Some(Vec::new());
                Ok(())
            }
            "EXEC" | "DISCARD" => {
                let Some(queued) = self.queued.take() else {
                    return Err(ModelError::new(
                        ModelErrorKind::Rejected,
                        argv,
                        "EXEC/DISCARD without MULTI",
                    ));
                };
                if name == "DISCARD" {
                    return Ok(());
                }
                let mut first_error = None;
                for cmd in &queued {
                    if let Err(e) = self.apply_one(cmd, at_ms) {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            _ if self.queued.is_some() => {
                if let Some(q) = self.queued.as_mut() {
                    q.push(argv.to_vec());
                }
                Ok(())
            }
            _ => self.apply_one(argv, at_ms),
        }
    }

    fn apply_one(&mut self, argv: &[Bytes], at_ms: i64) -> Result<(), ModelError> {
        let name = upper_name(argv)?;
        match name.as_str() {
            "PING" => Ok(()),
            "SELECT" if self.dialect == Dialect::Pika => Err(ModelError::new(
                ModelErrorKind::Rejected,
                argv,
                "a Pika binlog item carries its DB; SELECT does not belong in it",
            )),
            "SELECT" => {
                let db = argv
                    .get(1)
                    .filter(|_| argv.len() == 2)
                    .and_then(|a| super::keyspace::parse_i64(a))
                    .filter(|d| (0..=MAX_DB).contains(d))
                    .ok_or_else(|| {
                        ModelError::new(ModelErrorKind::Rejected, argv, "DB index is out of range")
                    })?;
                self.db = db as u32;
                Ok(())
            }
            _ => match self.keyspace.exec(self.db, &name, argv, at_ms) {
                Ok(_) => Ok(()),
                Err(f) => Err(ModelError::from_failure(f, argv)),
            },
        }
    }

    /// Replace the whole data set with `snapshot` (a full sync: Pika copies the master's
    /// files, TTLs included, so the replica starts from the master's keys at that instant).
    pub fn load_full_sync(&mut self, snapshot: &State) {
        self.keyspace = Keyspace::for_replica(self.dialect).with_pika_release(self.release);
        for ((db, key), record) in &snapshot.keys {
            self.keyspace.restore(*db, key.clone(), record.clone());
        }
        self.queued = None;
    }

    /// The alive record of `key` at `t_ms`.
    pub fn record_at(&self, db: u32, key: &[u8], t_ms: i64) -> Option<&Record> {
        self.keyspace.live(db, &Bytes::copy_from_slice(key), t_ms)
    }

    /// Every stored record, alive or not.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<Bytes> {
        s.split(' ').map(|a| Bytes::from(a.to_string())).collect()
    }

    #[test]
    fn late_incr_on_pika_makes_a_permanent_key() {
        let mut r = Replica::new(Dialect::Pika);
        r.apply(&argv("pksetexat k3 1795470054 100"), 1_795_470_051_750)
            .unwrap();
        r.apply(&argv("INCR k3"), 1_795_470_059_596).unwrap();
        let rec = r.record_at(0, b"k3", i64::MAX).unwrap();
        assert_eq!(rec.deadline_ms, None);
        assert_eq!(r.dump(0), "db0 k3 = \"1\" (no expiry)\n");
    }

    #[test]
    fn relative_set_nx_counts_from_the_apply_time() {
        let mut r = Replica::new(Dialect::Pika);
        r.apply(&argv("SET s3 abc EX 4 NX"), 1_795_470_059_641)
            .unwrap();
        assert_eq!(
            r.record_at(0, b"s3", 0).unwrap().deadline_ms,
            Some(1_795_470_063_000)
        );
    }

    #[test]
    fn transactions_apply_at_exec_and_pika_rejects_them() {
        let mut r = Replica::new(Dialect::Redis);
        r.apply(&argv("SELECT 1"), 0).unwrap();
        r.apply(&argv("MULTI"), 0).unwrap();
        r.apply(&argv("SET k v PXAT 100"), 0).unwrap();
        assert!(r.record_at(1, b"k", 0).is_none());
        assert!(r.apply(&argv("MULTI"), 0).is_err());
        r.apply(&argv("EXEC"), 50).unwrap();
        assert_eq!(r.record_at(1, b"k", 100).unwrap().deadline_ms, Some(100));
        assert!(r.record_at(1, b"k", 101).is_none());
        let mut p = Replica::new(Dialect::Pika);
        let err = p.apply(&argv("MULTI"), 0).unwrap_err();
        assert_eq!(err.kind, ModelErrorKind::UnknownCommand);
        let err = p.apply(&argv("SET k v KEEPTTL"), 0).unwrap_err();
        assert_eq!(err.kind, ModelErrorKind::Rejected);
    }

    #[test]
    fn failures_keep_the_data_and_name_the_key() {
        let mut r = Replica::new(Dialect::Redis);
        r.apply(&argv("SET k abc"), 0).unwrap();
        let err = r.apply(&argv("INCR k"), 0).unwrap_err();
        assert_eq!(err.kind, ModelErrorKind::Failed);
        assert_eq!(err.key().map(|k| &k[..]), Some(&b"k"[..]));
        assert_eq!(r.dump(0), "db0 k = \"abc\" (no expiry)\n");
    }
}
