//! One replica link's driver: the replica's P+2000 connection, terminated here, and the relay's
//! own connection to the master's P+2000, opened for it.
//!
//! Requests (replica → master) and responses (master → replica) are read as whole frames and
//! decoded once ([`link::input`](super::link::input)). The protocol logic is the state machine
//! [`LinkMachine`] (`link/`): this driver feeds it each frame and a tick every second, then
//! executes the [`Action`]s it returns **in order**. Frames are queued per side and written once
//! per read; a [`Action::Persist`] is awaited before any later action, which is how every
//! write-ahead transition of the offset map (`docs/architecture.md#durability`) reaches the disk
//! before the frame that depends on it is queued, while a [`Action::HandIn`] only queues the
//! state for the map's writer.
//!
//! The driver also owns what lives outside the protocol: the two sockets, each DB's offset-map
//! writer, checkpoint writer and lag tracker, the replica's name and series, the link's status
//! and its log lines and metrics.

mod db;
mod report;
mod status;

use crate::hold::HoldClock;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::checkpoint;
use super::client_port;
use super::config::{PikaRelayConfig, REPLICATION_PORT_OFFSET};
use super::error::{LinkError, Side};
use super::frame_reader::{FrameReader, Frames};
use super::fresh_dump::fresh_dump;
use super::link::action::{Action, DbId};
use super::link::input::{Request, Response};
use super::link::{LinkEnv, LinkMachine, MachineConfig};
use super::lookup::{Lookups, Question, Reply};
use super::passthrough::CONNECT_TIMEOUT;
use super::registry::{ParkedTable, PikaRelayShared};
use super::rewrite::LinkRewriter;
use super::stats;
use super::warmup::{self, WarmupState};
use crate::pika::frame::{FrameCodec, FrameError};
use crate::pika::messages::{BinlogPosition, Node};
use crate::replica_series::{self, ReplicaHandle};
use db::DbResources;
use status::publish_tables;

/// How long a new P+2000 connection may stay silent before it is closed unanswered (a Pika
/// replica sends its MetaSync at once).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often link status, lag gauges and timeouts are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// Bytes the replica's backlog may grow past the read-ahead's bound before the link stops
/// reading the master: the master still sends its unacked window (up to `sync-window-size`
/// items) once the relay stops acking, and the kernel's buffers then take the rest.
const READ_PAUSE_MARGIN: usize = 16 << 20;

/// How long a closing link waits for its offset map to reach the disk.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// At most one at-risk warning per link per this interval.
const RISK_LOG_INTERVAL: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn frame_err(side: Side, e: FrameError) -> LinkError {
    match e {
        FrameError::Io(io) => LinkError::Io(side, io),
        other => LinkError::Frame(side, other),
    }
}

/// What a link needs from the relay.
#[derive(Clone)]
pub(crate) struct LinkSetup {
    pub cfg: Arc<PikaRelayConfig>,
    pub shared: PikaRelayShared,
}

/// The machine's view of the relay: the shared registry, the configuration and the clock.
struct RelayEnv<'a> {
    cfg: &'a Arc<PikaRelayConfig>,
    shared: &'a PikaRelayShared,
    peer_ip: IpAddr,
    replica: &'a str,
    backlog: usize,
}

