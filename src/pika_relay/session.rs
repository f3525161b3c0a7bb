//! One replica link: the replica's P+2000 connection, terminated here, and the relay's own
//! connection to the master's P+2000, opened for it.
//!
//! Requests (replica → master) and responses (master → replica) are read as whole frames. A
//! frame the relay does not change is written out with its original bytes. The relay changes:
//!
//! * BinlogSync responses whose items the engine rewrites (item contents only; offsets stay in
//!   master space, see [`rewrite`](super::rewrite));
//! * TrySync and first_send requests, whose replica position becomes the master position the
//!   offset map knows for it; a position it cannot map is answered here with
//!   kSyncPointBePurged, which makes the replica run a full sync;
//! * acks, whose `ack_range_end` (the replica's own position) becomes the master END of the
//!   response they answer (taken from the FIFO of forwarded responses).
//!
//! A Pika connection can carry several DBs (one TrySync each), so all of this is kept per DB.

use crate::hold::HoldClock;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, Checkpointing};
use super::client_port;
use super::config::{PikaRelayConfig, WarmupMode, REPLICATION_PORT_OFFSET};
use super::error::{LinkError, Side};
use super::frame_reader::{FrameReader, Frames};
use super::inflight::Inflight;
use super::map_commit::CommittedMap;
use super::map_store::Loaded;
use super::offset_map::MapState;
use super::passthrough::CONNECT_TIMEOUT;
use super::registry::lock;
use super::registry::{DbLinkStatus, LinkStatus, ParkedTable, PikaRelayShared};
use super::rewrite::LinkRewriter;
use super::stats;
use super::tip::DbLag;
use super::warmup::{self, WarmupState};
use crate::engine::{PikaRelease, RiskCause, StreamState};
use crate::pika::frame::{FrameCodec, FrameError};
use crate::pika::messages::{
    build_try_sync_purged_response, replace_ack_range, replace_ack_range_end,
    replace_try_sync_offset, BinlogPosition, BinlogSyncRequest, InnerRequest, InnerResponse,
    LogicalOffset, MessageError, MessageType, MetaSyncResponse, Node, Slot, SyncPointRequest,
    TrySyncReplyCode,
};
use crate::replica_series::{self, ReplicaHandle};
use crate::table::{Baseline, ExpiryTable};

/// How often link status, lag gauges and timeouts are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// How long a closing link waits for its offset map to reach the disk.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Margin added to a replica's lag when deciding whether an entry is at risk: Pika's expiry has
/// one-second precision.
const AT_RISK_MARGIN_MS: i64 = 1000;
/// At most one at-risk warning per link per this interval.
const RISK_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Handshake phase of one DB of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing agreed yet (or the last TrySync failed).
    Handshake,
    /// A TrySync at replica position `replica`, sent upstream as master position `master`.
    TrySync {
        replica: BinlogPosition,
        master: BinlogPosition,
    },
    /// The master accepted; the replica's first_send is due.
    FirstSend {
        replica: BinlogPosition,
        master: BinlogPosition,
    },
    /// Items flow.
    Streaming,
    /// A DBSync was requested; the next TrySync ends it.
    FullSync,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::TrySync { .. } => "try_sync",
            Phase::FirstSend { .. } => "first_send",
            Phase::Streaming => "streaming",
            Phase::FullSync => "full_sync",
        }
    }
}

/// State of one DB (slot) of a link.
struct DbLink {
    name: String,
    store_key: String,
    store: CommittedMap,
    map: MapState,
    phase: Phase,
    inflight: Inflight,
    rewriter: Option<LinkRewriter>,
    warmup: Option<WarmupState>,
    /// Master END of the last item forwarded (the position the engine's table reflects).
    last_forwarded: BinlogPosition,
    /// Master END the replica last acknowledged.
    acked_master: BinlogPosition,
    /// Newest master position seen (item ENDs, TrySync replies).
    master_latest: BinlogPosition,
    answered_purged: bool,
    master_said_purged: bool,
    dbsync_requested: Option<Instant>,
    /// The last checkpoint of the table: where and when, and its write if still running.
    checkpoint: Checkpointing,
    /// This replica's lag tracker for the DB, shared with the tip poller (it outlives the link
    /// so a dropped replica's lag keeps growing).
    lag: Arc<std::sync::Mutex<DbLag>>,
}

/// The DB key of a slot: `db0`, or `db0:<slot>` when the slot is not 0.
fn db_key(db_name: &[u8], slot_id: u32) -> String {
    let name = String::from_utf8_lossy(db_name);
    if slot_id == 0 {
        name.into_owned()
    } else {
        format!("{name}:{slot_id}")
    }
}

