//! Expiry-table snapshots: what a replica's table knew when the proxy stopped, so that a
//! replica continuing after a *graceful* restart keeps having its entries rewritten instead of
//! passed through as `unknown_key` until its next full sync.
//!
//! One file per state, `redis-<own-id>.table`, beside the state file, written when the relay
//! stops (after every replica connection has ended) and read, then deleted, when it starts. A
//! table describes the master at one upstream offset (`table_u`); it is only used if the replica
//! continues at exactly that offset, which the partial-resync check already demands of a table
//! kept in memory. After a crash there is no snapshot (or an older one, whose offset no
//! replica resumes at), and the table starts unknown as before.
//!
//! Layout, little-endian: magic `PTPTB001`, own id (40 bytes), master id (40 bytes), `table_u`
//! u64, baseline u8, entry count u64, then per entry db u32, key length u32, key, value i64 (the
//! table's own encoding, see [`ExpiryTable::for_each_raw`]), and last a CRC-32 of everything
//! before it. A file that is short, long, or fails its checksum is discarded.

use super::persist::{files_named, is_repl_id, StateFileError};
use super::state_writer::sync_dir;
use crate::crc32::crc32;
use crate::table::{Baseline, ExpiryTable};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PTPTB001";
const ID_LEN: usize = 40;
const FILE_PREFIX: &str = "redis-";
const FILE_SUFFIX: &str = ".table";
const HEADER_LEN: usize = MAGIC.len() + 2 * ID_LEN + 8 + 1 + 8;

/// A table read back from its snapshot.
#[derive(Debug)]
pub struct TableSnapshot {
    /// The replication ID the replica knows the proxy by.
    pub own_id: String,
    /// The master's replication ID for `table_u`.
    pub master_id: String,
    /// The upstream offset the table describes.
    pub table_u: u64,
    /// The table.
    pub table: ExpiryTable,
}

/// The snapshot file of `own_id` in `dir`.
pub fn snapshot_path(dir: &Path, own_id: &str) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{own_id}{FILE_SUFFIX}"))
}

/// Snapshot files in `dir`, with the own ids their names give.
pub fn list_snapshots(dir: &Path) -> io::Result<Vec<(PathBuf, String)>> {
    files_named(dir, FILE_PREFIX, FILE_SUFFIX)
}

/// The snapshot's bytes.
pub fn encode(own_id: &str, master_id: &str, table_u: u64, table: &ExpiryTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + table.len() * 48 + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&fixed_id(own_id));
    out.extend_from_slice(&fixed_id(master_id));
    out.extend_from_slice(&table_u.to_le_bytes());
    out.push(baseline_code(table.baseline()));
    let count_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut count = 0u64;
    table.for_each_raw(|db, key, value| {
        out.extend_from_slice(&db.to_le_bytes());
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&value.to_le_bytes());
        count += 1;
    });
    out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes the snapshot of `table` (at `table_u`) for `own_id`, durably and atomically: a
/// temporary file, `fsync`, rename, directory `fsync`. Returns the bytes written.
pub fn save(
    dir: &Path,
    own_id: &str,
    master_id: &str,
    table_u: u64,
    table: &ExpiryTable,
) -> io::Result<usize> {
    let bytes = encode(own_id, master_id, table_u, table);
    let path = snapshot_path(dir, own_id);
    let tmp = path.with_extension("table.tmp");
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir);
    Ok(bytes.len())
}

/// Reads a snapshot.
pub fn load(path: &Path) -> Result<TableSnapshot, StateFileError> {
    decode(&fs::read(path).map_err(StateFileError::Io)?)
}

