//! One replica connection, from its first PING to its last byte.
//!
//! 1. **Handshake**: an upstream link to the master is opened for this replica alone; PING,
//!    AUTH and REPLCONF are relayed or answered as [`handshake`](super::handshake) decides.
//! 2. **PSYNC**: `PSYNC <own-id> <d+1>` on an exact boundary of a known state is continued
//!    (`PSYNC <master-id> <u+1>` upstream; `+CONTINUE <own-id>` downstream, DB restored from
//!    the map). Anything else is a full resync: upstream `PSYNC ? -1`, downstream
//!    `+FULLRESYNC <new random id> <U0>` (D0 = U0). Legacy `SYNC` is relayed as `SYNC`.
//! 3. **Payload**: relayed in the master's framing while the scanner seeds a fresh expiry table.
//!    After an EOF-framed payload, no stream byte is read or sent until the replica's first
//!    `REPLCONF ACK`, which is forwarded (translated) so the master starts the stream.
//! 4. **Stream**: entries go through the engine (Redis dialect, exec time = receive time);
//!    ACK/FACK are translated with the offset map's floor; `\n` from the replica is passed up;
//!    GETACK travels down like any entry and is never answered by the proxy.
//!
//! On a partial resynchronisation the state's expiry table is kept only when it describes the
//! master at exactly the continuation point (same process, nothing lost in flight); otherwise it
//! is reset to unknown, so no rewrite relies on entries the replica never applied.
//!
//! A malformed stream from the master closes both links and forgets the replica's state, so its
//! next attempt is a full resync (continuing would replay the same bytes).

use super::handshake::{self, ReplicaHello, Step, SyncRequest};
use super::held_acks::{HeldAcks, UpstreamAck};
use super::offset_map::{OffsetMap, Resolved};
use super::outq::OutQueue;
use super::rdb_relay::{parse_header, Framing, PayloadDone, PayloadRelay, ScanResult};
use super::registry::{Phase, SessionStatus};
use super::stats::{self, EntryTally, Side};
use super::store::{random_repl_id, Claim, PendingWrite, ReplicaState};
use super::stream::{StreamRelay, READ_CHUNK};
use super::upstream::{parse_psync_reply, Line, PsyncReply, Upstream, UpstreamError};
use super::Ctx;
use crate::hold::HoldClock;
use crate::relay_core::record_log::{self, Progress};
use crate::replica_series::{self, ReplicaHandle};
use crate::resp::{CommandParser, Frame, ParserLimits};
use crate::table::{Baseline, ExpiryTable};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;

/// How long a reconnecting replica waits for its previous connection to release its state.
const CLAIM_WAIT: Duration = Duration::from_secs(3);
/// Most offset-map points kept per replica; only a replica that stops acknowledging gets near
/// it (each ACK prunes the map).
const MAX_MAP_POINTS: usize = 1 << 16;
/// Entries decided before the first of a read's output is sent: a read of a hundred entries
/// takes tens of microseconds to decide, and its first entries need not wait for its last. Each
/// further slice of the same read is twice as large, so a read costs at most a few more writes
/// (about log2(entries / 32)).
const FIRST_SLICE_ENTRIES: usize = 32;

/// At most one at-risk warning per replica per this interval.
const RISK_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection ended.
#[derive(Debug)]
pub(crate) struct Ending {
    /// Metric label.
    pub reason: &'static str,
    /// Human-readable detail for the log.
    pub detail: String,
    /// Whether this is a failure worth a warning (as opposed to a normal close).
    pub failure: bool,
}

