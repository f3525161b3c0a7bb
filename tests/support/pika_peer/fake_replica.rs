//! A fake Pika 3.5.4 replica, written from `docs/pika-protocol.md`.
//!
//! * It applies every command of every item to the reference model (`model::Replica`, Pika
//!   dialect) at its **own** clock (injected by the test), so a late apply expires keys the way a
//!   real replica does.
//! * It writes its own block-structured binlog, re-serializing each command as 3.5.4 does (one
//!   item per command; `setex`/`SET … EX` → `pksetexat`, `expire` → `expireat`, `MSET`/`DEL`
//!   split per key), with its own exec_time, logic ids and positions.
//! * It acks with `ack_range_start` copied from the response and `ack_range_end` = its own
//!   position, answers keepalives with `(0,0)-(0,0)`, TrySyncs at its own position on every
//!   (re)connect, and on kSyncPointBePurged runs a DBSync: it pulls only `info` over P+10001 and
//!   resets its binlog to the master's position written there, as Pika does.
//! * Before each P+2000 connection it opens and closes two probe connections to P.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pika_ttl_proxy::engine::{Dialect, PikaRelease};
use pika_ttl_proxy::model::{Replica, State};
use pika_ttl_proxy::pika::binlog_file::BinlogFileWriter;
use pika_ttl_proxy::pika::item::BinlogItem;
use pika_ttl_proxy::pika::messages::{
    build_binlog_sync_request, BinlogPosition, InnerResponse, LogicalOffset, MessageType,
    NewBinlogSyncRequest, Node, TrySyncReplyCode,
};
use pika_ttl_proxy::pika::proto::FieldIter;
use pika_ttl_proxy::resp::{encode_command, CommandParser, ParserLimits};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::net::FramedConn;
use super::wire;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEvent {
    Connected,
    TrySync {
        at: BinlogPosition,
        reply: u64,
    },
    DbSync {
        adopted: BinlogPosition,
    },
    FirstSend {
        at: BinlogPosition,
    },
    Ack {
        start: BinlogPosition,
        end: BinlogPosition,
    },
    Ping,
    Applied {
        commands: usize,
    },
    Error {
        what: String,
    },
    Disconnected {
        why: String,
    },
}

struct RState {
    model: Replica,
    writer: BinlogFileWriter,
    logic_id: u64,
    synced: bool,
    events: Vec<ReplicaEvent>,
    applied_items: u64,
    /// When each applied item arrived, in order (for latency measurements).
    arrived_at: Vec<Instant>,
    received_binlog_sync: Vec<Vec<u8>>,
    /// A 4.0.1 replica that reconnects sends its last ack again before anything else (seen on
    /// the real server after a proxy restart).
    resend_last_ack: bool,
    last_ack: Option<Vec<u8>>,
}

