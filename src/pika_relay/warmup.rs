//! Warm-up: learning the TTLs of keys that existed before the relay saw the stream, by scanning
//! the master over its client port P (`SCAN` + pipelined `PTTL`, rate-limited).
//!
//! # The race with the live stream
//!
//! The scan takes time while the master keeps writing. A `PTTL` answer describes the master at
//! some binlog position between `B0` (the master's `binlog_offset` read just before the first
//! `SCAN`) and `B1` (read just after the last reply). So:
//!
//! * the result is merged only once the link has forwarded every item up to `B1`; merging earlier
//!   would let an entry between the link's position and `B1` be judged against a state that
//!   already includes its own effect (e.g. a `SET … NX` judged as failing because the scan saw the
//!   key it created);
//! * every key written by an entry that ends after `B0` is left out of the merge and stays
//!   whatever the stream made of it (usually unknown), because the scan may have read it before
//!   or after that entry. Entries ending at or before `B0` were in the master's data before the
//!   first `SCAN`, so the scan's answer already includes them: their keys take the scan's
//!   answer like untouched keys (a key the stream could not decide and the scan did not list
//!   is absent). That matters after a full sync: Pika 3.5 serves a second replica the dump it
//!   made for the first one, so the link replays the binlog from that old dump's position while
//!   the scan runs, and every key of the replayed history would otherwise stay unknown;
//! * keys the stream already knows exactly keep the stream's answer. A 3.x master answers
//!   `PTTL` as (deadline second − its clock's second) × 1000, so each batch of `PTTL`s is asked
//!   between two `TIME`s and its deadlines put at that second (asked again when the two straddle
//!   a second; after three tries its volatile keys are left unknown). On 4.0 deadlines are
//!   `PTTL` added to the master's clock (read with `TIME` at the start).
//!
//! After the merge the table's baseline becomes "absent": a key that the scan did not list and
//! the stream did not touch does not exist. That needs every key the scan saw, including those
//! without a TTL; past [`PikaRelayConfig::warmup_max_keys`] of those the scan keeps only the
//! volatile keys and the baseline becomes "not volatile" (no TTL, existence unknown), which is
//! logged: an EXPIRE and a later write on such a key is then passed as `unknown_key`.
//!
//! For each collection the scan also reads what is in it (one member of a set or zset, one
//! field of a hash, a list's length; see [`witnesses_of`]), so that a removal of something else
//! after the merge keeps the key known, as it does for collections the stream wrote.
//!
//! # Cost
//!
//! Two more pipelined rounds per `SCAN` page (`TYPE`, then one probe per collection). Each key
//! the table holds costs 44–69 bytes, plus its key bytes when longer than 22 (measured by
//! `benches/table.rs`), per upstream link, and about as much again in
//! the scan buffer until the merge. Time is bound by `PTTL` round trips: one pipelined
//! connection does on the order of 10⁵ keys/s against Pika, less at the configured rate. The
//! touched-key set grows with the distinct keys written during the scan.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client_port::{clock_ms, release_of, Client};
use super::config::{PikaRelayConfig, WarmupMode};
use super::rewrite::{LinkRewriter, Touched};
use crate::engine::PikaRelease;
use crate::pika::messages::BinlogPosition;
use crate::table::{Baseline, KeyKnowledge, ValueType, Witness, WitnessRef};

/// Keys asked for per `SCAN`.
const SCAN_COUNT: usize = 512;

/// What a finished scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// `(key, absolute deadline ms)` of every key that had a TTL.
    pub volatile: Vec<(Vec<u8>, i64)>,
    /// Every key without a TTL, while `existence_complete` holds.
    pub persistent: Vec<Vec<u8>>,
    /// True when `persistent` lists every key without a TTL the scan saw (the bound was not
    /// hit), so a key listed nowhere did not exist.
    pub existence_complete: bool,
    /// What collections were seen to hold (one member, one field, a list's length).
    pub witnesses: Vec<(Vec<u8>, Witness)>,
    /// Master binlog position before the first `SCAN`.
    pub started_at: BinlogPosition,
    /// Master binlog position after the last reply.
    pub finished_at: BinlogPosition,
    /// Keys looked up.
    pub scanned: u64,
    /// Keys with a TTL whose deadline second could not be told (a 3.x master's clock moved to
    /// the next second during every try of their batch): left unknown, so their next write is
    /// looked up.
    pub unsettled: Vec<Vec<u8>>,
    /// Names the scan listed more than once: a 3.x master keeps a string, a hash, a list, a
    /// set and a zset apart under one name and lists each type's keys in turn (see
    /// [`crate::table::ExpiryTable::mark_shared`]). Complete only with `existence_complete`.
    pub shared: Vec<Vec<u8>>,
    /// The type `TYPE` answered for each of `volatile`, then of `persistent`, in their order
    /// (a 3.x master: see [`crate::table::ExpiryTable::set_type`]; empty for 4.0).
    pub volatile_types: Vec<Option<ValueType>>,
    pub persistent_types: Vec<Option<ValueType>>,
}