/// Parses a snapshot's bytes.
pub fn decode(bytes: &[u8]) -> Result<TableSnapshot, StateFileError> {
    let corrupt = |why: &str| StateFileError::Corrupt {
        why: format!("table snapshot: {why}"),
    };
    let (body, crc) = bytes
        .split_last_chunk::<4>()
        .ok_or_else(|| corrupt("shorter than its checksum"))?;
    if crc32(body) != u32::from_le_bytes(*crc) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut r = Reader { rest: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(corrupt("not a table snapshot (magic)"));
    }
    let own_id = r.id()?;
    let master_id = r.id()?;
    let table_u = r.u64()?;
    let baseline = baseline_from(r.take(1)?[0]).ok_or_else(|| corrupt("unknown baseline"))?;
    let count = r.u64()?;
    let table = ExpiryTable::new(baseline);
    for _ in 0..count {
        let db = r.u32()?;
        let len = r.u32()? as usize;
        let key = r.take(len)?;
        let value = r.i64()?;
        table.insert_raw(db, key, value);
    }
    if !r.rest.is_empty() {
        return Err(corrupt("bytes after the last entry"));
    }
    Ok(TableSnapshot {
        own_id,
        master_id,
        table_u,
        table,
    })
}

/// Reads the fields of a snapshot in order; every short read is a corrupt file.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateFileError> {
        if self.rest.len() < n {
            return Err(StateFileError::Corrupt {
                why: "table snapshot: truncated".into(),
            });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateFileError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, StateFileError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StateFileError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, StateFileError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn id(&mut self) -> Result<String, StateFileError> {
        let id = String::from_utf8_lossy(self.take(ID_LEN)?).into_owned();
        if !is_repl_id(&id) {
            return Err(StateFileError::Corrupt {
                why: "table snapshot: not a replication id".into(),
            });
        }
        Ok(id)
    }
}

/// An id as exactly [`ID_LEN`] bytes (ids are always that long; anything else is padded or cut,
/// and then fails to match its state on load).
fn fixed_id(id: &str) -> [u8; ID_LEN] {
    let mut out = [b'-'; ID_LEN];
    for (dst, src) in out.iter_mut().zip(id.bytes()) {
        *dst = src;
    }
    out
}

fn baseline_code(baseline: Baseline) -> u8 {
    match baseline {
        Baseline::Unknown => 0,
        Baseline::NotVolatile => 1,
        Baseline::Absent => 2,
    }
}

fn baseline_from(code: u8) -> Option<Baseline> {
    match code {
        0 => Some(Baseline::Unknown),
        1 => Some(Baseline::NotVolatile),
        2 => Some(Baseline::Absent),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::KeyKnowledge;

    const OWN: &str = "0123456789abcdef0123456789abcdef01234567";
    const MASTER: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn sample() -> ExpiryTable {
        let t = ExpiryTable::new(Baseline::NotVolatile);
        t.set_deadline(0, b"a", 8_000);
        t.set_deadline(3, b"", 7_000);
        t.set_maybe_volatile(0, b"h", 9_000);
        t.mark_persistent(1, b"p", true);
        t.mark_unknown(0, b"u");
        t.set_deadline(40, b"high-db", 11_000);
        t
    }

    fn knowledge(t: &ExpiryTable) -> Vec<KeyKnowledge> {
        [
            (0, &b"a"[..]),
            (3, b""),
            (0, b"h"),
            (1, b"p"),
            (0, b"u"),
            (40, b"high-db"),
            (0, b"never"),
        ]
        .iter()
        .map(|&(db, key)| t.lookup(db, key, 6_000))
        .collect()
    }

    #[test]
    fn a_snapshot_reads_back_as_the_same_table() {
        let dir = tempfile::tempdir().unwrap();
        let table = sample();
        save(dir.path(), OWN, MASTER, 12_345, &table).unwrap();
        let found = list_snapshots(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, OWN);
        let back = load(&found[0].0).unwrap();
        assert_eq!(back.own_id, OWN);
        assert_eq!(back.master_id, MASTER);
        assert_eq!(back.table_u, 12_345);
        assert_eq!(back.table.baseline(), Baseline::NotVolatile);
        assert_eq!(back.table.len(), table.len());
        assert_eq!(knowledge(&back.table), knowledge(&table));
        assert_eq!(
            knowledge(&back.table)[0],
            KeyKnowledge::Volatile(8_000),
            "the sample must hold what it claims"
        );
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_rejected() {
        let bytes = encode(OWN, MASTER, 7, &sample());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len} bytes");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "bit {bit} of byte {i} flipped");
            }
        }
        assert!(decode(&bytes).is_ok());
    }
}
