//! State shared by every link of one relay: the family switches, the per-link status the admin
//! code reads, the replicas' offset maps, expiry tables parked between connections, and the
//! full-sync snapshot positions seen on P+10001.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::answer_journal::Answers;
use super::map_commit::CommittedMap;
use super::map_store::Loaded;
use super::offset_map::MapState;
use super::tip::LagBoard;
use crate::engine::StreamState;
use crate::families::FamilySwitches;
use crate::pika::messages::BinlogPosition;
use crate::relay_core::registry::Registry;
use crate::table::ExpiryTable;

/// Locks a mutex, taking over the data if another thread panicked while holding it (every
/// critical section here leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Status of one DB (slot) of one link.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DbLinkStatus {
    /// `db0`, or `db0:<slot>` for a non-zero slot.
    pub db: String,
    /// Handshake phase: `handshake`, `try_sync`, `first_send`, `streaming`, `full_sync`.
    pub phase: &'static str,
    /// Offset map kind: `unknown`, `identity`, `pairs`.
    pub offset_map: &'static str,
    /// Correspondences held (map pairs plus responses awaiting an ack).
    pub offset_map_points: usize,
    /// Whether the link's expiry table knows every key's volatility.
    pub table_complete: bool,
    /// Entries in the link's expiry table.
    pub table_keys: usize,
    /// Warm-up scan: `off` (not configured), `running`, `done`, `failed` (ended without
    /// completing the table).
    pub warmup: &'static str,
    /// Master binlog bytes not yet acknowledged by the replica.
    pub lag_bytes: u64,
    /// Age (master clock) of the oldest item the replica has not acknowledged; 0 when caught up.
    pub lag_seconds: f64,
    /// Master position the replica has acknowledged, `filenum/offset`.
    pub acked_master: String,
    /// Newest master position seen, `filenum/offset`.
    pub master_latest: String,
}

/// Status of one replica connection and its upstream connection.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct LinkStatus {
    /// Link id, unique within the process.
    pub id: u64,
    /// The replica's TCP address.
    pub peer: String,
    /// The replica as it names itself (`node.ip:node.port`), once known.
    pub replica: Option<String>,
    /// Whether the upstream connection to the master is open.
    pub upstream_up: bool,
    /// Per-DB state.
    pub dbs: Vec<DbLinkStatus>,
}

/// The live links, readable at any time.
#[derive(Clone, Debug, Default)]
pub struct SessionRegistry {
    links: Registry<LinkStatus>,
}

impl SessionRegistry {
    /// Every live link, by id.
    pub fn snapshot(&self) -> Vec<LinkStatus> {
        self.links.snapshot()
    }

    /// Number of live links.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// True when no replica is connected.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub(crate) fn register(&self, peer: String) -> u64 {
        self.links
            .register(|id| LinkStatus {
                id,
                peer,
                ..LinkStatus::default()
            })
            .0
    }

    pub(crate) fn update(&self, status: LinkStatus) {
        self.links.update(status.id, status);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.links.remove(id);
    }
}

/// An expiry table left by a closed link, valid at master position `at`.
#[derive(Debug)]
pub(crate) struct ParkedTable {
    pub table: Arc<ExpiryTable>,
    pub state: StreamState,
    pub at: BinlogPosition,
    /// Journaled look-up answers for items after `at` (a table rebuilt after a crash): the
    /// link that takes the table decides those items with them.
    pub journaled: Answers,
}

/// A full-sync snapshot position read from the `info` file a master sent over P+10001.
#[derive(Clone, Debug)]
struct SnapshotSeen {
    peer: IpAddr,
    db: String,
    position: BinlogPosition,
    seen: Instant,
}