/// `dbN` → N (the engine keys its table by DB number).
fn db_index(db_name: &[u8]) -> u32 {
    std::str::from_utf8(db_name)
        .ok()
        .and_then(|n| n.strip_prefix("db"))
        .and_then(|n| n.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A file-name-safe key for one replica's DB.
fn store_key(node: &Node<'_>, db: &str) -> String {
    let ip: String = String::from_utf8_lossy(node.ip)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let db: String = db
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{ip}_{}_{db}", node.port)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn msg_err(side: Side) -> impl Fn(MessageError) -> LinkError {
    move |e| LinkError::Message(side, e)
}

fn frame_err(side: Side, e: FrameError) -> LinkError {
    match e {
        FrameError::Io(io) => LinkError::Io(side, io),
        other => LinkError::Frame(side, other),
    }
}

fn missing(side: Side, what: &str) -> LinkError {
    LinkError::Protocol(side, format!("{what} message without its {what} field"))
}

/// What a link needs from the relay.
#[derive(Clone)]
pub(crate) struct LinkSetup {
    pub cfg: Arc<PikaRelayConfig>,
    pub shared: PikaRelayShared,
}

/// Runs one replica link until either side closes, a peer breaks the protocol, or `cancel`.
pub(crate) async fn run_link(
    replica: TcpStream,
    peer: SocketAddr,
    setup: LinkSetup,
    cancel: CancellationToken,
) {
    let Some(master_addr) = PikaRelayConfig::shifted(setup.cfg.master, REPLICATION_PORT_OFFSET)
    else {
        return;
    };
    let id = setup.shared.sessions.register(peer.to_string());
    let replica_label = peer.to_string();
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(master_addr))
        .await
    {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::warn!(%peer, master = %master_addr, "cannot reach the master's replication port: {e}; closing the replica connection");
            None
        }
        Err(_) => {
            tracing::warn!(%peer, master = %master_addr, "connecting to the master's replication port timed out; closing the replica connection");
            None
        }
    };
    let Some(upstream) = upstream else {
        stats::disconnect("upstream_unreachable");
        setup.shared.sessions.remove(id);
        return;
    };
    let release = match client_port::release_for_link(&setup.cfg, peer).await {
        Ok(release) => release,
        Err(why) => {
            tracing::error!(
                %peer, master = %setup.cfg.master,
                "refusing the replica: the master runs {why}; its rewrite forms are unproven (start with --allow-unknown-pika-version to relay it anyway)"
            );
            stats::protocol_error(Side::Master, "unknown_version");
            stats::disconnect("master_error");
            setup.shared.sessions.remove(id);
            return;
        }
    };
    let _ = replica.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (replica_r, replica_w) = replica.into_split();
    let (master_r, master_w) = upstream.into_split();
    let codec = FrameCodec::with_max_frame_len(setup.cfg.max_frame_len);
    let mut link = Link {
        id,
        peer,
        setup: setup.clone(),
        name: replica_label.clone(),
        dbs: HashMap::new(),
        down: replica_w,
        up: master_w,
        to_replica: BytesMut::new(),
        to_master: BytesMut::new(),
        bytes: stats::ByteCounters::new(),
        codec,
        last_upstream: Instant::now(),
        last_binlog_request: Instant::now(),
        hold: HoldClock::new(),
        master_addr,
        master_spoke: false,
        risk_log: crate::logging::Throttle::new(RISK_LOG_INTERVAL),
        pika_release: release.unwrap_or_default(),
        series: None,
    };
    tracing::info!(%peer, link = id, "replica connected; relaying to {master_addr}");
    link.publish_status();
    let result = link
        .pump(
            FrameReader::new(replica_r, codec),
            FrameReader::new(master_r, codec),
            cancel.clone(),
        )
        .await;
    stats::disconnect(match &result {
        Ok(()) if cancel.is_cancelled() => "shutdown",
        Ok(()) => "replica_closed",
        Err(e) => e.disconnect_reason(),
    });
    match &result {
        Ok(()) => tracing::info!(replica = %link.name, link = id, "link closed"),
        Err(e) => {
            // A socket closing is how links normally end; only violations and timeouts count.
            if e.is_protocol_violation() || matches!(e, LinkError::Timeout(..)) {
                if let Some(side) = e.side() {
                    stats::protocol_error(side, e.kind());
                }
            }
            if e.is_protocol_violation() || matches!(e, LinkError::Persist(_)) {
                tracing::error!(replica = %link.name, link = id, "closing the link: {e}");
            } else if matches!(e, LinkError::ReplicaSilent(_)) {
                tracing::warn!(replica = %link.name, link = id, "closing the link: {e}");
            } else {
                tracing::info!(replica = %link.name, link = id, "link closed: {e}");
            }
        }
    }
    link.close().await;
}

struct Link {
    id: u64,
    peer: SocketAddr,
    setup: LinkSetup,
    /// The replica as it names itself (`node.ip:port`), or its TCP peer address until known.
    name: String,
    dbs: HashMap<String, DbLink>,
    down: OwnedWriteHalf,
    up: OwnedWriteHalf,
    /// Frames encoded for the replica / the master and not yet written: everything one read
    /// produced goes out in one write per side.
    to_replica: BytesMut,
    to_master: BytesMut,
    bytes: stats::ByteCounters,
    codec: FrameCodec,
    last_upstream: Instant,
    /// When a BinlogSync request (first_send, ack or ping) last went to the master: the master
    /// drops a replica whose requests stop for 20 s.
    last_binlog_request: Instant,
    /// How long the master's data waits in the proxy.
    hold: HoldClock,
    /// The master's replication port.
    master_addr: SocketAddr,
    /// Whether the master sent one valid message yet.
    master_spoke: bool,
    /// At-risk warnings of this link.
    risk_log: crate::logging::Throttle,
    /// The master's release, from its MetaSync answer (4.0 adds `db_instance_num`).
    pika_release: PikaRelease,
    /// The replica's series, from when it named itself (a connection that never does, such as
    /// a port probe, creates none) until the link closes.
    series: Option<ReplicaHandle>,
}