impl LinkEnv for RelayEnv<'_> {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn snapshot_matches(&self, db: &str, position: BinlogPosition, since: Instant) -> bool {
        self.shared
            .snapshot_matches(self.peer_ip, db, position, since)
    }

    fn is_parked_at(&self, store_key: &str, at: BinlogPosition) -> bool {
        self.shared.is_parked_at(store_key, at)
    }

    fn park(&self, store_key: &str, parked: ParkedTable) {
        self.shared.park_table(store_key, parked);
    }

    fn unpark(&self, store_key: &str, at: BinlogPosition) -> Option<ParkedTable> {
        self.shared.unpark_table(store_key, at)
    }

    fn start_warmup(&self, db: &str, rewriter: &mut LinkRewriter) -> Option<WarmupState> {
        warmup::start(self.cfg, self.replica, db, Some(rewriter))
    }

    fn replica_backlog_bytes(&self) -> usize {
        self.backlog
    }
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
    // A connection that sends nothing (a TCP health check, a port scan) costs the master
    // nothing and counts as no replica: the master is dialled once the replica speaks.
    if !replica_speaks(&replica, &cancel).await {
        tracing::debug!(%peer, "a connection on P+2000 closed before its first byte");
        return;
    }
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
    let machine = LinkMachine::new(
        MachineConfig {
            families: setup.shared.families.clone(),
            empty_at_origin: setup.cfg.empty_at_origin,
            upstream_idle_timeout: setup.cfg.upstream_idle_timeout,
            master_drop_after: setup.cfg.master_drop_after,
            replica_binlog_file_size: setup.cfg.binlog_file_size,
            look_ups: setup.cfg.look_ups,
            read_ahead_bytes: setup.cfg.read_ahead_bytes,
            fresh_dump: setup.cfg.fresh_dump,
        },
        release.unwrap_or_default(),
        Instant::now(),
    );
    let (lookups, replies) = if setup.cfg.look_ups {
        let (lookups, replies) = Lookups::start(
            setup.cfg.master,
            setup.cfg.master_password.clone(),
            release.unwrap_or_default(),
        );
        (Some(lookups), Some(replies))
    } else {
        (None, None)
    };
    let mut link = Link {
        id,
        peer,
        setup: setup.clone(),
        name: replica_label.clone(),
        machine,
        dbs: Vec::new(),
        actions: Vec::new(),
        down: replica_w,
        up: master_w,
        to_replica: BytesMut::new(),
        read_pause_at: setup.cfg.read_ahead_bytes.saturating_add(READ_PAUSE_MARGIN),
        to_master: BytesMut::new(),
        bytes: stats::ByteCounters::new(),
        codec,
        hold: HoldClock::new(),
        master_addr,
        master_spoke: false,
        risk_log: crate::logging::Throttle::new(RISK_LOG_INTERVAL),
        lookup_log: crate::logging::Throttle::new(RISK_LOG_INTERVAL),
        series: None,
        lookups,
    };
    tracing::info!(%peer, link = id, "replica connected; relaying to {master_addr}");
    link.publish_status();
    let result = link
        .pump(
            FrameReader::new(replica_r, codec),
            FrameReader::new(master_r, codec),
            replies,
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

/// Waits for the replica's first byte (without reading it); false when the connection closes,
/// fails or stays silent for [`FIRST_BYTE_TIMEOUT`] first.
async fn replica_speaks(replica: &TcpStream, cancel: &CancellationToken) -> bool {
    let mut first = [0u8; 1];
    tokio::select! {
        _ = cancel.cancelled() => false,
        peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, replica.peek(&mut first)) => {
            matches!(peeked, Ok(Ok(n)) if n > 0)
        }
    }
}

struct Link {
    id: u64,
    peer: SocketAddr,
    setup: LinkSetup,
    /// The replica as it names itself (`node.ip:port`), or its TCP peer address until known.
    name: String,
    /// The protocol state.
    machine: LinkMachine,
    /// Per DB, what the machine does not hold (indexed by [`DbId`]).
    dbs: Vec<DbResources>,
    /// The actions of the current step (reused).
    actions: Vec<Action>,
    down: OwnedWriteHalf,
    up: OwnedWriteHalf,
    /// Frames encoded for the replica / the master and not yet written: everything one read
    /// produced goes out in one write per side. The replica's may hold a backlog (see
    /// [`Link::flush`]).
    to_replica: BytesMut,
    /// The master is not read while this many bytes wait for the replica: the read-ahead's
    /// bound plus [`READ_PAUSE_MARGIN`] (a response already read is never dropped).
    read_pause_at: usize,
    to_master: BytesMut,
    bytes: stats::ByteCounters,
    codec: FrameCodec,
    /// How long the master's data waits in the proxy.
    hold: HoldClock,
    /// The master's replication port.
    master_addr: SocketAddr,
    /// Whether the master sent one valid message yet.
    master_spoke: bool,
    /// At-risk warnings of this link.
    risk_log: crate::logging::Throttle,
    /// The replica's series, from when it named itself (a connection that never does, such as
    /// a port probe, creates none) until the link closes.
    series: Option<ReplicaHandle>,
    /// Warnings about entries a look-up could not decide.
    lookup_log: crate::logging::Throttle,
    /// The look-up worker (`--look-ups on`).
    lookups: Option<Lookups>,
}

/// The machine's environment, from a link's fields (a macro so the borrow stays on the fields,
/// leaving `machine` free).
macro_rules! env {
    ($link:expr) => {
        RelayEnv {
            cfg: &$link.setup.cfg,
            shared: &$link.setup.shared,
            peer_ip: $link.peer.ip(),
            replica: &$link.name,
            backlog: $link.to_replica.len(),
        }
    };
}

