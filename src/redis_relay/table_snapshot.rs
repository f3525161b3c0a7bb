//! Expiry-table snapshots of the Redis relay: what a replica's table knew when the proxy
//! stopped, so that a replica continuing after a *graceful* restart keeps having its entries
//! rewritten instead of passed through as `unknown_key` until its next full sync.
//!
//! One file per state, `redis-<own-id>.table`, beside the state file, written when the relay
//! stops (after every replica connection has ended) and read, then deleted, when it starts. A
//! table describes the master at one upstream offset (`table_u`); it is only used if the replica
//! continues at exactly that offset, which the partial-resync check already demands of a table
//! kept in memory. After a crash there is no snapshot (or an older one, whose offset no
//! replica resumes at), and the table starts unknown as before.
//!
//! The file is a `crate::table_file` whose header is the own id and the master id (40 bytes
//! each) and `table_u` (u64). A checkpoint (`super::checkpoint`) uses the same format with
//! one more header field, the DB selected in the master's stream at `table_u` (u32), which a
//! catch-up from that offset needs.

use super::persist::{is_repl_id, StateFileError};
use crate::state_dir::{files_named, replace_file};
use crate::table::ExpiryTable;
use crate::table_file::{self, Fields};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const FILE_PREFIX: &str = "redis-";
const FILE_SUFFIX: &str = ".table";

/// A table read back from its snapshot.
#[derive(Debug)]
pub struct TableSnapshot {
    /// The replication ID the replica knows the proxy by.
    pub own_id: String,
    /// The master's replication ID for `table_u`.
    pub master_id: String,
    /// The upstream offset the table describes.
    pub table_u: u64,
    /// The DB selected in the master's stream at `table_u` (checkpoints only).
    pub db: Option<u32>,
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
    encode_at(own_id, master_id, table_u, None, table)
}

/// The bytes of a snapshot that also records the stream's DB at `table_u` (a checkpoint).
pub fn encode_at(
    own_id: &str,
    master_id: &str,
    table_u: u64,
    db: Option<u32>,
    table: &ExpiryTable,
) -> Vec<u8> {
    let mut header = Vec::with_capacity(2 * 44 + 12);
    table_file::put_bytes(&mut header, own_id.as_bytes());
    table_file::put_bytes(&mut header, master_id.as_bytes());
    header.extend_from_slice(&table_u.to_le_bytes());
    if let Some(db) = db {
        header.extend_from_slice(&db.to_le_bytes());
    }
    table_file::encode(&header, table)
}

/// Writes the snapshot of `table` (at `table_u`) for `own_id`, durably and atomically. Returns
/// the bytes written.
pub fn save(
    dir: &Path,
    own_id: &str,
    master_id: &str,
    table_u: u64,
    table: &ExpiryTable,
) -> io::Result<usize> {
    let bytes = encode(own_id, master_id, table_u, table);
    replace_file(&snapshot_path(dir, own_id), &bytes)?;
    Ok(bytes.len())
}

/// Reads a snapshot.
pub fn load(path: &Path) -> Result<TableSnapshot, StateFileError> {
    decode(&fs::read(path).map_err(StateFileError::Io)?)
}

/// Parses a snapshot's bytes.
pub fn decode(bytes: &[u8]) -> Result<TableSnapshot, StateFileError> {
    let corrupt = |why: String| StateFileError::Corrupt {
        why: format!("table snapshot: {why}"),
    };
    let (header, table) = table_file::decode(bytes).map_err(corrupt)?;
    let mut fields = Fields::new(header);
    let mut id = || -> Result<String, String> {
        let id = fields.text()?;
        if !is_repl_id(id) {
            return Err("not a replication id".into());
        }
        Ok(id.to_string())
    };
    let (own_id, master_id) = (id().map_err(corrupt)?, id().map_err(corrupt)?);
    let table_u = fields.u64().map_err(corrupt)?;
    let db = match fields.finish() {
        Ok(()) => None,
        Err(_) => Some(fields.u32().map_err(corrupt)?),
    };
    fields.finish().map_err(corrupt)?;
    Ok(TableSnapshot {
        own_id,
        master_id,
        table_u,
        db,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Baseline, KeyKnowledge};

    const OWN: &str = "0123456789abcdef0123456789abcdef01234567";
    const MASTER: &str = "89abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_snapshot_reads_back_with_its_ids_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let table = ExpiryTable::new(Baseline::NotVolatile);
        table.set_deadline(0, b"a", 8_000);
        table.set_deadline(40, b"high-db", 11_000);
        save(dir.path(), OWN, MASTER, 12_345, &table).unwrap();
        let found = list_snapshots(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, OWN);
        let back = load(&found[0].0).unwrap();
        assert_eq!(back.own_id, OWN);
        assert_eq!(back.master_id, MASTER);
        assert_eq!(back.table_u, 12_345);
        assert_eq!(back.db, None);
        assert_eq!(back.table.len(), 2);
        assert_eq!(back.table.lookup(0, b"a", 0), KeyKnowledge::Volatile(8_000));
        assert!(decode(&encode("short", MASTER, 1, &table)).is_err());
        let with_db = decode(&encode_at(OWN, MASTER, 7, Some(9), &table)).unwrap();
        assert_eq!((with_db.table_u, with_db.db), (7, Some(9)));
    }
}