impl Link {
    async fn pump(
        &mut self,
        mut replica: Frames,
        mut master: Frames,
        cancel: CancellationToken,
    ) -> Result<(), LinkError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                frame = replica.next() => {
                    let mut frame = frame;
                    loop {
                        match frame {
                            None => return Ok(()),
                            Some(Err(e)) => return Err(frame_err(Side::Replica, e)),
                            Some(Ok(body)) => {
                                self.bytes.received(Side::Replica, body.len() + 4);
                                self.on_request(body).await?;
                            }
                        }
                        frame = replica.next_buffered();
                        if frame.is_none() {
                            break;
                        }
                    }
                }
                frame = master.next() => {
                    let arrived = Instant::now();
                    let mut frame = frame;
                    loop {
                        match frame {
                            None => return Err(LinkError::Io(
                                Side::Master,
                                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the master closed the connection"),
                            )),
                            Some(Err(e)) => {
                                return Err(self.unless_foreign(&master, frame_err(Side::Master, e)))
                            }
                            Some(Ok(body)) => {
                                self.bytes.received(Side::Master, body.len() + 4);
                                self.last_upstream = Instant::now();
                                if let Err(e) = self.on_response(body).await {
                                    return Err(self.unless_foreign(&master, e));
                                }
                                self.master_spoke = true;
                            }
                        }
                        frame = master.next_buffered();
                        if frame.is_none() {
                            break;
                        }
                    }
                    self.hold.processed(arrived, self.to_replica.len());
                }
                _ = tick.tick() => self.on_tick().await?,
            }
            self.flush().await?;
        }
    }

    /// A master-side error before the master sent one valid message most likely means that
    /// something other than a Pika master listens on its replication port (an HTTP server, a
    /// Redis): the error then names the address and quotes what it answered.
    fn unless_foreign(&self, master: &Frames, e: LinkError) -> LinkError {
        let foreign = e.is_protocol_violation()
            || matches!(&e, LinkError::Io(_, io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
        if self.master_spoke || master.opening.is_empty() || !foreign {
            return e;
        }
        LinkError::Protocol(
            Side::Master,
            format!(
                "{} does not speak Pika's replication protocol (is --master a Pika server?): it answered {} ({e})",
                self.master_addr,
                crate::logging::quote_answer(&master.opening)
            ),
        )
    }

    /// Queues one frame for `side`; [`Link::flush`] writes it.
    async fn send(&mut self, side: Side, body: &[u8]) -> Result<(), LinkError> {
        let out = match side {
            Side::Master => &mut self.to_master,
            Side::Replica => &mut self.to_replica,
        };
        self.codec.encode(body, out).map_err(|e| frame_err(side, e))
    }

    /// Writes every queued frame, replica side first (the data path).
    async fn flush(&mut self) -> Result<(), LinkError> {
        for side in [Side::Replica, Side::Master] {
            let (writer, out) = match side {
                Side::Master => (&mut self.up, &mut self.to_master),
                Side::Replica => (&mut self.down, &mut self.to_replica),
            };
            if out.is_empty() {
                continue;
            }
            writer
                .write_all(out)
                .await
                .map_err(|e| LinkError::Io(side, e))?;
            self.bytes.sent(side, out.len());
            if side == Side::Replica {
                self.hold.wrote(out.len());
            }
            out.clear();
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Replica → master
    // -----------------------------------------------------------------------------------------

    async fn on_request(&mut self, body: Bytes) -> Result<(), LinkError> {
        let req = InnerRequest::parse(&body).map_err(msg_err(Side::Replica))?;
        match req.msg_type {
            MessageType::MetaSync => {
                if let Some(meta) = req.meta_sync().map_err(msg_err(Side::Replica))? {
                    self.set_name(&meta.node);
                }
                self.send(Side::Master, &body).await
            }
            MessageType::TrySync => {
                let ts = req
                    .try_sync()
                    .map_err(msg_err(Side::Replica))?
                    .ok_or_else(|| missing(Side::Replica, "try_sync"))?;
                self.on_try_sync(&body, &ts).await
            }
            MessageType::DbSync => {
                let ds = req
                    .db_sync()
                    .map_err(msg_err(Side::Replica))?
                    .ok_or_else(|| missing(Side::Replica, "db_sync"))?;
                self.on_db_sync(&body, &ds).await
            }
            MessageType::BinlogSync => {
                let bs = req
                    .binlog_sync()
                    .map_err(msg_err(Side::Replica))?
                    .ok_or_else(|| missing(Side::Replica, "binlog_sync"))?;
                self.last_binlog_request = Instant::now();
                self.on_binlog_sync_request(&body, &bs).await
            }
            _ => self.send(Side::Master, &body).await,
        }
    }

    fn set_name(&mut self, node: &Node<'_>) {
        let name = format!("{}:{}", String::from_utf8_lossy(node.ip), node.port);
        if self.series.is_none() || name != self.name {
            // Detaches the previous name, if any (the upstream connection lives exactly as long
            // as the link, so both sides are up).
            self.series = Some(replica_series::global().attach(&name));
            self.name = name;
        }
    }

    /// Learns the master's release: a 4.0 master names each DB's `db_instance_num`, which no
    /// 3.x master sends (and which a 4.0 replica requires). The rewrite forms follow it.
    fn on_meta_sync_reply(&mut self, meta: &MetaSyncResponse<'_>) {
        let release = if meta.dbs_info.iter().any(|d| d.db_instance_num.is_some()) {
            PikaRelease::V4
        } else {
            PikaRelease::V3
        };
        if release != self.pika_release || release == PikaRelease::V4 {
            tracing::info!(
                replica = %self.name, release = %release.name(),
                "master release from its MetaSync answer; rewrites use its forms"
            );
        }
        self.pika_release = release;
    }

    /// The DB link for `slot`, opening its offset map on first use.
    async fn db(&mut self, node: &Node<'_>, slot: &Slot<'_>) -> Result<&mut DbLink, LinkError> {
        self.set_name(node);
        let key = db_key(slot.db_name, slot.slot_id);
        if !self.dbs.contains_key(&key) {
            let skey = store_key(node, &key);
            let shared = self.setup.shared.clone();
            let dir = self.setup.cfg.state_dir.clone();
            let skey2 = skey.clone();
            let link = self.id;
            let (store, loaded, map) =
                tokio::task::spawn_blocking(move || shared.map_store(&dir, &skey2, link))
                    .await
                    .map_err(|e| LinkError::Persist(std::io::Error::other(e)))?
                    .map_err(LinkError::Persist)?;
            match loaded {
                Some(Loaded::Missing) => tracing::info!(
                    replica = %self.name, db = %key,
                    "no offset map yet: the replica's first resume through the relay will be a full sync"
                ),
                Some(Loaded::Corrupt(why)) => tracing::warn!(
                    replica = %self.name, db = %key,
                    "the offset map is corrupt ({why}); it was reset and the replica's next resume will be a full sync"
                ),
                Some(Loaded::State(ref s, torn)) => tracing::info!(
                    replica = %self.name, db = %key, map = s.name(), points = s.points(), torn_bytes = torn,
                    "offset map loaded"
                ),
                None => {}
            }
            let lag = self.setup.shared.lag.tracker(&self.name, &key);
            self.dbs.insert(
                key.clone(),
                DbLink {
                    lag,
                    name: key.clone(),
                    store_key: skey,
                    store,
                    map,
                    phase: Phase::Handshake,
                    inflight: Inflight::default(),
                    rewriter: None,
                    warmup: None,
                    last_forwarded: BinlogPosition::default(),
                    acked_master: BinlogPosition::default(),
                    master_latest: BinlogPosition::default(),
                    answered_purged: false,
                    master_said_purged: false,
                    dbsync_requested: None,
                    checkpoint: Checkpointing::new(),
                },
            );
        }
        self.dbs
            .get_mut(&key)
            .ok_or_else(|| LinkError::Protocol(Side::Replica, format!("unknown db {key}")))
    }

    async fn on_try_sync(
        &mut self,
        body: &[u8],
        ts: &SyncPointRequest<'_>,
    ) -> Result<(), LinkError> {
        let peer_ip = self.peer.ip();
        let link = self.id;
        let shared = self.setup.shared.clone();
        let name = self.name.clone();
        let db = self.db(&ts.node, &ts.slot).await?;
        let replica = ts.binlog_offset.position();
        let mut master = db.map.translate(replica);
        if master.is_none() && db.map == MapState::Unknown {
            if let Some(since) = db.dbsync_requested {
                if shared.snapshot_matches(peer_ip, &db.name, replica, since) {
                    db.store
                        .persist(link, MapState::Identity)
                        .await
                        .map_err(LinkError::Persist)?;
                    db.map = MapState::Identity;
                    master = Some(replica);
                    tracing::info!(
                        replica = %name, db = %db.name, position = %replica,
                        "full sync finished at the snapshot position: replica offsets equal the master's again"
                    );
                }
            }
        }
        if let Some(master) = master {
            let key = db_key(ts.slot.db_name, ts.slot.slot_id);
            self.catch_up_from_checkpoint(&key, ts, master).await;
        }
        let db = self.db(&ts.node, &ts.slot).await?;
        match master {
            Some(master) => {
                db.phase = Phase::TrySync { replica, master };
                tracing::info!(
                    replica = %name, db = %db.name, replica_position = %replica, master_position = %master,
                    "replica resumes; TrySync translated"
                );
                if master == replica {
                    self.send(Side::Master, body).await
                } else {
                    let out =
                        replace_try_sync_offset(body, master).map_err(msg_err(Side::Replica))?;
                    self.send(Side::Master, &out).await
                }
            }
            None => {
                db.phase = Phase::Handshake;
                db.answered_purged = true;
                tracing::warn!(
                    replica = %name, db = %db.name, replica_position = %replica, map = db.map.name(),
                    "the relay cannot map the replica's position to an exact master position; answering kSyncPointBePurged to force a full sync"
                );
                let reply = build_try_sync_purged_response(ts, db.master_latest);
                self.send(Side::Replica, &reply).await
            }
        }
    }

    /// After a crash nothing is parked for a replica that resumes at `master`: its table is
    /// rebuilt there from a checkpoint ([`checkpoint::restore_at`]) and parked, so the link
    /// starts with exact knowledge.
    async fn catch_up_from_checkpoint(
        &mut self,
        key: &str,
        ts: &SyncPointRequest<'_>,
        master: BinlogPosition,
    ) {
        let shared = self.setup.shared.clone();
        let Some(db) = self.dbs.get(key) else {
            return;
        };
        if db.rewriter.is_some() || shared.is_parked_at(&db.store_key, master) {
            return;
        }
        let store_key = db.store_key.clone();
        let restore = checkpoint::Restore {
            cfg: &self.setup.cfg,
            shared: &shared,
            release: self.pika_release,
            replica: &self.name,
            db: key,
            store_key: &store_key,
            slot: ts.slot,
        };
        restore.at(master).await;
    }

    async fn on_db_sync(
        &mut self,
        body: &[u8],
        ds: &SyncPointRequest<'_>,
    ) -> Result<(), LinkError> {
        let link = self.id;
        let shared = self.setup.shared.clone();
        let name = self.name.clone();
        let db = self.db(&ds.node, &ds.slot).await?;
        let reason = if db.answered_purged {
            "proxy_unmapped_offset"
        } else if db.master_said_purged {
            "master_purged"
        } else {
            "replica_request"
        };
        db.answered_purged = false;
        db.master_said_purged = false;
        stats::full_sync(reason);
        // Write-ahead: the replica is about to reset its binlog; no old pair may survive it.
        db.store
            .persist(link, MapState::Unknown)
            .await
            .map_err(LinkError::Persist)?;
        db.map = MapState::Unknown;
        park_table(&shared, db);
        db.phase = Phase::FullSync;
        db.inflight = Inflight::default();
        db.dbsync_requested = Some(Instant::now());
        tracing::info!(replica = %name, db = %db.name, reason, "full sync (DBSync) requested");
        self.send(Side::Master, body).await
    }

    async fn on_binlog_sync_request(
        &mut self,
        body: &[u8],
        bs: &BinlogSyncRequest<'_>,
    ) -> Result<(), LinkError> {
        let key = db_key(bs.db_name, bs.slot_id);
        let name = self.name.clone();
        let link = self.id;
        let Some(db) = self.dbs.get_mut(&key) else {
            return Err(LinkError::Protocol(
                Side::Replica,
                format!("BinlogSync for {key} before any TrySync for it"),
            ));
        };
        if bs.first_send {
            let Phase::FirstSend { replica, master } = db.phase else {
                return Err(LinkError::Protocol(
                    Side::Replica,
                    format!("first_send for {key} without an accepted TrySync"),
                ));
            };
            let (start, end) = (bs.ack_range_start.position(), bs.ack_range_end.position());
            if start != replica || end != replica {
                return Err(LinkError::Protocol(
                    Side::Replica,
                    format!(
                        "first_send at {start}-{end}, but the replica's TrySync was at {replica}"
                    ),
                ));
            }
            self.start_streaming(&key, master);
            if master == replica {
                return self.send(Side::Master, body).await;
            }
            let at = |o: &crate::pika::messages::BinlogOffset| LogicalOffset {
                filenum: master.filenum,
                offset: master.offset,
                term: o.term.unwrap_or(0),
                index: o.index.unwrap_or(0),
            };
            let out = replace_ack_range(
                body,
                Some(at(&bs.ack_range_start)),
                Some(at(&bs.ack_range_end)),
            )
            .map_err(msg_err(Side::Replica))?;
            return self.send(Side::Master, &out).await;
        }
        if bs.is_ping() {
            return self.send(Side::Master, body).await;
        }
        if db.phase != Phase::Streaming {
            return Err(LinkError::Protocol(
                Side::Replica,
                format!(
                    "ack for {key} while no items were sent ({})",
                    db.phase.name()
                ),
            ));
        }
        let answered = db
            .inflight
            .ack(bs.ack_range_start.position())
            .map_err(|e| LinkError::Protocol(Side::Replica, e.to_string()))?;
        let replica_end = bs.ack_range_end.position();
        let master_end = answered.last_end;
        let next = match &db.map {
            MapState::Identity if !answered.changed && replica_end == master_end.position() => None,
            MapState::Identity if !answered.changed => {
                tracing::warn!(
                    replica = %name, db = %key, replica_end = %replica_end, master_end = %master_end.position(),
                    "the replica wrote unchanged items at a different position than the master (does it re-serialize commands differently?); learning offsets from acks from now on"
                );
                Some(MapState::Unknown.after_ack(replica_end, master_end.position()))
            }
            // Not reached while streaming (a DBSync leaves that phase first); an ack says nothing
            // about a map that must be relearned.
            MapState::Unknown => None,
            map => Some(map.after_ack(replica_end, master_end.position())),
        };
        if let Some(next) = next {
            if matches!((&db.map, &next), (MapState::Pairs(_), MapState::Pairs(_))) {
                // An older Pairs state on disk is still true (see `map_commit`): no wait.
                db.store
                    .hand_in(link, next.clone())
                    .map_err(LinkError::Persist)?;
            } else {
                db.store
                    .persist(link, next.clone())
                    .await
                    .map_err(LinkError::Persist)?;
            }
            db.map = next;
        }
        db.acked_master = master_end.position();
        lock(&db.lag).set_acked(db.acked_master);
        if replica_end == master_end.position() {
            self.send(Side::Master, body).await?;
        } else {
            let out = replace_ack_range_end(body, master_end).map_err(msg_err(Side::Replica))?;
            self.send(Side::Master, &out).await?;
        }
        // Status and lag gauges are refreshed by the tick: publishing per ack counted every
        // shard of the expiry table and formatted the labels on the path the master waits on.
        Ok(())
    }

    /// Streaming starts at master position `master` for DB `key`.
    fn start_streaming(&mut self, key: &str, master: BinlogPosition) {
        let release = self.pika_release;
        let families = self.setup.shared.families.clone();
        let shared = self.setup.shared.clone();
        let cfg = self.setup.cfg.clone();
        let name = self.name.clone();
        let Some(db) = self.dbs.get_mut(key) else {
            return;
        };
        let previous_end = db.last_forwarded;
        db.phase = Phase::Streaming;
        db.inflight = Inflight::default();
        db.acked_master = master;
        lock(&db.lag).set_acked(master);
        db.last_forwarded = master;
        db.master_latest = db.master_latest.max(master);
        db.warmup = None;
        let reuse = match db.rewriter.take() {
            Some(rw) if previous_end == master => Some(rw),
            Some(rw) => {
                park_rewriter(&shared, &db.store_key, rw, previous_end);
                None
            }
            None => None,
        };
        let rewriter = reuse.unwrap_or_else(|| match shared.unpark_table(&db.store_key, master) {
            Some(parked) => {
                tracing::info!(
                    replica = %name, db = %key, keys = parked.table.len(),
                    "resuming exactly where the previous link stopped: its expiry table is reused"
                );
                let mut rw = LinkRewriter::new(parked.table, parked.state.db, families);
                rw.set_stream_state(parked.state);
                rw
            }
            None => {
                let baseline = if cfg.empty_at_origin && master == BinlogPosition::default() {
                    Baseline::Absent
                } else {
                    Baseline::Unknown
                };
                LinkRewriter::new(
                    Arc::new(ExpiryTable::new(baseline)),
                    db_index(db.name.as_bytes()),
                    families,
                )
            }
        });
        let mut rewriter = rewriter;
        rewriter.set_pika_release(release);
        let complete = rewriter.table().is_complete();
        db.rewriter = Some(rewriter);
        if !complete {
            db.warmup = warmup::start(&cfg, &name, key, db.rewriter.as_mut());
        }
    }

    // -----------------------------------------------------------------------------------------
    // Master → replica
    // -----------------------------------------------------------------------------------------

    async fn on_response(&mut self, body: Bytes) -> Result<(), LinkError> {
        let resp = InnerResponse::parse(&body).map_err(msg_err(Side::Master))?;
        match resp.msg_type {
            MessageType::MetaSync => {
                if let Some(meta) = resp.meta_sync().map_err(msg_err(Side::Master))? {
                    self.on_meta_sync_reply(&meta);
                }
                self.send(Side::Replica, &body).await
            }
            MessageType::TrySync => {
                if let Some(ts) = resp.try_sync().map_err(msg_err(Side::Master))? {
                    self.on_try_sync_reply(
                        db_key(ts.slot.db_name, ts.slot.slot_id),
                        ts.reply_code,
                        ts.binlog_offset.map(|o| o.position()),
                    )
                    .await?;
                }
                self.send(Side::Replica, &body).await
            }
            MessageType::BinlogSync => self.on_binlog_response(body).await,
            _ => self.send(Side::Replica, &body).await,
        }
    }

    async fn on_try_sync_reply(
        &mut self,
        key: String,
        code: TrySyncReplyCode,
        master_position: Option<BinlogPosition>,
    ) -> Result<(), LinkError> {
        let name = self.name.clone();
        let link = self.id;
        let Some(db) = self.dbs.get_mut(&key) else {
            return Ok(());
        };
        if let Some(p) = master_position {
            db.master_latest = db.master_latest.max(p);
        }
        match (code, db.phase) {
            (TrySyncReplyCode::Ok, Phase::TrySync { replica, master }) => {
                let next = db.map.resumed_at(replica, master);
                if next != db.map {
                    // Before the replica can write anything of the new session.
                    db.store
                        .persist(link, next.clone())
                        .await
                        .map_err(LinkError::Persist)?;
                    db.map = next;
                }
                db.phase = Phase::FirstSend { replica, master };
                stats::partial_sync();
            }
            (TrySyncReplyCode::SyncPointBePurged, _) => {
                db.master_said_purged = true;
                db.phase = Phase::Handshake;
            }
            (TrySyncReplyCode::Ok, phase) => {
                tracing::warn!(replica = %name, db = %key, phase = phase.name(),
                    "a TrySync acceptance the link did not ask for; waiting for the replica's next TrySync");
                db.phase = Phase::Handshake;
            }
            (code, _) => {
                tracing::warn!(replica = %name, db = %key, ?code, "the master refused the TrySync");
                db.phase = Phase::Handshake;
            }
        }
        Ok(())
    }

    async fn on_binlog_response(&mut self, body: Bytes) -> Result<(), LinkError> {
        let resp = InnerResponse::parse(&body).map_err(msg_err(Side::Master))?;
        if resp.is_keepalive().map_err(msg_err(Side::Master))? {
            return self.send(Side::Replica, &body).await;
        }
        // Pika sends one DB per response: the first entry names it, and the rewriter refuses
        // a response whose entries disagree (MixedSlots), so the entries are parsed once here.
        let slot = match resp.binlog_sync_entries().next() {
            Some(entry) => {
                let entry = entry.map_err(msg_err(Side::Master))?;
                Some((entry.slot.db_name, entry.slot.slot_id))
            }
            None => None,
        };
        let Some(key) = slot.map(|(name, id)| db_key(name, id)) else {
            return self.send(Side::Replica, &body).await;
        };
        let name = self.name.clone();
        let link = self.id;
        let Some(db) = self.dbs.get_mut(&key) else {
            return Err(LinkError::Protocol(
                Side::Master,
                format!("items for {key}, which the replica never synced"),
            ));
        };
        if db.phase != Phase::Streaming {
            return Err(LinkError::Protocol(
                Side::Master,
                format!(
                    "items for {key} before the replica's first_send ({})",
                    db.phase.name()
                ),
            ));
        }
        let Some(rewriter) = db.rewriter.as_mut() else {
            return Err(LinkError::Protocol(
                Side::Master,
                format!("items for {key} before streaming started"),
            ));
        };
        // A response that fails part-way may have changed the table already, while the link's
        // position stays before it: the table then describes no position, so it is dropped
        // rather than parked for a replica resuming there.
        let out = match rewriter.rewrite_response(&body) {
            Ok(out) => out,
            Err(e) => {
                db.rewriter = None;
                return Err(msg_err(Side::Master)(e));
            }
        };
        if out.unparsable_items > 0 {
            stats::protocol_error(Side::Master, "item_content");
            tracing::warn!(
                replica = %name, db = %key, items = out.unparsable_items,
                "items whose content is not RESP were forwarded unchanged"
            );
        }
        if !out.at_risk.is_empty() {
            let lag_ms = lag_seconds(&db.inflight) as i64 * 1000;
            let horizon = now_ms() + lag_ms + AT_RISK_MARGIN_MS;
            let mut first = None;
            let mut count = 0u64;
            for (family, risk) in &out.at_risk {
                if risk.old_deadline_ms <= horizon {
                    stats::at_risk(*family);
                    first.get_or_insert(risk);
                    count += 1;
                }
            }
            if let (Some(risk), Some(count)) = (first, self.risk_log.admit(count)) {
                tracing::warn!(
                    replica = %name, db = %key, key = %String::from_utf8_lossy(&risk.key),
                    old_deadline_ms = risk.old_deadline_ms, cause = risk.cause.name(), count,
                    "{} (count: this and the suppressed ones since the last line)",
                    risk_message(risk.cause)
                );
            }
        }
        let Some(forwarded) = out.forwarded else {
            return self.send(Side::Replica, &body).await;
        };
        if forwarded.changed && db.map.is_identity() {
            // Write-ahead: once the replica applies this response its layout departs from the
            // master's; the boundaries it may be at until then are still identical.
            let next = MapState::from_identical(
                std::iter::once(db.acked_master).chain(db.inflight.last_ends()),
            );
            if let Err(e) = db.store.persist(link, next.clone()).await {
                db.rewriter = None;
                return Err(LinkError::Persist(e));
            }
            db.map = next;
            tracing::info!(
                replica = %name, db = %key, at = %db.last_forwarded,
                "first rewritten item since the last full sync: replica offsets now differ from the master's and are learned from acks"
            );
        }
        db.inflight.push(forwarded);
        db.last_forwarded = forwarded.last_end.position();
        db.master_latest = db.master_latest.max(db.last_forwarded);
        if let Some(warm) = db.warmup.as_mut() {
            if warm.try_merge(db.rewriter.as_mut(), db.last_forwarded) {
                db.warmup = None;
            }
        }
        match out.body {
            Some(changed) => self.send(Side::Replica, &changed).await,
            None => self.send(Side::Replica, &body).await,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Housekeeping
    // -----------------------------------------------------------------------------------------

    async fn on_tick(&mut self) -> Result<(), LinkError> {
        let timeout = self.setup.cfg.upstream_idle_timeout;
        let streaming = self.dbs.values().any(|d| d.phase == Phase::Streaming);
        if streaming && self.last_upstream.elapsed() > timeout {
            return Err(LinkError::Timeout(Side::Master, timeout));
        }
        // A real Pika master that drops a silent replica may leave the connection open and
        // send nothing: without this, the link would look up (and its lag stale) until the
        // idle timeout above.
        let drop_after = self.setup.cfg.master_drop_after;
        if streaming && self.last_binlog_request.elapsed() > drop_after {
            return Err(LinkError::ReplicaSilent(drop_after));
        }
        for db in self.dbs.values_mut() {
            if let Some(warm) = db.warmup.as_mut() {
                if warm.try_merge(db.rewriter.as_mut(), db.last_forwarded) {
                    db.warmup = None;
                }
            }
            if db.phase == Phase::Streaming && db.warmup.is_none() {
                if let Some(rw) = db.rewriter.as_ref() {
                    let cfg = &self.setup.cfg;
                    db.checkpoint
                        .maybe_take(cfg, &db.store_key, rw, db.last_forwarded);
                }
            }
        }
        self.publish_status();
        Ok(())
    }

    fn publish_status(&self) {
        let file_size = self.setup.cfg.binlog_file_size;
        let now = Instant::now();
        let mut dbs: Vec<DbLinkStatus> = self
            .dbs
            .values()
            .map(|db| {
                let (table_complete, table_keys) = db
                    .rewriter
                    .as_ref()
                    .map(|rw| (rw.table().is_complete(), rw.table().len()))
                    .unwrap_or((false, 0));
                let warmup = match (&db.warmup, self.setup.cfg.warmup) {
                    (Some(_), _) => "running",
                    (None, WarmupMode::Off) => "off",
                    (None, _) if table_complete => "done",
                    (None, _) => "failed",
                };
                let (lag_b, lag_s) = {
                    let mut lag = lock(&db.lag);
                    lag.set_link_view(db.master_latest, lag_seconds(&db.inflight));
                    lag.lag(now, file_size)
                };
                let points = db.map.points() + db.inflight.len();
                DbLinkStatus {
                    db: db.name.clone(),
                    phase: db.phase.name(),
                    offset_map: db.map.name(),
                    offset_map_points: points,
                    table_complete,
                    table_keys,
                    warmup,
                    lag_bytes: lag_b,
                    lag_seconds: lag_s,
                    acked_master: db.acked_master.to_string(),
                    master_latest: db.master_latest.to_string(),
                }
            })
            .collect();
        dbs.sort_by(|a, b| a.db.cmp(&b.db));
        // One series per replica: its most lagging DB, and the points of all its DBs.
        let lag_b = dbs.iter().map(|d| d.lag_bytes).max().unwrap_or(0);
        let lag_s = dbs.iter().map(|d| d.lag_seconds).fold(0.0, f64::max);
        if let Some(series) = &self.series {
            series.set_lag(lag_b, lag_s);
            series.set_map_points(dbs.iter().map(|d| d.offset_map_points).sum());
        }
        self.setup.shared.sessions.update(LinkStatus {
            id: self.id,
            peer: self.peer.to_string(),
            replica: Some(self.name.clone()),
            // The upstream connection lives exactly as long as the link.
            upstream_up: true,
            dbs,
        });
        publish_tables(&self.setup.shared);
    }

    async fn close(mut self) {
        let shared = self.setup.shared.clone();
        // Every table first: a slow flush below must not keep a DB's table from being parked
        // (and saved, when the relay is stopping).
        for db in self.dbs.values_mut() {
            park_table(&shared, db);
        }
        for db in self.dbs.values_mut() {
            // What this link learned last is what its replica resumes from; a failure was
            // already logged by the writer and only costs a full sync.
            let _ = tokio::time::timeout(CLOSE_FLUSH_LIMIT, db.store.flush()).await;
        }
        let _ = self.down.shutdown().await;
        let _ = self.up.shutdown().await;
        // Link down now; the series go once the grace period ends.
        self.series = None;
        self.setup.shared.sessions.remove(self.id);
        publish_tables(&self.setup.shared);
    }
}

/// The expiry-table gauges over every streaming DB of every link (each link reporting its
/// own made the gauges show whichever link ticked last).
fn publish_tables(shared: &PikaRelayShared) {
    let (keys, complete) = shared
        .sessions
        .snapshot()
        .iter()
        .flat_map(|l| l.dbs.iter())
        .filter(|d| d.phase == "streaming")
        .fold((0, true), |(keys, complete), d| {
            (keys + d.table_keys, complete && d.table_complete)
        });
    stats::expiry_tables(keys, complete);
}

/// Seconds (master clock) the oldest unacknowledged item has waited; 0 when caught up.
fn lag_seconds(inflight: &Inflight) -> f64 {
    let Some(oldest) = inflight.oldest() else {
        return 0.0;
    };
    let now_s = now_ms() as f64 / 1000.0;
    (now_s - f64::from(oldest.first_exec_time)).max(0.0)
}

/// Parks a DB's expiry table so the next link can reuse it if it resumes at the same position.
fn park_table(shared: &PikaRelayShared, db: &mut DbLink) {
    db.warmup = None;
    if let Some(rw) = db.rewriter.take() {
        park_rewriter(shared, &db.store_key, rw, db.last_forwarded);
    }
}

fn park_rewriter(shared: &PikaRelayShared, key: &str, rw: LinkRewriter, at: BinlogPosition) {
    let state: StreamState = rw.stream_state();
    shared.park_table(
        key,
        ParkedTable {
            table: rw.table().clone(),
            state,
            at,
        },
    );
}

/// What an at-risk entry means for the operator, by cause.
fn risk_message(cause: RiskCause) -> &'static str {
    match cause {
        RiskCause::TtlChangeAfterDeadline => {
            "a TTL change may reach the replica after the key's old deadline; the replica may have dropped the key"
        }
        RiskCause::ExistenceAmbiguous | RiskCause::ExistenceUntracked => {
            "a write after an EXPIRE on a key the proxy could not tell existed passed unchanged; the replica may keep the key without its TTL"
        }
        RiskCause::ValueLostByMaster => {
            "the Pika 4.0 master logged this write with an empty value (its APPEND/SETRANGE on a missing key); every replica stores \"\" for the key"
        }
    }
}
