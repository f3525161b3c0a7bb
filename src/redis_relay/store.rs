//! Per-replica replication state, keyed by the replication ID the proxy gave the replica.
//!
//! A [`ReplicaState`] outlives the connection that created it, so a replica that reconnects
//! (`PSYNC <own-id> <offset>`) can continue where it stopped. The connection serving a replica
//! holds its state's lock for as long as it runs; a reconnecting replica waits briefly for the
//! old connection to let go and otherwise gets a full resync (always safe).
//!
//! **The expiry table is per state, i.e. per replica.** Each replica's upstream link is at its
//! own position in the master's stream and the table must describe the master at exactly that
//! position; one table shared by two links would apply every entry twice, at two different
//! moments. When the relay stops, every idle state's table is saved beside its state file
//! ([`table_snapshot`]) and read back at the next start; without a snapshot (after a crash) the
//! state is reloaded without a table (`Baseline::Unknown`), and a continuation rebuilds it from
//! a checkpoint when it can (`catch_up`); keys a table does not know are passed through and
//! counted as unknown. A state's checkpoints go with it (removal, eviction).

use super::checkpoint;
use super::offset_map::OffsetMap;
use super::persist::{self, StateFile};
use super::table_snapshot;
use crate::relay_core::record_log;
use crate::table::{Baseline, ExpiryTable};
use crate::table_file::SavedTables;
use rand::Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OwnedMutexGuard;

/// Everything the proxy keeps about one replica between its connections.
#[derive(Debug)]
pub struct ReplicaState {
    /// The replication ID the replica knows the proxy by.
    pub own_id: String,
    /// The master's replication ID for the upstream offsets in `map`.
    pub master_id: String,
    /// D ↔ U boundaries.
    pub map: OffsetMap,
    /// The master's key expiries at `table_u`.
    pub table: Arc<ExpiryTable>,
    /// The upstream offset the table reflects; `None` when not known (after a restart).
    pub table_u: Option<u64>,
    /// The state file, when persistence works.
    pub file: Option<StateFile>,
}

impl ReplicaState {
    /// Queue what the map gained since the last write. Returns the last write queued, to wait
    /// for before telling anyone the state is durable (`None` without persistence). Errors are
    /// logged and disable persistence for this replica (its file is deleted, so a restart forces
    /// a full sync rather than trusting a stale map).
    pub fn persist(&mut self) -> Option<PendingWrite> {
        let file = self.file.as_mut()?;
        match file.sync(&self.own_id, &self.master_id, &self.map) {
            Ok(_) => Some(PendingWrite {
                seq: file.written(),
                progress: file.watch(),
            }),
            Err(e) => {
                tracing::error!(own_id = %self.own_id, error = %e,
                    "cannot persist replica offset map; this replica will need a full sync after a restart");
                if let Some(file) = self.file.take() {
                    self.delete_stale_file(file.path());
                }
                None
            }
        }
    }

    /// Writes what the map gained before the relay sends the stream bytes it covers, so a
    /// proxy killed at any instant can resolve every offset the replica may have reached. The
    /// bytes are handed to the kernel, not synced: that survives a crash of the proxy, and the
    /// sync follows behind. A failure disables persistence as in [`ReplicaState::persist`].
    pub fn write_ahead(&mut self) {
        let _written = self.persist();
    }

    /// Delete the state file at `path` now, after a failed write: the writer writes nothing
    /// more once a write failed (or is gone), so nothing can bring the file back. A file that
    /// cannot be deleted is reported, as a restart would trust it.
    fn delete_stale_file(&self, path: &Path) {
        if let Err(e) = persist::discard_state_file(path) {
            tracing::error!(own_id = %self.own_id, file = %path.display(), error = %e,
                "cannot delete a stale replica state file; delete it before restarting the proxy");
        }
    }

    /// Rewrite the state file from scratch (after a truncation or a master ID change) and wait
    /// until it is on disk: from here on the replica may receive bytes the old file would map
    /// to other upstream offsets. On failure the file is deleted (a restart then forces a full
    /// sync) before this returns.
    pub async fn persist_fresh(&mut self, dir: &Path) {
        let written = match self.file.as_mut() {
            Some(file) => file.rewrite(&self.own_id, &self.master_id, &self.map),
            None => StateFile::create(dir, &self.own_id, &self.master_id, &self.map).map(|file| {
                let seq = file.written();
                self.file = Some(file);
                seq
            }),
        };
        let result = match (written, self.file.as_ref()) {
            (Ok(seq), Some(file)) => record_log::durable(&mut file.watch(), seq)
                .await
                .map_err(|why| why.to_string()),
            (Ok(_), None) => Ok(()),
            (Err(e), _) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::error!(own_id = %self.own_id, error = %e,
                "cannot write replica state file; a restart will force a full sync");
            let path = match self.file.take() {
                Some(file) => file.path().to_path_buf(),
                None => persist::state_path(dir, &self.own_id),
            };
            self.delete_stale_file(&path);
        }
    }
}

