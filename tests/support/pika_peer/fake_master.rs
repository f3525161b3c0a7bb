//! A fake Pika 3.5.4 master, written from `docs/pika-protocol.md`.
//!
//! * Client commands run on the reference model (`model::Master`, Pika dialect) at an injected
//!   clock; the entries it logs are appended to a real block-structured binlog
//!   (`BinlogFileWriter`), so item offsets are real Pika offsets.
//! * P+2000: MetaSync, TrySync (kOk only at a record boundary, kSyncPointLarger beyond the
//!   producer, kError elsewhere), DBSync (served the last dump, as real Pika serves one fewer
//!   than 50 binlog files old; a dump at the producer position when there is none), first_send and
//!   acks checked against the sync window exactly (any mismatch: disconnect, like the real
//!   master), keepalives when idle, and a timeout without requests.
//! * P+10001: rsync2 serving only the `info` file of the last snapshot.
//! * P: a RESP port for the relay's warm-up (`TIME`, `INFO replication`, `SCAN`, `PTTL`), its
//!   fresh dumps (`BGSAVE`, then `INFO stats` with `is_bgsaving`), also
//!   accepting the replica's empty probe connections.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pika_ttl_proxy::engine::{Dialect, PikaRelease};
use pika_ttl_proxy::model::{Master, Reply, State, Value};
use pika_ttl_proxy::pika::binlog_file::BinlogFileWriter;
use pika_ttl_proxy::pika::item::{build_item, ItemHeader};
use pika_ttl_proxy::pika::messages::{
    build_binlog_sync_response, BinlogPosition, InnerRequest, LogicalOffset, MessageType,
    NewBinlogSyncEntry, Slot,
};
use pika_ttl_proxy::pika::proto::FieldIter;
use pika_ttl_proxy::resp::{CommandParser, Frame, ParserLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::super::pika_wire_builders::build_keepalive_response;
use super::net::{free_base_port, FramedConn};
use super::wire;

/// When the master sends new items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendMode {
    /// Like Pika: when the replica is caught up, and again after each successful ack.
    Pika,
    /// Every new item at once, in its own response (several responses outstanding).
    Eager,
}

#[derive(Clone, Debug)]
pub struct MasterOptions {
    pub keepalive: Duration,
    pub timeout: Duration,
    pub send_mode: SendMode,
    pub run_id: String,
    pub replication_id: String,
    /// 3.5 by default; 4.0 logs like 4.0.1 and names `db_instance_num` in MetaSync.
    pub release: PikaRelease,
    /// What `INFO server` names as `pika_version` (default: the release's).
    pub pika_version: Option<String>,
    /// Whether dropping a replica after `timeout` closes its connection. A real 3.5.4 master
    /// was seen keeping it open and silent (issue 16: the relay saw no end until its own
    /// timeout), which `false` reproduces.
    pub close_on_drop: bool,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            keepalive: Duration::from_secs(2),
            timeout: Duration::from_secs(20),
            send_mode: SendMode::Pika,
            run_id: "03aa13b8ae89cfb89b06420c6c642ab4bb45876e".into(),
            replication_id: "5edf6bdb40a52bc6e531482d1995096ed58a17eb857920301b".into(),
            release: PikaRelease::V3,
            pika_version: None,
            close_on_drop: true,
        }
    }
}

/// What the master saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterEvent {
    MetaSync {
        port: i32,
    },
    TrySync {
        at: BinlogPosition,
        reply: u64,
    },
    DbSync {
        at: BinlogPosition,
        snapshot: BinlogPosition,
    },
    FirstSend {
        at: BinlogPosition,
    },
    Ack {
        start: BinlogPosition,
        end: BinlogPosition,
    },
    Ping,
    Sent {
        items: usize,
        last_end: u64,
    },
    Keepalive,
    Disconnect {
        reason: String,
    },
    RsyncInfo {
        position: BinlogPosition,
    },
}

#[derive(Clone, Debug)]
pub struct Item {
    pub start: u64,
    pub end: u64,
    pub logic_id: u64,
    pub exec_time: u32,
    pub bytes: Vec<u8>,
    /// When the item was logged (for latency measurements).
    pub logged_at: Instant,
}