impl Ending {
    fn normal(reason: &'static str) -> Self {
        Ending {
            reason,
            detail: String::new(),
            failure: false,
        }
    }
    fn fail(reason: &'static str, detail: impl Into<String>) -> Self {
        Ending {
            reason,
            detail: detail.into(),
            failure: true,
        }
    }
    fn upstream(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Closed => Ending::normal("upstream_closed"),
            UpstreamError::Protocol(p) => {
                stats::protocol_error(Side::Upstream, "reply");
                Ending::fail("upstream_protocol", p)
            }
            e @ UpstreamError::NotRedis(_) => {
                stats::protocol_error(Side::Upstream, "not_redis");
                Ending::fail("upstream_protocol", e.to_string())
            }
            other => Ending::fail("upstream_io", other.to_string()),
        }
    }
    fn downstream_io(e: std::io::Error) -> Self {
        Ending::fail("downstream_io", e.to_string())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The replica state a link works on: stored (continuable) or local to the link (legacy SYNC).
enum Holder {
    Stored(OwnedMutexGuard<ReplicaState>),
    Local(Box<ReplicaState>),
}

impl Deref for Holder {
    type Target = ReplicaState;
    fn deref(&self) -> &ReplicaState {
        match self {
            Holder::Stored(g) => g,
            Holder::Local(s) => s,
        }
    }
}

impl DerefMut for Holder {
    fn deref_mut(&mut self) -> &mut ReplicaState {
        match self {
            Holder::Stored(g) => g,
            Holder::Local(s) => s,
        }
    }
}

/// Where the relay loop starts.
enum Start {
    /// A payload follows in `framing`; the stream then starts at `base`.
    Full {
        framing: Framing,
        base: u64,
        own_id: String,
        master_id: String,
        /// False for legacy SYNC: nothing is stored, no offsets are meaningful.
        stored: bool,
    },
    /// The stream continues at boundary `d`/`u` of `holder`'s map.
    Continue {
        holder: Holder,
        d: u64,
        resolved: Resolved,
    },
}

/// Serve one accepted replica connection until it ends; logs and counts how it ended.
pub(crate) async fn serve_connection(
    ctx: Arc<Ctx>,
    sock: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let status = ctx.shared.sessions.register(peer);
    let _ = sock.set_nodelay(true);
    let (read, write) = sock.into_split();
    let mut session = Session {
        ctx: ctx.clone(),
        status: status.clone(),
        shutdown,
        down_r: read,
        down_w: write,
        down_buf: BytesMut::with_capacity(4096),
        down_parser: CommandParser::new(ParserLimits::replica_stream()),
        hello: ReplicaHello::default(),
        label: peer.to_string(),
        peer,
        series: None,
    };
    let ending = match session.run().await {
        Ok(end) | Err(end) => end,
    };
    let label = session.label.clone();
    stats::disconnect(ending.reason);
    if ending.failure {
        tracing::warn!(replica = %label, master = %ctx.cfg.master, reason = ending.reason,
            error = %ending.detail, "replica connection failed");
    } else {
        tracing::info!(replica = %label, reason = ending.reason, "replica connection closed");
    }
    // Link down now; the series go once the grace period ends.
    session.series = None;
    ctx.shared.sessions.unregister(&status);
}

struct Session {
    ctx: Arc<Ctx>,
    status: Arc<SessionStatus>,
    shutdown: CancellationToken,
    down_r: OwnedReadHalf,
    down_w: OwnedWriteHalf,
    down_buf: BytesMut,
    down_parser: CommandParser,
    hello: ReplicaHello,
    label: String,
    peer: SocketAddr,
    /// The replica's series, from its sync request (the end of its handshake: a connection
    /// that never gets there, such as a port probe, creates none) until the session ends.
    series: Option<ReplicaHandle>,
}

impl Session {
    async fn run(&mut self) -> Result<Ending, Ending> {
        let cfg = &self.ctx.cfg;
        let mut up = match Upstream::connect(cfg.master, cfg.connect_timeout).await {
            Ok(up) => Some(up),
            Err(e) => {
                tracing::warn!(replica = %self.label, master = %cfg.master, error = %e,
                    "cannot connect to the master");
                None
            }
        };
        if let (Some(link), Some(password)) = (up.as_mut(), cfg.master_password.as_deref()) {
            link.authenticate(cfg.master_user.as_deref(), password, cfg.handshake_timeout)
                .await
                .map_err(Ending::upstream)?;
        }
        self.status.set_upstream_up(up.is_some());
        let request = match self.handshake(&mut up).await? {
            Some(req) => req,
            None => return Ok(Ending::normal("replica_closed")),
        };
        let Some(up) = up else {
            self.reply("-ERR the proxy cannot reach its master").await?;
            return Err(Ending::fail("upstream_unreachable", "no master link"));
        };
        // Both connections are up from here until the session ends.
        self.series = Some(replica_series::global().attach(&self.label));
        self.sync(up, request).await
    }

    async fn reply(&mut self, line: &str) -> Result<(), Ending> {
        self.reply_bytes(line.as_bytes()).await
    }

    /// Send one line (CRLF appended) to the replica, bytes as given.
    async fn reply_bytes(&mut self, line: &[u8]) -> Result<(), Ending> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
        self.down_w
            .write_all(&bytes)
            .await
            .map_err(Ending::downstream_io)?;
        stats::bytes(Side::Downstream, false, bytes.len());
        Ok(())
    }

    /// Pass a master keepalive down exactly as the master sent it: a bare `\n`.
    async fn keepalive(&mut self) -> Result<(), Ending> {
        self.down_w
            .write_all(b"\n")
            .await
            .map_err(Ending::downstream_io)?;
        stats::bytes(Side::Downstream, false, 1);
        Ok(())
    }

    /// The next frame from the replica during the handshake; `None` when it closed.
    async fn next_frame(&mut self) -> Result<Option<Frame>, Ending> {
        loop {
            match self.down_parser.parse(&mut self.down_buf) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => {
                    stats::protocol_error(Side::Downstream, "framing");
                    return Err(Ending::fail("downstream_protocol", e.to_string()));
                }
            }
            self.down_buf.reserve(4096);
            let timeout = self.ctx.cfg.handshake_timeout;
            let read = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Ending::normal("shutdown")),
                r = tokio::time::timeout(timeout, self.down_r.read_buf(&mut self.down_buf)) => r,
            };
            let n = read
                .map_err(|_| Ending::fail("handshake_timeout", "replica went quiet"))?
                .map_err(Ending::downstream_io)?;
            if n == 0 {
                return Ok(None);
            }
            stats::bytes(Side::Downstream, true, n);
        }
    }

    /// Serve the handshake; returns the replication request, or `None` if the replica left.
    async fn handshake(
        &mut self,
        up: &mut Option<Upstream>,
    ) -> Result<Option<SyncRequest>, Ending> {
        self.status.set_phase(Phase::Handshake);
        loop {
            let Some(frame) = self.next_frame().await? else {
                return Ok(None);
            };
            let Some(cmd) = frame.command() else {
                continue;
            };
            let step = handshake::plan(cmd, &mut self.hello);
            if let Some(port) = self.hello.listening_port {
                let label = format!("{}:{}", self.peer.ip(), port);
                if label != self.label {
                    self.label = label;
                    self.status.set_replica(self.label.clone());
                }
            }
            match step {
                Step::Relay(args) => {
                    let Some(link) = up.as_mut() else {
                        // Redis replicas accept only +PONG/-NOAUTH/-NOPERM to PING; this error
                        // makes them retry the whole handshake later.
                        self.reply("-ERR the proxy cannot reach its master").await?;
                        return Err(Ending::fail("upstream_unreachable", "no master link"));
                    };
                    link.send(&args).await.map_err(Ending::upstream)?;
                    let reply = link
                        .read_reply(self.ctx.cfg.handshake_timeout)
                        .await
                        .map_err(Ending::upstream)?;
                    self.reply_bytes(&reply).await?;
                }
                Step::Reply(line) => self.reply(line).await?,
                Step::Error(e) => self.reply(&format!("-{e}")).await?,
                Step::Silent => {}
                Step::Quit => {
                    self.reply("+OK").await?;
                    return Ok(None);
                }
                Step::Sync(req) => return Ok(Some(req)),
            }
        }
    }

    /// Read the master's PSYNC reply, passing its keepalives down (the replica ignores them
    /// while it waits).
    async fn psync_reply(&mut self, up: &mut Upstream) -> Result<PsyncReply, Ending> {
        loop {
            let line = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Ending::normal("shutdown")),
                l = up.read_line(self.ctx.cfg.handshake_timeout) => l.map_err(Ending::upstream)?,
            };
            match line {
                Line::Keepalive => self.keepalive().await?,
                Line::Text(t) => return parse_psync_reply(&t).map_err(Ending::upstream),
            }
        }
    }

    /// Read the payload header (`$<len>` or `$EOF:<mark>`) after the keepalives before it, and
    /// pass both down.
    async fn payload_header(&mut self, up: &mut Upstream) -> Result<Framing, Ending> {
        loop {
            let line = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Ending::normal("shutdown")),
                l = up.read_line(self.ctx.cfg.handshake_timeout) => l.map_err(Ending::upstream)?,
            };
            match line {
                Line::Keepalive => self.keepalive().await?,
                Line::Text(t) => {
                    let Some(framing) = parse_header(&t) else {
                        stats::protocol_error(Side::Upstream, "payload_header");
                        return Err(Ending::fail(
                            "upstream_protocol",
                            format!(
                                "expected a payload header, got '{}'",
                                String::from_utf8_lossy(&t)
                            ),
                        ));
                    };
                    self.reply_bytes(&t).await?;
                    return Ok(framing);
                }
            }
        }
    }

    async fn sync(&mut self, mut up: Upstream, request: SyncRequest) -> Result<Ending, Ending> {
        let (id, offset, failover) = match request {
            SyncRequest::Sync => {
                stats::full_sync("legacy_sync");
                tracing::info!(replica = %self.label, "legacy SYNC: relaying a full sync without offsets");
                up.send(&["SYNC"]).await.map_err(Ending::upstream)?;
                let framing = self.payload_header(&mut up).await?;
                let start = Start::Full {
                    framing,
                    base: 0,
                    own_id: String::new(),
                    master_id: String::new(),
                    stored: false,
                };
                return self.relay(up, start).await;
            }
            SyncRequest::Psync {
                id,
                offset,
                failover,
            } => (id, offset, failover),
        };
        let failover_arg: &[&str] = if failover { &["FAILOVER"] } else { &[] };
        let reason = if id == "?" {
            "requested"
        } else {
            match self.ctx.store.claim(&id, CLAIM_WAIT).await {
                Claim::Unknown => "unknown_id",
                Claim::Busy => "state_busy",
                Claim::Claimed(guard) => {
                    let exact = offset
                        .checked_sub(1)
                        .and_then(|d| u64::try_from(d).ok())
                        .and_then(|d| guard.map.exact(d).map(|r| (d, r)));
                    match exact {
                        None => {
                            tracing::info!(replica = %self.label, own_id = %id, offset,
                                tip = guard.map.tip().0,
                                "PSYNC offset is not a recorded boundary; full resync");
                            self.ctx.store.remove(guard);
                            "not_a_boundary"
                        }
                        Some((d, resolved)) => {
                            let mut args = vec![
                                "PSYNC".to_string(),
                                guard.master_id.clone(),
                                resolved.u.saturating_add(1).to_string(),
                            ];
                            args.extend(failover_arg.iter().map(|s| s.to_string()));
                            up.send(&args).await.map_err(Ending::upstream)?;
                            match self.psync_reply(&mut up).await? {
                                PsyncReply::Continue { id: new_master } => {
                                    let holder = Holder::Stored(guard);
                                    return self
                                        .continue_partial(up, holder, d, resolved, new_master)
                                        .await;
                                }
                                PsyncReply::FullResync { id, offset } => {
                                    tracing::info!(replica = %self.label, d, u = resolved.u,
                                        "the master refused to continue; full resync");
                                    self.ctx.store.remove(guard);
                                    return self
                                        .full_sync(up, id, offset, "master_refused_partial")
                                        .await;
                                }
                                PsyncReply::Error(e) => {
                                    drop(guard);
                                    self.reply(&e).await?;
                                    return Ok(Ending::fail("master_error", e));
                                }
                            }
                        }
                    }
                }
            }
        };
        let mut args = vec!["PSYNC", "?", "-1"];
        args.extend_from_slice(failover_arg);
        up.send(&args).await.map_err(Ending::upstream)?;
        match self.psync_reply(&mut up).await? {
            PsyncReply::FullResync { id, offset } => self.full_sync(up, id, offset, reason).await,
            PsyncReply::Continue { .. } => {
                stats::protocol_error(Side::Upstream, "psync_reply");
                Err(Ending::fail(
                    "upstream_protocol",
                    "the master answered PSYNC ? -1 with +CONTINUE",
                ))
            }
            PsyncReply::Error(e) => {
                self.reply(&e).await?;
                Ok(Ending::fail("master_error", e))
            }
        }
    }

    async fn full_sync(
        &mut self,
        mut up: Upstream,
        master_id: String,
        base: u64,
        reason: &'static str,
    ) -> Result<Ending, Ending> {
        stats::full_sync(reason);
        let own_id = random_repl_id();
        tracing::info!(replica = %self.label, reason, master_id = %master_id, offset = base,
            own_id = %own_id, "full resync");
        self.reply(&format!("+FULLRESYNC {own_id} {base}")).await?;
        let framing = self.payload_header(&mut up).await?;
        let start = Start::Full {
            framing,
            base,
            own_id,
            master_id,
            stored: true,
        };
        self.relay(up, start).await
    }

    async fn continue_partial(
        &mut self,
        up: Upstream,
        mut holder: Holder,
        d: u64,
        resolved: Resolved,
        new_master: Option<String>,
    ) -> Result<Ending, Ending> {
        let reply = if self.hello.capa_psync2 {
            format!("+CONTINUE {}", holder.own_id)
        } else {
            "+CONTINUE".to_string()
        };
        self.reply(&reply).await?;
        if let Some(new_master) = new_master {
            if new_master != holder.master_id {
                tracing::info!(replica = %self.label, old = %holder.master_id, new = %new_master,
                    "the master changed replication id");
                holder.master_id = new_master;
            }
        }
        holder.map.truncate_to(d);
        if holder.table_u != Some(resolved.u) {
            // The table reflects another position of the master's stream (or nothing, after a
            // restart): it cannot be trusted from here, so every key becomes unknown.
            if holder.table.is_complete() {
                tracing::warn!(replica = %self.label, table_u = ?holder.table_u, u = resolved.u,
                    "expiry table is not at the continuation point; keys become unknown");
            }
            holder.table.reset(Baseline::Unknown);
        }
        holder.table_u = Some(resolved.u);
        let dir = self.ctx.store.dir().to_path_buf();
        holder.persist_fresh(&dir).await;
        stats::partial_sync();
        tracing::info!(replica = %self.label, own_id = %holder.own_id, d, u = resolved.u,
            db = resolved.db, table_complete = holder.table.is_complete(),
            "partial resync: continuing");
        self.relay(
            up,
            Start::Continue {
                holder,
                d,
                resolved,
            },
        )
        .await
    }

    /// The relay loop: payload (if any), then the stream, with ACK translation alongside.
    async fn relay(&mut self, up: Upstream, start: Start) -> Result<Ending, Ending> {
        let Upstream {
            read: mut up_r,
            write: mut up_w,
            buf: mut up_buf,
        } = up;
        let mut link = LinkState::new(&self.ctx, self.label.clone(), self.status.clone());
        match start {
            Start::Full {
                framing,
                base,
                own_id,
                master_id,
                stored,
            } => {
                let table = Arc::new(ExpiryTable::new(Baseline::Unknown));
                self.status.set_table(Some(table.clone()));
                self.status.set_own_id(&own_id);
                self.status.set_phase(Phase::FullSync);
                link.payload = Some(PendingPayload {
                    relay: PayloadRelay::new(framing, &table),
                    table,
                    base,
                    own_id,
                    master_id,
                    stored,
                    started: Instant::now(),
                });
            }
            Start::Continue {
                holder,
                d,
                resolved,
            } => {
                self.status.set_table(Some(holder.table.clone()));
                self.status.set_own_id(&holder.own_id);
                self.status.set_phase(Phase::Streaming);
                link.stream = Some(StreamRelay::new(d, resolved.u, resolved.db));
                link.acked_u = resolved.u;
                link.holder = Some(holder);
            }
        }
        link.data_included = !self.hello.rdb_filtered;
        link.read_arrived(Instant::now());
        link.drive(&mut up_buf).await?;
        link.read_done_unless_sliced(&mut up_buf);

        let limit = self.ctx.cfg.replica_output_buffer_limit.max(READ_CHUNK);
        let mut ticker = tokio::time::interval(self.ctx.cfg.state_sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut upstream_open = true;
        loop {
            if !upstream_open && link.out.is_empty() && !link.slicing_read() {
                let _queued = link.persist();
                return Ok(Ending::normal("upstream_closed"));
            }
            let read_upstream = upstream_open
                && !link.slicing_read()
                && link.out.len() < limit
                && !link.awaiting_first_ack;
            if read_upstream {
                up_buf.reserve(link.read_reserve(&up_buf));
            }
            self.down_buf.reserve(4096);
            // Biased: the once-a-second tick and the replica's rare, small frames (ACKs) come
            // before the master's stream so a busy stream cannot starve them, and writes come
            // before reading more of the stream, so an entry never waits behind the processing
            // of the next read (unbiased, select! picks a ready branch at random).
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    if let Some(mut write) = link.persist() {
                        let _ = tokio::time::timeout(Duration::from_secs(1), write.wait()).await;
                    }
                    // An ACK whose write has landed still tells the master how far the replica got.
                    let progress = link.ack_writes.as_ref().map(|w| w.borrow().clone());
                    if let Some(ack) = progress.and_then(|p| link.held_acks.release(&p)) {
                        let _ = tokio::time::timeout(Duration::from_millis(500),
                            link.forward_ack(ack, &mut up_w)).await;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(500),
                        link.out.flush_all(&mut self.down_w)).await;
                    return Ok(Ending::normal("shutdown"));
                }
                _ = ticker.tick() => link.tick(up_buf.len()),
                r = held_ack_due(&mut link.ack_writes, link.held_acks.first_write()),
                    if !link.held_acks.is_empty() => {
                    if let Some(ack) = link.held_acks.release(&r) {
                        link.forward_ack(ack, &mut up_w).await?;
                    }
                }
                r = link.out.write_some(&mut self.down_w), if !link.out.is_empty() => {
                    let n = r.map_err(Ending::downstream_io)?;
                    stats::bytes(Side::Downstream, false, n);
                    link.hold.wrote(n);
                }
                r = self.down_r.read_buf(&mut self.down_buf) => {
                    let n = r.map_err(Ending::downstream_io)?;
                    if n == 0 {
                        let _queued = link.persist();
                        return Ok(Ending::normal("replica_closed"));
                    }
                    stats::bytes(Side::Downstream, true, n);
                    loop {
                        let frame = match self.down_parser.parse(&mut self.down_buf) {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(e) => {
                                stats::protocol_error(Side::Downstream, "framing");
                                return Err(Ending::fail("downstream_protocol", e.to_string()));
                            }
                        };
                        link.handle_replica_frame(frame, &mut up_w).await?;
                    }
                    if link.first_ack_released {
                        link.first_ack_released = false;
                        link.read_arrived(Instant::now());
                        link.drive(&mut up_buf).await?;
                        link.read_done_unless_sliced(&mut up_buf);
                    }
                }
                // The rest of a read whose first slice's output went out first (see
                // FIRST_SLICE_ENTRIES); after the write branch, so each slice is sent before
                // the next is decided.
                _ = std::future::ready(()), if link.slicing_read() => {
                    link.drive(&mut up_buf).await?;
                    link.read_done_unless_sliced(&mut up_buf);
                }
                r = up_r.read_buf(&mut up_buf), if read_upstream => {
                    let n = r.map_err(|e| Ending::fail("upstream_io", e.to_string()))?;
                    if n == 0 {
                        upstream_open = false;
                        tracing::info!(replica = %self.label, "the master closed the link");
                        continue;
                    }
                    link.read_arrived(Instant::now());
                    stats::bytes(Side::Upstream, true, n);
                    link.note_received(up_buf.len());
                    link.drive(&mut up_buf).await?;
                    link.read_done_unless_sliced(&mut up_buf);
                }
            }
        }
    }
}

