//! Expiry tables of the Pika relay kept over a clean stop.
//!
//! A link that closes parks each DB's table, valid at the master position it last forwarded
//! ([`super::registry::ParkedTable`]); a new link that resumes at exactly that position takes
//! it over. When the relay stops cleanly, every parked table is written to
//! `<store key>.pika-table` in the state directory; the next start reads them back into the
//! parked set and deletes the files, so a replica that resumes where it stopped keeps having its
//! entries rewritten instead of passed as `unknown_key`. After a crash there is nothing to read
//! and the tables start unknown, as before (the warm-up scan, if enabled, learns them again).
//!
//! The file is a [`crate::table_file`] whose header is the store key, the master's address the
//! table was learned from (a table is never given to a relay pointed at another master), the
//! binlog position (filenum u32, offset u64) and the engine's stream state (db u32, in-MULTI u8).

use super::registry::ParkedTable;
use crate::engine::StreamState;
use crate::pika::messages::BinlogPosition;
use crate::state_dir::{files_named, replace_file};
use crate::table_file::{self, Fields, SavedTables};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const FILE_SUFFIX: &str = ".pika-table";
/// What [`crate::state_dir::replace_file`] writes first.
const TMP_SUFFIX: &str = ".pika-table.tmp";

fn table_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}{FILE_SUFFIX}"))
}

/// The bytes of `parked`, the table of `key`, learned from `master`.
pub(crate) fn encode(key: &str, master: SocketAddr, parked: &ParkedTable) -> Vec<u8> {
    let mut header = Vec::new();
    table_file::put_bytes(&mut header, key.as_bytes());
    table_file::put_bytes(&mut header, master.to_string().as_bytes());
    header.extend_from_slice(&parked.at.filenum.to_le_bytes());
    header.extend_from_slice(&parked.at.offset.to_le_bytes());
    header.extend_from_slice(&parked.state.db.to_le_bytes());
    header.push(u8::from(parked.state.in_multi));
    table_file::encode(&header, &parked.table)
}

/// What a saved table file holds.
pub(crate) enum Saved {
    /// A table learned from this relay's master, and its store key.
    Table(String, ParkedTable),
    /// A table learned from another master (a relay since pointed elsewhere, or another relay
    /// sharing the directory): not this relay's to use or to delete.
    OtherMaster(String),
}

/// What a file's bytes hold, for a relay whose master is `master`.
pub(crate) fn decode(bytes: &[u8], master: SocketAddr) -> Result<Saved, String> {
    let (header, table) = table_file::decode(bytes)?;
    let mut fields = Fields::new(header);
    let key = fields.text()?.to_string();
    let learned_from = fields.text()?;
    if learned_from != master.to_string() {
        return Ok(Saved::OtherMaster(learned_from.to_string()));
    }
    let at = BinlogPosition::new(fields.u32()?, fields.u64()?);
    let state = StreamState {
        db: fields.u32()?,
        in_multi: fields.u8()? != 0,
    };
    fields.finish()?;
    Ok(Saved::Table(
        key,
        ParkedTable {
            table: Arc::new(table),
            state,
            at,
            journaled: Default::default(),
        },
    ))
}

/// Writes every parked table to `dir`.
pub(crate) fn save_all(
    dir: &Path,
    master: SocketAddr,
    parked: &[(String, ParkedTable)],
) -> SavedTables {
    let mut done = SavedTables::default();
    for (key, table) in parked {
        match replace_file(&table_path(dir, key), &encode(key, master, table)) {
            Ok(()) => {
                tracing::info!(db_link = %key, entries = table.table.len(), at = %table.at,
                    "saved the expiry table for the next start");
                done.saved += 1;
                done.entries += table.table.len();
            }
            Err(e) => {
                tracing::error!(db_link = %key, error = %e,
                    "cannot save the expiry table; after the restart its keys are unknown until warm-up or a full sync");
                done.failed += 1;
            }
        }
    }
    done
}

/// Reads (and deletes) every table saved in `dir` for `master`; removes what an interrupted save
/// left behind.
pub(crate) fn load_all(dir: &Path, master: SocketAddr) -> Vec<(String, ParkedTable)> {
    let files_ending = |suffix: &str| {
        files_named(dir, "", suffix).unwrap_or_else(|e| {
            tracing::error!(dir = %dir.display(), error = %e, "cannot list saved expiry tables");
            Vec::new()
        })
    };
    for suffix in [TMP_SUFFIX, CHECKPOINT_TMP_SUFFIX] {
        for (path, _) in files_ending(suffix) {
            let _ = std::fs::remove_file(&path);
        }
    }
    let mut loaded = Vec::new();
    for (path, name) in files_ending(FILE_SUFFIX) {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| decode(&bytes, master))
        {
            Ok(Saved::OtherMaster(other)) => {
                tracing::info!(file = %path.display(), master = %other,
                    "saved expiry table is from another master; left alone");
                continue;
            }
            Ok(Saved::Table(key, parked)) if key == name => {
                tracing::info!(db_link = %key, entries = parked.table.len(), at = %parked.at,
                    complete = parked.table.is_complete(), "restored the expiry table saved at the last stop");
                loaded.push((key, parked));
            }
            Ok(_) => {
                tracing::warn!(file = %path.display(), "saved expiry table under another name; discarded")
            }
            Err(why) => tracing::warn!(file = %path.display(), %why,
                "discarding a saved expiry table; its replica's keys are unknown until warm-up or a full sync"),
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::error!(file = %path.display(), error = %e, "cannot delete a saved expiry table");
        }
    }
    loaded
}