/// How long a snapshot position stays usable to recognise the TrySync that follows a full sync.
const SNAPSHOT_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// Everything the links of one relay share.
#[derive(Clone, Debug)]
pub struct PikaRelayShared {
    /// Runtime family switches (shared with the admin code).
    pub families: FamilySwitches,
    /// Live links.
    pub sessions: SessionRegistry,
    stores: Arc<Mutex<HashMap<String, CommittedMap>>>,
    parked: Arc<Mutex<HashMap<String, ParkedTable>>>,
    snapshots: Arc<Mutex<Vec<SnapshotSeen>>>,
    /// Held by the one catch-up at a time: they share the relay's node name on the master.
    pub(crate) catch_up: Arc<tokio::sync::Mutex<()>>,
    /// Held by the one standby reader at a time: they share a node name of their own.
    pub(crate) standby_node: Arc<tokio::sync::Mutex<()>>,
    /// Standby readers running, by store key (`standby.rs`).
    standbys: Arc<Mutex<HashMap<String, StandbyHandle>>>,
    /// Per replica and DB: what lag is measured from (see [`super::tip`]).
    pub(crate) lag: LagBoard,
}

/// A running standby reader: its stop signal and its task.
#[derive(Debug)]
pub(crate) struct StandbyHandle {
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl PikaRelayShared {
    /// Registers the standby reader of `store_key`.
    pub(crate) fn add_standby(&self, store_key: &str, handle: StandbyHandle) {
        lock(&self.standbys).insert(store_key.to_string(), handle);
    }

    /// Stops the standby reader of `store_key`, if one runs, and waits until it has ended (its
    /// answers are then all in the journal). One still opening its session after a second (a
    /// master that does not answer) is aborted: it journals nothing across an await, so no
    /// answer is torn.
    pub(crate) async fn stop_standby(&self, store_key: &str) {
        let Some(mut handle) = lock(&self.standbys).remove(store_key) else {
            return;
        };
        handle.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(1), &mut handle.task)
            .await
            .is_err()
        {
            handle.task.abort();
            let _ = handle.task.await;
        }
    }

    /// Shared state with the given switches and no links.
    pub fn new(families: FamilySwitches) -> Self {
        PikaRelayShared {
            families,
            sessions: SessionRegistry::default(),
            stores: Arc::default(),
            parked: Arc::default(),
            snapshots: Arc::default(),
            catch_up: Arc::default(),
            standby_node: Arc::default(),
            standbys: Arc::default(),
            lag: LagBoard::default(),
        }
    }

    /// The offset map for `key`, opened from `dir` on first use, now owned by `link`: a
    /// replica that reconnects gets a new link, and the old one must not overwrite what the new
    /// one learns. Returns the map, what the first open found (`None` when it was already
    /// open) and the newest state. Must run within a Tokio runtime (the map's writer task).
    pub(crate) fn map_store(
        &self,
        dir: &Path,
        key: &str,
        link: u64,
    ) -> io::Result<(CommittedMap, Option<Loaded>, MapState)> {
        let mut stores = lock(&self.stores);
        if let Some(map) = stores.get(key) {
            let state = map.claim(link);
            return Ok((map.clone(), None, state));
        }
        std::fs::create_dir_all(dir)?;
        let (map, loaded) = CommittedMap::open(&dir.join(format!("{key}.map")), link)?;
        let state = map.claim(link);
        stores.insert(key.to_string(), map.clone());
        Ok((map, Some(loaded), state))
    }

    /// Parks a closed link's table for `key`. A table already parked further along the master's
    /// binlog stays: it comes from a newer link of the same replica (an older link on a
    /// half-open socket can close after it).
    pub(crate) fn park_table(&self, key: &str, parked: ParkedTable) {
        let mut all = lock(&self.parked);
        if all.get(key).is_some_and(|newer| newer.at > parked.at) {
            return;
        }
        all.insert(key.to_string(), parked);
    }

    /// Parks the table rebuilt for a replica that resumes at `parked.at`, replacing whatever is
    /// parked: a table further along (left by the link that ran ahead of what the replica
    /// applied, e.g. one the master dropped) describes a position this replica is no longer at.
    pub(crate) fn park_for_resume(&self, key: &str, parked: ParkedTable) {
        lock(&self.parked).insert(key.to_string(), parked);
    }

    /// Every parked table, removed (the relay is stopping).
    pub(crate) fn take_parked_tables(&self) -> Vec<(String, ParkedTable)> {
        lock(&self.parked).drain().collect()
    }