/// A payload being relayed, and what the stream needs once it is done.
struct PendingPayload {
    relay: PayloadRelay,
    table: Arc<ExpiryTable>,
    base: u64,
    own_id: String,
    master_id: String,
    stored: bool,
    started: Instant,
}

/// Everything the relay loop keeps besides the sockets.
struct LinkState {
    ctx: Arc<Ctx>,
    label: String,
    status: Arc<SessionStatus>,
    out: OutQueue,
    payload: Option<PendingPayload>,
    holder: Option<Holder>,
    stream: Option<StreamRelay>,
    data_included: bool,
    awaiting_first_ack: bool,
    /// Set when the first ACK arrived and buffered stream bytes may now be processed.
    first_ack_released: bool,
    acked_u: u64,
    /// (upstream offset received through, when) per read, for the lag in seconds.
    received: VecDeque<(u64, Instant)>,
    tally: EntryTally,
    risk_log: crate::logging::Throttle,
    /// The replica's lag at the last tick, in ms: entries that extend a TTL ending within it
    /// are at risk.
    lag_ms: u64,
    /// The replica's ACKs, each held until the state write that covers it is on disk.
    held_acks: HeldAcks,
    /// The state writer's progress, while ACKs are held.
    ack_writes: Option<watch::Receiver<Progress>>,
    /// How long the master's data waits in the proxy.
    hold: HoldClock,
    /// When the read being decided arrived, and the same in ms since the epoch: its entries'
    /// exec time, the same for every slice.
    read_arrived: Instant,
    read_arrived_ms: i64,
    /// Whether the read being decided has queued any output yet.
    read_produced: bool,
    /// Entries the next slice of the current read may decide; more than the first slice's
    /// while a read is being decided in slices.
    slice_entries: usize,
    /// Time spent deciding the current read's slices so far.
    read_processing: Duration,
}