/// The newest checkpoint of a DB link's table, written while it streams.
const CHECKPOINT_SUFFIX: &str = ".pika-checkpoint";
/// The one before it: a replica may resume before the newest (it had not applied every item
/// the relay forwarded when the checkpoint was taken).
const PREVIOUS_SUFFIX: &str = ".pika-checkpoint.prev";
/// What an interrupted checkpoint write leaves ([`crate::state_dir::replace_file`]'s temporary).
const CHECKPOINT_TMP_SUFFIX: &str = ".pika-checkpoint.tmp";

fn checkpoint_path(dir: &Path, key: &str, suffix: &str) -> PathBuf {
    dir.join(format!("{key}{suffix}"))
}

/// Writes `encoded` (see [`encode`]) as the newest checkpoint of `key`; the newest one so far
/// becomes the previous one. A crash in between leaves a checkpoint either way.
pub(crate) fn save_checkpoint(dir: &Path, key: &str, encoded: &[u8]) -> std::io::Result<()> {
    let newest = checkpoint_path(dir, key, CHECKPOINT_SUFFIX);
    if newest.exists() {
        std::fs::rename(&newest, checkpoint_path(dir, key, PREVIOUS_SUFFIX))?;
    }
    replace_file(&newest, encoded)
}

/// The newest checkpoint of `key` learned from `master` at or before `not_after` (the position
/// the replica resumes from), if any.
/// The newest checkpoint of every replica DB in `dir` taken from `master`, by store key.
pub(crate) fn newest_checkpoints(dir: &Path, master: SocketAddr) -> Vec<(String, ParkedTable)> {
    let names = crate::state_dir::files_named(dir, "", CHECKPOINT_SUFFIX).unwrap_or_default();
    names
        .into_iter()
        .filter_map(|(_, key)| {
            let newest = BinlogPosition::new(u32::MAX, u64::MAX);
            load_checkpoint(dir, &key, master, newest).map(|parked| (key, parked))
        })
        .collect()
}

pub(crate) fn load_checkpoint(
    dir: &Path,
    key: &str,
    master: SocketAddr,
    not_after: BinlogPosition,
) -> Option<ParkedTable> {
    for suffix in [CHECKPOINT_SUFFIX, PREVIOUS_SUFFIX] {
        let path = checkpoint_path(dir, key, suffix);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match decode(&bytes, master) {
            Ok(Saved::Table(saved_key, parked)) if saved_key == key && parked.at <= not_after => {
                return Some(parked)
            }
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(file = %path.display(), %why, "ignoring a damaged checkpoint")
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Baseline, ExpiryTable, KeyKnowledge};

    #[test]
    fn tables_come_back_for_the_same_master_only() {
        let dir = tempfile::tempdir().unwrap();
        let master: SocketAddr = "127.0.0.1:9221".parse().unwrap();
        let table = ExpiryTable::new(Baseline::Absent);
        table.set_deadline(0, b"k", 5_000);
        let parked = |at| ParkedTable {
            table: Arc::new(ExpiryTable::new(Baseline::Unknown)),
            state: StreamState {
                db: 0,
                in_multi: false,
            },
            at,
            journaled: Default::default(),
        };
        let mut kept = parked(BinlogPosition::new(3, 4096));
        kept.table = Arc::new(table);
        kept.state.in_multi = true;
        let tables = vec![("127.0.0.1_9231_db0".to_string(), kept)];
        let done = save_all(dir.path(), master, &tables);
        assert_eq!((done.saved, done.failed, done.entries), (1, 0, 1));
        let other: SocketAddr = "127.0.0.2:9221".parse().unwrap();
        let foreign = vec![(
            "127.0.0.1_9231_db1".to_string(),
            parked(BinlogPosition::new(1, 1)),
        )];
        save_all(dir.path(), other, &foreign);

        std::fs::write(dir.path().join("x.pika-table.tmp"), b"half").unwrap();
        let back = load_all(dir.path(), master);
        assert_eq!(back.len(), 1, "the other master's table is not used");
        let (key, p) = &back[0];
        assert_eq!(key, "127.0.0.1_9231_db0");
        assert_eq!(p.at, BinlogPosition::new(3, 4096));
        assert!(p.state.in_multi);
        assert_eq!(p.table.baseline(), Baseline::Absent);
        assert_eq!(p.table.lookup(0, b"k", 0), KeyKnowledge::Volatile(5_000));
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["127.0.0.1_9231_db1.pika-table"],
            "the other master's stays"
        );
    }

    #[test]
    fn the_newest_checkpoint_not_after_the_resume_point_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        let master: SocketAddr = "127.0.0.1:9221".parse().unwrap();
        let key = "127.0.0.1_9231_db0";
        let at = |offset| {
            let table = ExpiryTable::new(Baseline::Absent);
            table.set_deadline(0, b"k", offset as i64);
            ParkedTable {
                table: Arc::new(table),
                state: StreamState::default(),
                at: BinlogPosition::new(0, offset),
                journaled: Default::default(),
            }
        };
        assert!(load_checkpoint(dir.path(), key, master, BinlogPosition::new(9, 0)).is_none());
        save_checkpoint(dir.path(), key, &encode(key, master, &at(100))).unwrap();
        save_checkpoint(dir.path(), key, &encode(key, master, &at(500))).unwrap();
        let pick = |offset| {
            load_checkpoint(dir.path(), key, master, BinlogPosition::new(0, offset))
                .map(|p| p.at.offset)
        };
        assert_eq!(pick(600), Some(500));
        assert_eq!(pick(500), Some(500));
        assert_eq!(
            pick(499),
            Some(100),
            "the replica resumes before the newest"
        );
        assert_eq!(pick(99), None);
        let other: SocketAddr = "127.0.0.2:9221".parse().unwrap();
        assert!(load_checkpoint(dir.path(), key, other, BinlogPosition::new(0, 600)).is_none());
    }
}