struct State_ {
    model: Master,
    clock_ms: i64,
    writer: BinlogFileWriter,
    items: Vec<Item>,
    logic_id: u64,
    events: Vec<MasterEvent>,
    next_session: i32,
    snapshot: BinlogPosition,
    /// The last dump (`BGSAVE`, or the one a DBSync made), served to every later DBSync.
    dump: Option<BinlogPosition>,
    bgsaves: u32,
    hold_second_info: bool,
    hold_look_ups: bool,
    info_calls: u32,
    tip_polls: u32,
    /// Look-ups answered (their closing INFO).
    look_ups: u32,
    max_outstanding: usize,
    acked_end: u64,
    sent_binlog_sync: Vec<Vec<u8>>,
}

struct Shared {
    st: Mutex<State_>,
    items_tx: watch::Sender<usize>,
    info_release: Notify,
    opts: MasterOptions,
    port: u16,
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State_> {
    s.st.lock().unwrap()
}

pub struct FakeMaster {
    pub port: u16,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Listeners on a base port P, P+2000 and P+10001. A port found free can be taken before it
/// is bound (once in a CI run: `AddrInUse` on P), so a failed bind moves on to the next triple.
async fn bind_three() -> (u16, TcpListener, TcpListener, TcpListener) {
    let mut last_error = None;
    for _ in 0..20 {
        let port = free_base_port();
        let bound = async {
            Ok::<_, std::io::Error>((
                TcpListener::bind(("127.0.0.1", port)).await?,
                TcpListener::bind(("127.0.0.1", port + 2000)).await?,
                TcpListener::bind(("127.0.0.1", port + 10001)).await?,
            ))
        };
        match bound.await {
            Ok((resp, repl, rsync)) => return (port, resp, repl, rsync),
            Err(e) => last_error = Some(e),
        }
    }
    panic!("no free port triple for the fake master: {last_error:?}");
}

impl FakeMaster {
    pub async fn start(opts: MasterOptions, clock_ms: i64) -> FakeMaster {
        let (port, resp, repl, rsync) = bind_three().await;
        let (items_tx, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            st: Mutex::new(State_ {
                model: Master::new(Dialect::Pika).with_pika_release(opts.release),
                clock_ms,
                writer: BinlogFileWriter::new(0),
                items: Vec::new(),
                logic_id: 0,
                events: Vec::new(),
                next_session: 0,
                snapshot: BinlogPosition::default(),
                dump: None,
                bgsaves: 0,
                hold_second_info: false,
                hold_look_ups: false,
                info_calls: 0,
                tip_polls: 0,
                look_ups: 0,
                max_outstanding: 0,
                acked_end: 0,
                sent_binlog_sync: Vec::new(),
            }),
            items_tx,
            info_release: Notify::new(),
            opts,
            port,
        });
        let cancel = CancellationToken::new();
        spawn_accept(resp, cancel.clone(), shared.clone(), |s, sh, c| {
            tokio::spawn(serve_resp(s, sh, c));
        });
        spawn_accept(repl, cancel.clone(), shared.clone(), |s, sh, c| {
            tokio::spawn(serve_repl(s, sh, c));
        });
        spawn_accept(rsync, cancel.clone(), shared.clone(), |s, sh, c| {
            tokio::spawn(serve_rsync(s, sh, c));
        });
        FakeMaster {
            port,
            shared,
            cancel,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn set_clock_ms(&self, ms: i64) {
        lock(&self.shared).clock_ms = ms;
    }

    pub fn clock_ms(&self) -> i64 {
        lock(&self.shared).clock_ms
    }

    /// Runs a client command on the master at its clock; logs what Pika 3.5.4 logs.
    /// When each item was logged, in binlog order.
    pub fn logged_at(&self) -> Vec<Instant> {
        lock(&self.shared)
            .items
            .iter()
            .map(|i| i.logged_at)
            .collect()
    }

    pub fn exec(&self, args: &[&str]) -> Reply {
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        let mut st = lock(&self.shared);
        let now = st.clock_ms;
        let executed = st.model.execute(0, &argv, now).expect("valid command");
        for entry in executed.entries {
            let mut content = BytesMut::new();
            pika_ttl_proxy::resp::encode_command(&entry.argv, &mut content);
            append(&mut st, &content, (entry.exec_ms / 1000) as u32);
        }
        let n = st.items.len();
        drop(st);
        self.shared.items_tx.send_replace(n);
        executed.reply
    }

    /// Appends an item with exactly this content (already in logged form).
    pub fn append_raw(&self, content: &[u8], exec_time: u32) {
        let mut st = lock(&self.shared);
        append(&mut st, content, exec_time);
        let n = st.items.len();
        drop(st);
        self.shared.items_tx.send_replace(n);
    }

    /// Appends several items at once (they go out in one response when the replica is idle).
    pub fn append_many(&self, items: &[(Vec<u8>, u32)]) {
        let mut st = lock(&self.shared);
        for (content, exec_time) in items {
            append(&mut st, content, *exec_time);
        }
        let n = st.items.len();
        drop(st);
        self.shared.items_tx.send_replace(n);
    }

    pub fn producer(&self) -> BinlogPosition {
        BinlogPosition::new(0, lock(&self.shared).writer.position())
    }

    pub fn items(&self) -> Vec<Item> {
        lock(&self.shared).items.clone()
    }

    pub fn binlog(&self) -> Vec<u8> {
        lock(&self.shared).writer.as_bytes().to_vec()
    }

    pub fn events(&self) -> Vec<MasterEvent> {
        lock(&self.shared).events.clone()
    }

    pub fn disconnects(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                MasterEvent::Disconnect { reason } => Some(reason),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, pred: impl Fn(&MasterEvent) -> bool) -> usize {
        lock(&self.shared).events.iter().filter(|e| pred(e)).count()
    }

    pub fn state_at(&self, ms: i64) -> State {
        lock(&self.shared).model.state_at(ms)
    }

    /// Makes every `INFO` after the first wait for [`FakeMaster::release_info`] (the warm-up
    /// reads INFO before and after its scan).
    pub fn hold_second_info(&self) {
        lock(&self.shared).hold_second_info = true;
    }

    /// Makes the `INFO` of every look-up wait for [`FakeMaster::release_info`] (the master's
    /// binlog may move on between the key's TTL and the position the look-up reads).
    pub fn hold_look_ups(&self) {
        lock(&self.shared).hold_look_ups = true;
    }

    /// Every BinlogSync response sent (items and keepalives), in order.
    pub fn sent_binlog_sync(&self) -> Vec<Vec<u8>> {
        lock(&self.shared).sent_binlog_sync.clone()
    }

    /// END of the last item a replica acknowledged.
    pub fn acked_end(&self) -> u64 {
        lock(&self.shared).acked_end
    }

    /// Most items ever sent and not yet acknowledged on one connection.
    pub fn max_outstanding(&self) -> usize {
        lock(&self.shared).max_outstanding
    }

    /// `INFO` calls of the warm-up (connections that asked for `TIME` first).
    pub fn info_calls(&self) -> u32 {
        lock(&self.shared).info_calls
    }

    /// `INFO` calls of the relay's tip poller (connections that never asked for `TIME`).
    /// Look-ups of the relay the master answered.
    pub fn look_ups(&self) -> u32 {
        lock(&self.shared).look_ups
    }

    /// `BGSAVE`s asked on P.
    pub fn bgsaves(&self) -> u32 {
        lock(&self.shared).bgsaves
    }

    /// Makes a dump at the producer position now (what a replica that synced earlier leaves).
    pub fn dump_now(&self) {
        let mut st = lock(&self.shared);
        st.dump = Some(BinlogPosition::new(0, st.writer.position()));
    }

    pub fn tip_polls(&self) -> u32 {
        lock(&self.shared).tip_polls
    }

    pub fn release_info(&self) {
        {
            let mut st = lock(&self.shared);
            st.hold_second_info = false;
            st.hold_look_ups = false;
        }
        self.shared.info_release.notify_waiters();
    }
}

fn append(st: &mut State_, content: &[u8], exec_time: u32) {
    st.logic_id += 1;
    let logic_id = st.logic_id;
    let header = ItemHeader {
        item_type: 1,
        exec_time,
        term_id: 0,
        logic_id,
        filenum: 0,
        offset: st.writer.position(),
        content_len: 0,
    };
    let bytes = build_item(&header, content).unwrap();
    let appended = st.writer.append_record(&bytes, exec_time);
    st.items.push(Item {
        start: appended.start,
        end: appended.end,
        logic_id,
        exec_time,
        bytes,
        logged_at: Instant::now(),
    });
}

fn spawn_accept(
    listener: TcpListener,
    cancel: CancellationToken,
    shared: Arc<Shared>,
    handle: fn(TcpStream, Arc<Shared>, CancellationToken),
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                a = listener.accept() => {
                    if let Ok((s, _)) = a {
                        handle(s, shared.clone(), cancel.clone());
                    }
                }
            }
        }
    });
}