/// Waits until write `seq` is on disk or the writer failed, then returns its progress (a writer
/// that is gone, or none at all, counts as failed). Never returns when no write is awaited.
async fn held_ack_due(
    writes: &mut Option<watch::Receiver<Progress>>,
    seq: Option<u64>,
) -> Progress {
    let Some(seq) = seq else {
        return std::future::pending().await;
    };
    let Some(writes) = writes.as_mut() else {
        return Progress {
            durable: 0,
            failed: Some(Arc::from("no state writer")),
        };
    };
    match record_log::durable(writes, seq).await {
        Ok(()) => writes.borrow().clone(),
        Err(why) => Progress {
            durable: writes.borrow().durable,
            failed: Some(why),
        },
    }
}

impl LinkState {
    fn new(ctx: &Arc<Ctx>, label: String, status: Arc<SessionStatus>) -> Self {
        LinkState {
            ctx: ctx.clone(),
            label,
            status,
            out: OutQueue::new(),
            payload: None,
            holder: None,
            stream: None,
            data_included: true,
            awaiting_first_ack: false,
            first_ack_released: false,
            acked_u: 0,
            received: VecDeque::new(),
            tally: stats::entry_tally(),
            risk_log: crate::logging::Throttle::new(RISK_LOG_INTERVAL),
            lag_ms: 0,
            held_acks: HeldAcks::default(),
            ack_writes: None,
            hold: HoldClock::new(),
            read_arrived: Instant::now(),
            read_arrived_ms: now_ms(),
            read_produced: false,
            slice_entries: FIRST_SLICE_ENTRIES,
            read_processing: Duration::ZERO,
        }
    }

