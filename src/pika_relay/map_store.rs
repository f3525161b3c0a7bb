//! Durable storage of one replica's `MapState`: a small append-only file.
//!
//! Layout: the 8-byte magic `PKOMAP1\n`, then records `[len u32 LE][crc32 u32 LE][payload]`.
//! Each payload is a whole state (kind byte, pair count, `(replica, master)` position pairs as
//! `filenum u32 LE, offset u64 LE`), so the newest valid
//! record is the state. Every append is followed by `fsync`; once the file holds many records it
//! is compacted to one by writing a temporary file, syncing it and renaming it over the old one
//! (then syncing the directory), so a crash leaves either the old or the new file.
//!
//! On load, an incomplete last record is a write the crash interrupted: it is ignored (the relay
//! writes a record *before* acting on it, so an interrupted record was never acted on). Anything
//! else that does not check out (bad magic, checksum mismatch, unknown kind) makes the whole map
//! untrusted: [`Loaded::Corrupt`], which the relay turns into one forced full sync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::offset_map::{MapState, Pair};
use crate::pika::messages::BinlogPosition;

const MAGIC: &[u8; 8] = b"PKOMAP1\n";
const RECORD_HEADER_LEN: usize = 8;
const PAIR_LEN: usize = 2 * (4 + 8);
/// Kind byte + pair count.
const PAYLOAD_FIXED_LEN: usize = 1 + 4;
/// No sane map holds more pairs than Pika's largest sync window (90000 items).
const MAX_PAIRS: usize = 100_000;
/// Records appended before the file is rewritten to a single record.
const COMPACT_AFTER_RECORDS: usize = 1024;

const KIND_UNKNOWN: u8 = 0;
const KIND_IDENTITY: u8 = 1;
const KIND_PAIRS: u8 = 2;

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

fn put_position(out: &mut Vec<u8>, p: BinlogPosition) {
    out.extend_from_slice(&p.filenum.to_le_bytes());
    out.extend_from_slice(&p.offset.to_le_bytes());
}

fn encode_payload(state: &MapState) -> Vec<u8> {
    let (kind, pairs): (u8, &[Pair]) = match state {
        MapState::Unknown => (KIND_UNKNOWN, &[]),
        MapState::Identity => (KIND_IDENTITY, &[]),
        MapState::Pairs(p) => (KIND_PAIRS, p),
    };
    let mut out = Vec::with_capacity(PAYLOAD_FIXED_LEN + pairs.len() * PAIR_LEN);
    out.push(kind);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for pair in pairs {
        put_position(&mut out, pair.replica);
        put_position(&mut out, pair.master);
    }
    out
}

fn position_at(p: &[u8], at: usize) -> Option<BinlogPosition> {
    let filenum = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?);
    let offset = u64::from_le_bytes(p.get(at + 4..at + 12)?.try_into().ok()?);
    Some(BinlogPosition::new(filenum, offset))
}

fn decode_payload(p: &[u8]) -> Option<MapState> {
    let kind = *p.first()?;
    let count = u32::from_le_bytes(p.get(1..5)?.try_into().ok()?) as usize;
    if count > MAX_PAIRS || p.len() != PAYLOAD_FIXED_LEN + count * PAIR_LEN {
        return None;
    }
    match kind {
        KIND_UNKNOWN if count == 0 => Some(MapState::Unknown),
        KIND_IDENTITY if count == 0 => Some(MapState::Identity),
        KIND_PAIRS => {
            let mut pairs = Vec::with_capacity(count);
            for i in 0..count {
                let at = PAYLOAD_FIXED_LEN + i * PAIR_LEN;
                pairs.push(Pair {
                    replica: position_at(p, at)?,
                    master: position_at(p, at + 12)?,
                });
            }
            Some(MapState::Pairs(pairs))
        }
        _ => None,
    }
}