fn event(shared: &Shared, e: MasterEvent) {
    lock(shared).events.push(e);
}

// ---------------------------------------------------------------------------------------------
// P+2000
// ---------------------------------------------------------------------------------------------

struct Session {
    conn: FramedConn,
    shared: Arc<Shared>,
    session_id: i32,
    streaming: bool,
    /// ENDs of sent, unacknowledged items.
    window: VecDeque<u64>,
    next_item: usize,
    last_request: Instant,
    last_send: Instant,
}

async fn serve_repl(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut items_rx = shared.items_tx.subscribe();
    let mut s = Session {
        conn: FramedConn::new(stream),
        shared: shared.clone(),
        session_id: 0,
        streaming: false,
        window: VecDeque::new(),
        next_item: 0,
        last_request: Instant::now(),
        last_send: Instant::now(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut timed_out = false;
    let reason = loop {
        tokio::select! {
            _ = cancel.cancelled() => break "master shut down".to_string(),
            frame = s.conn.recv() => match frame {
                None => break "connection closed by the peer".to_string(),
                Some(body) => {
                    s.last_request = Instant::now();
                    if let Err(reason) = s.on_request(&body).await {
                        break reason;
                    }
                }
            },
            _ = items_rx.changed() => {
                if let Err(r) = s.pump(false).await { break r; }
            }
            _ = tick.tick() => {
                if s.last_request.elapsed() > shared.opts.timeout {
                    timed_out = true;
                    break format!("no BinlogSync request for {:?}", shared.opts.timeout);
                }
                if let Err(r) = s.pump(false).await { break r; }
            }
        }
    };
    event(&shared, MasterEvent::Disconnect { reason });
    if timed_out && !shared.opts.close_on_drop {
        // Dropped from the sync state; the socket stays open, everything on it is ignored.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                frame = s.conn.recv() => if frame.is_none() { break },
            }
        }
    }
}