impl Link {
    async fn pump(
        &mut self,
        mut replica: Frames,
        mut master: Frames,
        mut replies: Option<tokio::sync::mpsc::UnboundedReceiver<Reply>>,
        cancel: CancellationToken,
    ) -> Result<(), LinkError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A replica that leaves a response unacked for a while gets read ahead of. One timer,
        // moved only to an earlier instant (each ack moves the due instant later; a timer that
        // fires early finds nothing due and is set again), so acks cost no timer updates.
        let read_ahead_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(read_ahead_timer);
        let mut read_ahead_at: Option<Instant> = None;
        loop {
            match (self.machine.read_ahead_due(), read_ahead_at) {
                (None, _) => read_ahead_at = None,
                (Some(due), Some(armed)) if armed <= due => {}
                (Some(due), _) => {
                    read_ahead_timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(due));
                    read_ahead_at = Some(due);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                () = &mut read_ahead_timer, if read_ahead_at.is_some() => {
                    read_ahead_at = None;
                    self.machine.on_read_ahead_due(&env!(self), Instant::now(), &mut self.actions);
                    self.execute().await?;
                }
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
                frame = master.next(), if self.to_replica.len() < self.read_pause_at => {
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
                Some(reply) = next_reply(&mut replies) => {
                    self.machine.on_lookup(&env!(self), reply.id, reply.answer, Instant::now(), &mut self.actions);
                    self.execute().await?;
                }
                ready = self.down.writable(), if !self.to_replica.is_empty() => {
                    ready.map_err(|e| LinkError::Io(Side::Replica, e))?;
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
    fn send(&mut self, side: Side, body: &[u8]) -> Result<(), LinkError> {
        let out = match side {
            Side::Master => &mut self.to_master,
            Side::Replica => &mut self.to_replica,
        };
        self.codec.encode(body, out).map_err(|e| frame_err(side, e))
    }

    /// Writes what the replica's socket takes now (the data path; the rest waits in
    /// `to_replica` until the socket is writable again, while the link goes on reading the
    /// master: the read-ahead), then everything queued for the master.
    async fn flush(&mut self) -> Result<(), LinkError> {
        while !self.to_replica.is_empty() {
            match self.down.try_write(&self.to_replica) {
                Ok(0) => {
                    let closed = std::io::Error::from(std::io::ErrorKind::WriteZero);
                    return Err(LinkError::Io(Side::Replica, closed));
                }
                Ok(n) => {
                    self.bytes.sent(Side::Replica, n);
                    self.hold.wrote(n);
                    self.to_replica.advance(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(LinkError::Io(Side::Replica, e)),
            }
        }
        if !self.to_master.is_empty() {
            self.up
                .write_all(&self.to_master)
                .await
                .map_err(|e| LinkError::Io(Side::Master, e))?;
            self.bytes.sent(Side::Master, self.to_master.len());
            self.to_master.clear();
        }
        Ok(())
    }

    /// A replica frame: decoded, the DB's offset map opened on a TrySync or DBSync for a new
    /// DB, then fed to the machine.
    async fn on_request(&mut self, body: Bytes) -> Result<(), LinkError> {
        let req = Request::decode(&body)?;
        match &req {
            Request::MetaSync(Some(meta)) => self.set_name(&meta.node),
            Request::TrySync(sp) | Request::DbSync(sp) => {
                self.set_name(&sp.node);
                if self
                    .machine
                    .find(sp.slot.db_name, sp.slot.slot_id)
                    .is_none()
                {
                    self.open_db(&sp.node, &sp.slot).await?;
                }
            }
            _ => {}
        }
        let now = Instant::now();
        self.machine
            .on_request(&env!(self), &body, &req, now, &mut self.actions);
        self.execute().await
    }

    /// A master frame: decoded once, then fed to the machine.
    async fn on_response(&mut self, body: Bytes) -> Result<(), LinkError> {
        let now = Instant::now();
        let resp = Response::decode(&body)?;
        self.machine
            .on_response(&env!(self), &body, &resp, now, &mut self.actions);
        self.execute().await
    }

    /// Executes the machine's actions in order; a write-ahead map state is durable before the
    /// next action runs.
    async fn execute(&mut self) -> Result<(), LinkError> {
        let mut actions = std::mem::take(&mut self.actions);
        let mut result = Ok(());
        for action in actions.drain(..) {
            result = self.run(action).await;
            if result.is_err() {
                break;
            }
        }
        // Emptied by the drain either way; kept for its capacity.
        self.actions = actions;
        result
    }

    async fn run(&mut self, action: Action) -> Result<(), LinkError> {
        match action {
            Action::ToReplica(frame) => self.send(Side::Replica, &frame),
            Action::ToMaster(frame) => self.send(Side::Master, &frame),
            Action::Persist { db, state, why } => {
                if let Err(e) = self.dbs[db.0].store.persist(self.id, state).await {
                    self.machine.persist_failed(db, why);
                    return Err(LinkError::Persist(e));
                }
                Ok(())
            }
            Action::HandIn { db, update } => self.dbs[db.0]
                .store
                .hand_in_update(self.id, update)
                .map(|_| ())
                .map_err(LinkError::Persist),
            Action::CatchUp { db, master } => {
                self.catch_up_from_checkpoint(db, master).await;
                Ok(())
            }
            Action::FreshDump { db } => {
                let key = self.machine.db(db).key().to_string();
                let cfg = &self.setup.cfg;
                match fresh_dump(cfg.master, cfg.master_password.as_deref()).await {
                    Ok(took) => tracing::info!(
                        replica = %self.name, db = %key,
                        "the master wrote a fresh dump for the replica's full sync in {:.1} s (an older one would make the replica replay its history through the proxy)",
                        took.as_secs_f64()
                    ),
                    Err(why) => tracing::warn!(
                        replica = %self.name, db = %key,
                        "could not get a fresh dump from the master for the replica's full sync ({why}); the master serves the dump it chooses, and history after an older one is replayed with look-ups that may come too late"
                    ),
                }
                Ok(())
            }
            Action::LookUp { db, key, id } => {
                let db_name =
                    String::from_utf8_lossy(self.machine.db(db).slot().db_name).into_owned();
                match &self.lookups {
                    Some(lookups) => lookups.ask(Question { id, db_name, key }),
                    None => self.machine.on_lookup(
                        &env!(self),
                        id,
                        super::link::held::LookupAnswer::Failed("look-ups are off".into()),
                        Instant::now(),
                        &mut self.actions,
                    ),
                }
                Ok(())
            }
            Action::Checkpoint { db } => {
                let state = self.machine.db(db);
                if let Some(rw) = state.rewriter() {
                    self.dbs[db.0].checkpoint.maybe_take(
                        &self.setup.cfg,
                        state.store_key(),
                        rw,
                        state.last_forwarded(),
                    );
                }
                Ok(())
            }
            Action::JournalAnswer { db, answer } => {
                let key = self.machine.db(db).store_key();
                self.dbs[db.0].checkpoint.journal(key, &answer);
                Ok(())
            }
            Action::Event(event) => {
                self.report(event);
                Ok(())
            }
            Action::Close(e) => Err(e),
        }
    }

    /// After a crash nothing is parked for a replica that resumes at `master`: its table is
    /// rebuilt there from a checkpoint ([`checkpoint::Restore`]) and parked, so the link
    /// starts with exact knowledge.
    async fn catch_up_from_checkpoint(&self, db: DbId, master: BinlogPosition) {
        let state = self.machine.db(db);
        let restore = checkpoint::Restore {
            cfg: &self.setup.cfg,
            shared: &self.setup.shared,
            release: self.machine.release(),
            replica: &self.name,
            db: state.key(),
            store_key: state.store_key(),
            slot: state.slot(),
        };
        restore.at(master).await;
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

    // -----------------------------------------------------------------------------------------
    // Housekeeping
    // -----------------------------------------------------------------------------------------

    async fn on_tick(&mut self) -> Result<(), LinkError> {
        self.machine
            .on_tick(&env!(self), Instant::now(), &mut self.actions);
        self.execute().await?;
        self.publish_status();
        Ok(())
    }

    async fn close(mut self) {
        // Every table first: a slow flush below must not keep a DB's table from being parked
        // (and saved, when the relay is stopping).
        self.machine.park_all(&env!(self));
        for db in &self.dbs {
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

/// The next look-up reply, or never when look-ups are off.
async fn next_reply(
    replies: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Reply>>,
) -> Option<Reply> {
    match replies {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
