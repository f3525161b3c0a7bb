//! Durable per-replica state, so replicas can continue partially after a proxy restart.
//!
//! One file per downstream replication ID, `redis-<own-id>.state`, in the state directory. It is
//! an append-only sequence of records, each `len: u32 LE | crc32: u32 LE | payload`, where the
//! payload's first byte is the record kind:
//!
//! | kind | payload | meaning |
//! |---|---|---|
//! | `H` | magic, own id (40), master id (40) | first record of every file |
//! | `P` | d u64, u u64, db u32, gap_start u64 (LE) | a map point |
//! | `W` | d u64 | every D offset up to here is covered by the points written before |
//! | `F` | d u64 | points before the one covering d are obsolete (the replica acknowledged d) |
//! | `M` | master id (40) | the master switched replication ID (`+CONTINUE <new-id>`) |
//!
//! The file is a [`RecordLog`]: records are written before the call returns and synced behind.
//! Compaction replaces the file by the live state. A file that is truncated, fails a checksum or
//! is otherwise inconsistent is **discarded** by the loader (logged by the caller): the replica
//! then gets one full resync, never a wrong offset.
//!
//! Only offsets the proxy has *sent* matter. The relay writes the points and the tip covering
//! stream bytes before it sends them ([`super::store::ReplicaState::write_ahead`]), so after a
//! crash at any instant the replica's offset is at or before the last `W` record and resolves.

use super::offset_map::{MapPoint, OffsetMap};
use crate::relay_core::record_log::{self, put_record, Progress, Record, RecordLog};
use crate::state_dir::{files_named, sync_dir};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

const MAGIC: &[u8; 8] = b"PTPRS001";
const ID_LEN: usize = 40;
/// Records larger than this are corrupt by definition (the largest is the header, 89 bytes).
const MAX_RECORD: usize = 256;
const FILE_PREFIX: &str = "redis-";
/// The newest map points a state file holds. Under heavy rewriting the map gains a point per
/// rewritten entry (tens of thousands per second); writing all of them cost milliseconds of the
/// relay's time per second. After a crash a replica resumes exactly only if its offset is
/// covered, which in practice means "at or just before the last tip written": older points are
/// dropped from the file (not from memory) and resuming there costs one full resync.
pub const MAX_PERSISTED_POINTS: usize = 1024;
const FILE_SUFFIX: &str = ".state";

/// Why a state file was rejected.
#[derive(Debug)]
pub enum StateFileError {
    /// The file could not be read.
    Io(io::Error),
    /// The bytes are not a valid state file; `why` says what was wrong.
    Corrupt { why: String },
}

impl std::fmt::Display for StateFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateFileError::Io(e) => write!(f, "I/O error: {e}"),
            StateFileError::Corrupt { why } => write!(f, "corrupt state file: {why}"),
        }
    }
}

impl std::error::Error for StateFileError {}

fn corrupt(why: impl Into<String>) -> StateFileError {
    StateFileError::Corrupt { why: why.into() }
}

/// The replica state a file describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedState {
    /// The replication ID the proxy gave this replica.
    pub own_id: String,
    /// The master's replication ID the upstream offsets belong to.
    pub master_id: String,
    /// The boundary map, rebuilt.
    pub map: OffsetMap,
}

/// Whether `s` is a 40-character replication ID (Redis uses lower-case hex; any printable
/// ASCII without spaces is accepted so a master's ID is stored as received).
pub fn is_repl_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Delete a state file and make the deletion durable; a file already gone is fine.
pub fn discard_state_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// The path of the state file of `own_id` in `dir`.
pub fn state_path(dir: &Path, own_id: &str) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{own_id}{FILE_SUFFIX}"))
}

/// State files in `dir` (which need not exist yet).
pub fn list_state_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let files = files_named(dir, FILE_PREFIX, FILE_SUFFIX)?;
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

fn header_payload(own_id: &str, master_id: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + MAGIC.len() + 2 * ID_LEN);
    p.push(b'H');
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(own_id.as_bytes());
    p.extend_from_slice(master_id.as_bytes());
    p
}

