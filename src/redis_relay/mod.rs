//! The Redis replication relay: a master to its replicas, a replica to the real master, and a
//! rewriter of expiry-dependent entries in between (`docs/redis-protocol.md#offset-translation`
//! and `docs/redis-protocol.md#what-the-relay-does`).
//!
//! Every replica connection gets **its own upstream link** to the master, its own replication ID
//! (random, 40 hex characters, new for every downstream full sync), its own offset map and its
//! own expiry table (see `store` for why the table cannot be shared). The payload of a full
//! sync is relayed byte for byte in the master's framing while a scanner seeds the table; the
//! command stream then goes through [`crate::engine::rewrite`] with the Redis dialect.
//!
//! Entry point: [`serve`] (or [`serve_on`] with a bound listener). Operators see the relay
//! through [`RelayShared`]: the family switches it obeys and the live [`SessionRegistry`].
//!
//! Files, one concept each: `handshake` (what to do with a replica's pre-sync commands),
//! `upstream` (the master link), `session` (one replica connection end to end),
//! `rdb_relay` (payload framing and scanning), [`stream`] (entries through the engine),
//! [`offset_map`] (D ↔ U translation), `persist` (the state files), [`table_snapshot`] (the
//! expiry tables kept over a graceful restart), `checkpoint` and `catch_up` (the expiry tables
//! rebuilt after a crash), `store` (per-replica
//! state across connections), `registry` (the operator view), [`outq`] (zero-copy output
//! queue), [`stats`] (every metric).

pub(crate) mod catch_up;
pub(crate) mod checkpoint;
pub(crate) mod ending;
pub(crate) mod handshake;
pub(crate) mod held_acks;
pub(crate) mod link;
pub mod offset_map;
pub mod outq;
pub(crate) mod persist;
pub(crate) mod rdb_relay;
pub(crate) mod registry;
mod session;
pub mod stats;
pub(crate) mod store;
pub mod stream;
pub mod table_snapshot;
pub(crate) mod upstream;

pub use registry::{Phase, RelayShared, ReplicaStatus, SessionRegistry};

use crate::engine::{Dialect, Policy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::StateStore;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of the Redis relay.
#[derive(Clone, Debug)]
pub struct RedisRelayConfig {
    /// Where replicas connect.
    pub listen: SocketAddr,
    /// The real master.
    pub master: SocketAddr,
    /// Where per-replica state (replication IDs and offset maps) is persisted.
    pub state_dir: PathBuf,
    /// User for the proxy's own `AUTH` to the master (with `master_password`).
    pub master_user: Option<String>,
    /// When set, the proxy authenticates every upstream link itself before relaying the
    /// replica's handshake (a replica's own `AUTH` is still relayed and checked by the master).
    pub master_password: Option<String>,
    /// Bytes queued for one replica before the proxy stops reading that replica's upstream link
    /// (back-pressure then reaches the master, whose own output-buffer limits apply).
    pub replica_output_buffer_limit: usize,
    /// Deadline for connecting to the master.
    pub connect_timeout: Duration,
    /// Deadline for each handshake step (replica command, master reply).
    pub handshake_timeout: Duration,
    /// How often the offset map is persisted and lag is reported (it is also persisted on
    /// every replica ACK).
    pub state_sync_interval: Duration,
    /// Most replica states kept (in memory and on disk); the least recently used idle ones go.
    pub max_saved_states: usize,
    /// How often a streaming link checkpoints its expiry table (`checkpoint`), for a restart
    /// after a crash.
    pub checkpoint_interval: Duration,
}

impl RedisRelayConfig {
    /// Defaults for everything but the addresses and the state directory.
    pub fn new(listen: SocketAddr, master: SocketAddr, state_dir: PathBuf) -> Self {
        RedisRelayConfig {
            listen,
            master,
            state_dir,
            master_user: None,
            master_password: None,
            replica_output_buffer_limit: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(60),
            state_sync_interval: Duration::from_secs(1),
            max_saved_states: 256,
            checkpoint_interval: Duration::from_secs(60),
        }
    }
}

/// Why the relay could not run.
#[derive(Debug)]
pub enum RelayError {
    /// The listen address could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The state directory could not be created.
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            RelayError::StateDir { path, source } => {
                write!(f, "cannot use state directory {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayError::Bind { source, .. } | RelayError::StateDir { source, .. } => Some(source),
        }
    }
}

/// What every connection of one relay shares.
pub(crate) struct Ctx {
    pub cfg: RedisRelayConfig,
    pub shared: RelayShared,
    pub store: StateStore,
    pub policy: Policy,
}

/// Run the relay on `cfg.listen` until `shutdown` is cancelled.
pub async fn serve(
    cfg: RedisRelayConfig,
    shared: RelayShared,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RelayError::Bind {
            addr: cfg.listen,
            source,
        })?;
    serve_on(listener, cfg, shared, shutdown).await
}

/// Run the relay on an already bound listener (`cfg.listen` is then informational).
pub async fn serve_on(
    listener: TcpListener,
    cfg: RedisRelayConfig,
    shared: RelayShared,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| RelayError::StateDir {
        path: cfg.state_dir.clone(),
        source,
    })?;
    let (store, report) = StateStore::open(&cfg.state_dir, cfg.max_saved_states);
    let local = listener.local_addr().ok();
    tracing::info!(listen = ?local, master = %cfg.master, state_dir = %cfg.state_dir.display(),
        restored = report.loaded, discarded = report.discarded, tables = report.tables,
        "redis relay listening");
    let ctx = Arc::new(Ctx {
        policy: Policy {
            dialect: Dialect::Redis,
            families: shared.families.clone(),
            pika_release: Default::default(),
            pause_on_unknown: false,
        },
        cfg,
        shared,
        store,
    });
    let mut tasks = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    tracing::info!(%peer, "replica connected");
                    tasks.spawn(session::serve_connection(
                        ctx.clone(),
                        sock,
                        peer,
                        shutdown.child_token(),
                    ));
                }
                Err(e) => {
                    // Out of descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = ticker.tick() => {
                let (keys, complete) = ctx.shared.sessions.table_summary();
                stats::tables(keys, complete);
            }
        }
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("replica connections did not stop within 5 s; aborting them");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    // Every connection has let go of its state: the tables describe where each stopped.
    let saving = ctx.clone();
    match tokio::task::spawn_blocking(move || saving.store.save_tables()).await {
        Ok(saved) => saved.log(),
        Err(e) => tracing::error!(error = %e, "saving the expiry tables failed"),
    }
    tracing::info!("redis relay stopped");
    Ok(())
}

/// A captured fixture for unit tests (see [`crate::fixtures`]).
#[cfg(test)]
pub(crate) fn test_fixture(relative: &str) -> Vec<u8> {
    crate::fixtures::read(relative).unwrap_or_else(|e| panic!("{e}"))
}