/// A queued state write someone may wait for.
#[derive(Debug)]
pub struct PendingWrite {
    /// The writer's job number.
    pub seq: u64,
    /// The writer's progress.
    pub progress: tokio::sync::watch::Receiver<record_log::Progress>,
}

impl PendingWrite {
    /// Whether the write is on disk (or failed: nothing to wait for then).
    pub fn is_done(&self) -> bool {
        let now = self.progress.borrow();
        now.durable >= self.seq || now.failed.is_some()
    }

    /// Waits until the write is on disk. A failed write ends the wait too: the failure is
    /// logged and handled by the next [`ReplicaState::persist`].
    pub async fn wait(&mut self) {
        let _ = record_log::durable(&mut self.progress, self.seq).await;
    }
}

/// A fresh random 40-character hex replication ID.
pub fn random_repl_id() -> String {
    let mut rng = rand::rng();
    (0..40)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

type Slot = Arc<tokio::sync::Mutex<ReplicaState>>;

/// The outcome of asking for a replica's state.
pub enum Claim {
    /// The state, locked for the caller.
    Claimed(OwnedMutexGuard<ReplicaState>),
    /// No state with that ID.
    Unknown,
    /// Another connection still holds it.
    Busy,
}

/// All replica states; see the module docs.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    max_states: usize,
    slots: Mutex<HashMap<String, (Slot, Instant)>>,
}

/// What loading the state directory found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// States restored.
    pub loaded: usize,
    /// Files discarded as unreadable or corrupt.
    pub discarded: usize,
    /// Expiry tables restored from their snapshots.
    pub tables: usize,
}

