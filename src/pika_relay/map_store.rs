//! Durable storage of one replica's `MapState`: a small append-only file.
//!
//! Layout: the 8-byte magic `PKOMAP1\n`, then the records of a
//! [`RecordLog`] (`[len u32 LE][crc32 u32 LE][payload]`). Each payload is a whole state (kind
//! byte, pair count, `(replica, master)` position pairs as `filenum u32 LE, offset u64 LE`), so
//! the newest valid record is the state. A record is in the file when [`MapStore::persist`]
//! returns and synced behind it; once the file holds many records it is replaced by one.
//!
//! On load, an incomplete last record is a write a power loss interrupted: it is ignored (the
//! relay writes a record *before* acting on it, so an interrupted record was never acted on). Anything
//! else that does not check out (bad magic, checksum mismatch, unknown kind) makes the whole map
//! untrusted: [`Loaded::Corrupt`], which the relay turns into one forced full sync.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use super::offset_map::{MapState, MapUpdate, Pair, PairsAfter};
use crate::pika::messages::BinlogPosition;
use crate::relay_core::record_log::{self, Progress, Record, RecordLog};

const MAGIC: &[u8; 8] = b"PKOMAP1\n";
const PAIR_LEN: usize = 2 * (4 + 8);
/// Kind byte + pair count.
const PAYLOAD_FIXED_LEN: usize = 1 + 4;
/// Pairs outstanding are a pair per item forwarded and not yet acked by the replica: behind a
/// lagging replica the relay reads ahead up to `--read-ahead-bytes` (64 MiB by default) plus
/// what the master sends before the relay stops reading (16 MiB), and a Pika item is at least
/// ~40 bytes. A state of more pairs than this cannot be read back, so a longer read-ahead is
/// refused by the configuration ([`super::MAX_READ_AHEAD_BYTES`]).
pub(crate) const MAX_PAIRS: usize = 1 << 23;
/// Records appended before the file is rewritten to a single record…
const COMPACT_AFTER_RECORDS: usize = 1024;
/// …and only once the records appended since the last rewrite are this many times the size of
/// the state the rewrite would write: behind a replica far behind, the state holds a pair per
/// item outstanding, and rewriting it every 1024 records wrote it again and again.
const COMPACT_WHEN_APPENDED_TIMES_STATE: usize = 2;

const KIND_UNKNOWN: u8 = 0;
const KIND_IDENTITY: u8 = 1;
const KIND_PAIRS: u8 = 2;
/// Pairs appended to the `Pairs` state before the record ([`MapUpdate::Appended`]): a
/// forwarded response's predicted positions, without rewriting the pairs already on disk.
const KIND_APPENDED: u8 = 3;
/// The pair an ack confirmed, superseding the pairs up to its master position
/// ([`MapUpdate::Acked`]).
const KIND_ACKED: u8 = 4;

/// What loading a map file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// No file: nothing was ever persisted for this replica.
    Missing,
    /// The file exists but cannot be trusted; the reason is for the log.
    Corrupt(String),
    /// The newest valid state, and how many torn trailing bytes were dropped.
    State(MapState, usize),
}

fn kind_of(state: &MapState) -> u8 {
    match state {
        MapState::Unknown => KIND_UNKNOWN,
        MapState::Identity => KIND_IDENTITY,
        MapState::Pairs(_) => KIND_PAIRS,
    }
}

