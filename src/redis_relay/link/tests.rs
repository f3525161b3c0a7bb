//! Unit tests of the [`Link`] machine without sockets: a small in-test driver executes its
//! actions in order and records them, so each test asserts what the link asks for and what it
//! sends.

use super::*;
use crate::engine::Dialect;
use crate::redis_relay::handshake::{self, ReplicaHello, Step, SyncRequest};
use crate::redis_relay::persist::{self, StateFile};
use crate::redis_relay::rdb_relay::Framing;
use crate::resp::{encode_command, CommandParser, ParserLimits};
use std::path::PathBuf;

mod recovery;

const OWN: &str = "0123456789abcdef0123456789abcdef01234567";
const MASTER: &str = "a507f8eeec018d9f9cffcad79efd27081110735e";
const NOW_MS: i64 = 1_795_469_984_000;

fn now() -> Now {
    Now {
        at: Instant::now(),
        ms: NOW_MS,
    }
}

fn policy() -> Policy {
    Policy::new(Dialect::Redis)
}

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_command(args, &mut buf);
    buf.to_vec()
}

/// Frames as the replica sends them.
fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut parser = CommandParser::new(ParserLimits::replica_stream());
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = parser.parse(&mut buf).expect("valid replica bytes") {
        out.push(f);
    }
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A state at `u` ↔ `d` (one boundary, DB 0), with a table describing the master at `u`.
fn state_at(d: u64, u: u64) -> ReplicaState {
    let mut map = OffsetMap::new(d - 100, u - 100, 0);
    map.record_boundary(d, u, 0, d - 100, false);
    ReplicaState {
        own_id: OWN.into(),
        master_id: MASTER.into(),
        map,
        table: Arc::new(ExpiryTable::new(Baseline::NotVolatile)),
        table_u: Some(u),
        file: None,
    }
}

/// The in-test driver: executes actions in order, the way `session.rs` does, and records
/// each as a short string.
struct Driver {
    log: Vec<String>,
    /// What the next `PersistBehind` reports.
    next_write: Option<Written>,
    /// Where `PersistFresh` writes, when the state has a real file.
    dir: Option<PathBuf>,
    /// When each stream `SendQueuedDown` was executed: (the live map's newest point, the
    /// newest point in the state file on disk).
    file_at_send: Vec<(Option<u64>, Option<u64>)>,
    /// Whether, at each of those sends, the file on disk resolved the offset the replica
    /// reaches once it has the bytes, as the live map does.
    resolves_at_send: Vec<bool>,
    rt: tokio::runtime::Runtime,
}

impl Driver {
    fn new() -> Self {
        Driver {
            log: Vec::new(),
            next_write: None,
            dir: None,
            file_at_send: Vec::new(),
            resolves_at_send: Vec::new(),
            rt: rt(),
        }
    }