impl Session {
    async fn send(&mut self, body: &[u8]) -> Result<(), String> {
        self.conn.send(body).await.map_err(|e| e.to_string())
    }

    fn boundary(&self, at: BinlogPosition) -> bool {
        let st = lock(&self.shared);
        at.filenum == 0 && (at.offset == 0 || st.items.iter().any(|i| i.end == at.offset))
    }

    async fn on_request(&mut self, body: &[u8]) -> Result<(), String> {
        let req = InnerRequest::parse(body).map_err(|e| format!("bad request: {e}"))?;
        match req.msg_type {
            MessageType::MetaSync => {
                let m = req
                    .meta_sync()
                    .map_err(|e| e.to_string())?
                    .ok_or("no meta_sync")?;
                event(&self.shared, MasterEvent::MetaSync { port: m.node.port });
                // Pika 4.0's default `db-instance-num` is 3.
                let instances = (self.shared.opts.release == PikaRelease::V4).then_some(3);
                let reply = wire::meta_sync_response(
                    &self.shared.opts.run_id,
                    &self.shared.opts.replication_id,
                    instances,
                );
                self.send(&reply).await
            }
            MessageType::DbSync => {
                let d = req
                    .db_sync()
                    .map_err(|e| e.to_string())?
                    .ok_or("no db_sync")?;
                let (snapshot, session) = {
                    let mut st = lock(&self.shared);
                    let tip = BinlogPosition::new(0, st.writer.position());
                    st.snapshot = *st.dump.get_or_insert(tip);
                    (st.snapshot, st.next_session)
                };
                event(
                    &self.shared,
                    MasterEvent::DbSync {
                        at: d.binlog_offset.position(),
                        snapshot,
                    },
                );
                self.streaming = false;
                self.send(&wire::db_sync_response("db0", session)).await
            }
            MessageType::TrySync => {
                let t = req
                    .try_sync()
                    .map_err(|e| e.to_string())?
                    .ok_or("no try_sync")?;
                let at = t.binlog_offset.position();
                let producer = BinlogPosition::new(0, lock(&self.shared).writer.position());
                let (code, session) = if at > producer {
                    (3, None)
                } else if !self.boundary(at) {
                    (4, None)
                } else {
                    let mut st = lock(&self.shared);
                    let s = st.next_session;
                    st.next_session += 1;
                    (1, Some(s))
                };
                event(&self.shared, MasterEvent::TrySync { at, reply: code });
                if let Some(s) = session {
                    self.session_id = s;
                }
                self.send(&wire::try_sync_response(code, "db0", producer, session))
                    .await
            }
            MessageType::BinlogSync => {
                let b = req
                    .binlog_sync()
                    .map_err(|e| e.to_string())?
                    .ok_or("no binlog_sync")?;
                let (start, end) = (b.ack_range_start.position(), b.ack_range_end.position());
                if b.first_send {
                    if start != end {
                        return Err(format!("first_send with start {start} != end {end}"));
                    }
                    if !self.boundary(start) {
                        return Err(format!("first_send at {start}: not a record boundary"));
                    }
                    event(&self.shared, MasterEvent::FirstSend { at: start });
                    let next = lock(&self.shared)
                        .items
                        .iter()
                        .position(|i| i.start >= start.offset)
                        .unwrap_or(usize::MAX);
                    self.next_item = next.min(lock(&self.shared).items.len());
                    self.window.clear();
                    self.streaming = true;
                    self.last_send = Instant::now();
                    return self.pump(false).await;
                }
                if b.session_id != self.session_id {
                    // 3.5.4 ignores requests of another session.
                    return Ok(());
                }
                if b.is_ping() {
                    event(&self.shared, MasterEvent::Ping);
                    return Ok(());
                }
                let find = |p: BinlogPosition| {
                    (p.filenum == 0)
                        .then(|| self.window.iter().position(|e| *e == p.offset))
                        .flatten()
                };
                let (Some(_), Some(e)) = (find(start), find(end)) else {
                    return Err(format!(
                        "ack {start}-{end} not found in binlog controller window {:?}",
                        self.window
                    ));
                };
                event(&self.shared, MasterEvent::Ack { start, end });
                lock(&self.shared).acked_end = end.offset;
                self.window.drain(..=e);
                self.pump(true).await
            }
            _ => Ok(()),
        }
    }