impl StateStore {
    /// Load every state file in `dir`. Unreadable files are logged and deleted: their replicas
    /// get one full resync.
    pub fn open(dir: &Path, max_states: usize) -> (StateStore, LoadReport) {
        let mut slots = HashMap::new();
        let mut report = LoadReport::default();
        // Before any state's writer starts: from then on a `.tmp` may be a replacement in
        // progress.
        remove_temporary_files(dir);
        let files = persist::list_state_files(dir).unwrap_or_else(|e| {
            tracing::error!(dir = %dir.display(), error = %e, "cannot list the state directory");
            Vec::new()
        });
        for path in files {
            match persist::load(&path) {
                Ok(p) => {
                    let expected = persist::state_path(dir, &p.own_id);
                    if expected != path {
                        tracing::warn!(file = %path.display(), "state file name does not match its content; discarded");
                        let _ = std::fs::remove_file(&path);
                        report.discarded += 1;
                        continue;
                    }
                    let file = StateFile::create(dir, &p.own_id, &p.master_id, &p.map).ok();
                    tracing::info!(own_id = %p.own_id, master_id = %p.master_id,
                        points = p.map.len(), tip = p.map.tip().0, "restored replica state");
                    let state = ReplicaState {
                        own_id: p.own_id.clone(),
                        master_id: p.master_id,
                        map: p.map,
                        table: Arc::new(ExpiryTable::new(Baseline::Unknown)),
                        table_u: None,
                        file,
                    };
                    slots.insert(
                        p.own_id,
                        (Arc::new(tokio::sync::Mutex::new(state)), Instant::now()),
                    );
                    report.loaded += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e,
                        "discarding replica state file; that replica will get one full resync");
                    let _ = std::fs::remove_file(&path);
                    report.discarded += 1;
                }
            }
        }
        report.tables = restore_tables(dir, &mut slots);
        remove_orphan_checkpoints(dir, &slots);
        (
            StateStore {
                dir: dir.to_path_buf(),
                max_states: max_states.max(1),
                slots: Mutex::new(slots),
            },
            report,
        )
    }

    /// Saves the expiry table of every state no connection holds, for the next start: call it
    /// once every connection has ended. A state without a state file (persistence failed) or
    /// without a known table position has nothing worth saving.
    pub fn save_tables(&self) -> SavedTables {
        let states: Vec<Slot> = self
            .slots()
            .values()
            .map(|(slot, _)| slot.clone())
            .collect();
        let mut done = SavedTables::default();
        for slot in states {
            let Ok(state) = slot.try_lock() else { continue };
            let Some(table_u) = state.table_u else {
                continue;
            };
            if state.file.is_none() || (state.table.is_empty() && !state.table.is_complete()) {
                continue;
            }
            let table = &state.table;
            match table_snapshot::save(&self.dir, &state.own_id, &state.master_id, table_u, table) {
                Ok(bytes) => {
                    tracing::info!(own_id = %state.own_id, entries = table.len(), bytes, table_u,
                        "saved the expiry table for the next start");
                    done.saved += 1;
                    done.entries += table.len();
                }
                Err(e) => {
                    tracing::error!(own_id = %state.own_id, error = %e,
                        "cannot save the expiry table; after the restart its keys are unknown until the next full sync");
                    done.failed += 1;
                }
            }
        }
        done
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Slot, Instant)>> {
        // A poisoned lock only means another task panicked while holding it; the map itself
        // is still consistent (every operation on it is a single insert/remove).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of states held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    /// Whether no state is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lock the state of `own_id`, waiting up to `wait` for a previous connection to release
    /// it.
    pub async fn claim(&self, own_id: &str, wait: Duration) -> Claim {
        let slot = {
            let mut slots = self.slots();
            match slots.get_mut(own_id) {
                Some((slot, used)) => {
                    *used = Instant::now();
                    slot.clone()
                }
                None => return Claim::Unknown,
            }
        };
        match tokio::time::timeout(wait, slot.lock_owned()).await {
            Ok(guard) => Claim::Claimed(guard),
            Err(_) => Claim::Busy,
        }
    }

    /// Add a new state, already locked by the caller. Evicts the least recently used idle
    /// states beyond the configured maximum.
    pub async fn insert(&self, state: ReplicaState) -> OwnedMutexGuard<ReplicaState> {
        let own_id = state.own_id.clone();
        let slot: Slot = Arc::new(tokio::sync::Mutex::new(state));
        // Nobody else has seen the slot yet, so this completes at once.
        let guard = slot.clone().lock_owned().await;
        let mut slots = self.slots();
        slots.insert(own_id, (slot, Instant::now()));
        while slots.len() > self.max_states {
            let idle_oldest = slots
                .iter()
                .filter(|(_, (s, _))| s.try_lock().is_ok())
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone());
            let Some(id) = idle_oldest else { break };
            let evicted = slots.remove(&id);
            // Through the state's own writer, so a write still queued cannot recreate the file.
            match evicted
                .as_ref()
                .and_then(|(slot, _)| slot.try_lock().ok()?.file.take())
            {
                Some(file) => {
                    if let Err(e) = file.remove() {
                        tracing::warn!(own_id = %id, error = %e, "cannot delete an evicted replica state file");
                    }
                }
                None => {
                    let _ = std::fs::remove_file(persist::state_path(&self.dir, &id));
                }
            }
            checkpoint::delete(&self.dir, &id);
            tracing::info!(own_id = %id, "evicted the least recently used replica state");
        }
        guard
    }

    /// Forget `own_id` and delete its file (the replica moved on to another ID). The caller
    /// holds the state's lock and passes the guard in.
    pub fn remove(&self, mut guard: OwnedMutexGuard<ReplicaState>) {
        let id = guard.own_id.clone();
        if let Some(file) = guard.file.take() {
            if let Err(e) = file.remove() {
                tracing::warn!(own_id = %id, error = %e, "cannot delete a replica state file");
            }
        }
        checkpoint::delete(&self.dir, &id);
        self.slots().remove(&id);
    }
}

/// Deletes the checkpoints of states that are gone (removed while a checkpoint was being
/// written, or whose state file was discarded).
fn remove_orphan_checkpoints(dir: &Path, slots: &HashMap<String, (Slot, Instant)>) {
    for id in checkpoint::list_owners(dir).unwrap_or_default() {
        if !slots.contains_key(&id) && persist::is_repl_id(&id) {
            tracing::info!(own_id = %id, "deleting the checkpoints of a replica state that is gone");
            checkpoint::delete(dir, &id);
        }
    }
}