/// A point's payload, on the stack: one is written per rewritten entry, ahead of its bytes.
fn point_payload(p: &MapPoint) -> [u8; 29] {
    let mut v = [0u8; 29];
    v[0] = b'P';
    v[1..9].copy_from_slice(&p.d.to_le_bytes());
    v[9..17].copy_from_slice(&p.u.to_le_bytes());
    v[17..21].copy_from_slice(&p.db.to_le_bytes());
    v[21..29].copy_from_slice(&p.gap_start.to_le_bytes());
    v
}

fn offset_payload(kind: u8, d: u64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[0] = kind;
    v[1..9].copy_from_slice(&d.to_le_bytes());
    v
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn read_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Parse a whole state file.
pub fn decode(bytes: &[u8]) -> Result<PersistedState, StateFileError> {
    let mut header: Option<(String, String)> = None;
    let mut master_id = String::new();
    let mut points: Vec<MapPoint> = Vec::new();
    let mut tip: Option<u64> = None;
    let mut floor: Option<u64> = None;
    for record in record_log::records(bytes, MAX_RECORD) {
        let payload = match record {
            Record::Valid { payload, .. } => payload,
            Record::Torn { at } => return Err(corrupt(format!("torn record at byte {at}"))),
            Record::Corrupt { why, .. } => return Err(corrupt(why)),
        };
        let body = &payload[1..];
        match (payload[0], header.is_some()) {
            (b'H', false) => {
                if body.len() != MAGIC.len() + 2 * ID_LEN || &body[..MAGIC.len()] != MAGIC {
                    return Err(corrupt("bad header"));
                }
                let ids = &body[MAGIC.len()..];
                let own = String::from_utf8_lossy(&ids[..ID_LEN]).into_owned();
                let master = String::from_utf8_lossy(&ids[ID_LEN..]).into_owned();
                if !is_repl_id(&own) || !is_repl_id(&master) {
                    return Err(corrupt("bad replication id in header"));
                }
                master_id = master.clone();
                header = Some((own, master));
            }
            (b'H', true) => return Err(corrupt("second header")),
            (_, false) => return Err(corrupt("records before the header")),
            (b'P', true) if body.len() == 28 => {
                let p = MapPoint {
                    d: read_u64(body),
                    u: read_u64(&body[8..]),
                    db: read_u32(&body[16..]),
                    gap_start: read_u64(&body[20..]),
                };
                if tip.is_some_and(|t| p.gap_start < t) {
                    return Err(corrupt("point before the recorded tip"));
                }
                points.push(p);
            }
            (b'W', true) if body.len() == 8 => {
                let t = read_u64(body);
                if tip.is_some_and(|old| t < old) {
                    return Err(corrupt("tip moved backwards"));
                }
                tip = Some(t);
            }
            (b'F', true) if body.len() == 8 => floor = Some(read_u64(body)),
            (b'M', true) if body.len() == ID_LEN => {
                let id = String::from_utf8_lossy(body).into_owned();
                if !is_repl_id(&id) {
                    return Err(corrupt("bad master id record"));
                }
                master_id = id;
            }
            (kind, true) => {
                return Err(corrupt(format!(
                    "unknown record kind 0x{kind:02x} ({} bytes)",
                    body.len()
                )))
            }
        }
    }
    let Some((own_id, _)) = header else {
        return Err(corrupt("empty file"));
    };
    // Points after the last tip record were never confirmed as sent in full: drop them.
    let Some(tip) = tip else {
        return Err(corrupt("no tip record"));
    };
    points.retain(|p| p.d <= tip);
    let mut map = OffsetMap::from_parts(points, tip)
        .ok_or_else(|| corrupt("points are not a monotone boundary map"))?;
    if let Some(floor) = floor {
        map.prune_before(floor);
    }
    Ok(PersistedState {
        own_id,
        master_id,
        map,
    })
}

/// Load one state file.
pub fn load(path: &Path) -> Result<PersistedState, StateFileError> {
    let bytes = fs::read(path).map_err(StateFileError::Io)?;
    decode(&bytes)
}

/// The state file of one replica: a [`RecordLog`] and what was last written to it.
#[derive(Debug)]
pub struct StateFile {
    log: RecordLog,
    /// Records in the file, to decide when to compact.
    records: usize,
    /// The highest point `d` already written.
    written_point_d: Option<u64>,
    /// The tip last written.
    written_tip: u64,
    /// The last floor written.
    written_floor: u64,
    /// The bytes of the last write (kept for its capacity).
    buf: Vec<u8>,
}

impl StateFile {
    /// A fresh file holding exactly this state, atomically replacing any older one. It is
    /// written when this returns; [`StateFile::written`] and [`StateFile::watch`] tell when it
    /// is synced.
    pub fn create(
        dir: &Path,
        own_id: &str,
        master_id: &str,
        map: &OffsetMap,
    ) -> io::Result<StateFile> {
        let path = state_path(dir, own_id);
        let (bytes, records) = Self::whole(own_id, master_id, map);
        let mut file = StateFile {
            log: RecordLog::create(&path, &bytes, Duration::ZERO)?,
            records,
            written_point_d: None,
            written_tip: 0,
            written_floor: 0,
            buf: Vec::new(),
        };
        file.note_whole(map);
        Ok(file)
    }

    /// Replace the whole file by exactly this state; returns the write's sequence number.
    pub fn rewrite(&mut self, own_id: &str, master_id: &str, map: &OffsetMap) -> io::Result<u64> {
        let (bytes, records) = Self::whole(own_id, master_id, map);
        let seq = self.log.replace(&bytes)?;
        self.records = records;
        self.note_whole(map);
        Ok(seq)
    }

    /// The records of a whole file holding `map` (its newest points only), and their number.
    fn whole(own_id: &str, master_id: &str, map: &OffsetMap) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        put_record(&mut buf, &header_payload(own_id, master_id));
        let skip = map.len().saturating_sub(MAX_PERSISTED_POINTS);
        let mut written = 0;
        for p in map.points().skip(skip) {
            put_record(&mut buf, &point_payload(p));
            written += 1;
        }
        let (tip, _, _) = map.tip();
        put_record(&mut buf, &offset_payload(b'W', tip));
        (buf, written + 2)
    }

    fn note_whole(&mut self, map: &OffsetMap) {
        let skip = map.len().saturating_sub(MAX_PERSISTED_POINTS);
        self.written_point_d = map.points().last().map(|p| p.d);
        self.written_tip = map.tip().0;
        self.written_floor = map.points().nth(skip).map_or(0, |p| p.d);
    }

    /// Whether `map` has anything the file does not.
    pub fn is_behind(&self, map: &OffsetMap) -> bool {
        map.tip().0 != self.written_tip || map.points().last().map(|p| p.d) != self.written_point_d
    }

    /// Write the points and tip `map` gained since the last write, plus the current floor (or
    /// a compaction, when the file has grown well beyond the live state). Returns the write's
    /// sequence number, if anything was written; fails when this or an earlier write failed.
    pub fn sync(
        &mut self,
        own_id: &str,
        master_id: &str,
        map: &OffsetMap,
    ) -> io::Result<Option<u64>> {
        if let Some(why) = self.log.failed() {
            return Err(io::Error::other(why.to_string()));
        }
        if self.records > 4 * map.len().min(MAX_PERSISTED_POINTS) + 1024 {
            return self.rewrite(own_id, master_id, map).map(Some);
        }
        if !self.is_behind(map) {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut records = 0;
        // Points only grow in `d`: the unwritten ones are at the back (counted from there, so a
        // map of many points written before costs nothing here).
        let unwritten = map
            .points()
            .rev()
            .take_while(|p| self.written_point_d.is_none_or(|w| p.d > w))
            .count();
        // Beyond the newest MAX_PERSISTED_POINTS, points are skipped; the floor record below then
        // starts the file's map at the first point written, so the skipped span is never
        // read as part of an older point's segment.
        let skip = map.len() - unwritten + unwritten.saturating_sub(MAX_PERSISTED_POINTS);
        let mut first_written = None;
        let mut newest_point = self.written_point_d;
        for p in map.points().skip(skip) {
            put_record(&mut buf, &point_payload(p));
            first_written.get_or_insert(p.d);
            newest_point = Some(p.d);
            records += 1;
        }
        let mut floor = map.points().next().map_or(0, |p| p.d);
        if unwritten > MAX_PERSISTED_POINTS {
            floor = floor.max(first_written.unwrap_or(floor));
        }
        let floor_grew = floor > self.written_floor;
        if floor_grew {
            put_record(&mut buf, &offset_payload(b'F', floor));
            records += 1;
        }
        let (tip, _, _) = map.tip();
        put_record(&mut buf, &offset_payload(b'W', tip));
        records += 1;
        let appended = self.log.append(&buf);
        self.buf = buf;
        let seq = appended?;
        self.written_point_d = newest_point;
        if floor_grew {
            self.written_floor = floor;
        }
        self.written_tip = tip;
        self.records += records;
        Ok(Some(seq))
    }

    /// Write a record that the master's replication ID is now `master_id`.
    #[cfg(test)]
    pub fn set_master_id(&mut self, master_id: &str) -> u64 {
        let mut payload = vec![b'M'];
        payload.extend_from_slice(master_id.as_bytes());
        let mut buf = Vec::new();
        put_record(&mut buf, &payload);
        self.records += 1;
        self.log.append(&buf).unwrap()
    }

    /// Delete the file (the replica moved on).
    pub fn remove(self) -> io::Result<()> {
        self.log.remove()
    }

    /// Sequence number of the last write.
    pub fn written(&self) -> u64 {
        self.log.written()
    }

    /// The sync progress, for waiting until a write is on disk.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.log.watch()
    }

    /// Blocks until everything written is synced.
    #[cfg(test)]
    pub fn wait_written(&self) -> io::Result<()> {
        self.log.wait_synced(Duration::from_secs(10))
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "0123456789abcdef0123456789abcdef01234567";
    const MASTER: &str = "a507f8eeec018d9f9cffcad79efd27081110735e";
    const MASTER2: &str = "2222222222222222222222222222222222222222";

    fn sample_map() -> OffsetMap {
        let mut m = OffsetMap::new(1000, 1000, 0);
        m.record_boundary(1023, 1023, 2, 1000, false);
        m.record_boundary(1123, 1045, 2, 1023, true);
        m.record_boundary(1200, 1122, 2, 1123, false);
        m
    }

    #[test]
    fn round_trip_with_appends_and_master_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = OffsetMap::new(1000, 1000, 0);
        let mut f = StateFile::create(dir.path(), OWN, MASTER, &m).unwrap();
        m.record_boundary(1023, 1023, 2, 1000, false);
        m.record_boundary(1123, 1045, 2, 1023, true);
        f.sync(OWN, MASTER, &m).unwrap();
        m.record_boundary(1200, 1122, 2, 1123, false);
        f.sync(OWN, MASTER, &m).unwrap();
        assert!(!f.is_behind(&m));
        f.set_master_id(MASTER2);
        m.prune_before(1150);
        m.record_boundary(1300, 1200, 2, 1200, true);
        f.sync(OWN, MASTER2, &m).unwrap();
        f.wait_written().unwrap();
        let loaded = load(f.path()).unwrap();
        assert_eq!(loaded.own_id, OWN);
        assert_eq!(loaded.master_id, MASTER2);
        assert_eq!(loaded.map, m);
        assert_eq!(
            list_state_files(dir.path()).unwrap(),
            vec![f.path().to_path_buf()]
        );
    }

    /// A map of `n` rewritten entries of 10 upstream bytes grown by 5 each, after `start`.
    fn grow(m: &mut OffsetMap, n: u64) {
        for _ in 0..n {
            let (d, u, db) = m.tip();
            m.record_boundary(d + 15, u + 10, db, d, true);
        }
    }

    /// Every boundary the loaded map resolves, it resolves as the live map does; ACKs map no
    /// higher.
    fn agrees(loaded: &OffsetMap, live: &OffsetMap) {
        // Around every boundary and gap of the live map, and past its tip.
        let tip = live.tip().0;
        let candidates = live
            .points()
            .flat_map(|p| [p.gap_start, p.d])
            .chain([tip])
            .flat_map(|d| [d.saturating_sub(1), d, d + 1]);
        for d in candidates {
            if let Some(r) = loaded.exact(d) {
                assert_eq!(Some(r), live.exact(d), "exact({d})");
            }
            if let (Some(a), Some(b)) = (loaded.floor(d), live.floor(d)) {
                assert!(a <= b, "floor({d}) {a} > {b}");
            }
        }
    }

    #[test]
    fn a_busy_map_is_written_as_its_newest_points_and_stays_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = OffsetMap::new(1000, 1000, 0);
        grow(&mut m, 10);
        let mut f = StateFile::create(dir.path(), OWN, MASTER, &m).unwrap();
        grow(&mut m, 3 * MAX_PERSISTED_POINTS as u64);
        f.wait_written().unwrap();
        let before = fs::read(f.path()).unwrap().len();
        f.sync(OWN, MASTER, &m).unwrap();
        f.wait_written().unwrap();
        let bytes = fs::read(f.path()).unwrap();
        // Only the newest points were appended.
        assert!(
            bytes.len() - before < (MAX_PERSISTED_POINTS + 10) * 37,
            "{}",
            bytes.len()
        );
        let loaded = decode(&bytes).unwrap().map;
        assert!(loaded.len() <= MAX_PERSISTED_POINTS, "{}", loaded.len());
        assert_eq!(loaded.tip(), m.tip());
        assert_eq!(loaded.exact(m.tip().0), m.exact(m.tip().0));
        agrees(&loaded, &m);
        // A crash anywhere in that append leaves an older state or an error, never a wrong one.
        // (Every 97th record boundary, and the last few, to keep the test quick.)
        let mut pos = before;
        let mut boundaries = Vec::new();
        while pos < bytes.len() {
            pos += 8 + read_u32(&bytes[pos..]) as usize;
            boundaries.push(pos);
        }
        let n = boundaries.len();
        for (i, cut) in boundaries.into_iter().enumerate() {
            if i % 97 == 0 || i + 4 > n {
                if let Ok(state) = decode(&bytes[..cut]) {
                    agrees(&state.map, &m);
                }
            }
        }
        // Compaction keeps the same bound.
        let g = StateFile::create(dir.path(), OWN, MASTER, &m).unwrap();
        g.wait_written().unwrap();
        let compacted = decode(&fs::read(g.path()).unwrap()).unwrap().map;
        assert!(compacted.len() <= MAX_PERSISTED_POINTS);
        assert_eq!(compacted.tip(), m.tip());
        agrees(&compacted, &m);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_rejected_or_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample_map();
        let f = StateFile::create(dir.path(), OWN, MASTER, &m).unwrap();
        f.wait_written().unwrap();
        let bytes = fs::read(f.path()).unwrap();
        assert_eq!(decode(&bytes).unwrap().map, m);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} accepted");
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(decode(&flipped).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn points_after_the_last_tip_are_ignored() {
        let m = sample_map();
        let mut buf = Vec::new();
        put_record(&mut buf, &header_payload(OWN, MASTER));
        for p in m.points() {
            put_record(&mut buf, &point_payload(p));
        }
        put_record(&mut buf, &offset_payload(b'W', 1200));
        let unconfirmed = MapPoint {
            d: 1400,
            u: 1250,
            db: 2,
            gap_start: 1300,
        };
        put_record(&mut buf, &point_payload(&unconfirmed));
        let loaded = decode(&buf).unwrap();
        assert_eq!(loaded.map, m);
        assert_eq!(loaded.map.exact(1400), None);
    }

    #[test]
    fn compaction_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = OffsetMap::new(0, 0, 0);
        let mut f = StateFile::create(dir.path(), OWN, MASTER, &m).unwrap();
        for i in 1..1200u64 {
            m.record_boundary(i * 10, i * 9, 0, i * 10 - 10, true);
            m.prune_before((i * 10).saturating_sub(20));
            f.sync(OWN, MASTER, &m).unwrap();
        }
        f.wait_written().unwrap();
        let size = fs::metadata(f.path()).unwrap().len();
        assert!(size < 1100 * 37, "file not compacted: {size} bytes");
        assert_eq!(load(f.path()).unwrap().map, m);
    }
}