    /// True while the current read's entries are being decided slice by slice: the upstream
    /// buffer may still hold complete entries.
    fn slicing_read(&self) -> bool {
        self.slice_entries > FIRST_SLICE_ENTRIES
    }

    /// A read of the master's stream arrived at `at` (or buffered bytes became processable).
    fn read_arrived(&mut self, at: Instant) {
        self.read_arrived = at;
        self.read_arrived_ms = now_ms();
        self.read_produced = false;
    }

    /// After a drive: once the whole read is decided, its hold is timed, its entries are
    /// counted (one tally flush per read) and its room is released.
    fn read_done_unless_sliced(&mut self, up_buf: &mut BytesMut) {
        if self.slicing_read() {
            return;
        }
        if self.read_produced {
            self.hold
                .processed_in_slices(self.read_arrived, self.out.len());
        }
        self.tally
            .flush(std::mem::take(&mut self.read_processing).as_secs_f64());
        StreamRelay::release_spent_room(up_buf);
    }

    /// Upstream offset of everything received (parsed or still buffered).
    fn received_u(&self, buffered: usize) -> Option<u64> {
        self.stream
            .as_ref()
            .map(|s| s.upstream_offset() + buffered as u64)
    }

    fn note_received(&mut self, buffered: usize) {
        let Some(u) = self.received_u(buffered) else {
            return;
        };
        let now = Instant::now();
        match self.received.back_mut() {
            // Reads closer together than 10 ms share one mark; bounds the queue.
            Some((last_u, at)) if now.duration_since(*at) < Duration::from_millis(10) => {
                *last_u = u
            }
            _ => self.received.push_back((u, now)),
        }
    }