/// Appends one record (the layout of [`record_log::put_record`]:
/// `[len u32 LE][crc32 u32 LE][payload]`) whose payload is a state of `kind` holding `pairs`,
/// written in place.
fn put_state_record(out: &mut Vec<u8>, kind: u8, pairs: PairsAfter<'_>) {
    let start = out.len();
    out.reserve(8 + PAYLOAD_FIXED_LEN + pairs.max_len() * PAIR_LEN);
    out.extend_from_slice(&[0; 8]);
    out.push(kind);
    let count_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut count: u32 = 0;
    pairs.for_each(|pair| {
        let mut b = [0u8; PAIR_LEN];
        b[0..4].copy_from_slice(&pair.replica.filenum.to_le_bytes());
        b[4..12].copy_from_slice(&pair.replica.offset.to_le_bytes());
        b[12..16].copy_from_slice(&pair.master.filenum.to_le_bytes());
        b[16..24].copy_from_slice(&pair.master.offset.to_le_bytes());
        out.extend_from_slice(&b);
        count += 1;
    });
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let payload = &out[start + 8..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the record of `state`.
fn put_state(out: &mut Vec<u8>, state: &MapState) {
    match state {
        MapState::Pairs(p) => {
            let (front, back) = p.as_slices();
            put_state_record(out, KIND_PAIRS, PairsAfter::of(front, back));
        }
        MapState::Unknown | MapState::Identity => {
            put_state_record(out, kind_of(state), PairsAfter::of(&[], &[]))
        }
    }
}

/// Appends the record of what `update` changes in `current`: the change alone when `current`
/// is a `Pairs` state (a record as small as the response or ack it follows), the whole new
/// state otherwise.
fn put_change(out: &mut Vec<u8>, current: &MapState, update: &MapUpdate) {
    match (current, update) {
        (MapState::Pairs(_), MapUpdate::Appended(added)) if !added.is_empty() => {
            put_state_record(out, KIND_APPENDED, PairsAfter::of(added, &[]))
        }
        (MapState::Pairs(_), MapUpdate::Acked(pair)) => put_state_record(
            out,
            KIND_ACKED,
            PairsAfter::of(std::slice::from_ref(pair), &[]),
        ),
        _ => put_updated(out, current, update),
    }
}

/// Appends the record of the state `update` makes of `current`, without building that state.
fn put_updated(out: &mut Vec<u8>, current: &MapState, update: &MapUpdate) {
    match (current.pairs_after(update), update) {
        (Some(after), _) => put_state_record(out, KIND_PAIRS, after),
        (None, MapUpdate::Whole(state)) => put_state(out, state),
        // Every other update leaves a `Pairs` state.
        (None, _) => put_state_record(out, KIND_PAIRS, PairsAfter::of(&[], &[])),
    }
}

fn position_at(p: &[u8], at: usize) -> Option<BinlogPosition> {
    let filenum = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?);
    let offset = u64::from_le_bytes(p.get(at + 4..at + 12)?.try_into().ok()?);
    Some(BinlogPosition::new(filenum, offset))
}

fn decode_payload(p: &[u8]) -> Option<MapUpdate> {
    let kind = *p.first()?;
    let count = u32::from_le_bytes(p.get(1..5)?.try_into().ok()?) as usize;
    if count > MAX_PAIRS || p.len() != PAYLOAD_FIXED_LEN + count * PAIR_LEN {
        return None;
    }
    let pairs = || -> Option<std::collections::VecDeque<Pair>> {
        let mut pairs = std::collections::VecDeque::with_capacity(count);
        for i in 0..count {
            let at = PAYLOAD_FIXED_LEN + i * PAIR_LEN;
            pairs.push_back(Pair {
                replica: position_at(p, at)?,
                master: position_at(p, at + 12)?,
            });
        }
        // The map's updates rely on master order; the relay writes pairs that way, and a file
        // from elsewhere is put in order rather than trusted.
        pairs.make_contiguous().sort_by_key(|p| p.master);
        Some(pairs)
    };
    match kind {
        KIND_UNKNOWN if count == 0 => Some(MapUpdate::Whole(MapState::Unknown)),
        KIND_IDENTITY if count == 0 => Some(MapUpdate::Whole(MapState::Identity)),
        KIND_PAIRS => Some(MapUpdate::Whole(MapState::Pairs(pairs()?))),
        KIND_APPENDED if count > 0 => Some(MapUpdate::Appended(pairs()?.into())),
        KIND_ACKED if count == 1 => Some(MapUpdate::Acked(*pairs()?.front()?)),
        _ => None,
    }
}

/// Parses a whole map file.
pub fn parse(data: &[u8]) -> Loaded {
    let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
        return Loaded::Corrupt("bad magic".to_string());
    };
    let mut state = None;
    let max_len = PAYLOAD_FIXED_LEN + MAX_PAIRS * PAIR_LEN;
    for record in record_log::records(rest, max_len) {
        match record {
            Record::Valid { at, payload } => match (decode_payload(payload), &mut state) {
                (Some(MapUpdate::Whole(s)), _) => state = Some(s),
                // A change follows the record of a `Pairs` state, as it was written.
                (Some(change), Some(current @ MapState::Pairs(_))) => current.apply(change),
                (Some(_), _) => {
                    return Loaded::Corrupt(format!(
                        "change record at byte {} without a state of pairs before it",
                        at + 8
                    ))
                }
                (None, _) => return Loaded::Corrupt(format!("invalid record at byte {}", at + 8)),
            },
            Record::Torn { at } => return finish(state, rest.len() - at),
            Record::Corrupt { why, .. } => return Loaded::Corrupt(why),
        }
    }
    finish(state, 0)
}