fn encode_record(state: &MapState) -> Vec<u8> {
    let payload = encode_payload(state);
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Parses a whole map file.
pub fn parse(data: &[u8]) -> Loaded {
    let Some(rest) = data.strip_prefix(MAGIC.as_slice()) else {
        return Loaded::Corrupt("bad magic".to_string());
    };
    let mut state = None;
    let mut pos = 0;
    while pos < rest.len() {
        let left = rest.len() - pos;
        if left < RECORD_HEADER_LEN {
            return finish(state, left);
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&rest[pos..pos + 4]);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if !(PAYLOAD_FIXED_LEN..=PAYLOAD_FIXED_LEN + MAX_PAIRS * PAIR_LEN).contains(&len) {
            return Loaded::Corrupt(format!("record at byte {} has length {len}", pos + 8));
        }
        if left < RECORD_HEADER_LEN + len {
            return finish(state, left);
        }
        let mut crc_bytes = [0u8; 4];
        crc_bytes.copy_from_slice(&rest[pos + 4..pos + 8]);
        let payload = &rest[pos + RECORD_HEADER_LEN..pos + RECORD_HEADER_LEN + len];
        if crc32fast::hash(payload) != u32::from_le_bytes(crc_bytes) {
            return Loaded::Corrupt(format!("checksum mismatch at byte {}", pos + 8));
        }
        match decode_payload(payload) {
            Some(s) => state = Some(s),
            None => return Loaded::Corrupt(format!("invalid record at byte {}", pos + 8)),
        }
        pos += RECORD_HEADER_LEN + len;
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
    path: PathBuf,
    file: File,
    records: usize,
    compact_after: usize,
    current: MapState,
}

impl MapStore {
    /// Opens (or creates) the map at `path`, returning the store, what was found, and the state
    /// to use (`Unknown` unless a valid state was loaded). The file is rewritten to hold only that
    /// state, so a torn tail or a corrupt file does not survive the open.
    pub fn open(path: &Path) -> io::Result<(MapStore, Loaded)> {
        Self::open_compacting_after(path, COMPACT_AFTER_RECORDS)
    }

    /// [`MapStore::open`], compacting once the file holds `compact_after` records.
    pub fn open_compacting_after(
        path: &Path,
        compact_after: usize,
    ) -> io::Result<(MapStore, Loaded)> {
        let loaded = match File::open(path) {
            Ok(mut f) => {
                let mut data = Vec::new();
                f.read_to_end(&mut data)?;
                parse(&data)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::Missing,
            Err(e) => return Err(e),
        };
        let state = match &loaded {
            Loaded::State(s, _) => s.clone(),
            Loaded::Missing | Loaded::Corrupt(_) => MapState::Unknown,
        };
        let file = write_compacted(path, &state)?;
        Ok((
            MapStore {
                path: path.to_path_buf(),
                file,
                records: 1,
                compact_after: compact_after.max(2),
                current: state,
            },
            loaded,
        ))
    }

    /// The state last persisted.
    pub fn state(&self) -> &MapState {
        &self.current
    }

    /// Durably records `state` (write + fsync). Returns once it is on disk.
    pub fn persist(&mut self, state: MapState) -> io::Result<()> {
        if self.records >= self.compact_after {
            self.file = write_compacted(&self.path, &state)?;
            self.records = 1;
        } else {
            self.file.write_all(&encode_record(&state))?;
            self.file.sync_data()?;
            self.records += 1;
        }
        self.current = state;
        Ok(())
    }

    /// Makes the next [`MapStore::persist`] a compaction (tests of the rename path).
    #[cfg(test)]
    pub(crate) fn force_compaction_on_next_write(&mut self) {
        self.records = self.compact_after;
    }

    /// Where the map lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes a one-record file next to `path`, syncs it, renames it over `path`, syncs the
/// directory, and returns the new file opened for appending.
fn write_compacted(path: &Path, state: &MapState) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&encode_record(state))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Makes the rename itself durable; directories can be opened read-only for fsync on Unix.
        if let Ok(d) = File::open(dir) {
            d.sync_all()?;
        }
    }
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn newest_record_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let (mut store, loaded) = MapStore::open(&path).unwrap();
        assert_eq!(loaded, Loaded::Missing);
        assert_eq!(store.state(), &MapState::Unknown);
        store.persist(MapState::Identity).unwrap();
        store.persist(pairs(&[(10, 20)])).unwrap();
        store.persist(pairs(&[(30, 45), (50, 60)])).unwrap();
        drop(store);
        let (store, loaded) = MapStore::open(&path).unwrap();
        assert_eq!(loaded, Loaded::State(pairs(&[(30, 45), (50, 60)]), 0));
        assert_eq!(store.state(), &pairs(&[(30, 45), (50, 60)]));
        // Reopening compacted the file to magic + one record.
        assert_eq!(fs::metadata(&path).unwrap().len(), 8 + 8 + 5 + 2 * 24);
    }

    #[test]
    fn torn_tail_is_ignored_but_corruption_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let (mut store, _) = MapStore::open(&path).unwrap();
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
        let (store, loaded) = MapStore::open(&path).unwrap();
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
        let (mut store, _) = MapStore::open_compacting_after(&path, 16).unwrap();
        for i in 0..21 {
            store.persist(pairs(&[(i, i + 7)])).unwrap();
        }
        // 21 appends with compaction at 16 records: one compaction, then 5 more appends.
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len, 8 + 6 * 37, "file not compacted: {len} bytes");
        drop(store);
        let (_, loaded) = MapStore::open(&path).unwrap();
        let last = 20;
        assert_eq!(loaded, Loaded::State(pairs(&[(last, last + 7)]), 0));
    }
}