    /// Process whatever the upstream buffer holds in the current phase. A malformed stream
    /// also forgets the replica's state: continuing would replay the same bytes, so the
    /// replica's next attempt must be a full sync.
    async fn drive(&mut self, up_buf: &mut BytesMut) -> Result<(), Ending> {
        let queued_before = self.out.len();
        let result = self.drive_phase(up_buf).await;
        self.read_produced |= self.out.len() > queued_before;
        if let Err(end) = &result {
            if end.reason == "upstream_protocol" {
                if let Some(Holder::Stored(guard)) = self.holder.take() {
                    self.ctx.store.remove(guard);
                }
            }
        }
        result
    }

    async fn drive_phase(&mut self, up_buf: &mut BytesMut) -> Result<(), Ending> {
        if let Some(p) = self.payload.as_mut() {
            let done = p
                .relay
                .feed(up_buf, &mut self.out, &p.table, self.data_included)
                .map_err(|e| {
                    stats::protocol_error(Side::Upstream, "payload_mark");
                    Ending::fail("upstream_protocol", e.to_string())
                })?;
            match done {
                None => return Ok(()),
                Some(done) => {
                    if let Some(p) = self.payload.take() {
                        self.payload_finished(p, done).await;
                    }
                }
            }
        }
        let budget = std::mem::replace(&mut self.slice_entries, FIRST_SLICE_ENTRIES);
        if self.awaiting_first_ack || up_buf.is_empty() {
            return Ok(());
        }
        let (Some(stream), Some(holder)) = (self.stream.as_mut(), self.holder.as_mut()) else {
            return Ok(());
        };
        let started = Instant::now();
        let risk_horizon_ms = i64::try_from(self.lag_ms).unwrap_or(i64::MAX);
        let state: &mut ReplicaState = holder;
        let processed = stream
            .process_up_to(
                up_buf,
                budget,
                self.read_arrived_ms,
                &state.table,
                &self.ctx.policy,
                &mut state.map,
                &mut self.out,
                &mut self.tally,
                risk_horizon_ms,
            )
            .map_err(|e| {
                stats::protocol_error(Side::Upstream, "stream_framing");
                Ending::fail(
                    "upstream_protocol",
                    format!("malformed replication stream from the master: {e}"),
                )
            })?;
        state.table_u = Some(stream.upstream_offset());
        // Before any of `out` reaches the replica.
        state.write_ahead();
        if state.map.cap(MAX_MAP_POINTS) > 0 {
            tracing::debug!(replica = %self.label, "offset map capped; the replica is not acknowledging");
        }
        self.read_processing += started.elapsed();
        if processed.stopped_early {
            self.slice_entries = budget.saturating_mul(2);
        }
        if !processed.at_risk.is_empty() {
            self.log_risks(&processed.at_risk);
        }
        Ok(())
    }