    fn run(&mut self, link: &mut Link) -> Vec<String> {
        let start = self.log.len();
        while let Some(action) = link.next_action() {
            let rec = match action {
                Action::SendDown(b) => format!("down:{}", String::from_utf8_lossy(&b)),
                Action::SendQueuedDown { stream_d } => {
                    let state = link.state_mut();
                    if let (Some(d), Some(state)) = (stream_d, state) {
                        if let Some(file) = state.file.as_ref() {
                            // No wait for a sync: what a SIGKILL right now would leave.
                            let on_disk = persist::load(file.path()).expect("loadable");
                            self.file_at_send
                                .push((newest_point(&state.map), newest_point(&on_disk.map)));
                            self.resolves_at_send
                                .push(on_disk.map.exact(d) == state.map.exact(d));
                        }
                    }
                    match stream_d {
                        Some(d) => format!("queued:{d}"),
                        None => "queued:payload".into(),
                    }
                }
                Action::SendUp(b) => format!("up:{}", String::from_utf8_lossy(&b)),
                Action::PersistAhead => {
                    assert!(
                        !link.may_send_down(),
                        "stream bytes open before write-ahead"
                    );
                    if let Some(s) = link.state_mut() {
                        s.write_ahead();
                    }
                    link.ahead_written();
                    "ahead".into()
                }
                Action::PersistBehind => {
                    link.on_persisted(self.next_write.take());
                    "behind".into()
                }
                Action::PersistFresh => {
                    if let (Some(dir), Some(s)) = (self.dir.clone(), link.state_mut()) {
                        self.rt.block_on(s.persist_fresh(&dir));
                    }
                    "fresh".into()
                }
                Action::StoreState => {
                    let state = link.take_local_state().expect("a local state");
                    let cell = Arc::new(tokio::sync::Mutex::new(state));
                    link.stored(cell.try_lock_owned().expect("unlocked"));
                    "store".into()
                }
                Action::Resume => {
                    link.resume();
                    "resume".into()
                }
                Action::Checkpoint(req) => format!("checkpoint:{}/{}", req.u, req.db),
                Action::Event(e) => event_name(&e),
                Action::Close(end) => format!("close:{}", end.reason.label()),
            };
            self.log.push(rec);
        }
        self.log[start..].to_vec()
    }

    /// Everything queued for the replica, as the driver's write branch would send it.
    fn sent(&self, link: &mut Link) -> Vec<u8> {
        assert!(link.out.is_empty() || link.may_send_down());
        let mut v = Vec::new();
        self.rt
            .block_on(link.out.flush_all(&mut v))
            .expect("write to a Vec");
        v
    }
}

fn event_name(e: &Event) -> String {
    match e {
        Event::Phase(p) => format!("phase:{}", p.name()),
        Event::Offsets {
            upstream,
            downstream,
            acked,
        } => format!("offsets:{upstream}/{downstream}/{acked}"),
        Event::Lag { bytes, points, .. } => format!("lag:{bytes}/{points}"),
        Event::ProtocolError(side, kind) => format!("protocol_error:{side:?}:{kind}"),
        Event::ReadDecided { queued, .. } => format!("read:{queued}"),
        Event::AtRisk { .. } => "at_risk".into(),
        Event::MapCapped => "capped".into(),
        Event::PayloadRelayed { done, .. } => format!("payload:{}", done.bytes),
        Event::MasterIdChanged { new, .. } => format!("master_id:{new}"),
        Event::TableReset { .. } => "table_reset".into(),
        Event::PartialResync { d, u, .. } => format!("partial:{d}/{u}"),
        Event::AckBelowMap { d } => format!("ack_below:{d}"),
        Event::IgnoredCommand { name } => format!("ignored:{name}"),
        Event::MasterClosed => "master_closed".into(),
        Event::CatchUpDone { from, to, .. } => format!("caught_up:{from}/{to}"),
    }
}

fn feed(link: &mut Link, bytes: &[u8]) {
    link.up_buf.extend_from_slice(bytes);
    link.on_upstream_read(now());
}

fn continued_at(d: u64, u: u64, capa_psync2: bool) -> Link {
    let (d, resolved) = continue_point(&state_at(d, u).map, d as i64 + 1).expect("boundary");
    Link::continued(
        policy(),
        true,
        BytesMut::new(),
        ContinueStart {
            holder: Holder::Local(Box::new(state_at(d, u))),
            d,
            resolved,
            new_master: None,
            capa_psync2,
            catch_up: None,
        },
        now(),
    )
}

fn fixture_rdb() -> Vec<u8> {
    crate::redis_relay::test_fixture("redis-7.0.15/dump-v10.rdb")
}

fn full(framing: Framing, base: u64) -> Link {
    Link::full(
        policy(),
        true,
        BytesMut::new(),
        FullStart {
            framing,
            base,
            own_id: OWN.into(),
            master_id: MASTER.into(),
            stored: true,
            table: Arc::new(ExpiryTable::new(Baseline::Unknown)),
        },
        now(),
    )
}