    /// Sends new items (per the send mode) or a keepalive.
    async fn pump(&mut self, after_ack: bool) -> Result<(), String> {
        if !self.streaming {
            return Ok(());
        }
        let pending: Vec<Item> = {
            let st = lock(&self.shared);
            st.items.get(self.next_item..).unwrap_or_default().to_vec()
        };
        let may_send = match self.shared.opts.send_mode {
            SendMode::Pika => self.window.is_empty() || after_ack,
            SendMode::Eager => true,
        };
        if !pending.is_empty() && may_send {
            let chunk = match self.shared.opts.send_mode {
                SendMode::Pika => 100,
                SendMode::Eager => 1,
            };
            for group in pending.chunks(chunk) {
                let entries: Vec<NewBinlogSyncEntry<'_>> = group
                    .iter()
                    .map(|i| NewBinlogSyncEntry {
                        slot: Slot {
                            db_name: b"db0",
                            slot_id: 0,
                        },
                        binlog_offset: LogicalOffset {
                            filenum: 0,
                            offset: i.end,
                            term: 0,
                            index: i.logic_id,
                        },
                        binlog: &i.bytes,
                        session_id: self.session_id,
                    })
                    .collect();
                let body = build_binlog_sync_response(&entries);
                self.send(&body).await?;
                lock(&self.shared).sent_binlog_sync.push(body.clone());
                self.window.extend(group.iter().map(|i| i.end));
                self.next_item += group.len();
                {
                    let mut st = lock(&self.shared);
                    st.max_outstanding = st.max_outstanding.max(self.window.len());
                }
                event(
                    &self.shared,
                    MasterEvent::Sent {
                        items: group.len(),
                        last_end: group.last().map_or(0, |i| i.end),
                    },
                );
            }
            self.last_send = Instant::now();
            return Ok(());
        }
        if pending.is_empty()
            && self.window.is_empty()
            && self.last_send.elapsed() >= self.shared.opts.keepalive
        {
            let body = build_keepalive_response(
                Slot {
                    db_name: b"db0",
                    slot_id: 0,
                },
                self.session_id,
            );
            self.send(&body).await?;
            lock(&self.shared).sent_binlog_sync.push(body.clone());
            event(&self.shared, MasterEvent::Keepalive);
            self.last_send = Instant::now();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// P+10001
// ---------------------------------------------------------------------------------------------

async fn serve_rsync(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut conn = FramedConn::new(stream);
    let uuid = "0f11968f644ecbb13f4c42af64bfcfc1";
    loop {
        let body = tokio::select! {
            _ = cancel.cancelled() => return,
            b = conn.recv() => match b { Some(b) => b, None => return },
        };
        let (mut ty, mut reader, mut file, mut offset) = (0u64, 0i32, None, 0u64);
        for f in FieldIter::new(&body) {
            let Ok(f) = f else { return };
            match f.number() {
                1 => ty = f.varint().unwrap_or(0),
                2 => reader = f.int32().unwrap_or(0),
                5 => {
                    for g in FieldIter::new(f.bytes().unwrap_or_default()).flatten() {
                        match g.number() {
                            1 => file = g.bytes().ok().map(|b| b.to_vec()),
                            3 => offset = g.uint64().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let reply = if ty == 1 {
            wire::rsync_meta_response(reader, uuid, "db0", &["info"])
        } else if file.as_deref() == Some(b"info".as_slice()) {
            let snap = lock(&shared).snapshot;
            event(&shared, MasterEvent::RsyncInfo { position: snap });
            let info = format!(
                "0s\n127.0.0.1\n{}\n{}\n{}\n",
                shared.port, snap.filenum, snap.offset
            );
            wire::rsync_file_response(reader, uuid, "db0", "info", offset, info.as_bytes())
        } else {
            return;
        };
        if conn.send(&reply).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// P (RESP)
// ---------------------------------------------------------------------------------------------

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

async fn serve_resp(mut stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut parser = CommandParser::new(ParserLimits::replica_stream());
    let mut buf = BytesMut::new();
    // The warm-up reads TIME before its INFO; the relay's tip poller only ever sends INFO.
    // Only the warm-up's INFO calls are counted and held, so the poller cannot disturb tests
    // that pace the warm-up. A look-up also reads TIME, but asks PTTL before any INFO.
    let mut warm_up = false;
    let mut look_up = false;
    let mut infos = 0u32;
    loop {
        let frame = match parser.parse(&mut buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                let n = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = stream.read_buf(&mut buf) => n,
                };
                match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
            Err(_) => return,
        };
        let (Frame::Command(cmd) | Frame::Inline(cmd)) = frame else {
            continue;
        };
        let name = String::from_utf8_lossy(cmd.name()).to_ascii_uppercase();
        let mut out = Vec::new();
        match name.as_str() {
            "PING" => out.extend_from_slice(b"+PONG\r\n"),
            "AUTH" | "SELECT" => out.extend_from_slice(b"+OK\r\n"),
            "TIME" => {
                warm_up = true;
                let ms = lock(&shared).clock_ms;
                out.extend_from_slice(b"*2\r\n");
                bulk(&mut out, (ms / 1000).to_string().as_bytes());
                bulk(&mut out, ((ms % 1000) * 1000).to_string().as_bytes());
            }
            "BGSAVE" => {
                let mut st = lock(&shared);
                st.dump = Some(BinlogPosition::new(0, st.writer.position()));
                st.bgsaves += 1;
                out.extend_from_slice(b"+Background saving started\r\n");
            }
            "INFO" if cmd.arg(1).is_some_and(|a| a.eq_ignore_ascii_case(b"stats")) => {
                bulk(&mut out, b"# Stats\r\nis_bgsaving:No\r\nis_compact:No\r\n");
            }
            "INFO"
                if cmd
                    .arg(1)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"server")) =>
            {
                let version = shared.opts.pika_version.clone().unwrap_or_else(|| {
                    match shared.opts.release {
                        PikaRelease::V3 => "3.5.4".to_string(),
                        // 4.0.1 never bumped its version header.
                        PikaRelease::V4 => "4.0.0".to_string(),
                    }
                });
                let text = format!("# Server\r\npika_version:{version}\r\nos:Linux\r\n");
                bulk(&mut out, text.as_bytes());
            }
            "INFO" => {
                infos += 1;
                let hold = {
                    let mut st = lock(&shared);
                    if look_up {
                        st.look_ups += 1;
                        st.hold_look_ups
                    } else if warm_up {
                        st.info_calls += 1;
                        st.info_calls > 1 && st.hold_second_info
                    } else {
                        st.tip_polls += 1;
                        false
                    }
                };
                if hold {
                    let released = shared.info_release.notified();
                    tokio::pin!(released);
                    released.as_mut().enable();
                    let still = {
                        let st = lock(&shared);
                        st.hold_second_info || st.hold_look_ups
                    };
                    if still {
                        released.await;
                    }
                }
                let pos = lock(&shared).writer.position();
                let text = format!(
                    "# Replication(MASTER)\r\nrole:master\r\nconnected_slaves:1\r\ndb0:binlog_offset=0 {pos},safety_purge=none\r\n"
                );
                bulk(&mut out, text.as_bytes());
            }
            "SCAN" => {
                let cursor: usize = cmd
                    .arg(1)
                    .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                    .unwrap_or(0);
                let count = 3usize;
                let keys: Vec<Bytes> = {
                    let st = lock(&shared);
                    st.model
                        .state_at(st.clock_ms)
                        .keys
                        .keys()
                        .filter(|(db, _)| *db == 0)
                        .map(|(_, k)| k.clone())
                        .collect()
                };
                let page: Vec<&Bytes> = keys.iter().skip(cursor).take(count).collect();
                let next = if cursor + count >= keys.len() {
                    0
                } else {
                    cursor + count
                };
                out.extend_from_slice(b"*2\r\n");
                bulk(&mut out, next.to_string().as_bytes());
                out.extend_from_slice(format!("*{}\r\n", page.len()).as_bytes());
                for k in page {
                    bulk(&mut out, k);
                }
            }
            "PTTL" => {
                look_up |= infos == 0;
                let key = cmd.arg(1).cloned().unwrap_or_default();
                let st = lock(&shared);
                let now = st.clock_ms;
                let v = match st.model.record_at(0, &key, now) {
                    None => -2,
                    Some(r) => match r.deadline_ms {
                        None => -1,
                        // 3.5.4: (deadline second − the clock's second) × 1000, as its
                        // storage computes the TTL from whole seconds; 4.0.1: milliseconds.
                        Some(d) => match shared.opts.release {
                            PikaRelease::V3 => (d.div_euclid(1000) - now.div_euclid(1000)) * 1000,
                            PikaRelease::V4 => d - now,
                        },
                    },
                };
                out.extend_from_slice(format!(":{v}\r\n").as_bytes());
            }
            "TYPE" => {
                let key = cmd.arg(1).cloned().unwrap_or_default();
                let st = lock(&shared);
                let kind = match st.model.record_at(0, &key, st.clock_ms).map(|r| &r.value) {
                    None => "none",
                    Some(Value::Str(_)) => "string",
                    Some(Value::Hash(_)) => "hash",
                    Some(Value::List(_)) => "list",
                    Some(Value::Set(_)) => "set",
                    Some(Value::Zset(_)) => "zset",
                };
                out.extend_from_slice(format!("+{kind}\r\n").as_bytes());
            }
            // 3.x counts each type under a name; the model keeps one value per name.
            "EXISTS" => {
                let st = lock(&shared);
                let now = st.clock_ms;
                let n = (1..cmd.len())
                    .filter_map(|i| cmd.arg(i))
                    .filter(|k| st.model.record_at(0, k, now).is_some())
                    .count();
                out.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