    /// True when a table is parked for `key` exactly at `at`.
    pub(crate) fn is_parked_at(&self, key: &str, at: BinlogPosition) -> bool {
        lock(&self.parked).get(key).is_some_and(|p| p.at == at)
    }

    /// The table parked for `key` if it is valid exactly at `at` (it is removed either way).
    pub(crate) fn unpark_table(&self, key: &str, at: BinlogPosition) -> Option<ParkedTable> {
        lock(&self.parked).remove(key).filter(|p| p.at == at)
    }

    pub(crate) fn record_snapshot(&self, peer: IpAddr, db: &str, position: BinlogPosition) {
        let mut snaps = lock(&self.snapshots);
        snaps.retain(|s| s.seen.elapsed() < SNAPSHOT_VALIDITY);
        snaps.push(SnapshotSeen {
            peer,
            db: db.to_string(),
            position,
            seen: Instant::now(),
        });
    }

    /// Whether a full sync to `peer` for `db` delivered a snapshot at `position` after `since`.
    pub(crate) fn snapshot_matches(
        &self,
        peer: IpAddr,
        db: &str,
        position: BinlogPosition,
        since: Instant,
    ) -> bool {
        lock(&self.snapshots).iter().any(|s| {
            s.peer == peer
                && s.db == db
                && s.position == position
                && s.seen >= since
                && s.seen.elapsed() < SNAPSHOT_VALIDITY
        })
    }
}

impl Default for PikaRelayShared {
    fn default() -> Self {
        Self::new(FamilySwitches::all_on())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_table_further_along_is_kept_and_unparked_only_at_its_position() {
        use crate::table::{Baseline, ExpiryTable};
        let shared = PikaRelayShared::default();
        let park = |at| ParkedTable {
            table: Arc::new(ExpiryTable::new(Baseline::Unknown)),
            state: StreamState {
                db: 0,
                in_multi: false,
            },
            at,
            journaled: Default::default(),
        };
        let (older, newer) = (BinlogPosition::new(1, 100), BinlogPosition::new(2, 50));
        shared.park_table("r_1_db0", park(newer));
        // An older link of the same replica closes last: the newer table stays.
        shared.park_table("r_1_db0", park(older));
        assert!(shared.unpark_table("r_1_db0", older).is_none());
        shared.park_table("r_1_db0", park(newer));
        assert_eq!(
            shared.unpark_table("r_1_db0", newer).map(|p| p.at),
            Some(newer)
        );
        assert!(shared.take_parked_tables().is_empty());
    }

    #[tokio::test]
    async fn only_the_newest_link_of_a_replica_writes_its_map() {
        let dir = tempfile::tempdir().unwrap();
        let shared = PikaRelayShared::default();
        let (old, loaded, state) = shared.map_store(dir.path(), "r_1_db0", 1).unwrap();
        assert_eq!((loaded, state), (Some(Loaded::Missing), MapState::Unknown));
        old.persist(1, MapState::Identity).await.unwrap();
        // The replica reconnected: link 2 takes the map over and sees what link 1 wrote.
        let (new, loaded, state) = shared.map_store(dir.path(), "r_1_db0", 2).unwrap();
        assert_eq!((loaded, state), (None, MapState::Identity));
        assert!(old.persist(1, MapState::Unknown).await.is_err());
        new.persist(2, MapState::Unknown).await.unwrap();
        let (_, _, state) = shared.map_store(dir.path(), "r_1_db0", 3).unwrap();
        assert_eq!(state, MapState::Unknown);
    }

    #[test]
    fn snapshots_match_by_peer_db_position_and_time() {
        let shared = PikaRelayShared::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let before = Instant::now();
        shared.record_snapshot(ip, "db0", BinlogPosition::new(0, 1542));
        let p = BinlogPosition::new(0, 1542);
        assert!(shared.snapshot_matches(ip, "db0", p, before));
        assert!(!shared.snapshot_matches(ip, "db1", p, before));
        assert!(!shared.snapshot_matches("10.0.0.1".parse().unwrap(), "db0", p, before));
        assert!(!shared.snapshot_matches(ip, "db0", BinlogPosition::new(0, 1541), before));
        assert!(!shared.snapshot_matches(ip, "db0", p, Instant::now()));
    }
}