#[test]
fn handshake_then_psync_on_a_boundary_continues_and_streams_from_d() {
    let mut hello = ReplicaHello::default();
    let mut request = None;
    for f in frames(
        &[
            cmd(&[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"]),
            cmd(&[b"PSYNC", OWN.as_bytes(), b"1101"]),
        ]
        .concat(),
    ) {
        if let Step::Sync(req) = handshake::plan(f.command().expect("a command"), &mut hello) {
            request = Some(req);
        }
    }
    let Some(SyncRequest::Psync { id, offset, .. }) = request else {
        panic!("no PSYNC planned");
    };
    assert_eq!(id, OWN);
    let state = state_at(1100, 5100);
    assert_eq!(continue_point(&state.map, 2001), None, "beyond the map");
    let (d, resolved) = continue_point(&state.map, offset).expect("1100 is a boundary");
    assert_eq!((d, resolved.u), (1100, 5100));
    let mut link = Link::continued(
        policy(),
        true,
        BytesMut::new(),
        ContinueStart {
            holder: Holder::Local(Box::new(state)),
            d,
            resolved,
            new_master: Some("b".repeat(40)),
            capa_psync2: hello.capa_psync2,
            catch_up: None,
        },
        now(),
    );
    let mut driver = Driver::new();
    link.start(now());
    assert_eq!(
        driver.run(&mut link),
        vec![
            format!("down:+CONTINUE {OWN}\r\n"),
            format!("master_id:{}", "b".repeat(40)),
            "fresh".into(),
            "partial:1100/5100".into(),
            "phase:streaming".into(),
        ]
    );
    let set = cmd(&[b"SET", b"k", b"v"]);
    feed(&mut link, &set);
    let end = 1100 + set.len() as u64;
    assert_eq!(
        driver.run(&mut link),
        vec![
            "ahead".to_string(),
            format!("queued:{end}"),
            format!("read:{}", set.len()),
        ]
    );
    assert_eq!(driver.sent(&mut link), set);
    let state = link.state_mut().expect("state");
    assert_eq!(state.master_id, "b".repeat(40));
    assert_eq!(
        state.map.exact(end).map(|r| r.u),
        Some(5100 + set.len() as u64)
    );
}

#[test]
fn full_sync_with_a_length_payload_stores_the_state_then_streams() {
    let rdb = fixture_rdb();
    let mut link = full(Framing::Length(rdb.len() as u64), 7000);
    let ping = cmd(&[b"PING"]);
    link.up_buf.extend_from_slice(&rdb);
    link.up_buf.extend_from_slice(&ping);
    let mut driver = Driver::new();
    link.start(now());
    let end = 7000 + ping.len() as u64;
    assert_eq!(
        driver.run(&mut link),
        vec![
            "phase:full_sync".to_string(),
            "queued:payload".into(),
            format!("payload:{}", rdb.len()),
            "fresh".into(),
            "store".into(),
            "phase:streaming".into(),
            "resume".into(),
            "ahead".into(),
            format!("queued:{end}"),
            format!("read:{}", rdb.len() + ping.len()),
        ]
    );
    assert_eq!(driver.sent(&mut link), [rdb, ping].concat());
    assert!(matches!(link.take_holder(), Some(Holder::Stored(_))));
}

#[test]
fn eof_payload_holds_the_stream_until_the_first_ack() {
    let rdb = fixture_rdb();
    let mark = [b'm'; 40];
    let set = cmd(&[b"SET", b"k", b"v"]);
    let mut link = full(Framing::Eof(mark), 300);
    link.up_buf.extend_from_slice(&rdb);
    link.up_buf.extend_from_slice(&mark);
    link.up_buf.extend_from_slice(&set);
    let mut driver = Driver::new();
    link.start(now());
    let log = driver.run(&mut link);
    assert!(
        log.contains(&"phase:awaiting_first_ack".to_string()),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|r| r.starts_with("queued:3")),
        "stream decided too early: {log:?}"
    );
    assert!(!link.wants_upstream_read(usize::MAX));
    assert_eq!(driver.sent(&mut link), [&rdb[..], &mark[..]].concat());
    assert_eq!(
        link.up_buf.len(),
        set.len(),
        "the stream waits in the buffer"
    );

    for f in frames(&cmd(&[b"REPLCONF", b"ACK", b"300"])) {
        link.on_replica_frame(f);
        driver.run(&mut link);
    }
    link.on_replica_read_done(now());
    let end = 300 + set.len() as u64;
    assert_eq!(
        driver.log[log.len()..].to_vec(),
        vec![
            "phase:streaming".to_string(),
            "behind".into(),
            format!(
                "up:{}",
                String::from_utf8_lossy(&cmd(&[b"REPLCONF", b"ACK", b"300"]))
            ),
            "offsets:300/300/300".into(),
        ]
    );
    assert_eq!(
        driver.run(&mut link),
        vec![
            "ahead".to_string(),
            format!("queued:{end}"),
            format!("read:{}", set.len())
        ]
    );
    assert_eq!(driver.sent(&mut link), set);
}

/// A stream of `SETEX k 3600 1` then `INCR k` (rewritten), in two reads: returns the link, its
/// driver, and the D offset after the SETEX, the D and the U offsets after the INCR.
fn rewritten_stream() -> (Link, Driver, u64, u64, u64) {
    let mut link = continued_at(1000, 9000, true);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    let setex = cmd(&[b"SETEX", b"k", b"3600", b"1"]);
    let incr = cmd(&[b"INCR", b"k"]);
    feed(&mut link, &setex);
    driver.run(&mut link);
    let d1 = 1000 + driver.sent(&mut link).len() as u64;
    feed(&mut link, &incr);
    let log = driver.run(&mut link);
    let sent = driver.sent(&mut link);
    assert!(sent.windows(5).any(|w| w == b"MULTI"), "INCR is wrapped");
    let u = 9000 + (setex.len() + incr.len()) as u64;
    let d = d1 + sent.len() as u64;
    assert_eq!(log[..2], ["ahead".to_string(), format!("queued:{d}")]);
    (link, driver, d1, d, u)
}

#[test]
fn a_rewritten_entry_moves_d_away_from_u() {
    let setex_len = cmd(&[b"SETEX", b"k", b"3600", b"1"]).len() as u64;
    let (mut link, _driver, d1, d, u) = rewritten_stream();
    assert!(
        d - d1 > u - (9000 + setex_len),
        "the INCR became a longer transaction"
    );
    let map = &link.state_mut().expect("state").map;
    assert_eq!(map.exact(d).map(|r| r.u), Some(u));
    assert_eq!(map.exact(d1).map(|r| r.u), Some(9000 + setex_len));
    assert_eq!(map.exact(d - 1), None, "inside the transaction");
    assert_eq!(
        map.floor(d - 1),
        Some(9000 + setex_len),
        "ACKs inside it count as its start"
    );
}

#[test]
fn acks_are_translated_through_the_map_and_prune_it() {
    let (mut link, mut driver, _, d, u) = rewritten_stream();
    let ack = format!("{d}");
    let fack = "1000";
    for f in frames(&cmd(&[
        b"REPLCONF",
        b"ACK",
        ack.as_bytes(),
        b"FACK",
        fack.as_bytes(),
    ])) {
        link.on_replica_frame(f);
    }
    let log = driver.run(&mut link);
    let expected_up = cmd(&[
        b"REPLCONF",
        b"ACK",
        u.to_string().as_bytes(),
        b"FACK",
        b"9000",
    ]);
    assert_eq!(
        log,
        vec![
            "behind".to_string(),
            format!("up:{}", String::from_utf8_lossy(&expected_up)),
            format!("offsets:{u}/{d}/{u}"),
        ]
    );
    let map = &link.state_mut().expect("state").map;
    assert_eq!(map.floor(999), None, "pruned below the ACK");
    // An ACK below the map is not forwarded.
    for f in frames(&cmd(&[b"REPLCONF", b"ACK", b"10"])) {
        link.on_replica_frame(f);
    }
    assert_eq!(driver.run(&mut link), vec!["ack_below:10".to_string()]);
}

#[test]
fn held_acks_go_up_only_once_their_write_is_durable() {
    let (mut link, mut driver, _, d, u) = rewritten_stream();
    driver.next_write = Some(Written {
        seq: 7,
        done: false,
    });
    for f in frames(&cmd(&[b"REPLCONF", b"ACK", d.to_string().as_bytes()])) {
        link.on_replica_frame(f);
    }
    assert_eq!(driver.run(&mut link), vec!["behind".to_string()]);
    assert_eq!(link.first_held_write(), Some(7));
    link.on_write_progress(&Progress {
        durable: 6,
        failed: None,
    });
    assert!(
        driver.run(&mut link).is_empty(),
        "write 7 is not on disk yet"
    );
    link.on_write_progress(&Progress {
        durable: 7,
        failed: None,
    });
    let up = cmd(&[b"REPLCONF", b"ACK", u.to_string().as_bytes()]);
    assert_eq!(
        driver.run(&mut link),
        vec![
            format!("up:{}", String::from_utf8_lossy(&up)),
            format!("offsets:{u}/{d}/{u}"),
        ]
    );
    assert_eq!(link.first_held_write(), None);
}

#[test]
fn getack_travels_down_like_any_entry_and_is_not_answered() {
    let mut link = continued_at(1000, 9000, false);
    let mut driver = Driver::new();
    link.start(now());
    assert_eq!(driver.run(&mut link)[0], "down:+CONTINUE\r\n");
    let getack = cmd(&[b"REPLCONF", b"GETACK", b"*"]);
    feed(&mut link, &getack);
    let log = driver.run(&mut link);
    assert!(log.iter().all(|r| !r.starts_with("up:")), "{log:?}");
    assert_eq!(driver.sent(&mut link), getack);
    // Other commands from the replica are ignored.
    for f in frames(&cmd(&[b"PING"])) {
        link.on_replica_frame(f);
    }
    assert_eq!(driver.run(&mut link), vec!["ignored:PING".to_string()]);
}

#[test]
fn a_malformed_master_stream_ends_the_link_as_upstream_protocol() {
    let mut link = continued_at(1000, 9000, true);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    feed(&mut link, b"*2\r\n$3\r\nSET\r\n:oops\r\n");
    let log = driver.run(&mut link);
    assert_eq!(
        log,
        vec![
            "protocol_error:Upstream:stream_framing".to_string(),
            "close:upstream_protocol".into(),
        ]
    );
    assert!(EndReason::UpstreamProtocol.forgets_state());
    // Nothing more happens after the close.
    feed(&mut link, &cmd(&[b"PING"]));
    assert!(driver.run(&mut link).is_empty());
}

#[test]
fn keepalives_pass_up_and_ticks_report_lag_and_persist_behind() {
    let mut link = continued_at(1000, 9000, true);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    for f in frames(b"\n") {
        link.on_replica_frame(f);
    }
    assert_eq!(driver.run(&mut link), vec!["up:\n".to_string()]);
    let set = cmd(&[b"SET", b"k", b"v"]);
    feed(&mut link, &set);
    driver.run(&mut link);
    let n = set.len() as u64;
    link.on_tick(now());
    assert_eq!(
        driver.run(&mut link),
        vec![
            "behind".to_string(),
            format!("lag:{n}/1"),
            format!("offsets:{}/{}/9000", 9000 + n, 1000 + n),
        ]
    );
}

#[test]
fn a_large_read_is_decided_in_doubling_slices_and_counted_once() {
    let mut link = continued_at(1000, 9000, true);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    let one = cmd(&[b"SET", b"k", b"v"]);
    let all = one.repeat(100);
    feed(&mut link, &all);
    assert_eq!(
        driver.run(&mut link),
        vec![
            "ahead".to_string(),
            format!("queued:{}", 1000 + 32 * one.len())
        ]
    );
    assert!(link.slicing_read() && !link.wants_upstream_read(usize::MAX));
    link.on_slice();
    assert_eq!(
        driver.run(&mut link),
        vec![
            "ahead".to_string(),
            format!("queued:{}", 1000 + 96 * one.len())
        ]
    );
    link.on_slice();
    assert_eq!(
        driver.run(&mut link),
        vec![
            "ahead".to_string(),
            format!("queued:{}", 1000 + 100 * one.len()),
            format!("read:{}", all.len()),
        ]
    );
    assert!(!link.slicing_read());
    assert_eq!(driver.sent(&mut link), all);
}

#[test]
fn the_link_ends_when_either_side_closes() {
    let mut link = continued_at(1000, 9000, true);
    let mut driver = Driver::new();
    link.start(now());
    driver.run(&mut link);
    feed(&mut link, &cmd(&[b"PING"]));
    driver.run(&mut link);
    link.on_upstream_closed();
    assert!(!link.poll_end(), "output still waits for the replica");
    driver.sent(&mut link);
    assert!(link.poll_end());
    assert_eq!(
        driver.run(&mut link),
        vec![
            "master_closed".to_string(),
            "behind".into(),
            "close:upstream_closed".into()
        ]
    );

    let mut link = continued_at(1000, 9000, true);
    link.on_replica_closed();
    let log = driver.run(&mut link);
    assert_eq!(log[log.len() - 2..], ["behind", "close:replica_closed"]);
}

/// Crash points: at every moment stream bytes may leave, the state file on disk (unsynced, as a
/// SIGKILL leaves it) already holds every map point they depend on and a tip that covers them,
/// so a relay restarted right then continues the replica wherever it stopped; before the
/// write-ahead, they may not leave at all.
#[test]
fn at_every_send_the_state_file_already_holds_the_map_points() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = state_at(1000, 9000);
    state.file = Some(StateFile::create(dir.path(), OWN, MASTER, &state.map).expect("state file"));
    let (d, resolved) = continue_point(&state.map, 1001).expect("boundary");
    let mut link = Link::continued(
        policy(),
        true,
        BytesMut::new(),
        ContinueStart {
            holder: Holder::Local(Box::new(state)),
            d,
            resolved,
            new_master: None,
            capa_psync2: true,
            catch_up: None,
        },
        now(),
    );
    let mut driver = Driver::new();
    driver.dir = Some(dir.path().to_path_buf());
    link.start(now());
    driver.run(&mut link);
    let set = cmd(&[b"SET", b"p", b"v"]);
    let setex = cmd(&[b"SETEX", b"k", b"3600", b"1"]);
    let incr = cmd(&[b"INCR", b"k"]);
    let select = cmd(&[b"SELECT", b"3"]);
    for entry in [&set, &setex, &incr, &select, &set] {
        link.up_buf.extend_from_slice(entry);
        link.on_upstream_read(now());
        // Nothing may be sent before the driver executes the write-ahead.
        assert!(!link.may_send_down());
        let log = driver.run(&mut link);
        assert_eq!(log.first().map(String::as_str), Some("ahead"), "{log:?}");
        assert!(link.may_send_down());
        driver.sent(&mut link);
    }
    assert_eq!(driver.file_at_send.len(), 5);
    assert_eq!(driver.resolves_at_send, [true; 5]);
    for (live, on_disk) in &driver.file_at_send {
        assert_eq!(
            live, on_disk,
            "the file lacks a point the sent bytes depend on"
        );
    }
    assert!(
        driver.file_at_send.windows(2).any(|w| w[0].0 != w[1].0),
        "the stream added points"
    );
}