/// Where [`WarmupState::try_merge`] left a warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeProgress {
    /// The scan runs, or the link has not forwarded up to its end yet.
    Pending,
    /// Merged, or the scan failed: the warm-up is over.
    Over,
    /// Dropped because a command deleted keys it does not name while the scan ran: a new scan
    /// is due, whose answers all come after that command.
    ScanAgain,
}

/// A warm-up in progress for one DB of one link.
#[derive(Debug)]
pub struct WarmupState {
    replica: String,
    db: String,
    rx: oneshot::Receiver<Result<ScanResult, String>>,
    result: Option<ScanResult>,
    task: JoinHandle<()>,
}

impl Drop for WarmupState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a warm-up for DB `db` of `replica` if the configuration asks for one; the rewriter
/// starts recording the keys the stream touches.
pub fn start(
    cfg: &PikaRelayConfig,
    replica: &str,
    db: &str,
    rewriter: Option<&mut LinkRewriter>,
) -> Option<WarmupState> {
    if cfg.warmup != WarmupMode::Scan {
        return None;
    }
    let rewriter = rewriter?;
    rewriter.start_recording_touched();
    let (tx, rx) = oneshot::channel();
    let master = cfg.master;
    let password = cfg.master_password.clone();
    let rate = cfg.warmup_rate;
    let max_keys = cfg.warmup_max_keys;
    let db_name = db.split(':').next().unwrap_or(db).to_string();
    tracing::info!(replica, db, "warm-up scan of the master started");
    let task = tokio::spawn(async move {
        let result = scan(master, password.as_deref(), &db_name, rate, max_keys).await;
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    Some(WarmupState {
        replica: replica.to_string(),
        db: db.to_string(),
        rx,
        result: None,
        task,
    })
}

impl WarmupState {
    /// Merges the scan into the link's table once it is finished and the link has forwarded
    /// everything up to the scan's end position.
    pub fn try_merge(
        &mut self,
        rewriter: Option<&mut LinkRewriter>,
        forwarded_up_to: BinlogPosition,
    ) -> MergeProgress {
        let Some(rewriter) = rewriter else {
            return MergeProgress::Over;
        };
        if self.result.is_none() {
            match self.rx.try_recv() {
                Ok(Ok(result)) => self.result = Some(result),
                Ok(Err(e)) => {
                    tracing::warn!(replica = %self.replica, db = %self.db, "warm-up scan failed: {e}; keys from before the relay stay unknown");
                    rewriter.take_touched();
                    rewriter.take_wiped();
                    return MergeProgress::Over;
                }
                Err(oneshot::error::TryRecvError::Empty) => return MergeProgress::Pending,
                Err(oneshot::error::TryRecvError::Closed) => {
                    rewriter.take_touched();
                    rewriter.take_wiped();
                    return MergeProgress::Over;
                }
            }
        }
        let Some(result) = self.result.as_ref() else {
            return MergeProgress::Pending;
        };
        if forwarded_up_to < result.finished_at {
            return MergeProgress::Pending;
        }
        let touched = rewriter.take_touched();
        if let Some(at) = rewriter.take_wiped().filter(|at| *at > result.started_at) {
            // The scan may list keys deleted since it read them; merged, they would be
            // "volatile until T" again and a key recreated without a TTL would be rewritten
            // with T. Dropped, and scanned again: meanwhile writes on keys from before the
            // relay are looked up.
            tracing::warn!(
                replica = %self.replica, db = %self.db, at = %at, scan_from = %result.started_at,
                "warm-up scan dropped: a FLUSHDB, FLUSHALL, SWAPDB or PKPATTERNMATCHDEL came while it ran; scanning again (until then writes on keys from before the relay are looked up on the master)"
            );
            return MergeProgress::ScanAgain;
        }
        let db = rewriter.stream_state().db;
        let merged = merge(rewriter, db, result, &touched);
        let touched_during = touched
            .values()
            .filter(|&&at| at > result.started_at)
            .count();
        if !result.existence_complete {
            tracing::warn!(
                replica = %self.replica, db = %self.db, scanned = result.scanned,
                "warm-up: more keys without a TTL than --warmup-max-keys; only volatile keys are kept, so an EXPIRE followed by a write on a key that had no TTL passes as unknown_key"
            );
        }
        if !result.shared.is_empty() {
            let examples: Vec<String> = result
                .shared
                .iter()
                .take(5)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            tracing::warn!(
                replica = %self.replica, db = %self.db, names = result.shared.len(), ?examples,
                "warm-up: names holding values of several types (a Pika 3.x master keeps one per type under a name, each with its own TTL); writes on them pass unrewritten as unknown_key, as to a direct replica"
            );
        }
        metrics::counter!(crate::metrics::names::WARMUP_SHARED_NAMES)
            .increment(result.shared.len() as u64);
        tracing::info!(
            replica = %self.replica, db = %self.db,
            scanned = result.scanned, volatile = result.volatile.len(),
            persistent = result.persistent.len(), existence = result.existence_complete, merged,
            touched = touched.len(), touched_during, from = %result.started_at, to = %result.finished_at,
            "warm-up merged: the expiry table is complete"
        );
        MergeProgress::Over
    }
}

/// Applies `result` to the rewriter's table (see the module docs); returns the keys set.
pub fn merge(rewriter: &LinkRewriter, db: u32, result: &ScanResult, touched: &Touched) -> usize {
    let table = rewriter.table();
    if table.baseline() != Baseline::Unknown {
        return 0;
    }
    // Written after the scan started: the scan's answer may be from before or after the write.
    let during = |key: &Vec<u8>| {
        touched
            .get(&(db, key.clone()))
            .is_some_and(|&at| at > result.started_at)
    };
    let undecided = |key: &[u8]| {
        matches!(
            table.lookup(db, key, 0),
            KeyKnowledge::Unknown | KeyKnowledge::NotVolatile
        )
    };
    // Knowledge the stream built while the scan ran is kept; a key it wrote without learning
    // its state must stay unknown once an absent entry stops meaning "unknown", and the scan's
    // answer for it may be from before or after the write.
    let unknown: Vec<&Vec<u8>> = touched
        .iter()
        .filter(|((d, k), &at)| {
            *d == db && at > result.started_at && table.lookup(db, k, 0) == KeyKnowledge::Unknown
        })
        .map(|((_, k), _)| k)
        .collect();
    // Written only by entries the scan already saw, and left undecided by the stream: the scan
    // decides them; those it does not list are resolved below.
    let mut settled_by_scan: HashSet<&[u8]> = touched
        .iter()
        .filter(|((d, k), &at)| *d == db && at <= result.started_at && undecided(k))
        .map(|((_, k), _)| k.as_slice())
        .collect();
    let mut merged = 0;
    // Marked unknown after the baseline below, like the keys the stream left unknown.
    let unsettled: Vec<&Vec<u8>> = result
        .unsettled
        .iter()
        .filter(|k| {
            settled_by_scan.remove(k.as_slice());
            !during(k) && undecided(k)
        })
        .collect();
    // A 3.x name listed once holds that one type (names listed twice are marked below).
    if !result.volatile_types.is_empty() || !result.persistent_types.is_empty() {
        table.track_types();
    }
    let typed = |key: &[u8], of: Option<&Option<ValueType>>| {
        if let Some(Some(of)) = of {
            table.set_type(db, key, *of);
        }
    };
    for (i, (key, deadline)) in result.volatile.iter().enumerate() {
        settled_by_scan.remove(key.as_slice());
        if !during(key) && undecided(key) {
            table.set_deadline(db, key, *deadline);
            typed(key, result.volatile_types.get(i));
            merged += 1;
        }
    }
    if result.existence_complete {
        for (i, key) in result.persistent.iter().enumerate() {
            settled_by_scan.remove(key.as_slice());
            if !during(key) && undecided(key) {
                table.mark_persistent(db, key, true);
                typed(key, result.persistent_types.get(i));
                merged += 1;
            }
        }
    }
    // Not listed: absent when the scan lists every key, else at least without a TTL.
    for key in settled_by_scan {
        if result.existence_complete {
            table.mark_absent(db, key, true);
        } else {
            table.mark_not_volatile(db, key);
        }
        merged += 1;
    }
    // What the scan saw inside a collection holds at the merge unless the stream wrote the key
    // after the scan started.
    for (key, witness) in &result.witnesses {
        if during(key) {
            continue;
        }
        let w = match witness {
            // The scan reads one member; it never knows them all.
            Witness::Members(m) | Witness::AllMembers(m) => {
                m.first().map(|m| WitnessRef::Member(m))
            }
            Witness::MinLen(n) => Some(WitnessRef::MinLen(*n)),
            Witness::ExactLen(n) => Some(WitnessRef::ExactLen(*n)),
        };
        if let Some(w) = w {
            table.set_witness(db, key, w);
        }
    }
    table.set_baseline(if result.existence_complete {
        Baseline::Absent
    } else {
        Baseline::NotVolatile
    });
    for key in unknown.into_iter().chain(unsettled) {
        table.mark_unknown(db, key);
    }
    // Whatever the stream did with such a name since, it still holds the other types.
    for key in &result.shared {
        table.mark_shared(db, key);
    }
    merged
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn scan(
    master: SocketAddr,
    password: Option<&str>,
    db_name: &str,
    rate: u32,
    max_keys: u64,
) -> std::io::Result<ScanResult> {
    let mut client = Client::connect(master).await?;
    if let Some(pw) = password {
        client.call(&[b"AUTH", pw.as_bytes()]).await?;
    }
    let db_index = db_name.strip_prefix("db").unwrap_or("0");
    if db_index != "0" {
        client.call(&[b"SELECT", db_index.as_bytes()]).await?;
    }
    // A 3.x master answers PTTL as (deadline second − its clock's second) × 1000 (its storage
    // counts whole seconds), so the deadline is exact only with the second the master read:
    // each batch is asked between two `TIME`s and asked again when they straddle a second.
    // Added to the instant each answer was read, a deadline could come out a second late, and
    // a write in that second was taken as on a live key.
    let whole_seconds = matches!(
        client.pika_version().await?.as_deref().map(release_of),
        Some(Ok(PikaRelease::V3))
    );
    // Deadlines are computed on the master's clock: PTTL is relative to it.
    let skew_ms = client.master_clock_ms().await?.map_or(0, |m| m - now_ms());
    let mut result = ScanResult {
        started_at: client.binlog_offset(db_name).await?,
        existence_complete: true,
        ..ScanResult::default()
    };
    let started = Instant::now();
    let count = SCAN_COUNT.to_string();
    let mut cursor = Bytes::from_static(b"0");
    loop {
        let reply = client
            .call(&[b"SCAN", &cursor, b"COUNT", count.as_bytes()])
            .await?;
        let (next, keys) = scan_reply(reply)?;
        metrics::counter!(crate::metrics::names::WARMUP_KEYS_SCANNED).increment(keys.len() as u64);
        let (witnesses, types) = witnesses_of(&mut client, &keys).await?;
        result.witnesses.extend(witnesses);
        let (replies, second) = ttls_of(&mut client, &keys, whole_seconds).await?;
        for ((key, (reply, read_at)), of) in keys.into_iter().zip(replies).zip(types) {
            let of = of.filter(|_| whole_seconds);
            let asked_at = match second {
                Some(Some(second)) => second,
                Some(None) => {
                    if matches!(reply, BytesFrame::Integer(ms) if ms > 0) {
                        result.unsettled.push(key.to_vec());
                    }
                    result.scanned += 1;
                    continue;
                }
                None => read_at + skew_ms,
            };
            match reply {
                BytesFrame::Integer(ms) if ms > 0 => {
                    result
                        .volatile
                        .push((key.to_vec(), asked_at.saturating_add(ms)));
                    if whole_seconds {
                        result.volatile_types.push(of);
                    }
                }
                // -1: no TTL. (-2: gone since SCAN listed it; it stays absent.)
                BytesFrame::Integer(-1) if result.existence_complete => {
                    if result.persistent.len() as u64 >= max_keys {
                        result.existence_complete = false;
                        result.persistent = Vec::new();
                        result.persistent_types = Vec::new();
                    } else {
                        result.persistent.push(key.to_vec());
                        if whole_seconds {
                            result.persistent_types.push(of);
                        }
                    }
                }
                BytesFrame::Integer(_) => {}
                other => {
                    return Err(std::io::Error::other(format!(
                        "unexpected PTTL reply {other:?}"
                    )))
                }
            }
            result.scanned += 1;
        }
        if rate > 0 {
            let due = Duration::from_secs_f64(result.scanned as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if next.as_ref() == b"0" {
            break;
        }
        cursor = next;
    }
    result.finished_at = client.binlog_offset(db_name).await?;
    if whole_seconds {
        result.shared = listed_twice(&result);
    }
    Ok(result)
}

/// The names a scan listed more than once (each once, sorted).
fn listed_twice(result: &ScanResult) -> Vec<Vec<u8>> {
    let mut names: Vec<&[u8]> = result
        .volatile
        .iter()
        .map(|(k, _)| k.as_slice())
        .chain(result.persistent.iter().map(Vec::as_slice))
        .chain(result.unsettled.iter().map(Vec::as_slice))
        .collect();
    names.sort_unstable();
    let mut shared: Vec<Vec<u8>> = Vec::new();
    for pair in names.windows(2) {
        if pair[0] == pair[1] && shared.last().map(Vec::as_slice) != Some(pair[0]) {
            shared.push(pair[0].to_vec());
        }
    }
    shared
}

/// How many times a batch of `PTTL`s is asked before its keys are left unknown.
const TTL_TRIES: u32 = 3;

/// The `PTTL` replies for `keys`, each with the local instant it was read, and, for a 3.x master
/// (`whole_seconds`), the start (ms) of the master's second they were all answered in:
/// `Some(None)` when its clock moved to another second during every try.
async fn ttls_of(
    client: &mut Client,
    keys: &[Bytes],
    whole_seconds: bool,
) -> std::io::Result<(Vec<(BytesFrame, i64)>, Option<Option<i64>>)> {
    let mut tries = 0;
    loop {
        tries += 1;
        if whole_seconds {
            client.queue(&[b"TIME"]);
        }
        for key in keys {
            client.queue(&[b"PTTL", key]);
        }
        if whole_seconds {
            client.queue(&[b"TIME"]);
        }
        client.flush().await?;
        let before = if whole_seconds {
            clock_ms(&client.reply().await?)
        } else {
            None
        };
        let mut replies = Vec::with_capacity(keys.len());
        for _ in keys {
            let reply = client.reply().await?;
            replies.push((reply, now_ms()));
        }
        if !whole_seconds {
            return Ok((replies, None));
        }
        let after = clock_ms(&client.reply().await?);
        match (before, after) {
            (Some(b), Some(a)) if b.div_euclid(1000) == a.div_euclid(1000) => {
                return Ok((replies, Some(Some(b - b.rem_euclid(1000)))))
            }
            (Some(_), Some(_)) if tries < TTL_TRIES => continue,
            (Some(_), Some(_)) => return Ok((replies, Some(None))),
            // No `TIME`: the instant each answer was read, on the master's clock.
            _ => return Ok((replies, None)),
        }
    }
}

/// What each collection among `keys` is known to hold (see [`Witness`]): its type, then one
/// member (a set's or zset's), one field (a hash's) or its length (a list's), each in one
/// pipelined round. Anything the master does not answer usefully gives no witness.
async fn witnesses_of(client: &mut Client, keys: &[Bytes]) -> std::io::Result<WitnessesAndTypes> {
    for key in keys {
        client.queue(&[b"TYPE", key]);
    }
    client.flush().await?;
    let mut types = Vec::with_capacity(keys.len());
    for _ in keys {
        types.push(match client.reply().await? {
            BytesFrame::SimpleString(t) | BytesFrame::BulkString(t) => t.to_ascii_lowercase(),
            _ => Vec::new(),
        });
    }
    let mut asked = Vec::new();
    for (key, kind) in keys.iter().zip(&types) {
        let probe: &[&[u8]] = match kind.as_slice() {
            b"set" => &[b"SRANDMEMBER", key],
            b"zset" => &[b"ZRANGE", key, b"0", b"0"],
            b"list" => &[b"LLEN", key],
            b"hash" => &[b"HSCAN", key, b"0", b"COUNT", b"1"],
            _ => continue,
        };
        client.queue(probe);
        asked.push((key, kind));
    }
    client.flush().await?;
    let mut out = Vec::new();
    for (key, kind) in asked {
        let reply = client.reply().await?;
        let first_bulk = |items: &[BytesFrame]| match items.first() {
            Some(BytesFrame::BulkString(m)) | Some(BytesFrame::SimpleString(m)) => {
                Some(Witness::Members(vec![m.to_vec().into_boxed_slice()]))
            }
            _ => None,
        };
        let witness = match (kind.as_slice(), reply) {
            (b"set", BytesFrame::BulkString(m)) => {
                Some(Witness::Members(vec![m.to_vec().into_boxed_slice()]))
            }
            (b"zset", BytesFrame::Array(items)) => first_bulk(&items),
            // A length read while the key was not written: exact at the merge (keys written
            // during the scan are left out of it).
            (b"list", BytesFrame::Integer(n)) if n > 0 => Some(Witness::ExactLen(n as u64)),
            (b"hash", BytesFrame::Array(mut parts)) if parts.len() == 2 => match parts.pop() {
                Some(BytesFrame::Array(fields)) => first_bulk(&fields),
                _ => None,
            },
            _ => None,
        };
        if let Some(w) = witness {
            out.push((key.to_vec(), w));
        }
    }
    let types = types
        .iter()
        .map(|t| ValueType::from_type_reply(t))
        .collect();
    Ok((out, types))
}

/// What [`witnesses_of`] read: the witnesses, and each key's type in the order asked.
type WitnessesAndTypes = (Vec<(Vec<u8>, Witness)>, Vec<Option<ValueType>>);

fn scan_reply(frame: BytesFrame) -> std::io::Result<(Bytes, Vec<Bytes>)> {
    let bad = || std::io::Error::other("unexpected SCAN reply");
    let BytesFrame::Array(mut parts) = frame else {
        return Err(bad());
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let keys = parts.pop().ok_or_else(bad)?;
    let cursor = parts.pop().ok_or_else(bad)?;
    let cursor = match cursor {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => b,
        _ => return Err(bad()),
    };
    let BytesFrame::Array(keys) = keys else {
        return Err(bad());
    };
    let keys = keys
        .into_iter()
        .map(|k| match k {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => Ok(b),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cursor, keys))
}

#[cfg(test)]
mod tests {
    use super::super::client_port::parse_binlog_offset;
    use super::*;
    use crate::families::FamilySwitches;
    use crate::table::ExpiryTable;
    use std::sync::Arc;

    #[test]
    fn binlog_offset_line() {
        let info = b"# Replication(MASTER)\r\nrole:master\r\nconnected_slaves:1\r\n\
slave0:ip=127.0.0.1,port=19231,conn_fd=90,lag=(db0:0)\r\n\
db0:binlog_offset=0 3898,safety_purge=none\r\n";
        assert_eq!(
            parse_binlog_offset(info, "db0"),
            Some(BinlogPosition::new(0, 3898))
        );
        assert_eq!(parse_binlog_offset(info, "db1"), None);
    }

    /// Keys written by entries ending after the scan's start (position 0/100 here).
    fn during_scan(keys: &[&[u8]]) -> Touched {
        keys.iter()
            .map(|k| ((0, k.to_vec()), BinlogPosition::new(0, 150)))
            .collect()
    }

    #[test]
    fn merge_skips_touched_keys_and_keeps_exact_knowledge() {
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        table.set_deadline(0, b"exact", 5_000);
        let rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        let result = ScanResult {
            volatile: vec![
                (b"old".to_vec(), 9_000),
                (b"raced".to_vec(), 9_000),
                (b"exact".to_vec(), 6_000),
            ],
            started_at: BinlogPosition::new(0, 100),
            ..ScanResult::default()
        };
        let touched = during_scan(&[b"raced", b"new"]);
        assert_eq!(merge(&rw, 0, &result, &touched), 1);
        assert_eq!(table.lookup(0, b"old", 0), KeyKnowledge::Volatile(9_000));
        assert_eq!(table.lookup(0, b"exact", 0), KeyKnowledge::Volatile(5_000));
        assert_eq!(table.lookup(0, b"raced", 0), KeyKnowledge::Unknown);
        assert_eq!(table.lookup(0, b"new", 0), KeyKnowledge::Unknown);
        assert_eq!(table.lookup(0, b"other", 0), KeyKnowledge::NotVolatile);
        assert!(table.is_complete());
    }

    #[test]
    fn a_name_listed_twice_holds_several_types_and_is_marked_so() {
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        let rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        let mut result = ScanResult {
            // A 3.x scan lists the strings, then the hashes, …: `both` is a string and a hash.
            volatile: vec![(b"both".to_vec(), 9_000), (b"one".to_vec(), 9_000)],
            persistent: vec![b"both".to_vec(), b"plain".to_vec()],
            volatile_types: vec![Some(ValueType::String), Some(ValueType::List)],
            persistent_types: vec![Some(ValueType::Hash), Some(ValueType::Set)],
            existence_complete: true,
            started_at: BinlogPosition::new(0, 100),
            ..ScanResult::default()
        };
        result.shared = listed_twice(&result);
        assert_eq!(result.shared, vec![b"both".to_vec()]);
        merge(&rw, 0, &result, &Touched::new());
        assert!(table.is_shared(0, b"both"));
        assert_eq!(table.lookup(0, b"both", 0), KeyKnowledge::Unknown);
        assert_eq!(table.lookup(0, b"one", 0), KeyKnowledge::Volatile(9_000));
        assert_eq!(table.lookup(0, b"plain", 0), KeyKnowledge::Persistent);
        // Names listed once hold the type TYPE answered, and nothing else.
        use crate::table::NameTypes;
        assert_eq!(
            table.name_types(0, b"plain", 0),
            NameTypes::Only {
                of: ValueType::Set,
                alive: true
            }
        );
        assert_eq!(
            table.name_types(0, b"one", 0),
            NameTypes::Only {
                of: ValueType::List,
                alive: true
            }
        );
        // A flush of one type (Pika 3.5) forgets the rest, not that the name is shared.
        table.forget_db(0);
        assert!(table.is_shared(0, b"both"));
        assert_eq!(table.prune(i64::MAX), 0);
        assert!(table.is_shared(0, b"both"));
    }

    #[test]
    fn merge_with_every_key_listed_knows_existence() {
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        let rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        table.mark_persistent(0, b"written", true);
        let result = ScanResult {
            volatile: vec![(b"session".to_vec(), 9_000)],
            persistent: vec![b"queue".to_vec(), b"raced".to_vec(), b"written".to_vec()],
            existence_complete: true,
            started_at: BinlogPosition::new(0, 100),
            ..ScanResult::default()
        };
        let touched = during_scan(&[b"raced", b"written"]);
        assert_eq!(merge(&rw, 0, &result, &touched), 2);
        assert_eq!(table.baseline(), Baseline::Absent);
        assert_eq!(table.lookup(0, b"queue", 0), KeyKnowledge::Persistent);
        assert_eq!(
            table.lookup(0, b"session", 0),
            KeyKnowledge::Volatile(9_000)
        );
        assert_eq!(table.lookup(0, b"written", 0), KeyKnowledge::Persistent);
        assert_eq!(table.lookup(0, b"raced", 0), KeyKnowledge::Unknown);
        assert_eq!(table.lookup(0, b"never_seen", 0), KeyKnowledge::Absent);
    }

    #[test]
    fn merge_past_the_key_bound_keeps_only_volatile_keys() {
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        let rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        let result = ScanResult {
            volatile: vec![(b"session".to_vec(), 9_000)],
            existence_complete: false,
            ..ScanResult::default()
        };
        assert_eq!(merge(&rw, 0, &result, &Touched::new()), 1);
        assert_eq!(table.baseline(), Baseline::NotVolatile);
        assert_eq!(table.lookup(0, b"queue", 0), KeyKnowledge::NotVolatile);
        assert_eq!(table.len(), 1);
    }

    /// A full sync from an old dump: the link replays history that ends before the scan
    /// started (position 0/100). The scan saw every one of those entries, so the keys the
    /// stream could not decide take its answer, and one it does not list is absent; a key
    /// also written after the scan started stays unknown.
    #[test]
    fn merge_lets_the_scan_decide_keys_replayed_from_before_it_started() {
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        let rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        for key in [&b"h"[..], b"gone", b"listed", b"raced"] {
            table.mark_unknown(0, key);
        }
        table.set_deadline(0, b"exact", 5_000);
        let result = ScanResult {
            volatile: vec![(b"listed".to_vec(), 9_000), (b"exact".to_vec(), 6_000)],
            persistent: vec![b"h".to_vec(), b"raced".to_vec()],
            existence_complete: true,
            started_at: BinlogPosition::new(0, 100),
            finished_at: BinlogPosition::new(0, 120),
            scanned: 5,
            witnesses: vec![
                (b"h".to_vec(), Witness::Members(vec![b"f"[..].into()])),
                (b"raced".to_vec(), Witness::ExactLen(3)),
            ],
            unsettled: vec![b"unsure".to_vec()],
            shared: Vec::new(),
            volatile_types: Vec::new(),
            persistent_types: Vec::new(),
        };
        let before = BinlogPosition::new(0, 100);
        let mut touched: Touched = [&b"h"[..], b"gone", b"listed", b"exact", b"raced"]
            .iter()
            .map(|k| ((0, k.to_vec()), before))
            .collect();
        touched.insert((0, b"raced".to_vec()), BinlogPosition::new(0, 110));
        merge(&rw, 0, &result, &touched);
        assert_eq!(table.lookup(0, b"h", 0), KeyKnowledge::Persistent);
        assert_eq!(
            table.witness(0, b"h"),
            Some(Witness::Members(vec![b"f"[..].into()])),
            "what the scan saw in a key written before it started"
        );
        assert_eq!(table.witness(0, b"raced"), None, "written while it ran");
        assert_eq!(table.lookup(0, b"gone", 0), KeyKnowledge::Absent);
        assert_eq!(table.lookup(0, b"listed", 0), KeyKnowledge::Volatile(9_000));
        assert_eq!(table.lookup(0, b"exact", 0), KeyKnowledge::Volatile(5_000));
        assert_eq!(table.lookup(0, b"raced", 0), KeyKnowledge::Unknown);
        assert_eq!(
            table.lookup(0, b"unsure", 0),
            KeyKnowledge::Unknown,
            "a TTL whose second the scan could not tell: not absent, not guessed"
        );
    }

    /// A warm-up whose scan saw the master before a FLUSHDB that came while it ran asks for
    /// another scan instead of merging; one after it merges.
    #[tokio::test]
    async fn a_scan_overtaken_by_a_db_wide_delete_is_dropped_and_asked_again() {
        use crate::pika::item::command_item as item;
        use crate::pika_relay::rewrite::tests::response;
        let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
        let mut rw = LinkRewriter::new(table.clone(), 0, FamilySwitches::all_on());
        let scan = |started: u64, finished: u64| ScanResult {
            volatile: vec![(b"old".to_vec(), 9_000)],
            started_at: BinlogPosition::new(0, started),
            finished_at: BinlogPosition::new(0, finished),
            ..ScanResult::default()
        };
        let warm_up = |result: ScanResult| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(Ok(result));
            WarmupState {
                replica: "r".into(),
                db: "db0".into(),
                rx,
                result: None,
                task: tokio::spawn(async {}),
            }
        };
        rw.start_recording_touched();
        rw.rewrite_response(&response(&[(item(5, 1, 0, &["FLUSHDB"]), 150, 1)]))
            .unwrap();
        let mut first = warm_up(scan(100, 200));
        let at = BinlogPosition::new(0, 200);
        assert_eq!(
            first.try_merge(Some(&mut rw), BinlogPosition::new(0, 150)),
            MergeProgress::Pending,
            "not forwarded up to the scan's end yet"
        );
        assert_eq!(first.try_merge(Some(&mut rw), at), MergeProgress::ScanAgain);
        assert_eq!(table.lookup(0, b"old", 0), KeyKnowledge::Unknown);
        assert!(!table.is_complete());
        rw.start_recording_touched();
        let mut second = warm_up(scan(200, 260));
        assert_eq!(
            second.try_merge(Some(&mut rw), BinlogPosition::new(0, 260)),
            MergeProgress::Over
        );
        assert_eq!(table.lookup(0, b"old", 0), KeyKnowledge::Volatile(9_000));
        assert!(table.is_complete());
    }
}