    fn log_risks(&mut self, risks: &[super::stream::AtRiskEntry]) {
        let Some(first) = risks.first() else {
            return;
        };
        if let Some(count) = self.risk_log.admit(risks.len() as u64) {
            tracing::warn!(replica = %self.label, db = first.db, key = %first.key,
                old_deadline_ms = first.old_deadline_ms, count,
                "entry extends or removes a TTL that may already have expired on a lagging replica (count: this and the suppressed ones since the last line)");
        }
    }

    async fn payload_finished(&mut self, p: PendingPayload, done: PayloadDone) {
        let db = match &done.scan {
            ScanResult::Complete(summary) => {
                tracing::info!(replica = %self.label, bytes = done.bytes,
                    eof_framed = done.eof_framed, keys = summary.keys, keys_with_expiry = done.keys_with_expiry,
                    repl_stream_db = ?summary.repl_stream_db, rdb_version = summary.version,
                    table_complete = p.table.is_complete(),
                    secs = p.started.elapsed().as_secs_f64(), "payload relayed");
                summary.repl_stream_db.unwrap_or(0)
            }
            ScanResult::Failed(e) => {
                stats::protocol_error(Side::Upstream, "rdb_scan");
                tracing::warn!(replica = %self.label, bytes = done.bytes, error = %e,
                    "payload relayed untouched but could not be scanned; expiry table incomplete");
                0
            }
        };
        let map = OffsetMap::new(p.base, p.base, db);
        let mut state = ReplicaState {
            own_id: p.own_id,
            master_id: p.master_id,
            map,
            table: p.table,
            table_u: Some(p.base),
            file: None,
        };
        self.holder = Some(if p.stored {
            state.persist_fresh(self.ctx.store.dir()).await;
            Holder::Stored(self.ctx.store.insert(state).await)
        } else {
            Holder::Local(Box::new(state))
        });
        self.stream = Some(StreamRelay::new(p.base, p.base, db));
        self.acked_u = p.base;
        self.awaiting_first_ack = done.eof_framed;
        self.status.set_phase(if done.eof_framed {
            Phase::AwaitingFirstAck
        } else {
            Phase::Streaming
        });
    }