struct Shared {
    st: Mutex<RState>,
    clock_ms: AtomicI64,
    streaming: AtomicBool,
    hold_acks: AtomicBool,
    paused_tx: watch::Sender<bool>,
    drop_link: watch::Sender<u64>,
    proxy_port: u16,
    node_ip: String,
    node_port: u16,
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, RState> {
    s.st.lock().unwrap()
}

pub struct FakeReplica {
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What Pika 3.5.4 writes to its own binlog for a command it applied at `now_s`.
pub fn reserialize(argv: &[Bytes], now_s: i64) -> Vec<Vec<Bytes>> {
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let int = |i: usize| {
        argv.get(i)
            .and_then(|a| std::str::from_utf8(a).ok()?.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let pksetexat = |k: &Bytes, ts: i64, v: &Bytes| {
        vec![b("pksetexat"), k.clone(), b(&ts.to_string()), v.clone()]
    };
    match name.as_str() {
        "setex" => vec![pksetexat(&argv[1], now_s + int(2), &argv[3])],
        "psetex" => vec![pksetexat(&argv[1], now_s + int(2) / 1000, &argv[3])],
        "expire" => vec![vec![
            b("expireat"),
            argv[1].clone(),
            b(&(now_s + int(2)).to_string()),
        ]],
        "pexpire" => vec![vec![
            b("expireat"),
            argv[1].clone(),
            b(&(now_s + int(2) / 1000).to_string()),
        ]],
        "pexpireat" => vec![vec![
            b("expireat"),
            argv[1].clone(),
            b(&(int(2) / 1000).to_string()),
        ]],
        "setnx" => vec![vec![b("setnx"), argv[1].clone(), argv[2].clone()]],
        "set" if argv.len() > 3 => {
            let opts: Vec<String> = argv[3..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
                .collect();
            let conditional = opts.iter().any(|o| o == "NX" || o == "XX");
            let ttl = opts.iter().position(|o| o == "EX" || o == "PX").map(|i| {
                let v = int(3 + i + 1);
                if opts[i] == "EX" {
                    v
                } else {
                    v / 1000
                }
            });
            match ttl {
                Some(t) if !conditional => vec![pksetexat(&argv[1], now_s + t, &argv[2])],
                _ => vec![argv.to_vec()],
            }
        }
        "mset" => argv[1..]
            .chunks(2)
            .map(|kv| vec![b("set"), kv[0].clone(), kv[1].clone()])
            .collect(),
        "del" if argv.len() > 2 => argv[1..]
            .iter()
            .map(|k| vec![argv[0].clone(), k.clone()])
            .collect(),
        _ => vec![argv.to_vec()],
    }
}

impl FakeReplica {
    /// A fresh replica (empty data, never synced) of the master/relay at `proxy_port`.
    pub fn start(proxy_port: u16, node_port: u16, clock_ms: i64) -> FakeReplica {
        Self::start_with(proxy_port, node_port, clock_ms, false)
    }

    /// `synced`: the replica already holds the master's (empty) data at position 0/0, so it
    /// TrySyncs instead of running a first DBSync.
    pub fn start_with(proxy_port: u16, node_port: u16, clock_ms: i64, synced: bool) -> FakeReplica {
        Self::start_release(proxy_port, node_port, clock_ms, synced, PikaRelease::V3)
    }

    /// A replica of a given Pika release (4.0 misreads `pksetexat`/`pexpireat` timestamps).
    pub fn start_release(
        proxy_port: u16,
        node_port: u16,
        clock_ms: i64,
        synced: bool,
        release: PikaRelease,
    ) -> FakeReplica {
        let (paused_tx, _) = watch::channel(false);
        let (drop_link, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            st: Mutex::new(RState {
                model: Replica::new(Dialect::Pika).with_pika_release(release),
                writer: BinlogFileWriter::new(0),
                logic_id: 0,
                synced,
                events: Vec::new(),
                applied_items: 0,
                arrived_at: Vec::new(),
                received_binlog_sync: Vec::new(),
                resend_last_ack: release == PikaRelease::V4,
                last_ack: None,
            }),
            clock_ms: AtomicI64::new(clock_ms),
            streaming: AtomicBool::new(false),
            hold_acks: AtomicBool::new(false),
            paused_tx,
            drop_link,
            proxy_port,
            node_ip: "127.0.0.1".into(),
            node_port,
        });
        let cancel = CancellationToken::new();
        tokio::spawn(run(shared.clone(), cancel.clone()));
        FakeReplica { shared, cancel }
    }

    pub fn set_clock_ms(&self, ms: i64) {
        self.shared.clock_ms.store(ms, Ordering::SeqCst);
    }

    /// While set, item responses are applied (and written to the replica's binlog) but not
    /// acknowledged, as when a connection breaks between applying and acking.
    pub fn hold_acks(&self, hold: bool) {
        self.shared.hold_acks.store(hold, Ordering::SeqCst);
    }

    pub fn pause(&self) {
        self.shared.paused_tx.send_replace(true);
    }

    pub fn resume(&self) {
        self.shared.paused_tx.send_replace(false);
    }

    /// Drops the current P+2000 connection; the replica reconnects with a TrySync.
    pub fn reconnect(&self) {
        self.shared.drop_link.send_modify(|g| *g += 1);
    }

    /// Stops the replica for good.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    pub fn position(&self) -> BinlogPosition {
        let st = lock(&self.shared);
        BinlogPosition::new(st.writer.filenum(), st.writer.position())
    }

    /// When each applied item arrived, in order.
    pub fn arrived_at(&self) -> Vec<Instant> {
        lock(&self.shared).arrived_at.clone()
    }

    pub fn applied_items(&self) -> u64 {
        lock(&self.shared).applied_items
    }

    pub fn events(&self) -> Vec<ReplicaEvent> {
        lock(&self.shared).events.clone()
    }

    pub fn count(&self, pred: impl Fn(&ReplicaEvent) -> bool) -> usize {
        lock(&self.shared).events.iter().filter(|e| pred(e)).count()
    }

    pub fn errors(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                ReplicaEvent::Error { what } => Some(what),
                _ => None,
            })
            .collect()
    }