fn finish(state: Option<MapState>, torn: usize) -> Loaded {
    match state {
        Some(s) => Loaded::State(s, torn),
        // A file with a magic and no complete record: created, then the first write was cut.
        None => Loaded::State(MapState::Unknown, torn),
    }
}

/// An open map file for one replica.
#[derive(Debug)]
pub struct MapStore {
    log: RecordLog,
    records: usize,
    compact_after: usize,
    /// Bytes appended since the file was last rewritten to one record.
    appended: usize,
    current: MapState,
    /// The bytes of the last write (kept for its capacity).
    buf: Vec<u8>,
}

impl MapStore {
    /// Opens (or creates) the map at `path`, returning the store and what was found; the state
    /// to use is `Unknown` unless a valid state was loaded. The file is rewritten to hold only
    /// that state, so a torn tail or a corrupt file does not survive the open. Syncs behind the
    /// writes happen at most once per `sync_spacing` unless somebody waits.
    pub fn open(path: &Path, sync_spacing: Duration) -> io::Result<(MapStore, Loaded)> {
        Self::open_compacting_after(path, sync_spacing, COMPACT_AFTER_RECORDS)
    }

    /// [`MapStore::open`], compacting once the file holds `compact_after` records.
    pub fn open_compacting_after(
        path: &Path,
        sync_spacing: Duration,
        compact_after: usize,
    ) -> io::Result<(MapStore, Loaded)> {
        let loaded = match std::fs::read(path) {
            Ok(data) => parse(&data),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::Missing,
            Err(e) => return Err(e),
        };
        let state = match &loaded {
            Loaded::State(s, _) => s.clone(),
            Loaded::Missing | Loaded::Corrupt(_) => MapState::Unknown,
        };
        let log = RecordLog::create(path, &compacted(&state), sync_spacing)?;
        Ok((
            MapStore {
                log,
                records: 1,
                compact_after: compact_after.max(2),
                appended: 0,
                current: state,
                buf: Vec::new(),
            },
            loaded,
        ))
    }

    /// The state last persisted.
    pub fn state(&self) -> &MapState {
        &self.current
    }

    /// Records `state`; it survives a crash of the process once this returns, and is synced
    /// behind. Returns the write's sequence number (see [`MapStore::watch`]).
    pub fn persist(&mut self, state: MapState) -> io::Result<u64> {
        self.persist_update(MapUpdate::Whole(state))
    }

    /// Records the state `update` makes of the current one ([`MapStore::persist`] of
    /// `current.apply(update)`): the record is written from the current state and the update,
    /// which is applied in place once the write succeeded.
    pub fn persist_update(&mut self, update: MapUpdate) -> io::Result<u64> {
        let state_bytes = self.current.points() * PAIR_LEN;
        let compact = self.records >= self.compact_after
            && self.appended >= COMPACT_WHEN_APPENDED_TIMES_STATE * state_bytes;
        self.buf.clear();
        if compact {
            self.buf.extend_from_slice(MAGIC);
        }
        if compact {
            put_updated(&mut self.buf, &self.current, &update);
        } else {
            put_change(&mut self.buf, &self.current, &update);
        }
        let seq = if compact {
            let seq = self.log.replace(&self.buf)?;
            self.records = 1;
            self.appended = 0;
            seq
        } else {
            let seq = self.log.append(&self.buf)?;
            self.records += 1;
            self.appended += self.buf.len();
            seq
        };
        self.current.apply(update);
        Ok(seq)
    }

    /// Sequence number of the last write.
    pub fn written(&self) -> u64 {
        self.log.written()
    }

    /// The sync progress of the writes.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.log.watch()
    }

    /// Asks for the next sync without the pause between syncs.
    pub fn urge(&self) {
        self.log.urge();
    }

    /// Makes the next [`MapStore::persist`] a compaction (tests of the rename path).
    #[cfg(test)]
    pub(crate) fn force_compaction_on_next_write(&mut self) {
        self.records = self.compact_after;
    }

    /// Where the map lives.
    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

