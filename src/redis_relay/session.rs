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

use super::catch_up;
use super::checkpoint::Checkpointer;
use super::ending::{EndReason, Ending};
use super::handshake::{self, ReplicaHello, Step, SyncRequest};
use super::link::{
    continue_point, Action, ContinueStart, Event, FullStart, Holder, Link, Now, Written,
};
use super::rdb_relay::{parse_header, Framing, ScanResult};
use super::registry::{Phase, SessionStatus};
use super::stats::{self, Side};
use super::store::{random_repl_id, Claim};
use super::stream::READ_CHUNK;
use super::upstream::{parse_psync_reply, Line, PsyncReply, Upstream};
use super::Ctx;
use crate::hold::HoldClock;
use crate::relay_core::record_log::{self, Progress};
use crate::replica_series::{self, ReplicaHandle};
use crate::resp::{CommandParser, Frame, ParserLimits};
use crate::table::{Baseline, ExpiryTable};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a reconnecting replica waits for its previous connection to release its state.
const CLAIM_WAIT: Duration = Duration::from_secs(3);
/// At most one at-risk warning per replica per this interval.
const RISK_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Where the relay loop starts.
enum Start {
    /// A payload follows; the stream then starts at its base.
    Full(FullStart),
    /// The stream continues at a boundary of a stored state.
    Continue(ContinueStart),
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
    let reason = ending.reason.label();
    stats::disconnect(reason);
    if ending.failure {
        tracing::warn!(replica = %label, master = %ctx.cfg.master, reason,
            error = %ending.detail, "replica connection failed");
    } else {
        tracing::info!(replica = %label, reason, "replica connection closed");
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
            None => return Ok(Ending::normal(EndReason::ReplicaClosed)),
        };
        let Some(up) = up else {
            self.reply("-ERR the proxy cannot reach its master").await?;
            return Err(Ending::fail(
                EndReason::UpstreamUnreachable,
                "no master link",
            ));
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
                    return Err(Ending::fail(EndReason::DownstreamProtocol, e.to_string()));
                }
            }
            self.down_buf.reserve(4096);
            let timeout = self.ctx.cfg.handshake_timeout;
            let read = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Ending::normal(EndReason::Shutdown)),
                r = tokio::time::timeout(timeout, self.down_r.read_buf(&mut self.down_buf)) => r,
            };
            let n = read
                .map_err(|_| Ending::fail(EndReason::HandshakeTimeout, "replica went quiet"))?
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
                        return Err(Ending::fail(
                            EndReason::UpstreamUnreachable,
                            "no master link",
                        ));
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
                _ = self.shutdown.cancelled() => return Err(Ending::normal(EndReason::Shutdown)),
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
                _ = self.shutdown.cancelled() => return Err(Ending::normal(EndReason::Shutdown)),
                l = up.read_line(self.ctx.cfg.handshake_timeout) => l.map_err(Ending::upstream)?,
            };
            match line {
                Line::Keepalive => self.keepalive().await?,
                Line::Text(t) => {
                    let Some(framing) = parse_header(&t) else {
                        stats::protocol_error(Side::Upstream, "payload_header");
                        return Err(Ending::fail(
                            EndReason::UpstreamProtocol,
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
                let start = Start::Full(FullStart {
                    framing,
                    base: 0,
                    own_id: String::new(),
                    master_id: String::new(),
                    stored: false,
                    table: Arc::new(ExpiryTable::new(Baseline::Unknown)),
                });
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
                Claim::Claimed(mut guard) => match continue_point(&guard.map, offset) {
                    None => {
                        tracing::info!(replica = %self.label, own_id = %id, offset,
                                tip = guard.map.tip().0,
                                "PSYNC offset is not a recorded boundary; full resync");
                        self.ctx.store.remove(guard);
                        "not_a_boundary"
                    }
                    Some((d, resolved)) => {
                        // No table at the resume point (a crash): rebuild it from a
                        // checkpoint, continuing the master at the checkpoint's offset.
                        let catch_up = if guard.table_u != Some(resolved.u) {
                            catch_up::plan(&self.ctx.cfg, &self.label, &mut guard, resolved.u).await
                        } else {
                            None
                        };
                        let from_u = catch_up.map_or(resolved.u, |c| c.u);
                        let mut args = vec![
                            "PSYNC".to_string(),
                            guard.master_id.clone(),
                            from_u.saturating_add(1).to_string(),
                        ];
                        args.extend(failover_arg.iter().map(|s| s.to_string()));
                        up.send(&args).await.map_err(Ending::upstream)?;
                        match self.psync_reply(&mut up).await? {
                            PsyncReply::Continue { id: new_master } => {
                                let start = ContinueStart {
                                    holder: Holder::Stored(guard),
                                    d,
                                    resolved,
                                    new_master,
                                    capa_psync2: self.hello.capa_psync2,
                                    catch_up,
                                };
                                return self.relay(up, Start::Continue(start)).await;
                            }
                            PsyncReply::FullResync { id, offset } => {
                                tracing::info!(replica = %self.label, d, u = resolved.u, from_u,
                                        "the master refused to continue; full resync");
                                self.ctx.store.remove(guard);
                                return self
                                    .full_sync(up, id, offset, "master_refused_partial")
                                    .await;
                            }
                            PsyncReply::Error(e) => {
                                drop(guard);
                                self.reply(&e).await?;
                                return Ok(Ending::fail(EndReason::MasterError, e));
                            }
                        }
                    }
                },
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
                    EndReason::UpstreamProtocol,
                    "the master answered PSYNC ? -1 with +CONTINUE",
                ))
            }
            PsyncReply::Error(e) => {
                self.reply(&e).await?;
                Ok(Ending::fail(EndReason::MasterError, e))
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
        let start = Start::Full(FullStart {
            framing,
            base,
            own_id,
            master_id,
            stored: true,
            table: Arc::new(ExpiryTable::new(Baseline::Unknown)),
        });
        self.relay(up, start).await
    }

    /// The relay loop: reads both sockets, feeds the [`Link`] machine, and executes its
    /// actions in order ([`Session::execute`]).
    async fn relay(&mut self, up: Upstream, start: Start) -> Result<Ending, Ending> {
        let Upstream {
            read: mut up_r,
            write: mut up_w,
            buf: up_buf,
        } = up;
        let data_included = !self.hello.rdb_filtered;
        let policy = self.ctx.policy.clone();
        let now = Now::wall();
        let mut link = match start {
            Start::Full(full) => {
                self.status.set_table(Some(full.table.clone()));
                self.status.set_own_id(&full.own_id);
                Link::full(policy, data_included, up_buf, full, now)
            }
            Start::Continue(cont) => {
                self.status.set_table(Some(cont.holder.table.clone()));
                self.status.set_own_id(&cont.holder.own_id);
                Link::continued(policy, data_included, up_buf, cont, now)
            }
        };
        link.set_checkpoint_interval(self.ctx.cfg.checkpoint_interval);
        let mut io = LinkIo {
            up_w: &mut up_w,
            ack_writes: None,
            hold: HoldClock::new(),
            risk_log: crate::logging::Throttle::new(RISK_LOG_INTERVAL),
            checkpoints: Checkpointer::default(),
        };
        self.execute(&mut link, &mut io).await?;
        link.start(Now::wall());
        self.execute(&mut link, &mut io).await?;

        let limit = self.ctx.cfg.replica_output_buffer_limit.max(READ_CHUNK);
        let mut ticker = tokio::time::interval(self.ctx.cfg.state_sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if link.poll_end() {
                self.execute(&mut link, &mut io).await?;
            }
            let read_upstream = link.wants_upstream_read(limit);
            if read_upstream {
                link.reserve_for_read();
            }
            self.down_buf.reserve(4096);
            // Biased: the once-a-second tick and the replica's rare, small frames (ACKs) come
            // before the master's stream so a busy stream cannot starve them, and writes come
            // before reading more of the stream, so an entry never waits behind the processing
            // of the next read (unbiased, select! picks a ready branch at random).
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    return Ok(self.shut_down(&mut link, &mut io).await);
                }
                _ = ticker.tick() => link.on_tick(Now::wall()),
                r = held_ack_due(&mut io.ack_writes, link.first_held_write()),
                    if link.holds_acks() => link.on_write_progress(&r),
                // Only what the machine allows: never stream bytes whose write-ahead is
                // outstanding (see `link`).
                r = link.out.write_some(&mut self.down_w), if link.may_send_down() => {
                    let n = r.map_err(Ending::downstream_io)?;
                    stats::bytes(Side::Downstream, false, n);
                    io.hold.wrote(n);
                }
                r = self.down_r.read_buf(&mut self.down_buf) => {
                    let n = r.map_err(Ending::downstream_io)?;
                    if n == 0 {
                        link.on_replica_closed();
                    } else {
                        stats::bytes(Side::Downstream, true, n);
                        loop {
                            let frame = match self.down_parser.parse(&mut self.down_buf) {
                                Ok(Some(f)) => f,
                                Ok(None) => break,
                                Err(e) => {
                                    stats::protocol_error(Side::Downstream, "framing");
                                    return Err(Ending::fail(
                                        EndReason::DownstreamProtocol,
                                        e.to_string(),
                                    ));
                                }
                            };
                            link.on_replica_frame(frame);
                            self.execute(&mut link, &mut io).await?;
                        }
                        link.on_replica_read_done(Now::wall());
                    }
                }
                // The rest of a read whose first slice's output went out first (see
                // FIRST_SLICE_ENTRIES); after the write branch, so each slice is sent before
                // the next is decided.
                _ = std::future::ready(()), if link.slicing_read() => link.on_slice(),
                r = up_r.read_buf(&mut link.up_buf), if read_upstream => {
                    let n = r.map_err(|e| Ending::fail(EndReason::UpstreamIo, e.to_string()))?;
                    if n == 0 {
                        link.on_upstream_closed();
                    } else {
                        stats::bytes(Side::Upstream, true, n);
                        link.on_upstream_read(Now::wall());
                    }
                }
            }
            self.execute(&mut link, &mut io).await?;
        }
    }

    /// Execute the link's actions in the order it emitted them. Returns the ending once the
    /// link closes (as `Ok` for a normal close, `Err` for a failure, like every other step).
    ///
    /// Write-ahead: a [`Action::PersistAhead`] is executed here, synchronously, before the
    /// loop can reach its write branch again, and the machine keeps [`Link::out`] closed to
    /// that branch until [`Link::ahead_written`]; stream bytes thus never leave before the
    /// records that map them were handed to the state file.
    async fn execute(&mut self, link: &mut Link, io: &mut LinkIo<'_>) -> Result<(), Ending> {
        while let Some(action) = link.next_action() {
            match action {
                Action::SendDown(bytes) => {
                    self.down_w
                        .write_all(&bytes)
                        .await
                        .map_err(Ending::downstream_io)?;
                    stats::bytes(Side::Downstream, false, bytes.len());
                }
                // Drained by the relay loop's write branch once `may_send_down`, which the
                // write-ahead before stream bytes has opened by now.
                Action::SendQueuedDown { stream_d } => {
                    debug_assert!(
                        stream_d.is_none() || link.may_send_down() || link.out.is_empty(),
                        "stream bytes queued before their write-ahead"
                    );
                }
                Action::SendUp(bytes) => write_up(io.up_w, &bytes).await?,
                Action::PersistAhead => {
                    if let Some(state) = link.state_mut() {
                        state.write_ahead();
                    }
                    link.ahead_written();
                }
                Action::PersistBehind => {
                    let write = link.state_mut().and_then(|s| s.persist());
                    let written = write.as_ref().map(|w| Written {
                        seq: w.seq,
                        done: w.is_done(),
                    });
                    if link.on_persisted(written) {
                        io.ack_writes = write.map(|w| w.progress);
                    }
                }
                Action::PersistFresh => {
                    let dir = self.ctx.store.dir().to_path_buf();
                    if let Some(state) = link.state_mut() {
                        state.persist_fresh(&dir).await;
                    }
                }
                Action::StoreState => {
                    if let Some(state) = link.take_local_state() {
                        let guard = self.ctx.store.insert(state).await;
                        link.stored(guard);
                    }
                }
                Action::Resume => link.resume(),
                Action::Checkpoint(request) => {
                    if !io.checkpoints.take(self.ctx.store.dir(), request) {
                        link.checkpoint_skipped();
                    }
                }
                Action::Event(event) => self.event(event, io),
                Action::Close(ending) => {
                    if ending.reason.forgets_state() {
                        if let Some(Holder::Stored(guard)) = link.take_holder() {
                            self.ctx.store.remove(guard);
                        }
                    }
                    return Err(ending);
                }
            }
        }
        Ok(())
    }

    /// Log, count or show one of the link's events.
    fn event(&mut self, event: Event, io: &mut LinkIo<'_>) {
        match event {
            Event::Phase(phase) => self.status.set_phase(phase),
            Event::Offsets {
                upstream,
                downstream,
                acked,
            } => self.status.set_offsets(upstream, downstream, acked),
            Event::Lag { bytes, lag, points } => {
                self.status.set_lag(bytes, lag.as_millis() as u64, points);
                let series = replica_series::global();
                series.set_lag(&self.label, bytes, lag.as_secs_f64());
                series.set_map_points(&self.label, points);
            }
            Event::ProtocolError(side, kind) => stats::protocol_error(side, kind),
            Event::ReadDecided { arrived, queued } => io.hold.processed_in_slices(arrived, queued),
            Event::AtRisk {
                db,
                key,
                old_deadline_ms,
                entries,
            } => {
                if let Some(count) = io.risk_log.admit(entries) {
                    tracing::warn!(replica = %self.label, db, key = %key,
                        old_deadline_ms, count,
                        "entry extends or removes a TTL that may already have expired on a lagging replica (count: this and the suppressed ones since the last line)");
                }
            }
            Event::MapCapped => {
                tracing::debug!(replica = %self.label, "offset map capped; the replica is not acknowledging");
            }
            Event::PayloadRelayed {
                done,
                table_complete,
                started,
            } => match &done.scan {
                ScanResult::Complete(summary) => {
                    tracing::info!(replica = %self.label, bytes = done.bytes,
                        eof_framed = done.eof_framed, keys = summary.keys, keys_with_expiry = done.keys_with_expiry,
                        repl_stream_db = ?summary.repl_stream_db, rdb_version = summary.version,
                        table_complete,
                        secs = started.elapsed().as_secs_f64(), "payload relayed");
                }
                ScanResult::Failed(e) => {
                    tracing::warn!(replica = %self.label, bytes = done.bytes, error = %e,
                        "payload relayed untouched but could not be scanned; expiry table incomplete");
                }
            },
            Event::MasterIdChanged { old, new } => {
                tracing::info!(replica = %self.label, old = %old, new = %new,
                    "the master changed replication id");
            }
            Event::TableReset { table_u, u } => {
                tracing::warn!(replica = %self.label, table_u = ?table_u, u,
                    "expiry table is not at the continuation point; keys become unknown");
            }
            Event::PartialResync {
                own_id,
                d,
                u,
                db,
                table_complete,
            } => {
                stats::partial_sync();
                tracing::info!(replica = %self.label, own_id = %own_id, d, u, db,
                    table_complete, "partial resync: continuing");
            }
            Event::AckBelowMap { d } => {
                tracing::debug!(replica = %self.label, d, "ACK below the offset map; not forwarded");
            }
            Event::IgnoredCommand { name } => {
                tracing::debug!(replica = %self.label, command = %name,
                    "ignoring a command from a streaming replica");
            }
            Event::MasterClosed => {
                tracing::info!(replica = %self.label, "the master closed the link");
            }
            Event::CatchUpDone {
                from,
                to,
                entries,
                secs,
            } => {
                tracing::info!(replica = %self.label, from, to, entries, secs,
                    "expiry table brought from its checkpoint to the resume position along the master's backlog");
            }
        }
    }

    /// A clean stop: the state's last gains go to disk (waited for up to 1 s), an ACK whose
    /// write has landed still tells the master how far the replica got, and what is queued
    /// for the replica is flushed.
    async fn shut_down(&mut self, link: &mut Link, io: &mut LinkIo<'_>) -> Ending {
        if let Some(mut write) = link.state_mut().and_then(|s| s.persist()) {
            let _ = tokio::time::timeout(Duration::from_secs(1), write.wait()).await;
        }
        let progress = io.ack_writes.as_ref().map(|w| w.borrow().clone());
        if let Some(progress) = progress {
            link.on_write_progress(&progress);
            while let Some(action) = link.next_action() {
                match action {
                    Action::SendUp(bytes) => {
                        let _ = tokio::time::timeout(
                            Duration::from_millis(500),
                            write_up(io.up_w, &bytes),
                        )
                        .await;
                    }
                    Action::Event(event) => self.event(event, io),
                    _ => {}
                }
            }
        }
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            link.out.flush_all(&mut self.down_w),
        )
        .await;
        Ending::normal(EndReason::Shutdown)
    }
}

/// What the driver keeps for executing a link's actions besides the session's own sockets.
struct LinkIo<'a> {
    up_w: &'a mut OwnedWriteHalf,
    /// The state writer's progress, while ACKs are held.
    ack_writes: Option<watch::Receiver<Progress>>,
    /// How long the master's data waits in the proxy.
    hold: HoldClock,
    risk_log: crate::logging::Throttle,
    /// Checkpoints of the table, written behind.
    checkpoints: Checkpointer,
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

async fn write_up(up_w: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), Ending> {
    up_w.write_all(bytes)
        .await
        .map_err(|e| Ending::fail(EndReason::UpstreamIo, e.to_string()))?;
    stats::bytes(Side::Upstream, false, bytes.len());
    Ok(())
}