/// Gives each loaded state the table saved when the relay last stopped, if the snapshot is
/// for the same master; consumes every snapshot (a later crash must not find an old one beside
/// a state that has moved on, though it could only be used at its own offset). Returns how many
/// tables were restored.
fn restore_tables(dir: &Path, slots: &mut HashMap<String, (Slot, Instant)>) -> usize {
    let snapshots = table_snapshot::list_snapshots(dir).unwrap_or_else(|e| {
        tracing::error!(dir = %dir.display(), error = %e, "cannot list the expiry-table snapshots");
        Vec::new()
    });
    let mut restored = 0;
    for (path, own_id) in snapshots {
        let state = slots
            .get(&own_id)
            .and_then(|(slot, _)| slot.try_lock().ok());
        match (state, table_snapshot::load(&path)) {
            (Some(mut state), Ok(snapshot))
                if snapshot.own_id == own_id && snapshot.master_id == state.master_id =>
            {
                tracing::info!(%own_id, entries = snapshot.table.len(), table_u = snapshot.table_u,
                    complete = snapshot.table.is_complete(), "restored the expiry table saved at the last stop");
                state.table = Arc::new(snapshot.table);
                state.table_u = Some(snapshot.table_u);
                restored += 1;
            }
            (None, _) => {
                tracing::info!(file = %path.display(), "expiry-table snapshot without a replica state; discarded");
            }
            (Some(_), Ok(_)) => {
                tracing::warn!(file = %path.display(), "expiry-table snapshot is for another master or replica; discarded");
            }
            (Some(_), Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e,
                    "discarding an expiry-table snapshot; its replica's keys are unknown until its next full sync");
            }
        }
        if let Err(e) = persist::discard_state_file(&path) {
            tracing::error!(file = %path.display(), error = %e, "cannot delete an expiry-table snapshot");
        }
    }
    restored
}