/// A whole file holding only `state`.
fn compacted(state: &MapState) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    put_state(&mut out, state);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn pairs(list: &[(u64, u64)]) -> MapState {
        MapState::Pairs(
            list.iter()
                .map(|&(r, m)| Pair {
                    replica: BinlogPosition::new(0, r),
                    master: BinlogPosition::new(1, m),
                })
                .collect(),
        )
    }

    /// A record written from a state and an update is the record `put_record` makes of the
    /// payload of the state after the update.
    #[test]
    fn records_are_written_in_the_record_log_layout() {
        let current = pairs(&[(1, 2), (3, 4), (5, 6)]);
        let pair = |r, m| Pair {
            replica: BinlogPosition::new(0, r),
            master: BinlogPosition::new(1, m),
        };
        for update in [
            MapUpdate::Acked(pair(9, 4)),
            MapUpdate::Appended(vec![pair(7, 6), pair(8, 9)]),
            MapUpdate::Whole(MapState::Identity),
            MapUpdate::Whole(MapState::Unknown),
            MapUpdate::Whole(pairs(&[(11, 12)])),
        ] {
            let mut after = current.clone();
            after.apply(update.clone());
            let (kind, list): (u8, Vec<Pair>) = match &after {
                MapState::Unknown => (KIND_UNKNOWN, vec![]),
                MapState::Identity => (KIND_IDENTITY, vec![]),
                MapState::Pairs(p) => (KIND_PAIRS, p.iter().copied().collect()),
            };
            let mut payload = vec![kind];
            payload.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for p in &list {
                for pos in [p.replica, p.master] {
                    payload.extend_from_slice(&pos.filenum.to_le_bytes());
                    payload.extend_from_slice(&pos.offset.to_le_bytes());
                }
            }
            let mut expected = Vec::new();
            record_log::put_record(&mut expected, &payload);
            let mut written = Vec::new();
            put_updated(&mut written, &current, &update);
            assert_eq!(written, expected, "{update:?}");
            assert_eq!(decode_payload(&written[8..]), Some(MapUpdate::Whole(after)));
        }
    }

    /// The map's updates drop superseded pairs from the ends, which needs master order: a
    /// file whose pairs are out of that order (not written by this relay) is read in order.
    #[test]
    fn pairs_read_from_a_file_are_put_in_master_order() {
        let mut payload = vec![KIND_PAIRS];
        payload.extend_from_slice(&3u32.to_le_bytes());
        for (r, m) in [(10u64, 5u64), (50, 40), (30, 20)] {
            for pos in [BinlogPosition::new(0, r), BinlogPosition::new(1, m)] {
                payload.extend_from_slice(&pos.filenum.to_le_bytes());
                payload.extend_from_slice(&pos.offset.to_le_bytes());
            }
        }
        let Some(MapUpdate::Whole(mut state)) = decode_payload(&payload) else {
            panic!("a valid record");
        };
        assert_eq!(state, pairs(&[(10, 5), (30, 20), (50, 40)]));
        state.ack(BinlogPosition::new(0, 33), BinlogPosition::new(1, 20));
        assert_eq!(state, pairs(&[(33, 20), (50, 40)]));
    }

    #[test]
    fn newest_record_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let (mut store, loaded) = MapStore::open(&path, Duration::ZERO).unwrap();
        assert_eq!(loaded, Loaded::Missing);
        assert_eq!(store.state(), &MapState::Unknown);
        store.persist(MapState::Identity).unwrap();
        store.persist(pairs(&[(10, 20)])).unwrap();
        store.persist(pairs(&[(30, 45), (50, 60)])).unwrap();
        drop(store);
        let (store, loaded) = MapStore::open(&path, Duration::ZERO).unwrap();
        assert_eq!(loaded, Loaded::State(pairs(&[(30, 45), (50, 60)]), 0));
        assert_eq!(store.state(), &pairs(&[(30, 45), (50, 60)]));
        // Reopening compacted the file to magic + one record.
        assert_eq!(fs::metadata(&path).unwrap().len(), 8 + 8 + 5 + 2 * 24);
    }

    #[test]
    fn torn_tail_is_ignored_but_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let (mut store, _) = MapStore::open(&path, Duration::ZERO).unwrap();
        store.persist(pairs(&[(1, 2)])).unwrap();
        store.persist(pairs(&[(3, 4)])).unwrap();
        drop(store);
        let full = fs::read(&path).unwrap();
        // Cut the last record: the previous one is the state.
        let torn = &full[..full.len() - 10];
        assert_eq!(parse(torn), Loaded::State(pairs(&[(1, 2)]), 27));
        // Flip one payload byte of an earlier record: nothing is trusted.
        let mut bad = full.clone();
        bad[8 + 8 + 8 + 2] ^= 0x40;
        assert!(matches!(parse(&bad), Loaded::Corrupt(_)));
        assert!(matches!(parse(b"garbage!"), Loaded::Corrupt(_)));
        fs::write(&path, &bad).unwrap();
        let (store, loaded) = MapStore::open(&path, Duration::ZERO).unwrap();
        assert!(matches!(loaded, Loaded::Corrupt(_)));
        assert_eq!(store.state(), &MapState::Unknown);
        // The corrupt file was replaced by a valid one holding Unknown.
        assert_eq!(
            parse(&fs::read(&path).unwrap()),
            Loaded::State(MapState::Unknown, 0)
        );
    }

    #[test]
    fn compaction_keeps_the_newest_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let (mut store, _) = MapStore::open_compacting_after(&path, Duration::ZERO, 16).unwrap();
        for i in 0..21 {
            store.persist(pairs(&[(i, i + 7)])).unwrap();
        }
        // 21 appends with compaction at 16 records: one compaction, then 5 more appends.
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len, 8 + 6 * 37, "file not compacted: {len} bytes");
        drop(store);
        let (_, loaded) = MapStore::open(&path, Duration::ZERO).unwrap();
        let last = 20;
        assert_eq!(loaded, Loaded::State(pairs(&[(last, last + 7)]), 0));
    }

    /// Predicted pairs and acks are written as changes, so a record costs what changed (not
    /// the whole outstanding window), and reading the file back gives the same state at every
    /// record boundary.
    #[test]
    fn appended_pairs_and_acks_are_written_as_changes_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let (mut store, _) = MapStore::open(&path, Duration::ZERO).unwrap();
        let pair = |r: u64, m: u64| Pair {
            replica: BinlogPosition::new(0, r),
            master: BinlogPosition::new(0, m),
        };
        store.persist(pairs(&[(100, 90)])).unwrap();
        let mut expected = vec![store.state().clone()];
        let (mut r, mut m) = (100, 90);
        for round in 0..200u64 {
            // A response of three items, then (most of the time) the ack of an older one.
            let items: Vec<Pair> = (0..3)
                .map(|_| {
                    r += 13;
                    m += 11;
                    pair(r, m)
                })
                .collect();
            store.persist_update(MapUpdate::Appended(items)).unwrap();
            expected.push(store.state().clone());
            if round % 4 != 3 {
                if let MapState::Pairs(p) = store.state() {
                    let acked = p[p.len().saturating_sub(4)];
                    store.persist_update(MapUpdate::Acked(acked)).unwrap();
                    expected.push(store.state().clone());
                }
            }
        }
        let bytes = fs::read(&path).unwrap();
        // Whole states would be hundreds of bytes each; changes stay small.
        assert!(bytes.len() < 400 * 100, "{} bytes", bytes.len());
        assert_eq!(parse(&bytes), Loaded::State(store.state().clone(), 0));
        let body = &bytes[MAGIC.len()..];
        let ends: Vec<usize> = record_log::records(body, usize::MAX)
            .filter_map(|r| match r {
                Record::Valid { at, payload } => Some(at + 8 + payload.len()),
                _ => None,
            })
            .collect();
        // The first record is the state the store was opened with.
        assert_eq!(ends.len(), expected.len() + 1);
        for (end, want) in ends[1..].iter().zip(&expected) {
            assert_eq!(
                parse(&bytes[..MAGIC.len() + end]),
                Loaded::State(want.clone(), 0)
            );
        }
        // A change with no state of pairs before it is not trusted.
        let mut orphan = MAGIC.to_vec();
        put_change(
            &mut orphan,
            &pairs(&[(1, 1)]),
            &MapUpdate::Acked(pair(5, 5)),
        );
        assert!(matches!(parse(&orphan), Loaded::Corrupt(_)));
    }
}