    /// Handle one frame from the replica after the handshake.
    async fn handle_replica_frame(
        &mut self,
        frame: Frame,
        up_w: &mut OwnedWriteHalf,
    ) -> Result<(), Ending> {
        let cmd = match frame {
            Frame::Newline { raw } => {
                // A loading replica's liveness signal: the master expects it.
                return write_up(up_w, &raw).await;
            }
            Frame::Empty { .. } => return Ok(()),
            Frame::Command(c) | Frame::Inline(c) => c,
        };
        let is_ack = cmd.name_eq_ignore_case(b"REPLCONF")
            && cmd.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"ACK"));
        if !is_ack {
            tracing::debug!(replica = %self.label, command = %String::from_utf8_lossy(cmd.name()),
                "ignoring a command from a streaming replica");
            return Ok(());
        }
        let Some(d) = cmd.arg(2).and_then(|a| parse_u64(a)) else {
            stats::protocol_error(Side::Downstream, "ack");
            return Ok(());
        };
        let fack = match (cmd.arg(3), cmd.arg(4)) {
            (Some(k), Some(v)) if k.eq_ignore_ascii_case(b"FACK") => parse_u64(v),
            _ => None,
        };
        let Some(holder) = self.holder.as_mut() else {
            // Still relaying the payload: there is no stream to acknowledge yet.
            return Ok(());
        };
        if self.awaiting_first_ack {
            self.awaiting_first_ack = false;
            self.first_ack_released = true;
            self.status.set_phase(Phase::Streaming);
        }
        let Some(u) = holder.map.floor(d) else {
            tracing::debug!(replica = %self.label, d, "ACK below the offset map; not forwarded");
            return Ok(());
        };
        let mut args: Vec<Bytes> = vec![
            Bytes::from_static(b"REPLCONF"),
            Bytes::from_static(b"ACK"),
            Bytes::from(u.to_string()),
        ];
        if let Some(fu) = fack.and_then(|f| holder.map.floor(f)) {
            args.push(Bytes::from_static(b"FACK"));
            args.push(Bytes::from(fu.to_string()));
        }
        holder.map.prune_before(d);
        let mut bytes = BytesMut::new();
        crate::resp::encode_command(&args, &mut bytes);
        let ack = UpstreamAck {
            bytes: bytes.to_vec(),
            u,
        };
        // The master hears of an offset only once the map that resolves it is on disk (see
        // `held_acks`); the stream goes on meanwhile.
        match holder.persist().filter(|write| !write.is_done()) {
            Some(write) => {
                self.held_acks.hold(ack, write.seq);
                self.ack_writes = Some(write.progress);
            }
            None => {
                self.held_acks.clear();
                self.forward_ack(ack, up_w).await?;
            }
        }
        Ok(())
    }

    /// Send an ACK to the master and note how far the replica has caught up.
    async fn forward_ack(
        &mut self,
        ack: UpstreamAck,
        up_w: &mut OwnedWriteHalf,
    ) -> Result<(), Ending> {
        write_up(up_w, &ack.bytes).await?;
        self.acked_u = self.acked_u.max(ack.u);
        if let Some(s) = &self.stream {
            self.status
                .set_offsets(s.upstream_offset(), s.downstream_offset(), self.acked_u);
        }
        while self
            .received
            .front()
            .is_some_and(|(ru, _)| *ru <= self.acked_u)
        {
            self.received.pop_front();
        }
        Ok(())
    }

    /// Queue the map's gains for the disk; returns the write to wait for, if any.
    fn persist(&mut self) -> Option<PendingWrite> {
        self.holder.as_mut()?.persist()
    }

    /// How much room to make in `buf` before the next read of the master's stream.
    fn read_reserve(&self, buf: &BytesMut) -> usize {
        match (&self.stream, &self.payload) {
            (Some(stream), None) => stream.room_for_next_read(buf),
            _ => READ_CHUNK,
        }
    }

    /// Once per interval: persistence and the numbers the registry and metrics show.
    fn tick(&mut self, buffered: usize) {
        let _queued = self.persist();
        let Some(received) = self.received_u(buffered) else {
            return;
        };
        let lag_bytes = received.saturating_sub(self.acked_u);
        let lag = if lag_bytes == 0 {
            Duration::ZERO
        } else {
            self.received
                .front()
                .map_or(Duration::ZERO, |(_, at)| at.elapsed())
        };
        self.lag_ms = lag.as_millis() as u64;
        let points = self.holder.as_ref().map_or(0, |h| h.map.len());
        self.status
            .set_lag(lag_bytes, lag.as_millis() as u64, points);
        if let Some(s) = &self.stream {
            self.status
                .set_offsets(received, s.downstream_offset(), self.acked_u);
        }
        let series = replica_series::global();
        series.set_lag(&self.label, lag_bytes, lag.as_secs_f64());
        series.set_map_points(&self.label, points);
    }
}

async fn write_up(up_w: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), Ending> {
    up_w.write_all(bytes)
        .await
        .map_err(|e| Ending::fail("upstream_io", e.to_string()))?;
    stats::bytes(Side::Upstream, false, bytes.len());
    Ok(())
}

fn parse_u64(a: &[u8]) -> Option<u64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}