/// Deletes what an interrupted atomic replacement left behind: `redis-<id>.state.tmp`,
/// `redis-<id>.table.tmp` and `redis-<id>.checkpoint.tmp` for a replication id, nothing else (the directory may be shared).
/// Only while no state writer runs.
fn remove_temporary_files(dir: &Path) {
    for suffix in [".state.tmp", ".table.tmp", ".checkpoint.tmp"] {
        let leftovers = crate::state_dir::files_named(dir, "redis-", suffix).unwrap_or_default();
        for (path, _) in leftovers.iter().filter(|(_, id)| persist::is_repl_id(id)) {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed a leftover temporary file")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a leftover temporary file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::KeyKnowledge;

    fn state(dir: &Path, id: &str) -> ReplicaState {
        let map = OffsetMap::new(10, 10, 0);
        let file = StateFile::create(dir, id, &"m".repeat(40), &map).unwrap();
        file.wait_written().unwrap();
        ReplicaState {
            own_id: id.to_string(),
            master_id: "m".repeat(40),
            file: Some(file),
            map,
            table: Arc::new(ExpiryTable::new(Baseline::NotVolatile)),
            table_u: Some(10),
        }
    }

    /// A clean stop saves idle states' tables; the next start gives each back to its own state
    /// (same master only), consumes every snapshot and removes leftover temporary files.
    #[tokio::test]
    async fn tables_saved_at_a_stop_come_back_only_to_their_own_state() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = StateStore::open(dir.path(), 8);
        let (kept, other_master) = (random_repl_id(), random_repl_id());
        for id in [&kept, &other_master] {
            let state = state(dir.path(), id);
            state.table.set_deadline(0, b"k", 5_000);
            drop(store.insert(state).await);
        }
        let busy_id = random_repl_id();
        let busy = store.insert(state(dir.path(), &busy_id)).await;
        let saved = store.save_tables();
        assert_eq!((saved.saved, saved.failed, saved.entries), (2, 0, 2));
        drop(busy);
        drop(store);
        // The second state's master changed since: its snapshot must not be used.
        let snapshot = table_snapshot::snapshot_path(dir.path(), &other_master);
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let foreign = table_snapshot::decode(&bytes).unwrap();
        bytes = table_snapshot::encode(&other_master, &"n".repeat(40), 10, &foreign.table);
        std::fs::write(&snapshot, bytes).unwrap();
        let orphan = random_repl_id();
        table_snapshot::save(dir.path(), &orphan, &"m".repeat(40), 10, &foreign.table).unwrap();
        let leftover = format!("redis-{}.state.tmp", random_repl_id());
        std::fs::write(dir.path().join(&leftover), b"half").unwrap();
        // Not the relay's (a Pika relay's map file may share the directory): kept.
        std::fs::write(dir.path().join("redis-a_9221_db0.tmp"), b"theirs").unwrap();

        let (reloaded, report) = StateStore::open(dir.path(), 8);
        assert_eq!((report.loaded, report.tables), (3, 1));
        let Claim::Claimed(g) = reloaded.claim(&kept, Duration::ZERO).await else {
            panic!("not reloaded");
        };
        assert_eq!(g.table_u, Some(10));
        assert_eq!(g.table.lookup(0, b"k", 0), KeyKnowledge::Volatile(5_000));
        drop(g);
        let Claim::Claimed(g) = reloaded.claim(&other_master, Duration::ZERO).await else {
            panic!("not reloaded");
        };
        assert_eq!(g.table_u, None);
        assert!(!g.table.is_complete());
        drop(g);
        // The reloaded states' writers rewrite their files (through a `.tmp` of their own).
        for id in [&kept, &other_master, &busy_id] {
            let Claim::Claimed(g) = reloaded.claim(id, Duration::ZERO).await else {
                panic!("not reloaded");
            };
            if let Some(file) = &g.file {
                file.wait_written().unwrap();
            }
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".state"))
            .collect();
        assert_eq!(names, ["redis-a_9221_db0.tmp"], "left behind or removed");
    }

    #[tokio::test]
    async fn claim_waits_for_release_and_reload_finds_files() {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = StateStore::open(dir.path(), 8);
        assert_eq!(report, LoadReport::default());
        let id = random_repl_id();
        assert!(persist::is_repl_id(&id));
        let guard = store.insert(state(dir.path(), &id)).await;
        assert!(matches!(
            store.claim(&id, Duration::from_millis(20)).await,
            Claim::Busy
        ));
        drop(guard);
        let Claim::Claimed(g) = store.claim(&id, Duration::from_millis(20)).await else {
            panic!("not claimed");
        };
        assert_eq!(g.map.tip(), (10, 10, 0));
        drop(g);
        assert!(matches!(
            store.claim("x", Duration::ZERO).await,
            Claim::Unknown
        ));
        let (reloaded, report) = StateStore::open(dir.path(), 8);
        assert_eq!(report.loaded, 1);
        let Claim::Claimed(g) = reloaded.claim(&id, Duration::ZERO).await else {
            panic!("not reloaded");
        };
        assert!(!g.table.is_complete());
        assert_eq!(g.table_u, None);
        reloaded.remove(g);
        assert!(reloaded.is_empty());
        state_files_become(dir.path(), 0).await;
    }

    #[tokio::test]
    async fn corrupt_files_are_discarded_and_eviction_bounds_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let id = random_repl_id();
        std::fs::write(persist::state_path(dir.path(), &id), b"garbage").unwrap();
        let (store, report) = StateStore::open(dir.path(), 2);
        assert_eq!(report.discarded, 1);
        assert!(persist::list_state_files(dir.path()).unwrap().is_empty());
        for _ in 0..4 {
            let id = random_repl_id();
            drop(store.insert(state(dir.path(), &id)).await);
        }
        assert_eq!(store.len(), 2);
        state_files_become(dir.path(), 2).await;
    }

    #[tokio::test]
    async fn a_failed_fresh_write_deletes_the_old_file_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let id = random_repl_id();
        let mut st = state(dir.path(), &id);
        let path = persist::state_path(dir.path(), &id);
        assert!(path.exists());
        // A directory where the replacement's temporary file goes makes the rewrite fail (even
        // for root), leaving the old file, which maps offsets of the stream before the resume
        // point.
        std::fs::create_dir(dir.path().join(format!("redis-{id}.state.tmp"))).unwrap();
        st.persist_fresh(dir.path()).await;
        assert!(
            !path.exists(),
            "the old state file outlived a failed rewrite"
        );
        assert!(st.file.is_none());
        assert!(st.persist().is_none(), "persistence stays off");
    }

    /// Removals are queued to each file's writer: wait (boundedly) for them to land.
    async fn state_files_become(dir: &Path, n: usize) {
        for _ in 0..1000 {
            if persist::list_state_files(dir).unwrap().len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(persist::list_state_files(dir).unwrap().len(), n);
    }
}
