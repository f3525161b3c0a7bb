//! What the rest of the process (admin API, readiness, metrics) can see of the relay: the
//! family switches it obeys and a live view of every replica connection.
//!
//! Each connection owns an [`Arc<SessionStatus>`] of atomics that it updates as it goes;
//! readers take a [`SessionRegistry::snapshot`] without touching the relay's hot path.

use crate::families::FamilySwitches;
use crate::relay_core::registry::Registry;
use crate::table::ExpiryTable;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// State shared between the relay and the process around it.
#[derive(Clone, Debug, Default)]
pub struct RelayShared {
    /// Runtime family switches (rewriting on/off per command family).
    pub families: FamilySwitches,
    /// Live replica connections.
    pub sessions: SessionRegistry,
}

/// Where a replica connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// PING/AUTH/REPLCONF.
    Handshake,
    /// A payload (RDB) is being relayed.
    FullSync,
    /// The EOF-framed payload is done; waiting for the replica's first ACK.
    AwaitingFirstAck,
    /// The command stream flows.
    Streaming,
}

impl Phase {
    /// The phase as the status JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::FullSync => "full_sync",
            Phase::AwaitingFirstAck => "awaiting_first_ack",
            Phase::Streaming => "streaming",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::FullSync,
            2 => Phase::AwaitingFirstAck,
            3 => Phase::Streaming,
            _ => Phase::Handshake,
        }
    }
}

/// Live status of one replica connection; updated by the connection, read by anyone.
#[derive(Debug)]
pub struct SessionStatus {
    id: u64,
    peer: SocketAddr,
    replica: Mutex<String>,
    own_id: Mutex<String>,
    table: Mutex<Option<Arc<ExpiryTable>>>,
    phase: AtomicU8,
    upstream_up: AtomicBool,
    lag_bytes: AtomicU64,
    lag_ms: AtomicU64,
    map_points: AtomicU64,
    upstream_offset: AtomicU64,
    downstream_offset: AtomicU64,
    acked_upstream_offset: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Values behind these locks are replaced whole, so a poisoned lock still holds a valid one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SessionStatus {
    /// The label used for this replica in logs and metrics (`ip:listening-port` once known).
    pub fn replica(&self) -> String {
        lock(&self.replica).clone()
    }

    pub(crate) fn set_replica(&self, label: String) {
        *lock(&self.replica) = label;
    }

    pub(crate) fn set_own_id(&self, id: &str) {
        *lock(&self.own_id) = id.to_string();
    }

    pub(crate) fn set_table(&self, table: Option<Arc<ExpiryTable>>) {
        *lock(&self.table) = table;
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        let v = match phase {
            Phase::Handshake => 0,
            Phase::FullSync => 1,
            Phase::AwaitingFirstAck => 2,
            Phase::Streaming => 3,
        };
        self.phase.store(v, Ordering::Relaxed);
    }

    pub(crate) fn set_upstream_up(&self, up: bool) {
        self.upstream_up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn set_offsets(&self, upstream: u64, downstream: u64, acked_upstream: u64) {
        self.upstream_offset.store(upstream, Ordering::Relaxed);
        self.downstream_offset.store(downstream, Ordering::Relaxed);
        self.acked_upstream_offset
            .store(acked_upstream, Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, bytes: u64, millis: u64, map_points: usize) {
        self.lag_bytes.store(bytes, Ordering::Relaxed);
        self.lag_ms.store(millis, Ordering::Relaxed);
        self.map_points.store(map_points as u64, Ordering::Relaxed);
    }

    /// A plain copy of the current values.
    pub fn snapshot(&self) -> ReplicaStatus {
        let table = lock(&self.table).clone();
        ReplicaStatus {
            connection: self.id,
            peer: self.peer,
            replica: self.replica(),
            replication_id: lock(&self.own_id).clone(),
            phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
            upstream_link_up: self.upstream_up.load(Ordering::Relaxed),
            table_complete: table.as_ref().is_some_and(|t| t.is_complete()),
            table_keys: table.as_ref().map_or(0, |t| t.len()),
            lag_bytes: self.lag_bytes.load(Ordering::Relaxed),
            lag_seconds: self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            offset_map_points: self.map_points.load(Ordering::Relaxed),
            upstream_offset: self.upstream_offset.load(Ordering::Relaxed),
            downstream_offset: self.downstream_offset.load(Ordering::Relaxed),
            acked_upstream_offset: self.acked_upstream_offset.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of one replica connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaStatus {
    /// Connection number (unique per process).
    pub connection: u64,
    /// The replica's socket address.
    pub peer: SocketAddr,
    /// `ip:listening-port` of the replica once announced, else the socket address.
    pub replica: String,
    /// The replication ID the proxy gave this replica (empty before a sync).
    pub replication_id: String,
    /// Where the connection is.
    pub phase: Phase,
    /// Whether the upstream link to the master is connected.
    pub upstream_link_up: bool,
    /// Whether the session's expiry table knows every key's volatility.
    pub table_complete: bool,
    /// Entries in the session's expiry table.
    pub table_keys: usize,
    /// Upstream bytes received but not yet acknowledged by the replica.
    pub lag_bytes: u64,
    /// Age of the oldest upstream byte the replica has not acknowledged (0 when caught up).
    pub lag_seconds: f64,
    /// Points in the offset map.
    pub offset_map_points: u64,
    /// Master offset of the last byte received.
    pub upstream_offset: u64,
    /// Replica offset of the last byte emitted.
    pub downstream_offset: u64,
    /// The replica's last ACK, translated to the master's offsets.
    pub acked_upstream_offset: u64,
}

/// All live replica connections.
#[derive(Clone, Debug, Default)]
pub struct SessionRegistry {
    sessions: Registry<Arc<SessionStatus>>,
}

impl SessionRegistry {
    /// A registry with no connection.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(&self, peer: SocketAddr) -> Arc<SessionStatus> {
        let (_, status) = self.sessions.register(|id| {
            Arc::new(SessionStatus {
                id,
                peer,
                replica: Mutex::new(peer.to_string()),
                own_id: Mutex::new(String::new()),
                table: Mutex::new(None),
                phase: AtomicU8::new(0),
                upstream_up: AtomicBool::new(false),
                lag_bytes: AtomicU64::new(0),
                lag_ms: AtomicU64::new(0),
                map_points: AtomicU64::new(0),
                upstream_offset: AtomicU64::new(0),
                downstream_offset: AtomicU64::new(0),
                acked_upstream_offset: AtomicU64::new(0),
            })
        });
        status
    }

    pub(crate) fn unregister(&self, status: &SessionStatus) {
        self.sessions.remove(status.id);
    }

    /// Every live connection, oldest first.
    pub fn snapshot(&self) -> Vec<ReplicaStatus> {
        let sessions = self.sessions.snapshot();
        sessions.iter().map(|s| s.snapshot()).collect()
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no replica is connected.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Total expiry-table entries over streaming sessions, and whether all their tables are
    /// complete (true when there are none).
    pub fn table_summary(&self) -> (usize, bool) {
        let snap = self.snapshot();
        let streaming = snap.iter().filter(|s| s.phase == Phase::Streaming);
        streaming.fold((0, true), |(keys, complete), s| {
            (keys + s.table_keys, complete && s.table_complete)
        })
    }
}
