//! Checkpoints of a replica's expiry table, for a crash: a restarted relay rebuilds the table
//! at the replica's resume position from the newest checkpoint at or before it, along the
//! master's replication backlog ([`super::catch_up`]).
//!
//! Every `--checkpoint-interval` a streaming link whose table describes the master at a known
//! upstream offset asks for one ([`super::link::Action::Checkpoint`]). The driver encodes the
//! table on the link's own task, between two reads, so the checkpoint is exactly the table at
//! that offset, and writes the file on a blocking thread ([`Checkpointer`]).
//!
//! Files, beside the state file: `redis-<own-id>.checkpoint` (the newest) and
//! `redis-<own-id>.checkpoint.prev` (the one before). The previous one is kept because the
//! relay decides bytes before the replica applies them: a replica may resume behind the newest
//! checkpoint. The link only asks for a new checkpoint once the replica has acknowledged the
//! newest one's offset, so the previous one is always at or before where the replica can
//! resume. The format is a [`table_snapshot`] with the stream's DB at the offset.

use super::table_snapshot::{self, TableSnapshot};
use crate::state_dir::{files_named, replace_file};
use crate::table::ExpiryTable;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const FILE_PREFIX: &str = "redis-";
const NEWEST: &str = ".checkpoint";
const PREVIOUS: &str = ".checkpoint.prev";
/// Encoding slower than this is logged: the link's stream waited for it.
const SLOW_ENCODE_MS: u128 = 50;

/// The newest checkpoint file of `own_id` in `dir`.
pub fn newest_path(dir: &Path, own_id: &str) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{own_id}{NEWEST}"))
}

/// The previous checkpoint file of `own_id` in `dir`.
pub fn previous_path(dir: &Path, own_id: &str) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{own_id}{PREVIOUS}"))
}

/// Own ids that have checkpoint files in `dir` (newest or previous), each once.
pub fn list_owners(dir: &Path) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = files_named(dir, FILE_PREFIX, NEWEST)?
        .into_iter()
        .chain(files_named(dir, FILE_PREFIX, PREVIOUS)?)
        .map(|(_, id)| id)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Writes a checkpoint's bytes as the newest one, keeping the newest so far as the previous
/// one. Each step is atomic: a crash leaves the old pair, the previous one alone, or the new
/// pair.
pub fn save(dir: &Path, own_id: &str, bytes: &[u8]) -> io::Result<()> {
    let newest = newest_path(dir, own_id);
    match std::fs::rename(&newest, previous_path(dir, own_id)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    replace_file(&newest, bytes)
}

/// Deletes both checkpoints of `own_id` (its state is gone).
pub fn delete(dir: &Path, own_id: &str) {
    for path in [newest_path(dir, own_id), previous_path(dir, own_id)] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e,
                "cannot delete a checkpoint of the expiry table"),
        }
    }
}

/// The newest checkpoint of `own_id` for `master_id` at or before upstream offset `at_most`,
/// with its stream DB. `Err` says why there is none, for the log.
pub fn find(
    dir: &Path,
    own_id: &str,
    master_id: &str,
    at_most: u64,
) -> Result<(TableSnapshot, u32), String> {
    let mut why = Vec::new();
    let mut best: Option<(TableSnapshot, u32)> = None;
    for path in [newest_path(dir, own_id), previous_path(dir, own_id)] {
        if !path.exists() {
            continue;
        }
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let snapshot = match table_snapshot::load(&path) {
            Ok(s) => s,
            Err(e) => {
                why.push(format!("{name}: {e}"));
                continue;
            }
        };
        let db = match snapshot.db {
            Some(db) if snapshot.own_id == own_id && snapshot.master_id == master_id => db,
            _ => {
                why.push(format!("{name}: another replica or master"));
                continue;
            }
        };
        if snapshot.table_u > at_most {
            why.push(format!(
                "{name}: at {}, past the resume position",
                snapshot.table_u
            ));
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(b, _)| b.table_u < snapshot.table_u)
        {
            best = Some((snapshot, db));
        }
    }
    match best {
        Some(found) => Ok(found),
        None if why.is_empty() => Err("no checkpoint written".into()),
        None => Err(why.join("; ")),
    }
}

/// A checkpoint the link asked for: the table at `u` with `db` selected.
pub struct Request {
    pub own_id: String,
    pub master_id: String,
    pub u: u64,
    pub db: u32,
    pub table: Arc<ExpiryTable>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("own_id", &self.own_id)
            .field("u", &self.u)
            .field("db", &self.db)
            .field("keys", &self.table.len())
            .finish()
    }
}

/// Takes one link's checkpoints: encodes on the caller's task, writes on a blocking thread,
/// one write at a time.
#[derive(Default)]
pub struct Checkpointer {
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl Checkpointer {
    /// Encodes `req` now and writes it behind. Returns false (nothing done) while the
    /// previous write is still running.
    pub fn take(&mut self, dir: &Path, req: Request) -> bool {
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            return false;
        }
        let started = Instant::now();
        let bytes =
            table_snapshot::encode_at(&req.own_id, &req.master_id, req.u, Some(req.db), &req.table);
        let encode_ms = started.elapsed().as_millis();
        let keys = req.table.len();
        if encode_ms >= SLOW_ENCODE_MS {
            // The link waited for it: the operator should see what checkpoints cost.
            tracing::info!(own_id = %req.own_id, u = req.u, keys, encode_ms,
                "checkpoint of a large expiry table held the link while it was encoded");
        }
        let dir = dir.to_path_buf();
        let (own_id, u) = (req.own_id, req.u);
        self.writing = Some(tokio::task::spawn_blocking(move || {
            match save(&dir, &own_id, &bytes) {
                Ok(()) => tracing::debug!(%own_id, u, keys, bytes = bytes.len(), encode_ms,
                    "checkpoint of the expiry table written"),
                Err(e) => tracing::warn!(%own_id, u, error = %e,
                    "cannot write a checkpoint of the expiry table; after a crash its keys are unknown until the next full sync"),
            }
        }));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Baseline;

    const OWN: &str = "0123456789abcdef0123456789abcdef01234567";
    const MASTER: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn write(dir: &Path, u: u64, db: u32) {
        let table = ExpiryTable::new(Baseline::NotVolatile);
        table.set_deadline(db, format!("k{u}").as_bytes(), 9_000);
        save(
            dir,
            OWN,
            &table_snapshot::encode_at(OWN, MASTER, u, Some(db), &table),
        )
        .unwrap();
    }

    #[test]
    fn the_newest_checkpoint_at_or_before_the_resume_point_is_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find(dir.path(), OWN, MASTER, 100).is_err());
        write(dir.path(), 100, 1);
        write(dir.path(), 200, 2);
        assert_eq!(list_owners(dir.path()).unwrap(), [OWN]);
        let (s, db) = find(dir.path(), OWN, MASTER, 250).unwrap();
        assert_eq!((s.table_u, db), (200, 2));
        // Behind the newest: the previous one.
        let (s, db) = find(dir.path(), OWN, MASTER, 150).unwrap();
        assert_eq!((s.table_u, db), (100, 1));
        let why = find(dir.path(), OWN, MASTER, 50).unwrap_err();
        assert!(why.contains("past the resume position"), "{why}");
        let why = find(dir.path(), OWN, OWN, 250).unwrap_err();
        assert!(why.contains("another replica or master"), "{why}");
        // A third one pushes the oldest out.
        write(dir.path(), 300, 3);
        assert!(find(dir.path(), OWN, MASTER, 150).is_err());
        delete(dir.path(), OWN);
        assert!(list_owners(dir.path()).unwrap().is_empty());
    }
}
