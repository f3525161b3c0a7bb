//! The Pika relay: stands in for a Pika master towards its replicas and rewrites the binlog
//! items it relays so that key expiry replicates deterministically.
//!
//! For its own port P it serves:
//! * **P**: forwarded byte for byte to the master's P (a replica only opens it to learn its
//!   local IP; the warm-up scan talks to the master's P directly);
//! * **P+2000**: the protobuf replication channel, terminated here and re-originated with one
//!   upstream connection per replica connection (`session`);
//! * **P+10001**: rsync2 full-sync file transfer, forwarded byte for byte
//!   (`passthrough`), with a read-only tap that notes the snapshot's binlog position
//!   (`rsync_tap`).
//!
//! Offsets: items keep their master END offsets on the way down; what the replica reports in
//! its own binlog space (acks, TrySync, first_send) is translated with an offset map learned
//! from acks and persisted per replica (`offset_map`, [`map_store`], written behind the
//! acks by `map_commit`). A clean stop saves each DB's expiry table for the next start
//! (`table_store`). See `docs/pika-protocol.md` for the protocol (and its
//! `#what-the-relay-does` section for the duties above).

mod answer_journal;
mod catch_up;
mod checkpoint;
mod client_port;
pub(crate) mod config;
pub(crate) mod error;
mod frame_reader;
mod fresh_dump;
pub(crate) mod inflight;
mod link;
mod lookup;
mod map_commit;
pub mod map_store;
pub(crate) mod offset_map;
pub(crate) mod passthrough;
pub(crate) mod position;
pub(crate) mod registry;
pub(crate) mod replica_layout;
pub mod rewrite;
pub(crate) mod rsync_tap;
mod session;
mod standby;
pub(crate) mod stats;
mod table_store;
mod tip;
pub(crate) mod warmup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{
    PikaRelayConfig, WarmupMode, DEFAULT_READ_AHEAD_BYTES, DEFAULT_WARMUP_MAX_KEYS,
    MASTER_DROP_ENV, MAX_READ_AHEAD_BYTES,
};
pub use error::RelayError;
pub use registry::{DbLinkStatus, LinkStatus, PikaRelayShared, SessionRegistry};

use config::{REPLICATION_PORT_OFFSET, RSYNC_PORT_OFFSET};
use rsync_tap::RsyncTap;
use session::{run_link, LinkSetup};

/// How long `serve` waits for open links to close after shutdown before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RelayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind { what, addr, source })
}

fn shifted(addr: SocketAddr, delta: u16, what: &str) -> Result<SocketAddr, RelayError> {
    PikaRelayConfig::shifted(addr, delta).ok_or_else(|| {
        RelayError::Config(format!("{what} port {}+{delta} exceeds 65535", addr.port()))
    })
}

/// Runs the relay until `shutdown` is cancelled.
pub async fn serve(
    cfg: PikaRelayConfig,
    shared: PikaRelayShared,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let listen_repl = shifted(cfg.listen, REPLICATION_PORT_OFFSET, "listen")?;
    let listen_rsync = shifted(cfg.listen, RSYNC_PORT_OFFSET, "listen")?;
    let master_rsync = shifted(cfg.master, RSYNC_PORT_OFFSET, "master")?;
    shifted(cfg.master, REPLICATION_PORT_OFFSET, "master")?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(RelayError::StateDir)?;

    let client = bind("P", cfg.listen).await?;
    let repl = bind("P+2000", listen_repl).await?;
    let rsync = bind("P+10001", listen_rsync).await?;
    tracing::info!(
        listen = %cfg.listen, master = %cfg.master, state_dir = %cfg.state_dir.display(),
        warmup = ?cfg.warmup, "pika relay listening on P, P+2000 and P+10001"
    );

    let (dir, master) = (cfg.state_dir.clone(), cfg.master);
    let saved = tokio::task::spawn_blocking(move || table_store::load_all(&dir, master))
        .await
        .unwrap_or_default();
    for (key, parked) in saved {
        shared.park_table(&key, parked);
    }
    let (dir, master) = (cfg.state_dir.clone(), cfg.master);
    let checkpoints =
        tokio::task::spawn_blocking(move || table_store::newest_checkpoints(&dir, master))
            .await
            .unwrap_or_default();
    let cfg = Arc::new(cfg);
    // Registered before the first link can open a DB (which stops its reader first).
    standby::start_all(&cfg, &shared, checkpoints, &shutdown);
    let setup = LinkSetup {
        cfg: cfg.clone(),
        shared: shared.clone(),
    };
    let links = shutdown.child_token();
    let mut tasks = JoinSet::new();
    // One tip poller for every link (lag against the master's binlog tip).
    tasks.spawn(tip::run(
        cfg.master,
        cfg.master_password.clone(),
        shared.lag.clone(),
        crate::replica_series::global(),
        cfg.binlog_file_size,
        links.clone(),
    ));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = client.accept() => {
                if let Some((stream, _)) = accepted_or_log(accepted, "P") {
                    tasks.spawn(passthrough::forward(stream, cfg.master, "P", links.clone(), None));
                }
            }
            accepted = repl.accept() => {
                if let Some((stream, peer)) = accepted_or_log(accepted, "P+2000") {
                    tasks.spawn(run_link(stream, peer, setup.clone(), links.clone()));
                }
            }
            accepted = rsync.accept() => {
                if let Some((stream, peer)) = accepted_or_log(accepted, "P+10001") {
                    let tap = snapshot_tap(shared.clone(), peer);
                    tasks.spawn(passthrough::forward(stream, master_rsync, "P+10001", links.clone(), Some(tap)));
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    links.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    // Every link has closed and parked its tables: they describe where each stopped.
    let (dir, master, parked) = (
        cfg.state_dir.clone(),
        cfg.master,
        shared.take_parked_tables(),
    );
    match tokio::task::spawn_blocking(move || table_store::save_all(&dir, master, &parked)).await {
        Ok(saved) => saved.log(),
        Err(e) => tracing::error!(error = %e, "saving the expiry tables failed"),
    }
    tracing::info!("pika relay stopped");
    Ok(())
}

fn accepted_or_log(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok(a) => Some(a),
        Err(e) => {
            // Accept errors (e.g. out of file descriptors) are transient; keep listening.
            tracing::warn!(port = what, "accept failed: {e}");
            None
        }
    }
}

/// A tap that records the snapshot position of every `info` file sent to `peer`.
fn snapshot_tap(shared: PikaRelayShared, peer: SocketAddr) -> passthrough::Tap {
    let mut tap = RsyncTap::default();
    Box::new(move |chunk: &[u8]| {
        let found = tap.feed(chunk);
        for info in found {
            tracing::info!(%peer, db = %info.db, position = %info.position, "full-sync snapshot position seen");
            shared.record_snapshot(peer.ip(), &info.db, info.position);
        }
    })
}