    /// Every BinlogSync response received (items and keepalives), in order.
    pub fn received_binlog_sync(&self) -> Vec<Vec<u8>> {
        lock(&self.shared).received_binlog_sync.clone()
    }

    pub fn state_at(&self, ms: i64) -> State {
        lock(&self.shared).model.state_at(ms)
    }

    pub fn binlog(&self) -> Vec<u8> {
        lock(&self.shared).writer.as_bytes().to_vec()
    }

    pub fn is_streaming(&self) -> bool {
        self.shared.streaming.load(Ordering::SeqCst)
    }
}

fn event(shared: &Shared, e: ReplicaEvent) {
    lock(shared).events.push(e);
}

async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let base = SocketAddr::from(([127, 0, 0, 1], shared.proxy_port));
    loop {
        let why = tokio::select! {
            _ = cancel.cancelled() => return,
            why = link(&shared, base) => why,
        };
        shared.streaming.store(false, Ordering::SeqCst);
        event(&shared, ReplicaEvent::Disconnected { why });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

async fn probe(addr: SocketAddr) {
    if let Ok(s) = TcpStream::connect(addr).await {
        drop(s);
    }
}

fn node(shared: &Shared) -> Node<'_> {
    Node {
        ip: shared.node_ip.as_bytes(),
        port: i32::from(shared.node_port),
    }
}

fn own_position(shared: &Shared) -> BinlogPosition {
    let st = lock(shared);
    BinlogPosition::new(st.writer.filenum(), st.writer.position())
}

/// One P+2000 connection, from the handshake to its end; returns why it ended.
async fn link(shared: &Arc<Shared>, base: SocketAddr) -> String {
    probe(base).await;
    let repl = SocketAddr::from(([127, 0, 0, 1], shared.proxy_port + 2000));
    let mut conn = match FramedConn::connect(repl).await {
        Ok(c) => c,
        Err(e) => return format!("connect: {e}"),
    };
    probe(base).await;
    event(shared, ReplicaEvent::Connected);
    let leftover = {
        let st = lock(shared);
        st.last_ack.clone().filter(|_| st.resend_last_ack)
    };
    if let Some(ack) = leftover {
        if conn.send(&ack).await.is_err() {
            return "send the last ack again".into();
        }
    }
    let ip = shared.node_ip.clone();
    let port = shared.node_port;
    if conn
        .send(&wire::meta_sync_request(&ip, port))
        .await
        .is_err()
    {
        return "send MetaSync".into();
    }
    let Some(meta) = conn.recv().await else {
        return "no MetaSync reply".into();
    };
    match InnerResponse::parse(&meta) {
        Ok(r) if r.msg_type == MessageType::MetaSync && r.code.to_wire() == 1 => {}
        _ => return "MetaSync refused".into(),
    }
    let mut need_full_sync = !lock(shared).synced;
    let session_id = loop {
        if need_full_sync {
            if let Err(e) = full_sync(shared, &mut conn).await {
                return e;
            }
        }
        let at = own_position(shared);
        if conn
            .send(&wire::try_sync_request(&ip, port, "db0", at))
            .await
            .is_err()
        {
            return "send TrySync".into();
        }
        let Some(body) = conn.recv().await else {
            return "no TrySync reply".into();
        };
        let Ok(resp) = InnerResponse::parse(&body) else {
            return "bad TrySync reply".into();
        };
        let Ok(Some(ts)) = resp.try_sync() else {
            return "TrySync reply without try_sync".into();
        };
        event(
            shared,
            ReplicaEvent::TrySync {
                at,
                reply: ts.reply_code.to_wire(),
            },
        );
        match ts.reply_code {
            TrySyncReplyCode::Ok => break ts.session_id.unwrap_or(0),
            TrySyncReplyCode::SyncPointBePurged => need_full_sync = true,
            other => {
                event(
                    shared,
                    ReplicaEvent::Error {
                        what: format!("TrySync refused: {other:?}"),
                    },
                );
                return "TrySync refused".into();
            }
        }
    };
    let at = own_position(shared);
    let zero_at = LogicalOffset {
        filenum: at.filenum,
        offset: at.offset,
        term: 0,
        index: 0,
    };
    let first = build_binlog_sync_request(&NewBinlogSyncRequest {
        node: node(shared),
        db_name: b"db0",
        slot_id: 0,
        ack_range_start: zero_at,
        ack_range_end: zero_at,
        session_id,
        first_send: true,
    });
    if conn.send(&first).await.is_err() {
        return "send first_send".into();
    }
    event(shared, ReplicaEvent::FirstSend { at });
    shared.streaming.store(true, Ordering::SeqCst);
    stream(shared, &mut conn, session_id).await
}

/// DBSync: ask, pull `info` over P+10001, adopt the master's position.
async fn full_sync(shared: &Arc<Shared>, conn: &mut FramedConn) -> Result<(), String> {
    let at = own_position(shared);
    conn.send(&wire::db_sync_request(
        &shared.node_ip,
        shared.node_port,
        "db0",
        at,
    ))
    .await
    .map_err(|e| e.to_string())?;
    let body = conn.recv().await.ok_or("no DBSync reply")?;
    let resp = InnerResponse::parse(&body).map_err(|e| e.to_string())?;
    if resp.msg_type != MessageType::DbSync || resp.code.to_wire() != 1 {
        return Err("DBSync refused".into());
    }
    let rsync = SocketAddr::from(([127, 0, 0, 1], shared.proxy_port + 10001));
    let mut files = FramedConn::connect(rsync)
        .await
        .map_err(|e| e.to_string())?;
    files
        .send(&wire::rsync_meta_request(0, "db0"))
        .await
        .map_err(|e| e.to_string())?;
    files.recv().await.ok_or("no rsync meta reply")?;
    files
        .send(&wire::rsync_file_request(3, "db0", "info", 0))
        .await
        .map_err(|e| e.to_string())?;
    let body = files.recv().await.ok_or("no info reply")?;
    let mut data = Vec::new();
    for f in FieldIter::new(&body).flatten() {
        if f.number() == 8 {
            for g in FieldIter::new(f.bytes().unwrap_or_default()).flatten() {
                if g.number() == 4 {
                    data = g.bytes().unwrap_or_default().to_vec();
                }
            }
        }
    }
    let text = String::from_utf8(data).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    let filenum: u32 = lines
        .get(3)
        .and_then(|l| l.parse().ok())
        .ok_or("bad info")?;
    let offset: u64 = lines
        .get(4)
        .and_then(|l| l.parse().ok())
        .ok_or("bad info")?;
    let now_s = (shared.clock_ms.load(Ordering::SeqCst) / 1000) as u32;
    {
        let mut st = lock(shared);
        st.writer = BinlogFileWriter::padded(filenum, offset, now_s).map_err(|e| e.to_string())?;
        st.logic_id = 0;
        st.synced = true;
    }
    event(
        shared,
        ReplicaEvent::DbSync {
            adopted: BinlogPosition::new(filenum, offset),
        },
    );
    Ok(())
}

async fn stream(shared: &Arc<Shared>, conn: &mut FramedConn, session_id: i32) -> String {
    let mut paused = shared.paused_tx.subscribe();
    let mut dropped = shared.drop_link.subscribe();
    loop {
        while *paused.borrow_and_update() {
            tokio::select! {
                _ = paused.changed() => {}
                _ = dropped.changed() => return "dropped by the test".into(),
            }
        }
        // Biased: once the test has paused the replica, nothing more is applied, even when the
        // next response is already waiting (an unbiased select picks a ready branch at random).
        let body = tokio::select! {
            biased;
            _ = paused.changed() => continue,
            _ = dropped.changed() => return "dropped by the test".into(),
            b = conn.recv() => match b { Some(b) => b, None => return "closed by the peer".into() },
        };
        let resp = match InnerResponse::parse(&body) {
            Ok(r) => r,
            Err(e) => return format!("bad response: {e}"),
        };
        if resp.msg_type != MessageType::BinlogSync {
            continue;
        }
        lock(shared).received_binlog_sync.push(body.to_vec());
        match apply_response(shared, &resp, session_id) {
            Ok(Some(_)) if shared.hold_acks.load(Ordering::SeqCst) => {}
            Ok(Some(req)) => {
                if conn.send(&req).await.is_err() {
                    return "send ack".into();
                }
            }
            Ok(None) => {}
            Err(what) => {
                event(shared, ReplicaEvent::Error { what: what.clone() });
                return what;
            }
        }
    }
}

/// Applies one BinlogSync response; returns the request to send back.
fn apply_response(
    shared: &Shared,
    resp: &InnerResponse<'_>,
    session_id: i32,
) -> Result<Option<Vec<u8>>, String> {
    let arrived = Instant::now();
    let now_ms = shared.clock_ms.load(Ordering::SeqCst);
    let now_s = now_ms / 1000;
    let mut first: Option<LogicalOffset> = None;
    let mut last_term = 0;
    let mut commands = 0;
    let mut st = lock(shared);
    for entry in resp.binlog_sync_entries() {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.session_id != session_id {
            return Err(format!(
                "entry of session {} in session {session_id}",
                entry.session_id
            ));
        }
        if entry.is_keepalive() {
            continue;
        }
        first.get_or_insert(entry.binlog_offset.logical());
        last_term = entry.binlog_offset.term.unwrap_or(0);
        let item = BinlogItem::parse(entry.binlog).map_err(|e| e.to_string())?;
        let mut parser = CommandParser::new(ParserLimits::replica_stream());
        let mut buf = BytesMut::from(item.content);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(frame)) => {
                    let Some(cmd) = frame.command() else { continue };
                    st.model
                        .apply(&cmd.args, now_ms)
                        .map_err(|e| format!("apply {:?}: {e}", cmd.args))?;
                    for own in reserialize(&cmd.args, now_s) {
                        let mut content = BytesMut::new();
                        encode_command(&own, &mut content);
                        st.logic_id += 1;
                        let lid = st.logic_id;
                        st.writer
                            .append_item(now_s as u32, 0, lid, &content)
                            .map_err(|e| e.to_string())?;
                    }
                    commands += 1;
                }
                Ok(None) if buf.is_empty() => break,
                Ok(None) => return Err("item content ends inside a command".into()),
                Err(e) => return Err(format!("item content: {e:?}")),
            }
        }
        st.applied_items += 1;
        st.arrived_at.push(arrived);
    }
    let own = BinlogPosition::new(st.writer.filenum(), st.writer.position());
    let lid = st.logic_id;
    let (start, end) = match first {
        None => (LogicalOffset::default(), LogicalOffset::default()),
        Some(f) => (
            f,
            LogicalOffset {
                filenum: own.filenum,
                offset: own.offset,
                term: last_term,
                index: lid,
            },
        ),
    };
    let ev = if first.is_some() {
        st.events.push(ReplicaEvent::Applied { commands });
        ReplicaEvent::Ack {
            start: start.position(),
            end: end.position(),
        }
    } else {
        ReplicaEvent::Ping
    };
    st.events.push(ev);
    let ack = build_binlog_sync_request(&NewBinlogSyncRequest {
        node: node(shared),
        db_name: b"db0",
        slot_id: 0,
        ack_range_start: start,
        ack_range_end: end,
        session_id,
        first_send: false,
    });
    st.last_ack = Some(ack.clone());
    Ok(Some(ack))
}
